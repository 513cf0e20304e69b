"""Many rounds of many configurations: the reports' tables, ablations and curves.

Round r of an entry uses seed + r for both its pair sample and its weights,
so any round can be rerun alone with `mnistcompare-train --seed`. Results are
written atomically after every round; rerunning into the same folder
continues with the rounds that are missing.
"""
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mnistcompare.config import MAX_SEED, Config, RunError, UserError
from mnistcompare.files import write_json, write_text


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
    """The entries of an earlier results.json, in its order, to resume from and to keep."""
    try:
        with open(path) as f:
            entries = json.load(f)["entries"]
        return {e["name"]: dict(e, config=e["config"], per_round=list(e["per_round"])) for e in entries}
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UserError(f"{path} cannot be read to resume ({type(e).__name__}: {e}); "
                        "pass --overwrite to start again") from None


_CACHE = None  # a worker process's ModelCache


def _start_worker(pids):
    """A process that trains rounds for `evaluate --jobs`: TensorFlow started as every command starts
    it, Ctrl-C left to the parent, which ends the workers; its pid reported so that the parent ends
    exactly its own workers."""
    global _CACHE
    from mnistcompare.runtime import start_tensorflow

    pids.put(os.getpid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Ends with the parent even when the parent is killed (SIGKILL): nothing else would end it.
    parent = multiprocessing.parent_process()
    threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    start_tensorflow()
    from mnistcompare.training import ModelCache

    _CACHE = ModelCache()


def train_job(job, cache=None):
    """(metrics, history) of one round: job = (Config with the round's seed, data Source)."""
    from mnistcompare.data import load_pairs
    from mnistcompare.training import train_round

    cfg, source = job
    train, test = load_pairs(cfg, source)
    _, metrics, history = train_round(cfg, train, test, verbose=0, curves=True, cache=cache or _CACHE)
    return metrics, history


def summary_view(results, entries, rounds):
    """The requested entries, each summarised over its first `rounds` rounds (what was asked for;
    the folder may hold more)."""
    by_name = {e["name"]: e for e in results["entries"]}
    view = []
    for entry in entries:
        record = dict(by_name[entry.name], per_round=by_name[entry.name]["per_round"][:rounds])
        view.append({**record, **summarise(record["per_round"])})
    return {"entries": view}


def evaluate(entries, rounds, out, source=None, overwrite=False, log=print, jobs=1):
    """Train `rounds` rounds of every entry; results.json/.md after each round, the plots at the end.

    The folder keeps everything it holds: entries evaluated there before and
    rounds beyond `rounds` stay in results.json (which, with results.md and the
    plots, describes the whole folder); what is returned, and printed, is the
    requested entries over their first `rounds` rounds. jobs=1 trains in this
    process. jobs=N>1 trains N rounds side by side, in N worker processes
    (TensorFlow is not imported here then): each traces its own model once and
    trains the rounds it is given; results come back, and are saved, in round
    order. Processes, not threads: tracing holds Python's lock, and TensorFlow
    2.21 fails now and then ("Container __per_step_0 does not exist") when
    threads run graphs at once.
    """
    from mnistcompare.files import FolderLock

    last_seed = max(e.config.seed for e in entries) + rounds - 1
    if last_seed > MAX_SEED:
        raise UserError(f"--seed: round {rounds} would use seed {last_seed}, beyond {MAX_SEED}; lower --seed or --rounds")
    os.makedirs(out, exist_ok=True)
    with FolderLock(out):
        return _evaluate(entries, rounds, out, source, overwrite, log, jobs)


def _evaluate(entries, rounds, out, source, overwrite, log, jobs):
    from mnistcompare.plots import plot_curves, plot_rounds

    path = os.path.join(out, "results.json")
    previous = load_results(path) if os.path.exists(path) and not overwrite else {}
    for entry in entries:
        old = previous.get(entry.name)
        if old and Config.from_dict(old["config"]) != entry.config:
            raise UserError(f"--out {out} holds results of {entry.name!r} with another configuration; "
                            "use another --out or pass --overwrite")
    records = {name: old for name, old in previous.items()}  # earlier entries first, in their order
    for entry in entries:
        records[entry.name] = {"name": entry.name, "arch": entry.config.arch, "published": entry.published,
                               "config": entry.config.to_dict(),
                               "per_round": previous.get(entry.name, {}).get("per_round", [])}
    results = {"entries": list(records.values())}

    def save(plots=False):
        for record in results["entries"]:
            record.update(summarise(record["per_round"]))
        write_json(path, results)
        write_text(os.path.join(out, "results.md"), markdown_table(results))
        if plots and any(r["per_round"] for r in results["entries"]):
            plot_curves(results, os.path.join(out, "curves.png"))
            plot_rounds(results, os.path.join(out, "rounds.png"))

    todo = [(entry, r, entry.config.replace(seed=entry.config.seed + r))
            for entry in entries for r in range(len(records[entry.name]["per_round"]), rounds)]
    executor, pids = None, None
    if jobs > 1 and todo:
        context = multiprocessing.get_context("spawn")
        pids = context.SimpleQueue()
        executor = ProcessPoolExecutor(min(jobs, len(todo)), context, initializer=_start_worker, initargs=(pids,))
        done = executor.map(train_job, [(cfg, source) for _, _, cfg in todo])
    else:
        from mnistcompare.training import ModelCache

        cache = ModelCache()  # one build and trace per configuration, not per round
        done = (train_job((cfg, source), cache) for _, _, cfg in todo)
    finished = False
    try:
        for (entry, r, cfg), (metrics, history) in zip(todo, done):
            records[entry.name]["per_round"].append({"round": r, **metrics, "history": history})
            save()  # tables after every round: an interrupted run loses only the rounds in progress
            digits = f" digits {metrics['test_digit_accuracy']:.4f}" if "test_digit_accuracy" in metrics else ""
            log(f"[{entry.name}] round {r + 1}/{rounds} (seed {cfg.seed}): test "
                f"{metrics['test_accuracy']:.4f} train {metrics['train_accuracy']:.4f}{digits}  "
                f"{metrics['train_seconds']:.1f} s")
        finished = True
    except BrokenProcessPool:
        raise RunError("a worker process ended abruptly (killed, or out of memory?); the finished rounds "
                       "are saved: rerun the same command to resume, with fewer --jobs if memory ran out") from None
    finally:
        if executor is not None:
            executor.shutdown(wait=finished, cancel_futures=True)
            if not finished:  # interrupted: rounds still training are dropped; only our own workers end
                while not pids.empty():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pids.get(), signal.SIGTERM)
        save(plots=True)  # plots once (they take about a second), also when interrupted
    return summary_view(results, entries, rounds)
