"""Many rounds: statistics, tables, plots, resuming, worker processes, nothing finished ever lost."""
import json
import os
import signal
import struct
import time

import pytest

from helpers import SMALL, children, event_tags, one_line, running, start, wait_for
from mnistcompare.config import Config
from mnistcompare.errors import UserError
from mnistcompare.data import find_source
from mnistcompare.experiments import evaluate, markdown_table, summarise
from mnistcompare.plots import plot_curves, plot_rounds
from mnistcompare.reports import STUDIES, Entry, study

TINY = dict(SMALL, pairs=100, test_pairs=50, epochs=2, batch_size=25)
TINY_FLAGS = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
              for k, v in TINY.items()]


def fake_round(r, test, train, seconds, epochs=3):
    return {"round": r, "test_accuracy": test, "train_accuracy": train, "train_seconds": seconds, "params": 10,
            "history": {"loss": [1.0 / (e + 1) for e in range(epochs)],
                        "test_compare_loss": [0.5 / (e + 1) for e in range(epochs)],
                        "test_accuracy": [test - 0.01 * (epochs - e) for e in range(epochs)]}}


def rounds_in(out, entry=0):
    try:
        return len(json.loads((out / "results.json").read_text())["entries"][entry]["per_round"])
    except (OSError, ValueError, IndexError):
        return 0  # not written yet


def test_summary_statistics_on_hand_made_rounds():
    rounds = [fake_round(0, 0.90, 0.99, 3.0), fake_round(1, 0.94, 1.0, 5.0), fake_round(2, 0.92, 0.98, 100.0)]
    s = summarise(rounds)
    assert s["rounds"] == 3
    assert s["test_accuracy_mean"] == pytest.approx(0.92)
    assert s["test_accuracy_std"] == pytest.approx(0.02)  # sample std (n - 1)
    assert (s["test_accuracy_min"], s["test_accuracy_max"]) == (0.90, 0.94)
    assert s["train_accuracy_mean"] == pytest.approx(0.99)
    assert s["train_seconds_median"] == 5.0  # the median ignores the slow outlier
    assert "test_digit_accuracy_mean" not in s
    assert summarise(rounds[:1])["test_accuracy_std"] == 0.0


def test_markdown_table_has_ours_and_the_published_figure():
    entry = {"name": "000 siamese", "published": {"test_accuracy": 0.948, "std": 0.010, "source": "000 Table I"},
             "per_round": [fake_round(0, 0.93, 0.99, 5.0), fake_round(1, 0.95, 0.99, 6.0)]}
    entry.update(summarise(entry["per_round"]))
    table = markdown_table({"entries": [entry]})
    assert "| 000 siamese | 0.940 ± 0.014 |" in table
    assert "| 000 siamese: test accuracy | 0.948 ± 0.010 | 0.940 ± 0.014 (n 2) | -0.6 | – |" in table


def test_a_study_off_its_protocol_says_so_and_gives_no_z_and_no_verdicts():
    from mnistcompare.cli import evaluate_parser, off_protocol
    from mnistcompare.reports import study

    table1 = study("report000-table1")
    args = evaluate_parser().parse_args(["--study", "report000-table1", "--rounds", "2", "--epochs", "3",
                                         "--seed", "5"])
    off = off_protocol(args, table1, table1.rounds)
    assert off == "epochs 3, report 25; rounds 2, report 15"  # another seed is the same protocol
    same = evaluate_parser().parse_args(["--study", "report000-table1", "--seed", "5", "--rounds", "20"])
    assert off_protocol(same, table1, table1.rounds) is None
    entries = []
    for name in ("Siamese", "Baseline"):
        entry = {"name": name, "published": {"test_accuracy": 0.948, "std": 0.010, "source": "000 Table I"},
                 "per_round": [fake_round(0, 0.80, 0.99, 5.0), fake_round(1, 0.82, 0.99, 6.0)]}
        entries.append({**entry, **summarise(entry["per_round"])})
    on, away = (markdown_table({"entries": entries, **extra}, table1) for extra in ({}, {"off_protocol": off}))
    assert "Effects the report claims" in on and "| -9.8 |" in on
    assert away.startswith(f"**Off the report's protocol** ({off})")
    assert "Effects the report claims" not in away and "-9.8" not in away and "| – |" in away


def test_plots_are_valid_png(tmp_path, tiny_pairs):
    import numpy as np

    from mnistcompare.plots import plot_confusion, plot_pairs
    from mnistcompare.training import examples

    results = {"entries": [{"name": n, "per_round": [fake_round(r, 0.9 + r / 100, 0.99, 4.0 + r, epochs=3 + r)
                                                  for r in range(3)]} for n in ("a", "b")]}
    train, _ = tiny_pairs
    rng = np.random.default_rng(0)
    out = {"compare": rng.random((len(train), 1)), "digit_a": rng.random((len(train), 10)),
           "digit_b": rng.random((len(train), 10))}
    shown = examples(out, train)
    wrong = (shown["p"] > 0.5) != (shown["target"] > 0.5)
    assert len(shown["p"]) == 30 and wrong[:wrong.sum()].all()  # the mistakes come first
    for plot, name in ((plot_curves, "curves.png"), (plot_rounds, "rounds.png"),
                       (lambda _, path: plot_pairs(shown, path, "pairs"), "pairs.png"),
                       (lambda _, path: plot_confusion(np.eye(10, dtype=int) * 50 + 1, path, "confusion"),
                        "confusion.png")):
        plot(results, str(tmp_path / name))
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 500 and height > 200 and len(data) > 20000


def test_plots_leave_matplotlib_alone(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    import mnistcompare.plots  # noqa: F401

    plot_rounds({"entries": [{"name": "a", "per_round": [fake_round(0, 0.9, 0.99, 4.0)]}]}, str(tmp_path / "r.png"))
    assert matplotlib.get_backend() == backend


def test_every_study_builds_valid_entries():
    for name in STUDIES:
        entries = study(name).entries()
        assert entries and all(e.config.validate() for e in entries)
    assert len(study("sharing-aux").entries()) == 9
    assert [e.name for e in study("reports").entries()][0] == "000 siamese (Appendix A)"
    with pytest.raises(UserError, match="unknown study"):
        study("nope")


@pytest.mark.slow
def test_rounds_resume_without_duplicates_and_nothing_finished_is_lost(idx_dir, tmp_path):
    source = find_source(idx_dir=str(idx_dir))
    tiny = [Entry("tiny", Config(**TINY).validate())]
    out = str(tmp_path / "eval")
    lines = []
    first = evaluate(tiny, 1, out, source, log=lines.append)
    assert [r["round"] for r in first["entries"][0]["per_round"]] == [0]
    # Rerunning with more rounds trains only the missing ones, with seed + r.
    lines.clear()
    second = evaluate(tiny, 3, out, source, log=lines.append)
    rounds = second["entries"][0]["per_round"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and [r["seed"] for r in rounds] == [0, 1, 2]
    assert rounds[0] == first["entries"][0]["per_round"][0]
    assert len(lines) == 2
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["entries"][0]["per_round"] == rounds and saved["entries"][0]["rounds"] == 3
    assert len(rounds[0]["history"]["test_accuracy"]) == 2

    # Fewer rounds, or another entry, into the same folder: reported on, nothing deleted.
    fewer = evaluate(tiny, 2, out, source, log=lines.append)
    assert fewer["entries"][0]["rounds"] == 2 and len(lines) == 2  # nothing trained
    other = [Entry("other", Config(**TINY, lr=0.01).validate())]
    evaluate(other, 1, out, source, log=lines.append)
    saved = json.load(open(os.path.join(out, "results.json")))
    # the entries asked for first, in their order (a study's table in the study's order), then the others
    assert [(e["name"], e["rounds"]) for e in saved["entries"]] == [("other", 1), ("tiny", 3)]

    # A different configuration under the same name is refused, unless overwriting.
    changed = [Entry("tiny", Config(**{**TINY, "lr": 0.01}).validate())]
    with pytest.raises(UserError, match="another configuration"):
        evaluate(changed, 3, out, source, log=lines.append)
    assert len(evaluate(changed, 1, out, source, overwrite=True, log=lines.append)["entries"][0]["per_round"]) == 1


def test_a_diverging_round_ends_the_evaluation_and_results_stay_strict_json(idx_dir, tmp_path):
    from mnistcompare.errors import RunError

    source = find_source(idx_dir=str(idx_dir))
    fine = Entry("fine", Config(**TINY).validate())
    diverging = Entry("diverging", Config(**TINY, lr=1e9, batch_norm=False).validate())
    with pytest.raises(RunError, match="diverged"):
        evaluate([fine, diverging], 1, str(tmp_path), source, log=lambda line: None)
    saved = json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert [(e["name"], e["rounds"]) for e in saved["entries"]] == [("fine", 1), ("diverging", 0)]


@pytest.mark.slow
def test_an_interrupted_evaluation_ends_its_own_workers_and_no_other_process(idx_dir, tmp_path):
    import multiprocessing

    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(120,))
    bystander.start()  # a child of this process that evaluate did not start

    before, workers = set(multiprocessing.active_children()), set()

    def interrupt(line):  # as Ctrl-C would, once a round has finished
        workers.update(set(multiprocessing.active_children()) - before)
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            evaluate([Entry("tiny", Config(**TINY).validate())], 4, str(tmp_path), find_source(idx_dir=str(idx_dir)),
                     log=interrupt, jobs=2)
        assert workers
        wait_for(lambda: not any(w.is_alive() for w in workers), timeout=30, what="evaluate's workers to end")
        assert bystander.is_alive()
    finally:
        bystander.kill()


def test_progress_shows_done_total_and_time_left_on_a_terminal_only():
    import io

    from mnistcompare.experiments import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown = Terminal()
    progress = Progress(4, "rounds", stream=shown)
    progress.start -= 30  # 30 s ago
    progress.update(1)
    assert "[1/4 rounds, 30s elapsed, about 1m30s left]" in shown.getvalue()
    for stream, enabled in ((io.StringIO(), True), (Terminal(), False)):  # a file, or --quiet: nothing
        Progress(4, "rounds", enabled=enabled, stream=stream).update(1)
        assert stream.getvalue() == ""


def test_usable_cpus_count_the_affinity_and_a_cgroup_quota(monkeypatch):
    import builtins

    from mnistcompare.runtime import available_cpus

    assert available_cpus() <= len(os.sched_getaffinity(0))
    real_open = builtins.open

    def cgroup(path, *args, **kwargs):
        if path == "/sys/fs/cgroup/cpu.max":
            import io
            return io.StringIO("100000 100000\n")  # a quota of one CPU
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", cgroup)
    assert available_cpus() == 1


def test_seeds_beyond_32_bits_are_refused_before_training(tmp_path):
    with pytest.raises(UserError, match="--seed: round 2 would use seed 4294967296"):
        evaluate([Entry("tiny", Config(**TINY, seed=2 ** 32 - 1).validate())], 2, str(tmp_path))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"entries": [{"name": "tiny"}]}', '{"entries": 3}'])
def test_unreadable_results_file_is_one_clear_error(text, tmp_path):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(UserError, match="cannot be read to resume.*--overwrite"):
        evaluate([Entry("tiny", Config(**TINY).validate())], 1, str(tmp_path))


@pytest.mark.slow
def test_rounds_in_worker_processes_give_the_numbers_of_rounds_in_this_one(idx_dir, tmp_path, main):
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = main("evaluate", "--preset", "report000-siamese", "--pairs", "100", "--test-pairs", "50",
                      "--epochs", "2", "--batch-size", "20", "--swap", "--rounds", "2", "--jobs", jobs,
                      "--idx-dir", idx_dir, "--out", out, "--tensorboard", tmp_path / f"tb{jobs}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert [line.split(" round ")[1][:3] for line in result.stdout.splitlines() if " round " in line] == \
            ["1/2", "2/2"]  # logged in round order
        entry = json.loads((out / "results.json").read_text())["entries"][0]
        runs[jobs] = [(r["round"], r["test_accuracy"], r["history"]["loss"]) for r in entry["per_round"]]
    assert runs[2] == runs[1]
    tags = event_tags(tmp_path / "tb2")  # one TensorBoard run per round
    assert sorted(tags) == [f"report000-siamese/round-{r}/{run}" for r in (1, 2) for run in ("test", "train")]
    assert all("epoch_loss" in t for name, t in tags.items() if name.endswith("train"))
    assert all("epoch_compare_accuracy" in t for t in tags.values())


@pytest.mark.slow
def test_a_killed_worker_ends_evaluate_with_one_line_and_keeps_finished_rounds(idx_dir, tmp_path):
    out = tmp_path / "out"
    proc = start("evaluate", "--arch", "mlp", *TINY_FLAGS, "--epochs", "30", "--rounds", "8", "--jobs", "2",
                 "--idx-dir", idx_dir, "--out", out)
    try:
        wait_for(lambda: rounds_in(out) > 0, proc, what="a finished round")
        workers = [pid for pid in children(proc.pid) if "resource_tracker" not in open(f"/proc/{pid}/cmdline").read()]
        os.kill(workers[0], signal.SIGKILL)  # as the kernel does when memory runs out
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    assert len(stderr.strip().splitlines()) == 1 and "worker process ended abruptly" in stderr
    assert 1 <= rounds_in(out) < 8
    assert all(not running(pid) for pid in workers)


@pytest.mark.parametrize("args, message", [
    (["--study", "nope"], "unknown study"), (["--rounds", "0"], "--rounds"), (["--arch", "siamese,nope"], "--arch"),
    (["--jobs", "0"], "--jobs"), (["--study", "reports", "--epochs", "0"], "--epochs"),
    (["--study", "reports", "--preset", "report000-siamese"], "not both"),
    (["--seed", "4294967295", "--rounds", "2"], "--seed: round 2"), (["--arch", "mlp,mlp"], "two entries named 'mlp'")])
def test_evaluate_user_mistakes(args, message, tmp_path, idx_dir, cli):
    assert message in one_line(cli("evaluate", *args, "--idx-dir", idx_dir, "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_two_evaluations_of_one_folder_at_once_the_second_is_refused(idx_dir, tmp_path, cli):
    out = tmp_path / "eval"
    first = start("evaluate", "--arch", "mlp", *TINY_FLAGS, "--epochs", "40", "--rounds", "3", "--jobs", "1",
                  "--idx-dir", idx_dir, "--out", out)
    try:
        wait_for(lambda: (out / ".lock").exists() and (out / ".lock").stat().st_size > 0, first, what="the lock")
        second = cli("evaluate", "--arch", "baseline", *TINY_FLAGS, "--rounds", "1", "--jobs", "1",
                     "--idx-dir", idx_dir, "--out", out)
        assert "is in use by pid" in one_line(second)
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_evaluate_two_archs_on_real_mnist(mnist_dir, tmp_path, main):
    out = tmp_path / "eval"
    result = main("evaluate", "--arch", "siamese,baseline", "--rounds", "2", "--epochs", "2", "--data-dir", mnist_dir,
                  "--jobs", "1", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("] round ") == 4
    results = json.loads((out / "results.json").read_text())
    names = [e["name"] for e in results["entries"]]
    assert names == ["siamese", "baseline"]
    for e in results["entries"]:
        assert e["rounds"] == len(e["per_round"]) == 2
        for key in ("test_accuracy_mean", "test_accuracy_std", "train_accuracy_mean", "train_accuracy_std",
                    "params", "train_seconds_median", "config"):
            assert key in e
        assert e["test_accuracy_mean"] > 0.6  # two epochs already beat the 55 % majority class
    assert "| siamese |" in (out / "results.md").read_text()
    for png in ("curves.png", "rounds.png", "siamese/pairs.png", "siamese/confusion.png", "baseline/pairs.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    assert not (out / "baseline" / "confusion.png").exists()  # no digit heads, no digit confusion
    history = results["entries"][1]["per_round"][0]["history"]  # one curve every architecture has
    assert {"test_accuracy", "test_compare_loss", "compare_accuracy"} <= set(history)


@pytest.mark.slow
def test_evaluate_killed_and_rerun_has_every_round_once(idx_dir, tmp_path, main):
    out = tmp_path / "eval"
    args = ["--arch", "siamese,digits", "--idx-dir", idx_dir, "--rounds", "3", *TINY_FLAGS, "--epochs", "4",
            "--out", out]
    proc = start("evaluate", *args)

    def done():
        try:
            return sum(e["rounds"] for e in json.loads((out / "results.json").read_text())["entries"])
        except (OSError, ValueError):
            return 0
    wait_for(lambda: done() >= 2, proc, what="two finished rounds")
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = done()
    assert 2 <= before < 6
    deadline = time.time() + 30  # the worker processes end with it
    while any(running(pid) for pid in workers):
        assert time.time() < deadline, "worker processes outlived the killed evaluate"
        time.sleep(0.1)

    result = main("evaluate", *args, "--jobs", "1")  # resumed by one process
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads((out / "results.json").read_text())["entries"]
    for e in entries:
        assert [r["round"] for r in e["per_round"]] == [0, 1, 2]
        assert [r["seed"] for r in e["per_round"]] == [0, 1, 2]
    assert result.stdout.count("] round ") == 6 - before  # only the missing rounds were trained


def test_op_threads_are_a_share_of_the_cores_plus_one():
    from mnistcompare.runtime import op_threads

    assert [op_threads(n, cpus=2) for n in (1, 2, 3)] == [3, 2, 2]
    assert [op_threads(n, cpus=8) for n in (1, 2, 4, 8)] == [9, 5, 3, 2]


@pytest.mark.slow
@pytest.mark.parametrize("user, rounds_at_once, own", [({}, 1, False), ({}, 2, True), (
    {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTEROP_THREADS": "5"}, 1, True)])
def test_each_process_runs_onednn_and_gets_its_share_of_the_cores_unless_the_user_says_otherwise(user,
                                                                                              rounds_at_once, own):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS")}
    # own: a process of the package's own (a command, a worker), where TensorFlow's import is frozen, not
    # collected; imported as a library, the user's garbage collector is left as it was
    code = ("import gc\n"
            "from mnistcompare.runtime import available_cpus, own_process, start_tensorflow\n"
            f"{'own_process()' if own else ''}\n"
            f"start_tensorflow(rounds_at_once={rounds_at_once})\n"
            "start_tensorflow(rounds_at_once=7)  # a later start keeps the first one's threads\n"
            "import tensorflow as tf\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled(), available_cpus(),\n"
            "      tf.config.threading.get_inter_op_parallelism_threads(),\n"
            "      tf.config.threading.get_intra_op_parallelism_threads(), gc.isenabled(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], env={**env, **user}, capture_output=True, text=True,
                         check=True)
    onednn, cpus, inter, intra, collecting, frozen = out.stdout.split()
    assert collecting == "True" and (int(frozen) > 100_000 if own else int(frozen) == 0)
    assert onednn == str("TF_ENABLE_ONEDNN_OPTS" not in user)
    # 0: TensorFlow's own choice, which reads the user's TF_NUM_INTEROP_THREADS
    assert int(inter) == (0 if user else max(1, int(cpus) // rounds_at_once) + 1)
    assert int(intra) == 1


def test_the_console_shows_a_results_page_as_plain_text():
    from mnistcompare.experiments import console_text

    page = ("**Off the report's protocol** (epochs 3): no z.\n\n<!-- --8<-- [start:tables] -->\n| a | b |\n"
            "<!-- --8<-- [end:tables] -->\n\n![Fig. 1: accuracy](figure-1.png)\n")
    text = console_text(page, "runs/t")
    assert "<!--" not in text and "**" not in text and "](" not in text
    assert "Off the report's protocol (epochs 3)" in text and "| a | b |" in text
    assert "Fig. 1: accuracy: runs/t/figure-1.png" in text
