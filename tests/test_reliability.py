"""Interrupted runs resume, user mistakes are one line, same seed same result, parsers never crash."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_idx
from mnistcompare.cli import config_from_args, entries_from_args, evaluate_parser, train_parser
from mnistcompare.config import UserError
from tuning.cli import tune_parser
from tuning.grid import parse_grid

TINY = ["--channels", "4", "--kernel", "3", "--pool", "2", "--hidden", "16", "--head", "8", "--pairs", "150",
        "--test-pairs", "50", "--batch-size", "10"]


def train(*args, wait=True, timeout=600):
    command = [sys.executable, "-m", "mnistcompare.cli", *args]
    if not wait:  # SIGINT restored: a shell starting the tests in the background leaves it ignored
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def history_rows(out):
    path = out / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def interrupt_after(proc, out, rows, sig):
    deadline = time.time() + 300
    while len(history_rows(out)) < rows:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(sig)
    return proc.wait(timeout=120)


def test_sigkill_then_rerun_resumes_with_the_full_history(idx_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--idx-dir", str(idx_dir), *TINY, "--epochs", "60", "--quiet", "--out", str(out)]
    interrupt_after(train(*args, wait=False), out, 3, signal.SIGKILL)
    done = len(history_rows(out))
    assert 3 <= done < 60 and not (out / "metrics.json").exists()

    other = train(*args[:-2], "--lr", "0.01", "--out", str(out))  # another config may not mix in
    assert other.returncode == 2 and "another configuration" in other.stderr

    result = train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout
    assert [int(r["epoch"]) for r in history_rows(out)] == list(range(60))
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 60


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(idx_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--idx-dir", str(idx_dir), *TINY, "--epochs", "60", "--quiet", "--out", str(out)]
    proc = train(*args, wait=False)
    assert interrupt_after(proc, out, 2, signal.SIGINT) == 130
    stderr = proc.stderr.read()
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "config.json").read_text())["epochs"] == 60


def test_same_seed_same_metrics_other_seed_other_metrics(idx_dir, tmp_path):
    runs = [train("--idx-dir", str(idx_dir), *TINY, "--epochs", "3", "--dropout", "0.3", "--swap", "--shift", "1",
                  "--seed", str(seed), "--quiet", "--out", str(tmp_path / name)) for seed, name in
            ((5, "a"), (5, "b"), (6, "c"))]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    a, b, c = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "abc")
    keys = ("test_accuracy", "train_accuracy", "test_digit_accuracy")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert (tmp_path / "a" / "history.csv").read_text() != (tmp_path / "c" / "history.csv").read_text() or \
        [a[k] for k in keys] != [c[k] for k in keys]


def test_data_and_output_mistakes_are_one_line_and_write_nothing(idx_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(idx_dir):
        (broken / name).write_bytes((idx_dir / name).read_bytes())
    write_idx(broken / "t10k-labels-idx1-ubyte", [[1, 2], [3, 4]])  # wrong number of dimensions
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for name in os.listdir(idx_dir):
        data = (idx_dir / name).read_bytes()
        (truncated / name).write_bytes(data if "t10k-images" not in name else data[:-50])
    missing = tmp_path / "missing"
    missing.mkdir()
    for name in os.listdir(idx_dir):
        if not name.startswith("train-labels"):
            (missing / name).write_bytes((idx_dir / name).read_bytes())
    cases = [
        (["--idx-dir", str(idx_dir), "--out", str(blocker / "sub")], "--out"),
        (["--idx-dir", str(idx_dir), "--out", str(blocker)], "not a folder"),
        (["--idx-dir", str(broken), "--out", str(tmp_path / "o1")], "not an IDX file of 1 dimensions"),
        (["--idx-dir", str(truncated), "--out", str(tmp_path / "o2")], "truncated or corrupt"),
        (["--idx-dir", str(missing), "--out", str(tmp_path / "o3")], "missing train-labels-idx1-ubyte"),
        (["--data-dir", str(tmp_path), "--out", str(tmp_path / "o4")], "holds no mnist/"),
        (["--idx-dir", str(idx_dir), "--pairs", "300", "--out", str(tmp_path / "o5")], "300 pairs need 600 images"),
    ]
    for args, message in cases:
        result = train(*args, "--pairs", "100", "--test-pairs", "50") if "--pairs" not in args else train(*args)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


FLAGS = ["--arch", "--preset", "--config", "--epochs", "--batch-size", "--lr", "--alpha", "--pairs", "--seed",
         "--channels", "--kernel", "--padding", "--pool", "--hidden", "--dropout", "--combine", "--swap",
         "--no-swap", "--shift", "--val-split", "--patience", "--schedule", "--optimizer", "--rounds", "--study",
         "--grid", "--runs-per-trial", "--workers", "--final-rounds", "--help", "--nonsense"]
VALUES = st.one_of(st.sampled_from(["siamese", "nope", "report000-siamese", "reports", "-1", "0", "1", "1.5",
                                    "nan", "inf", "8,16", "8,,x", "", "none", "alpha=2", "channels=", "3:1:1",
                                    "alpha=0:1:0.5", "/no/such/file", "same", "valid,3", "1e9"]),
                   st.text(max_size=8), st.integers(-5, 10 ** 6).map(str), st.floats().map(str))
ARGV = st.lists(st.one_of(st.sampled_from(FLAGS), VALUES), max_size=8)


def _validate(parser, argv, check):
    try:
        check(parser().parse_args(argv))
    except SystemExit as e:
        assert e.code in (0, 2), (argv, e.code)
    except UserError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV)
def test_parsers_end_in_exit_0_or_2_never_a_traceback(argv):
    _validate(train_parser, argv, config_from_args)
    _validate(evaluate_parser, argv, entries_from_args)

    def tune_check(args):
        parse_grid(args.grid, config_from_args(args))
    _validate(tune_parser, argv, tune_check)
