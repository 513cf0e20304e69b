"""Many rounds of many configurations: the reports' tables, ablations and curves.

Round r of an entry uses seed + r for its pairs and its weights (`mnistcompare-train --seed` reruns it
alone). Results are written after every round; rerunning into the same folder continues.
"""
import contextlib
import functools
import json
import os
import re
import statistics
import threading

import numpy as np
from concurrent.futures.process import BrokenProcessPool

from mnistcompare.config import MAX_SEED, Config
from mnistcompare.data import load_pairs
from mnistcompare.errors import RunError, UserError
from mnistcompare.files import finite, run_folder, write_json, write_text
from mnistcompare.progress import Progress
from mnistcompare.runtime import start_tensorflow
from mnistcompare.workers import connect, end_workers, local_pool


# -- statistics and tables ---------------------------------------------------------
def summarise(rounds):
    """Mean, sample std, min, max of each accuracy; median seconds; over a list of round records."""
    summary = {"rounds": len(rounds)}
    for key in ("test_accuracy", "train_accuracy", "test_digit_accuracy"):
        if rounds and key in rounds[0]:
            values = [r[key] for r in rounds]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary.update({f"{key}_mean": statistics.mean(values), f"{key}_std": std, f"{key}_min": min(values),
                            f"{key}_max": max(values)})
    if rounds:
        summary.update(train_seconds_median=statistics.median(r["train_seconds"] for r in rounds),
                       params=rounds[0]["params"])
    return summary


STD_KEYS = {"test_accuracy": "std", "train_accuracy": "train_std"}  # a published figure's std, by its key


def z_score(entry, key="test_accuracy"):
    """(ours - published) / max(published std, our std) of an accuracy; None without a published figure and std."""
    pub = entry.get("published") or {}
    if key not in pub or not entry.get("rounds"):
        return None
    scale = max(pub.get(STD_KEYS[key]) or 0.0, entry[f"{key}_std"])
    return (entry[f"{key}_mean"] - pub[key]) / scale if scale else None


def strict_score(entry, key="test_accuracy"):
    """The difference of the two means over its standard error, sqrt(σp²/np + σo²/no): a two-sample test
    of the means (Welch's t); None where the report gives no std or no number of rounds."""
    pub = entry.get("published") or {}
    std = pub.get(STD_KEYS[key])
    if key not in pub or std is None or not pub.get("rounds") or entry.get("rounds", 0) < 2:
        return None
    error = (std ** 2 / pub["rounds"] + entry[f"{key}_std"] ** 2 / entry["rounds"]) ** 0.5
    return (entry[f"{key}_mean"] - pub[key]) / error if error else None


def _shown(mean, std=None, errors=False):
    """An accuracy as a table shows it: to 3 decimals, or (errors) as the error in %."""
    scale, digits, mean = (100, 1, 1 - mean) if errors else (1, 3, mean)
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def score_cells(results, errors=False):
    """Every published cell beside ours: a dict per cell with its label, both values as shown, and for
    accuracies z and the strict figure (signs as shown: on errors, above means more errors)."""
    sign = -1 if errors else 1

    def value(mean, std=None, n=None):
        return _shown(mean, std, errors) + (f" (n {n})" if n else "")

    entries = [e for e in results["entries"] if e["per_round"] and e.get("published")]
    what = "error %" if errors else "accuracy"
    cells = []
    for e in entries:
        pub = e["published"]
        for key, std_key in STD_KEYS.items():
            if key in pub:
                z, strict = z_score(e, key), strict_score(e, key)
                cells.append({"cell": f"{e['name']}: {key.split('_')[0]} {what}", "kind": "accuracy",
                              "published": value(pub[key], pub.get(std_key), pub.get("rounds")),
                              "ours": value(e[f"{key}_mean"], e[f"{key}_std"], e["rounds"]),
                              "z": None if z is None else sign * z,
                              "strict": None if strict is None else sign * strict})
        if "params" in pub:
            diff = pub["params"] - e["params"]
            cells.append({"cell": f"{e['name']}: parameters", "kind": "params", "published": f"{pub['params']:,}",
                          "ours": f"{e['params']:,}", "equal": not diff, "explained": "params_note" in pub,
                          "note": "equal" if not diff else
                          f"{diff:+,}, explained by our hypothesis: {pub['params_note']}" if "params_note" in pub
                          else f"{diff:+,}: not explained"})
    timed = [e for e in entries if "seconds" in e["published"]]
    for e in timed[1:]:  # each row's time over the first timed row's, in the report and here
        ref = timed[0]
        cells.append({"cell": f"{e['name']}: time ÷ {ref['name']}'s", "kind": "time",
                      "published": f"{e['published']['seconds'] / ref['published']['seconds']:.2f}",
                      "ours": f"{e['train_seconds_median'] / ref['train_seconds_median']:.2f}"})
    return cells


def score_counts(cells, claim_lines=()):
    """How many cells are within 2 by z and by the strict figure, parameter counts equal, claims that hold."""
    def within(key):
        scored = [c[key] for c in cells if c.get(key) is not None]
        return {"cells": len(scored), "within_2": sum(abs(v) <= 2 for v in scored)}

    params = [c for c in cells if c["kind"] == "params"]
    return {"z": within("z"), "strict": within("strict"),
            "params": {"cells": len(params), "equal": sum(c["equal"] for c in params),
                       "explained": sum(not c["equal"] and c["explained"] for c in params)},
            "claims": {"claims": len(claim_lines), "hold": sum(line.startswith("✓") for line in claim_lines)}}


def markdown_table(results, study=None):
    """Ours, entry by entry; every published cell beside ours with z and the strict figure, and their counts;
    the report's claims checked; its assumptions and figures. `study.errors`: errors in %. Off the report's
    protocol (`results["off_protocol"]`): said first, with no z and no verdicts."""
    errors, off = bool(study and study.errors), results.get("off_protocol")
    value = functools.partial(_shown, errors=errors)

    def score(v):
        return "–" if off or v is None else f"{v:+.1f}"

    what = "error %" if errors else "accuracy"
    lines = [f"**Off the report's protocol** ({off}): no z and no verdicts on the report's claims.", ""] if off else []
    lines += ["<!-- --8<-- [start:tables] -->",
              f"| model | test {what} | train {what} | digit accuracy | params | s/round | rounds |",
              "|---|---|---|---|---|---|---|"]
    for e in results["entries"]:
        if e["per_round"]:
            lines.append(" | ".join([
                f"| {e['name']}", value(e["test_accuracy_mean"], e["test_accuracy_std"]),
                value(e["train_accuracy_mean"], e["train_accuracy_std"]),
                _shown(e["test_digit_accuracy_mean"], e["test_digit_accuracy_std"]) if "test_digit_accuracy_mean" in e
                else "–", f"{e['params']:,}", f"{e['train_seconds_median']:.1f}", f"{e['rounds']} |"]))
    cells = score_cells(results, errors)
    claim_lines = check_claims(results, study.claims) if study and study.claims and not off else []
    if cells:
        lines += ["", "Every published cell beside ours (n: rounds). z = (ours − published) / max(σ_published, "
                      "σ_ours); strict = (ours − published) / √(σ²_published / n_published + σ²_ours / n_ours), "
                      "the difference of the means over its standard error. Times are ratios between rows.", "",
                  "| cell | published | ours | z | strict |", "|---|---|---|---|---|"]
        for c in cells:
            last = {"accuracy": f"{score(c.get('z'))} | {score(c.get('strict'))}", "params": f"{c.get('note')} |",
                    "time": "– | –"}[c["kind"]]
            lines.append(f"| {c['cell']} | {c['published']} | {c['ours']} | {last} |")
        if not off:
            counts = score_counts(cells, claim_lines)
            parts = [f"{counts['z']['within_2']} of {counts['z']['cells']} by z",
                     f"{counts['strict']['within_2']} of {counts['strict']['cells']} by the strict figure"]
            params = counts["params"]
            lines += ["", "Within 2: " + ", ".join(parts) + (
                f"; parameter counts: {params['equal']} of {params['cells']} equal" + (
                    f", {params['explained']} explained by our hypothesis" if params["explained"] else "")
                if params["cells"] else "") + "."]
    if claim_lines:
        held = sum(line.startswith("✓") for line in claim_lines)
        lines += ["", f"Effects the report claims, and what our numbers show ({held} of {len(claim_lines)} hold "
                      "here):", ""]
        lines += [f"- {line}" for line in claim_lines]
    if study and study.assumptions:
        lines += ["", "Assumed where the report is silent:", ""] + [f"- {a}" for a in study.assumptions]
    lines.append("<!-- --8<-- [end:tables] -->")
    if study and study.figures:
        lines += ["", "The report's figures, redrawn from our rounds (mean, min–max band):", ""]
        lines += [f"![{f.number}: {f.title}]({f.file})" + "\n" for f in study.figures]
    return "\n".join(lines) + "\n"


def console_text(markdown, folder):
    """A results page as a terminal shows it: no site markers or bold marks, each picture as its file's path."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("<!-- --8<--"):
            continue
        picture = re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip())
        lines.append(f"{picture.group(1)}: {os.path.join(folder, picture.group(2))}" if picture else
                     line.replace("**", ""))
    return "\n".join(lines) + "\n"


def tables_summary(folder, names):
    """(markdown, totals): each report table's counts, from the `scores` of FOLDER/NAME/results.json (none
    off the protocol: left out), and their totals."""
    totals = {"z": {"cells": 0, "within_2": 0}, "strict": {"cells": 0, "within_2": 0},
              "params": {"cells": 0, "equal": 0, "explained": 0}, "claims": {"claims": 0, "hold": 0}}
    columns = (("z", "within_2", "cells"), ("strict", "within_2", "cells"), ("params", "equal", "cells"),
               ("params", "explained", "cells"), ("claims", "hold", "claims"))

    def row(name, scores):
        return f"| {name} | " + " | ".join(f"{scores[g][part]} of {scores[g][whole]}" if scores[g][whole] else "–"
                                           for g, part, whole in columns) + " |"

    lines = ["| table | within 2 by z | within 2 by the strict figure | parameter counts equal | "
             "parameter counts explained by our hypothesis | claims that hold |", "|---|---|---|---|---|---|"]
    for name in names:
        path = os.path.join(folder, name, "results.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            scores = json.load(f).get("scores")
        if not scores:
            continue
        for group in totals:
            for count in totals[group]:
                totals[group][count] += scores[group][count]
        lines.append(row(name, scores))
    lines.append(row("**all**", totals))
    return "\n".join(lines) + "\n", totals


def check_claims(results, claims):
    """One line per claim: ✓ (our numbers show it), ✗ (they do not), or ? (cells not measured yet)."""
    by_name = {e["name"]: e for e in results["entries"] if e["per_round"]}
    lines = []
    for claim in claims:
        checks = [_check(kind, by_name, *pair) for kind in ("better", "similar", "faster", "drop")
                  for pair in getattr(claim, kind)]
        shown = [ok for ok, _ in checks]
        mark = "?" if None in shown else "✓" if all(shown) else "✗"
        lines.append(f"{mark} {claim.text}: " + "; ".join(text for _, text in checks))
    return lines


def _check(kind, by_name, a, b, amount=None):
    """(whether it holds, how it reads) of one comparison of a claim (see reports.Claim); None if not measured."""
    if a not in by_name or b not in by_name:
        return None, f"{a} / {b}: not measured"
    ea, eb = by_name[a], by_name[b]
    if kind == "faster":
        x, y = ea["train_seconds_median"], eb["train_seconds_median"]
        return x < y, f"{a} {x:.1f} s {'<' if x < y else '>='} {b} {y:.1f} s"
    x, y = ea["test_accuracy_mean"], eb["test_accuracy_mean"]
    if kind == "drop":
        return abs((x - y) - amount) <= 0.05, f"{a} {x:.3f} → {b} {y:.3f}: {x - y:+.3f} (the report: {amount:+.2f})"
    if kind == "better":
        return x > y, f"{a} {x:.3f} {'>' if x > y else '<='} {b} {y:.3f}"
    close = abs(x - y) <= max(ea["test_accuracy_std"], eb["test_accuracy_std"])
    return close, f"{a} {x:.3f} vs {b} {y:.3f} ({'within' if close else 'beyond'} one std)"


# -- running ---------------------------------------------------------------------
def load_results(path):
    """The entries of an earlier results.json, in its order, each field read back checked (a damaged or
    edited file is one line, never a traceback later)."""
    try:
        with open(path) as f:
            entries = json.load(f)["entries"]
        if not isinstance(entries, list):
            raise ValueError("'entries' is not a list")
        for entry in entries:
            _check_entry(entry)
        return {e["name"]: dict(e, config=e["config"], per_round=list(e["per_round"])) for e in entries}
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UserError(f"{path} cannot be read to resume ({type(e).__name__}: {e}); "
                        "pass --overwrite to start again") from None


def earlier_results(entries, out, overwrite=False):
    """out/results.json's entries (none with `overwrite`); UserError if one of `entries` has another Config there."""
    path = os.path.join(out, "results.json")
    previous = load_results(path) if os.path.exists(path) and not overwrite else {}
    for entry in entries:
        old = previous.get(entry.name)
        if old and Config.from_dict(old["config"]) != entry.config:
            raise UserError(f"--out {out} holds results of {entry.name!r} with another configuration; "
                            "use another --out or pass --overwrite")
    return previous


def _check_entry(entry):
    """ValueError naming the first field of a results.json entry that a rerun could not use."""
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError("an entry without a name")
    name = entry["name"]
    if not isinstance(entry.get("config"), dict) or not isinstance(entry.get("per_round"), list):
        raise ValueError(f"entry {name!r}: no config or per_round list")
    try:
        Config.from_dict(entry["config"]).validate()
    except UserError as e:
        raise ValueError(f"entry {name!r}: {e}") from None
    for i, record in enumerate(entry["per_round"], 1):
        where = f"entry {name!r}, round {i}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: not a record")
        for key in ("test_accuracy", "train_accuracy", "train_seconds", "params", "seed", "round",
                    "test_digit_accuracy"):
            if not number(record.get(key, 0 if key == "test_digit_accuracy" else None)):
                raise ValueError(f"{where}: {key} is {record.get(key)!r}, not a number")
        history = record.get("history", {})
        if not isinstance(history, dict) or not all(
                isinstance(v, list) and all(x is None or number(x) for x in v) for v in history.values()):
            raise ValueError(f"{where}: history is not lists of numbers per metric")
        confusion = record.get("confusion", [[0] * 10] * 10)
        if not (isinstance(confusion, list) and len(confusion) == 10 and all(
                isinstance(row, list) and len(row) == 10 and all(number(x) for x in row) for row in confusion)):
            raise ValueError(f"{where}: confusion is not a 10x10 matrix")


_CACHE = None  # this process's ModelCache, made on first use
_ONE_ROUND_AT_A_TIME = threading.Lock()  # a Dask worker with several threads still trains one round at a time


def train_job(job, cache=None):
    """(metrics, history, example test pairs or None) of one round: job = (Config with the round's seed, data
    Source, whether to return the examples, a TensorBoard log folder or None)."""
    global _CACHE
    cfg, source, pictures, tensorboard = job
    with _ONE_ROUND_AT_A_TIME:
        start_tensorflow()  # in a Dask worker, one round at a time; done already in the other processes
        import keras

        from mnistcompare.training import ModelCache, Predictor, examples, fit_split, train_round
        if cache is None:
            _CACHE = cache = _CACHE or ModelCache()
        train, test = load_pairs(cfg, source)
        callbacks = [keras.callbacks.TensorBoard(tensorboard, write_graph=False)] if tensorboard else []
        model, metrics, history = train_round(cfg, train, test, model=cache.get(cfg, fit_split(cfg, train)[0]),
                                              callbacks=callbacks, verbose=0, curves=True)
        return metrics, history, examples(Predictor.of(model)(test), test) if pictures else None


def slug(name):
    """A folder name for an entry: 'CNN: sharing, aux' -> 'cnn-sharing-aux', 'two_tower' as it is."""
    return "-".join("".join(c if c.isalnum() or c == "_" else " " for c in name.lower()).split()) or "entry"


def summary_view(results, entries, rounds, off_protocol=None):
    """The requested entries, each summarised over its first `rounds` rounds (the folder may hold more)."""
    kept = {e["name"]: e["per_round"][:rounds] for e in results["entries"]}
    view = [{**e, "per_round": kept[e["name"]], **summarise(kept[e["name"]])} for e in results["entries"]]
    by_name = {e["name"]: e for e in view}
    return {"entries": [by_name[e.name] for e in entries], **({"off_protocol": off_protocol} if off_protocol else {})}


def check_entries(entries, rounds):
    """UserError for what `evaluate` cannot run: no entries or rounds, two entries of one name (a name is its
    row of results), a bad Config, a round's seed out of range."""
    names = [e.name for e in entries]
    if not entries:
        raise UserError("no entries to evaluate")
    if rounds < 1:
        raise UserError(f"--rounds: must be a positive integer, got {rounds}")
    if len(set(names)) < len(names):
        raise UserError(f"two entries named {max(names, key=names.count)!r}: a name is its row of results")
    for entry in entries:  # here, not in a worker process with the rounds started
        entry.config.validate()
    last_seed = max(e.config.seed for e in entries) + rounds - 1
    if last_seed > MAX_SEED:
        raise UserError(f"--seed: round {rounds} would use seed {last_seed}, beyond {MAX_SEED}; lower --seed or --rounds")


def evaluate(entries, rounds, out, source=None, overwrite=False, log=print, jobs=1, study=None, tensorboard=None,
             progress=True, cluster=None, off_protocol=None):
    """Train `rounds` rounds of every entry; results.json/.md after each round, the plots at the end.

    The folder keeps what it held (other entries, rounds beyond `rounds`); what is returned is the
    requested entries over their first `rounds` rounds. `study` (a reports.Study) shapes results.md;
    `off_protocol` (how a study's run differs from its report's) is said there, with no z and no verdicts.
    `tensorboard`: a log folder, one run per round. jobs=1 trains here; jobs=N in N worker processes,
    each tracing its model once, results saved in round order (processes, not threads: tracing holds
    Python's lock, and TensorFlow 2.21 fails now and then when threads run graphs at once); `cluster`,
    a Dask scheduler's address or client, sends the rounds to its workers instead (see `connect`).
    """
    check_entries(entries, rounds)
    with run_folder(out):
        return _evaluate(entries, rounds, out, source, overwrite, log, jobs, study, tensorboard, progress, cluster,
                         off_protocol)


def _evaluate(entries, rounds, out, source, overwrite, log, jobs, study, tensorboard, progress, cluster,
              off_protocol):
    from mnistcompare.plots import plot_confusion, plot_curves, plot_figure, plot_pairs, plot_rounds
    path = os.path.join(out, "results.json")
    previous = earlier_results(entries, out, overwrite)
    # the requested entries in their order (a study's), then what else the folder held
    records = {entry.name: None for entry in entries}
    records.update({name: old for name, old in previous.items() if name not in records})
    for entry in entries:
        records[entry.name] = {"name": entry.name, "arch": entry.config.arch, "published": entry.published,
                               "config": entry.config.to_dict(),
                               "per_round": previous.get(entry.name, {}).get("per_round", [])}
    results = {"entries": list(records.values()), **({"off_protocol": off_protocol} if off_protocol else {})}

    def save(plots=False):
        for record in results["entries"]:
            record.update(summarise(record["per_round"]))
        if study and not off_protocol:  # the counts a summary of all tables adds up
            cells = score_cells(results, study.errors)
            results["scores"] = score_counts(cells, check_claims(results, study.claims))
        write_json(path, results, compact=True)
        write_text(os.path.join(out, "results.md"), markdown_table(results, study))
        if plots and any(r["per_round"] for r in results["entries"]):
            plot_curves(results, os.path.join(out, "curves.png"))
            plot_rounds(results, os.path.join(out, "rounds.png"))
            for figure in study.figures if study else ():
                if figure.panels:
                    plot_figure(results, figure, os.path.join(out, figure.file))
            for record in results["entries"]:
                matrices = [r["confusion"] for r in record["per_round"] if "confusion" in r]
                if matrices:
                    os.makedirs(os.path.join(out, slug(record["name"])), exist_ok=True)
                    plot_confusion(np.sum(matrices, axis=0), os.path.join(out, slug(record["name"]), "confusion.png"),
                                   f"{record['name']}: {len(matrices)} rounds")

    todo = [(entry, r, entry.config.replace(seed=entry.config.seed + r))
            for entry in entries for r in range(len(records[entry.name]["per_round"]), rounds)]
    # the first round of an entry draws its pairs
    jobs_args = [(cfg, source, r == 0, tensorboard and os.path.join(tensorboard, slug(entry.name), f"round-{r + 1}"))
                 for entry, r, cfg in todo]
    status = Progress(len(todo), "rounds", enabled=progress)
    status.update(0)
    executor, pids, client = None, None, None
    if cluster and todo:
        client = connect(cluster) if isinstance(cluster, str) else cluster  # an address, or a caller's client
        executor = client.get_executor()  # concurrent.futures, as the local pool below
        trained = executor.map(train_job, jobs_args)
    elif jobs > 1 and todo:
        executor, pids = local_pool(min(jobs, len(todo)))
        trained = executor.map(train_job, jobs_args)
    else:  # trained here (with --jobs N, TensorFlow is never imported in this process)
        start_tensorflow()  # before Keras is imported: TensorFlow's start-up quiet
        from mnistcompare.training import ModelCache
        cache = ModelCache()  # one build and trace per configuration, not per round
        trained = (train_job(job, cache) for job in jobs_args)
    finished = False
    try:
        for count, ((entry, r, cfg), (metrics, history, pictured)) in enumerate(zip(todo, trained), 1):
            if pictured is not None:  # before the round is recorded: if it cannot be drawn, the rerun redoes it
                os.makedirs(os.path.join(out, slug(entry.name)), exist_ok=True)
                plot_pairs(pictured, os.path.join(out, slug(entry.name), "pairs.png"),
                           f"{entry.name}, round {r + 1} (seed {cfg.seed}): test pairs, mistakes first")
            # to float32's 7 significant digits, as saved (a study's file stays small); the configs stay exact
            records[entry.name]["per_round"].append(finite({"round": r, **metrics, "history": history}, digits=7))
            save()  # tables after every round: an interrupted run loses only the rounds in progress
            digits = f" digits {metrics['test_digit_accuracy']:.4f}" if "test_digit_accuracy" in metrics else ""
            status.clear()
            log(f"[{entry.name}] round {r + 1}/{rounds} (seed {cfg.seed}): test "
                f"{metrics['test_accuracy']:.4f} train {metrics['train_accuracy']:.4f}{digits}  "
                f"{metrics['train_seconds']:.1f} s")
            status.update(count)
        finished = True
    except BrokenProcessPool:
        raise RunError("a worker process ended abruptly (killed, or out of memory?); the finished rounds "
                       "are saved: rerun the same command to resume, with fewer --jobs if memory ran out") from None
    except Exception as e:
        if type(e).__name__ != "KilledWorker":  # Dask's: a round whose workers kept dying
            raise
        raise RunError(f"a round was lost with every Dask worker that tried it ({e}); the finished rounds are "
                       "saved: rerun the same command to resume") from None
    finally:
        status.clear()
        if client is not None:
            trained.close()  # its clean-up needs the client: before closing it
            executor.shutdown(wait=finished)  # not finished: the remaining rounds are cancelled
            if client is not cluster:  # connected here
                client.close()
        elif executor is not None:
            executor.shutdown(wait=finished, cancel_futures=True)
            if not finished:  # interrupted: rounds still training are dropped; only our own workers end
                end_workers(pids)
        if finished:
            save(plots=True)  # plots once (they take about a second)
        else:  # also when interrupted, but the first failure (a full disk, say) is the one reported
            with contextlib.suppress(Exception):
                save(plots=True)
    return summary_view(results, entries, rounds, off_protocol)
