"""The reports' own searches (`mnistcompare-tune --study NAME`, run by `cli.study_main`).

Each stage is a keras-tuner grid search in OUT/stage-N, from the best of the stage before (staged) or from
the search's base; the chosen configuration is tested in OUT/final; results.md gives every stage's best
beside the report's. Rerunning the same command resumes, stage by stage.
"""
import dataclasses
import itertools
import os
import statistics

from mnistcompare.config import Config, shown_value
from mnistcompare.experiments import evaluate
from mnistcompare.reports import R001_CNN, R001_FCN, Entry, preset, published
from mnistcompare.runtime import DEFAULT_JOBS

FOUND = {True: "✓", False: "✗"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One grid of a report's search: the values it searched, the best it printed and that best's score."""
    label: str  # the report's names of the parameters (e.g. "KL, HL")
    grid: dict  # {mnistcompare-tune --grid name: [values]}
    published: dict  # the report's best value of each name
    score: float = None  # the report's score of that best (None: not printed)


@dataclasses.dataclass(frozen=True)
class Search:
    """A report's search: its stages in order; `staged`: each stage starts from the best of the one before
    (else each from `base`). The best configuration is then tested over `final_rounds` rounds."""
    base: object  # () -> Config
    stages: tuple
    runs_per_trial: int
    final_rounds: int
    about: str
    source: str
    staged: bool = True
    final: dict = None  # the report's test figure for the chosen configuration: test_accuracy, std
    assumptions: tuple = ()


def _r001_search(base, table, tower, stages):
    """Report 001's staged search of a sub-net, from Table II's best cell (weight sharing and the auxiliary loss)
    with Table I's initial values; its last stage's score (α's) is read as the chosen configuration's test figure."""
    return Search(lambda: Config(arch="siamese", alpha=0.5, **base), stages, runs_per_trial=3, final_rounds=10,
                  about=f"001 Table {table}, the {tower} sub-net's staged grid search", source=f"001 Table {table}",
                  final={"test_accuracy": stages[-1].score}, assumptions=R001_ASSUMPTIONS)


# report 001's grids: KL and HL, C-KL and C-HL, α
R001_KL_HL = {"layers": [1, 2], "hidden": [32, 64, 128, 256, 512]}
R001_C_KL_HL = {"head_layers": [1, 2], "head": [32, 64, 128, 256, 512]}
R001_ALPHA = {"alpha": [round(0.1 * i, 1) for i in range(11)]}


WIDTHS = ("8", "16", "32", "64", "128", "256")
R001_ASSUMPTIONS = (
    "The report prints one score for KL and HL, for BC and K and for C-KL and C-HL: each pair is searched as one "
    "grid here (10 points), the pairs in the report's order, each stage from the best of the one before.",
    "α over [0, 1] is searched in steps of 0.1 (11 points): the report's 0.11 and 0.44 suggest a finer grid it "
    "does not give.",
    "Selection is on 1000 validation pairs from MNIST training images the training pairs do not use, the mean of "
    "3 rounds per point; the report does not say what its scores were measured on (its last, α's, is read as "
    "the chosen configuration's test figure), nor over how many rounds.",
)
SEARCHES = {
    "report001-table3": _r001_search(R001_FCN, "III", "FCN", (
        Stage("KL, HL", R001_KL_HL, {"layers": 2, "hidden": 128}, 0.9105),
        Stage("C-KL, C-HL", R001_C_KL_HL, {"head_layers": 2, "head": 256}, 0.9205),
        Stage("α", R001_ALPHA, {"alpha": 0.11}, 0.9282))),
    "report001-table4": _r001_search(R001_CNN, "IV", "CNN", (
        Stage("KL, HL", R001_KL_HL, {"layers": 2, "hidden": 512}, 0.9298),
        Stage("BC, K", {"channels": [4, 8, 16, 24, 48], "kernel": [3, 5]}, {"channels": 24, "kernel": 3}, 0.9638),
        Stage("C-KL, C-HL", R001_C_KL_HL, {"head_layers": 2, "head": 512}, 0.9676),
        Stage("α", R001_ALPHA, {"alpha": 0.44}, 0.9721))),
    "report000-channels": Search(
        lambda: preset("report000-siamese"), (
            Stage("channels", {"widths": ["-".join(w) for w in itertools.combinations(WIDTHS, 3)]},
                  {"widths": "64-128-256"}),),
        runs_per_trial=5, final_rounds=15, about="000 section II-C, the siamese net's channels (increasing powers "
                                                 "of two, 8 to 256)",
        source="000 Table I", final={"test_accuracy": 0.948, "std": 0.010}, assumptions=(
            "The report searched the three convolutions' channels among increasing powers of two from 8 to 256 "
            "(20 triples) and prints no score per triple; its chosen siamese net is Table I's, whose 192,601 "
            "parameters are those of 64-128-256 channels (Appendix A's 16-32-64 count 23,833).",
            "Each triple is scored over 5 rounds here (the report: 10 runs of 1000 pairs), on 1000 validation "
            "pairs from MNIST training images the training pairs do not use.",
        )),
    "report000-optimizer": Search(
        lambda: preset("report000-siamese"), (
            Stage("Adam", {"optimizer": ["adam"], "lr": [0.005, 0.0025]}, {"optimizer": "adam", "lr": 0.005}),
            Stage("SGD", {"optimizer": ["sgd"], "lr": [0.1, 0.05, 0.01], "momentum": [0.0, 0.9],
                          "nesterov": [False, True]}, {"optimizer": "sgd"})),
        runs_per_trial=10, final_rounds=15, staged=False,
        about="000 section II-C, Adam against SGD (learning rate, momentum, Nesterov)",
        source="000 section II-C", final={"test_accuracy": 0.948, "std": 0.010}, assumptions=(
            "The report tried Adam and SGD (learning rate; momentum and Nesterov for SGD), found Adam best at "
            "eta 0.005 or 0.0025 and SGD to make about 10 % more errors; it gives no SGD values, so SGD is "
            "searched over learning rates 0.1, 0.05, 0.01, momentum 0 and 0.9, Nesterov off and on (Nesterov "
            "without momentum is plain SGD in Keras).",
            "Each point is scored over 10 rounds of 1000 pairs (the report's protocol), on 1000 validation pairs "
            "from MNIST training images the training pairs do not use; both best configurations are then tested.",
        )),
}


def stage_record(stage, rows):
    trial, config, rounds = rows[0]
    accs = [r["val_compare_accuracy"] for r in rounds]
    return {"label": stage.label, "grid": stage.grid, "published": stage.published, "published_score": stage.score,
            # (keras-tuner may hand a bool back as 0/1)
            "best": {name: type(values[0])(trial.hyperparameters.values[name]) for name, values in stage.grid.items()},
            "score": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "rounds": accs, "trials": len(rows), "config": Config.from_dict(config), **_theirs(stage, rows)}


def _theirs(stage, rows):
    """The score and rank here of the report's own best point, where the stage's grid holds it."""
    for rank, (trial, _, rounds) in enumerate(rows, 1):
        values = trial.hyperparameters.values
        if all(type(v)(values[name]) == v for name, v in stage.published.items()) and \
                set(stage.published) >= {name for name, axis in stage.grid.items() if len(axis) > 1}:
            return {"theirs_score": statistics.mean(r["val_compare_accuracy"] for r in rounds), "theirs_rank": rank}
    return {}


def final_test(args, search, configs, labels, source, top):
    pub = search.final or {}
    entries = [Entry(label, config, published(pub["test_accuracy"], pub.get("std"), search.source)
                     if pub and len(configs) == 1 else None) for label, config in zip(labels, configs)]
    results = evaluate(entries, args.final_rounds, os.path.join(top, "final"), source,
                       log=lambda line: print(line, flush=True), jobs=DEFAULT_JOBS, progress=not args.quiet)
    return [{k: e[k] for k in ("name", "published", "test_accuracy_mean", "test_accuracy_std", "test_accuracy_min",
                               "test_accuracy_max", "train_accuracy_mean", "train_accuracy_std", "rounds",
                               "train_seconds_median", "params") if k in e} for e in results["entries"]]


def _values(values):
    return ", ".join(f"{name} {shown_value(value)}" for name, value in values.items())


def results_markdown(results):
    """Each stage's best beside the report's, the chosen configuration's test, the assumptions; no z off protocol."""
    off = results.get("off_protocol")
    lines = [f"**{results['about']}**", ""]
    if off:
        lines += [f"Off the report's protocol ({off}): no z.", ""]
    lines += [f"Each stage is a grid; each point scored as the mean validation accuracy of "
              f"{results['runs_per_trial']} rounds ({results['val_pairs']} validation pairs from MNIST training "
              f"images the training pairs do not use). "
              + ("Each stage starts from the best of the one before." if results["staged"] else
                 "Each stage starts from the same base configuration.")
              + " z = (ours − report's) / σ of one round: the larger of the stage's rounds' and the final "
                "test's (the report gives none).", "",
              "| stage | searched | report's best | its score here (rank) | our best | found again | report's "
              "score | our score (validation) | z |", "|---|---|---|---|---|---|---|---|---|"]
    # A round's spread, for z: a stage's few rounds may agree by chance, so at least the final test's spread
    spread = max((e["test_accuracy_std"] for e in results["final"] or []), default=0.0)
    for stage in results["stages"]:
        searched = "; ".join(f"{name} {', '.join(map(shown_value, values))}" for name, values in stage["grid"].items()
                             if len(values) > 1)
        same = all(stage["best"].get(name) == value for name, value in stage["published"].items())
        scale, theirs = max(stage["std"], spread), stage["published_score"]
        score = (stage["score"] - theirs) / scale if theirs is not None and scale else None
        here = f"{stage['theirs_score']:.4f} ({stage['theirs_rank']} of {stage['trials']})" \
            if "theirs_score" in stage else "–"
        lines.append(f"| {stage['label']} | {searched} | {_values(stage['published'])} | {here} | "
                     f"{_values(stage['best'])} | {FOUND[same]} | {shown_value(theirs) if theirs else '–'} | "
                     f"{stage['score']:.4f} ± {stage['std']:.4f} | "
                     f"{f'{score:+.1f}' if score is not None and not off else '–'} |")
    if results["final"]:
        lines += ["", f"The chosen configuration{'s' if len(results['final']) > 1 else ''} on the test split "
                      f"({results['final'][0]['rounds']} rounds, fresh pairs and weights for each):", "",
                  "| configuration | test accuracy | published | z | train accuracy | params |",
                  "|---|---|---|---|---|---|"]
        for entry in results["final"]:
            pub = entry.get("published") or {}
            scale = max(pub.get("std") or 0.0, entry["test_accuracy_std"])
            score = (entry["test_accuracy_mean"] - pub["test_accuracy"]) / scale if pub and scale else None
            plus_minus = f" ± {shown_value(pub['std'])}" if "std" in pub else ""
            theirs = f"{shown_value(pub['test_accuracy'])}{plus_minus} ({pub['source']})" if pub else "–"
            lines.append(f"| {entry['name']} | {entry['test_accuracy_mean']:.4f} ± {entry['test_accuracy_std']:.4f} | "
                         f"{theirs} | {f'{score:+.1f}' if score is not None and not off else '–'} | "
                         f"{entry['train_accuracy_mean']:.3f} ± {entry['train_accuracy_std']:.3f} | "
                         f"{entry['params']:,} |")
        if len(results["final"]) == 2:  # report 000: Adam against SGD, in errors
            adam, sgd = results["final"]
            ratio = (1 - adam["test_accuracy_mean"]) / (1 - sgd["test_accuracy_mean"])
            lines += ["", f"- {FOUND[ratio < 1]} {adam['name']} makes {abs(1 - ratio):.0%} "
                          f"{'fewer' if ratio < 1 else 'more'} test errors than {sgd['name']} (the report: about "
                          "10 % fewer)"]
    lines += ["", "Assumptions:", ""] + [f"- {a}" for a in results["assumptions"]]
    return "\n".join(lines) + "\n"
