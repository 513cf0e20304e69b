"""Many rounds of many configurations: the reports' tables, ablations and curves.

Round r of an entry uses seed + r for both its pair sample and its weights,
so any round can be rerun alone with `mnistcompare-train --seed`. Results are
written atomically after every round; rerunning into the same folder
continues with the rounds that are missing.
"""
import dataclasses
import json
import multiprocessing
import os
import signal
import statistics
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mnistcompare.config import Config, UserError, preset, write_json, write_text


class WorkerLost(Exception):
    """A worker process of `evaluate --jobs` died: one line, exit 1."""


@dataclasses.dataclass
class Entry:
    """One row of a results table: a named Config, and what a report published for it."""
    name: str
    config: Config
    published: dict = None  # {"test_accuracy": .., "std": .., "source": ..}


# -- named studies ---------------------------------------------------------------
# Report 001 Table I with its initial values: BC 4, K 3, KL 1, HL 64, LeakyReLU, dropout 0.2, 20 epochs,
# Adam 0.001 decayed 0.9 per epoch. The report used batch 5; batch 10 halves the time at the same
# learning rate (with batch 100 these small nets stay under-trained: train accuracy ~0.85).
R001_CNN = dict(channels=(4, 8), kernel=(3,), pool=(2, 1), conv_dropout=0.2, hidden=(64,), head=(64,),
                activation="leaky_relu", batch_norm=False, dropout=0.2, lr=0.001, schedule="exponential",
                lr_decay=0.9, epochs=20, batch_size=10)
R001_FCN = dict(R001_CNN, channels=())


def _published(value, std, source):
    return {"test_accuracy": value, "std": std, "source": source}


def study_sharing_aux():
    """Weight sharing x auxiliary loss, CNN and MLP towers (report 001 Table II, report 004 Table IV)."""
    entries = []
    for tower, base, scores in (("cnn", R001_CNN, (0.833, 0.158, 0.882, 0.011, 0.864, 0.006, 0.902, 0.013)),
                                ("mlp", R001_FCN, (0.828, 0.006, 0.870, 0.007, 0.851, 0.008, 0.892, 0.006))):
        cells = (("two_tower", 1.0, "no sharing, no aux"), ("two_tower", 0.5, "no sharing, aux"),
                 ("siamese", 1.0, "sharing, no aux"), ("siamese", 0.5, "sharing, aux"))
        for i, (arch, alpha, label) in enumerate(cells):
            entries.append(Entry(f"{tower}: {label}", Config(arch=arch, alpha=alpha, **base),
                                 _published(scores[2 * i], scores[2 * i + 1], "001 Table II")))
    return entries


def study_bn_dropout():
    """Report 002 Table 1: no sharing; sharing; + aux; + batch-norm; + dropout; transfer learning."""
    rows = (("no sharing", dict(arch="two_tower", alpha=1.0), (0.8074, 0.0089)),
            ("sharing", dict(arch="siamese", alpha=1.0), (0.7790, 0.0152)),
            ("sharing, aux", dict(arch="siamese", alpha=0.5), (0.8373, 0.0220)),
            ("sharing, aux, BN", dict(arch="siamese", alpha=0.5, batch_norm=True), (0.8476, 0.0142)),
            ("sharing, aux, BN, dropout", dict(arch="siamese", alpha=0.5, batch_norm=True, dropout=0.25),
             (0.8474, 0.0115)),
            ("transfer learning (digits)", dict(arch="digits", alpha=0.0), (0.9686, 0.0067)))
    base = preset("report002-transfer")
    return [Entry(name, base.replace(**changes), _published(*score, "002 Table 1")) for name, changes, score in rows]


def study_combine():
    """Report 000 section IV-D: concatenate, subtract or max the two tower outputs."""
    return [Entry(f"siamese, {c}", preset("report000-siamese").replace(combine=c)) for c in
            ("concat", "difference", "max")]


def study_reports():
    """Each report's headline model with that report's own hyper-parameters."""
    return [
        Entry("000 siamese", preset("report000-siamese"), _published(0.948, 0.010, "000 Table I")),
        Entry("001 tuned CNN", preset("report001-cnn"), _published(0.9721, None, "001 Table IV")),
        Entry("002 transfer learning", preset("report002-transfer"), _published(0.9686, 0.0067, "002 Table 1")),
        Entry("003 direct classification", preset("report003-direct"), _published(0.965, 0.007, "003 Table 1")),
        Entry("004 CNN + aux", preset("report004-cnn-aux"), _published(0.887, 0.041, "004 Table IV")),
    ]


STUDIES = {"sharing-aux": study_sharing_aux, "bn-dropout": study_bn_dropout, "combine": study_combine,
           "reports": study_reports}


def study(name):
    if name not in STUDIES:
        raise UserError(f"--study: unknown study {name!r}; choose from {', '.join(STUDIES)}")
    return STUDIES[name]()


# -- statistics and tables ---------------------------------------------------------
def summarise(rounds):
    """Mean, sample std, min, max of each accuracy; median seconds; over a list of round records."""
    def stats(key):
        values = [r[key] for r in rounds]
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    summary = {"rounds": len(rounds)}
    for key in ("test_accuracy", "train_accuracy", "test_digit_accuracy"):
        if rounds and key in rounds[0]:
            for stat, value in stats(key).items():
                summary[f"{key}_{stat}"] = value
    if rounds:
        summary["train_seconds_median"] = statistics.median(r["train_seconds"] for r in rounds)
        summary["params"] = rounds[0]["params"]
    return summary


def _pm(mean, std, digits=3):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(results):
    """A table shaped like report 000's Table I, with the published figures beside ours."""
    lines = ["| model | test accuracy | train accuracy | test min–max | digit accuracy | params | s/round "
             "| rounds | published (test) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in results["entries"]:
        if not e["per_round"]:
            continue
        digits = (_pm(e["test_digit_accuracy_mean"], e["test_digit_accuracy_std"])
                  if "test_digit_accuracy_mean" in e else "–")
        pub = e.get("published") or {}
        published = "–"
        if pub:
            published = _pm(pub["test_accuracy"], pub["std"]) if pub.get("std") is not None else \
                f"{pub['test_accuracy']:.4f}"
            published += f" ({pub['source']})"
        lines.append(
            f"| {e['name']} | {_pm(e['test_accuracy_mean'], e['test_accuracy_std'])} | "
            f"{_pm(e['train_accuracy_mean'], e['train_accuracy_std'])} | "
            f"{e['test_accuracy_min']:.3f}–{e['test_accuracy_max']:.3f} | {digits} | {e['params']:,} | "
            f"{e['train_seconds_median']:.1f} | {e['rounds']} | {published} |")
    return "\n".join(lines) + "\n"


# -- running ---------------------------------------------------------------------
def load_results(path):
    """The entries of an earlier results.json, by name, to resume from."""
    try:
        with open(path) as f:
            entries = json.load(f)["entries"]
        return {e["name"]: {"config": e["config"], "per_round": list(e["per_round"])} for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} cannot be read to resume ({type(e).__name__}: {e}); "
                        "pass --overwrite to start again") from None


DEFAULT_JOBS = os.cpu_count() or 1  # evaluate --jobs: one worker per CPU
_CACHE = None  # a worker process's ModelCache


def _start_worker():
    """A process that trains rounds for `evaluate --jobs`: TensorFlow quiet, one thread per op
    (as every command runs), Ctrl-C left to the parent, which ends the workers."""
    global _CACHE
    from mnistcompare.cli import start_tensorflow

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Ends with the parent even when the parent is killed (SIGKILL): nothing else would end it.
    parent = multiprocessing.parent_process()
    threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    start_tensorflow()
    from mnistcompare.training import ModelCache

    _CACHE = ModelCache()


def train_job(job, cache=None):
    """(metrics, history) of one round: job = (Config with the round's seed, data_dir, idx_dir)."""
    from mnistcompare.data import load_pairs
    from mnistcompare.training import train_round

    cfg, data_dir, idx_dir = job
    train, test = load_pairs(cfg, data_dir, idx_dir)
    _, metrics, history = train_round(cfg, train, test, verbose=0, curves=True, cache=cache or _CACHE)
    return metrics, history


def evaluate(entries, rounds, out, data_dir=None, idx_dir=None, overwrite=False, log=print, jobs=1):
    """Train `rounds` rounds of every entry; results.json/.md after each round, the plots at the end.

    jobs=1 trains in this process. jobs=N>1 trains N rounds side by side, in N
    worker processes (TensorFlow is not imported here then): each process
    traces its own model once and trains the rounds it is given; results come
    back, and are saved, in round order. Processes, not threads: tracing holds
    Python's lock, and TensorFlow 2.21 fails now and then ("Container
    __per_step_0 does not exist") when threads run graphs at once.
    """
    from mnistcompare.plots import plot_curves, plot_rounds

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.json")
    previous = {}
    if os.path.exists(path) and not overwrite:
        previous = load_results(path)
    results = {"entries": []}
    for entry in entries:
        record = {"name": entry.name, "arch": entry.config.arch, "published": entry.published,
                  "config": entry.config.to_dict(), "per_round": []}
        old = previous.get(entry.name)
        if old:
            if Config.from_dict(old["config"]) != entry.config:
                raise UserError(f"--out {out} holds results of {entry.name!r} with another configuration; "
                                "use another --out or pass --overwrite")
            record["per_round"] = old["per_round"][:rounds]
        results["entries"].append(record)

    def save(plots=False):
        for record in results["entries"]:
            record.update(summarise(record["per_round"]))
        write_json(path, results)
        write_text(os.path.join(out, "results.md"), markdown_table(results))
        if plots and any(r["per_round"] for r in results["entries"]):
            plot_curves(results, os.path.join(out, "curves.png"))
            plot_rounds(results, os.path.join(out, "rounds.png"))

    todo = [(entry, r, entry.config.replace(seed=entry.config.seed + r))
            for entry, record in zip(entries, results["entries"]) for r in range(len(record["per_round"]), rounds)]
    records = {id(entry): record for entry, record in zip(entries, results["entries"])}
    executor = None
    if jobs > 1 and todo:
        executor = ProcessPoolExecutor(min(jobs, len(todo)), multiprocessing.get_context("spawn"),
                                       initializer=_start_worker)
        done = executor.map(train_job, [(cfg, data_dir, idx_dir) for _, _, cfg in todo])
    else:
        from mnistcompare.training import ModelCache

        cache = ModelCache()  # one build and trace per configuration, not per round
        done = (train_job((cfg, data_dir, idx_dir), cache) for _, _, cfg in todo)
    finished = False
    try:
        for (entry, r, cfg), (metrics, history) in zip(todo, done):
            records[id(entry)]["per_round"].append({"round": r, **metrics, "history": history})
            save()  # tables after every round: an interrupted run loses only the rounds in progress
            digits = f" digits {metrics['test_digit_accuracy']:.4f}" if "test_digit_accuracy" in metrics else ""
            log(f"[{entry.name}] round {r + 1}/{rounds} (seed {cfg.seed}): test "
                f"{metrics['test_accuracy']:.4f} train {metrics['train_accuracy']:.4f}{digits}  "
                f"{metrics['train_seconds']:.1f} s")
        finished = True
    except BrokenProcessPool:
        raise WorkerLost("a worker process ended abruptly (killed, or out of memory?); the finished rounds "
                         "are saved: rerun the same command to resume, with fewer --jobs if memory ran out") from None
    finally:
        if executor is not None:
            executor.shutdown(wait=finished, cancel_futures=True)
            if not finished:  # interrupted: rounds still training are dropped
                for worker in multiprocessing.active_children():
                    worker.terminate()
        save(plots=True)  # plots once (they take about a second), also when interrupted
    return results
