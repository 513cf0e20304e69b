"""The reports' own searches (`mnistcompare-tune --study NAME`, run by `tuning.cli.study_main`): each stage's
record, the test of the chosen configuration, and the results page beside the reports' figures.

Each stage is a keras-tuner grid search in OUT/stage-N, from the best
configuration of the stage before (a staged search) or from the search's base;
the chosen configuration is then tested in OUT/final. results.md and
results.json in OUT give every stage's best values and score beside the
report's. Rerunning the same command resumes, stage by stage.
"""
import os
import statistics

FOUND = {True: "✓", False: "✗"}


def stage_record(stage, rows):
    from mnistcompare.config import Config

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
    from mnistcompare.experiments import evaluate
    from mnistcompare.reports import Entry, published
    from mnistcompare.runtime import DEFAULT_JOBS

    pub = search.final or {}
    entries = [Entry(label, config, published(pub["test_accuracy"], pub.get("std"), search.source)
                     if pub and len(configs) == 1 else None) for label, config in zip(labels, configs)]
    results = evaluate(entries, args.final_rounds, os.path.join(top, "final"), source,
                       log=lambda line: print(line, flush=True), jobs=DEFAULT_JOBS, progress=not args.quiet)
    return [{k: e[k] for k in ("name", "published", "test_accuracy_mean", "test_accuracy_std", "test_accuracy_min",
                               "test_accuracy_max", "train_accuracy_mean", "train_accuracy_std", "rounds",
                               "train_seconds_median", "params") if k in e} for e in results["entries"]]


def _value(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _values(values):
    return ", ".join(f"{name} {_value(value)}" for name, value in values.items())


def z(ours, std, published):
    """(ours - published) / std, or None."""
    return (ours - published) / std if published is not None and std else None


def results_markdown(results):
    """Each stage's best and score beside the report's, the test of the chosen configuration, the
    assumptions; no z off the report's protocol."""
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
        searched = "; ".join(f"{name} {', '.join(map(_value, values))}" for name, values in stage["grid"].items()
                             if len(values) > 1)
        same = all(stage["best"].get(name) == value for name, value in stage["published"].items())
        score = z(stage["score"], max(stage["std"], spread), stage["published_score"])
        here = f"{stage['theirs_score']:.4f} ({stage['theirs_rank']} of {stage['trials']})" \
            if "theirs_score" in stage else "–"
        lines.append(f"| {stage['label']} | {searched} | {_values(stage['published'])} | {here} | "
                     f"{_values(stage['best'])} | "
                     f"{FOUND[same]} | {_value(stage['published_score']) if stage['published_score'] else '–'} | "
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
            lines.append(f"| {entry['name']} | {entry['test_accuracy_mean']:.4f} ± {entry['test_accuracy_std']:.4f} | "
                         + (f"{_value(pub['test_accuracy'])}{' ± ' + _value(pub['std']) if 'std' in pub else ''} "
                            f"({pub['source']})" if pub else "–")
                         + f" | {f'{score:+.1f}' if score is not None and not off else '–'} | "
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
