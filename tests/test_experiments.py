import json
import os
import struct
import subprocess
import sys

import pytest

from mnistcompare.config import Config, UserError
from mnistcompare.experiments import STUDIES, Entry, evaluate, markdown_table, study, summarise
from mnistcompare.plots import plot_curves, plot_rounds

TINY = dict(channels=(4, 8), kernel=(3,), pool=(2, 1), hidden=(16,), head=(8,), pairs=100, test_pairs=50,
            epochs=2, batch_size=25)


def fake_round(r, test, train, seconds, epochs=3):
    return {"round": r, "test_accuracy": test, "train_accuracy": train, "train_seconds": seconds, "params": 10,
            "history": {"loss": [1.0 / (e + 1) for e in range(epochs)],
                        "test_accuracy": [test - 0.01 * (epochs - e) for e in range(epochs)]}}


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
    assert "0.948 ± 0.010 (000 Table I)" in table


def test_plots_are_valid_png(tmp_path):
    results = {"entries": [{"name": n, "per_round": [fake_round(r, 0.9 + r / 100, 0.99, 4.0 + r, epochs=3 + r)
                                                  for r in range(3)]} for n in ("a", "b")]}
    for plot, name in ((plot_curves, "curves.png"), (plot_rounds, "rounds.png")):
        plot(results, str(tmp_path / name))
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 500 and height > 200 and len(data) > 20000


def test_every_study_builds_valid_entries():
    for name in STUDIES:
        entries = study(name)
        assert entries and all(e.config.validate() for e in entries)
    assert len(study("sharing-aux")) == 8
    assert [e.name for e in study("reports")][0] == "000 siamese"
    with pytest.raises(UserError, match="unknown study"):
        study("nope")


def test_rounds_resume_without_duplicates(idx_dir, tmp_path):
    entries = [Entry("tiny", Config(**TINY).validate())]
    out = str(tmp_path / "eval")
    os.makedirs(out)
    lines = []
    first = evaluate(entries, 1, out, idx_dir=str(idx_dir), log=lines.append)
    assert [r["round"] for r in first["entries"][0]["per_round"]] == [0]
    # Rerunning with more rounds trains only the missing ones, with seed + r.
    lines.clear()
    second = evaluate(entries, 3, out, idx_dir=str(idx_dir), log=lines.append)
    rounds = second["entries"][0]["per_round"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and [r["seed"] for r in rounds] == [0, 1, 2]
    assert rounds[0] == first["entries"][0]["per_round"][0]
    assert len(lines) == 2
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["entries"][0]["per_round"] == rounds and saved["entries"][0]["rounds"] == 3 and saved["entries"][0]["test_accuracy_std"] >= 0
    assert len(rounds[0]["history"]["test_accuracy"]) == 2
    # A different configuration in the same folder is refused, unless overwriting.
    other = [Entry("tiny", Config(**{**TINY, "lr": 0.01}).validate())]
    with pytest.raises(UserError, match="another configuration"):
        evaluate(other, 3, out, idx_dir=str(idx_dir), log=lines.append)
    assert len(evaluate(other, 1, out, idx_dir=str(idx_dir), overwrite=True, log=lines.append)
               ["entries"][0]["per_round"]) == 1


def test_rounds_in_worker_processes_give_the_numbers_of_rounds_in_this_one(idx_dir, tmp_path):
    # CLI processes, so that --jobs 1 runs ops on one thread as the workers do.
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = _evaluate("--preset", "report000-siamese", "--pairs", "100", "--test-pairs", "50", "--epochs", "2",
                           "--batch-size", "20", "--swap", "--rounds", "3", "--jobs", str(jobs),
                           "--idx-dir", str(idx_dir), "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        assert [line.split(" round ")[1][:3] for line in result.stdout.splitlines() if " round " in line] == \
            ["1/3", "2/3", "3/3"]  # logged in round order
        entry = json.loads((out / "results.json").read_text())["entries"][0]
        runs[jobs] = [(r["round"], r["test_accuracy"], r["history"]["loss"]) for r in entry["per_round"]]
    assert runs[2] == runs[1]


def test_a_killed_worker_ends_evaluate_with_one_line_and_keeps_finished_rounds(idx_dir, tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    code = "import sys; from mnistcompare.cli import evaluate_main; evaluate_main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--arch", "siamese", "--channels", "4,8", "--kernel", "3",
                             "--pool", "2,1", "--hidden", "16", "--pairs", "100", "--test-pairs", "50",
                             "--epochs", "30", "--batch-size", "25", "--rounds", "8", "--jobs", "2",
                             "--idx-dir", str(idx_dir), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "results.json").exists() or not _rounds(out):  # a round has finished
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.2)
        workers = [int(pid) for pid in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
                   if "resource_tracker" not in open(f"/proc/{pid}/cmdline").read()]
        os.kill(workers[0], signal.SIGKILL)  # as the kernel does when memory runs out
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    assert len(stderr.strip().splitlines()) == 1 and "worker process ended abruptly" in stderr
    assert 1 <= _rounds(out) < 8


def _running(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _rounds(out):
    try:
        return len(json.loads((out / "results.json").read_text())["entries"][0]["per_round"])
    except (OSError, ValueError):
        return 0  # not written yet


def _evaluate(*args, timeout=900):
    code = "import sys; from mnistcompare.cli import evaluate_main; sys.argv[0] = 'mnistcompare-evaluate'; " \
           "evaluate_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--study", "nope"], "unknown study"), (["--rounds", "0"], "--rounds"), (["--arch", "siamese,nope"], "--arch"),
    (["--jobs", "0"], "--jobs"),
    (["--study", "reports", "--epochs", "0"], "--epochs"), (["--study", "reports", "--preset", "report000-siamese"],
                                                            "not both")])
def test_evaluate_user_mistakes(args, message, tmp_path):
    result = _evaluate(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_two_archs_on_real_mnist(mnist_dir, tmp_path):
    out = tmp_path / "eval"
    result = _evaluate("--arch", "siamese,baseline", "--rounds", "2", "--epochs", "2", "--data-dir", mnist_dir,
                       "--out", str(out))
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
    for png in ("curves.png", "rounds.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_killed_and_rerun_has_every_round_once(idx_dir, tmp_path):
    import signal
    import time

    out = tmp_path / "eval"
    args = ["--arch", "siamese,digits", "--idx-dir", str(idx_dir), "--rounds", "3", *[
        f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items()],
        "--epochs", "4", "--out", str(out)]
    code = "import sys; from mnistcompare.cli import evaluate_main; sys.argv[0] = 'mnistcompare-evaluate'; " \
           "evaluate_main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def done():
        try:
            return sum(e["rounds"] for e in json.loads((out / "results.json").read_text())["entries"])
        except (OSError, ValueError):
            return 0
    deadline = time.time() + 300
    while done() < 2:
        assert proc.poll() is None and time.time() < deadline, "finished before it could be killed"
        time.sleep(0.1)
    workers = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = done()
    assert 2 <= before < 6
    deadline = time.time() + 30  # the worker processes end with it
    while any(_running(pid) for pid in workers):
        assert time.time() < deadline, "worker processes outlived the killed evaluate"
        time.sleep(0.1)

    result = _evaluate(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads((out / "results.json").read_text())["entries"]
    for e in entries:
        assert [r["round"] for r in e["per_round"]] == [0, 1, 2]
        assert [r["seed"] for r in e["per_round"]] == [0, 1, 2]
    assert result.stdout.count("] round ") == 6 - before  # only the missing rounds were trained


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"entries": [{"name": "tiny"}]}', '{"entries": 3}'])
def test_unreadable_results_file_is_one_clear_error(text, tmp_path):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(UserError, match="cannot be read to resume.*--overwrite"):
        evaluate([Entry("tiny", Config(**TINY).validate())], 1, str(tmp_path))
