import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mnistcompare.config import Config, UserError
from tuning.grid import apply, parse_grid, parse_values

TINY = ["--pairs", "100", "--val-pairs", "50", "--test-pairs", "50", "--epochs", "1", "--batch-size", "50",
        "--channels", "4,8", "--kernel", "3", "--pool", "2,1", "--hidden", "16", "--head", "8",
        "--runs-per-trial", "1"]
GRID = ["--grid", "channels=4,8", "--grid", "alpha=0.3,0.6"]


def tune(*args, timeout=600, wait=True):
    command = [sys.executable, "-m", "tuning.cli", *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def trial_files(out):
    folder = out / "keras_tuner"
    return {p: (folder / p / "rounds.json").stat().st_mtime_ns for p in sorted(os.listdir(folder))
            if (folder / p / "rounds.json").exists()}


def test_ranges_are_inclusive_and_exact():
    assert parse_values("0.2:0.8:0.2", float) == [0.2, 0.4, 0.6, 0.8]
    assert parse_values("0:1:0.25", float) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_values("8,16,32", int) == [8, 16, 32]


def test_grid_points_map_onto_the_config():
    base = Config(channels=(16, 32, 64), hidden=(75, 75), head=(50, 10))
    cfg = apply(base, {"channels": 8, "hidden": 128, "head_layers": 1, "head": 64, "alpha": 0.44, "kernel": 5})
    assert cfg.channels == (8, 16, 32) and cfg.hidden == (128, 128) and cfg.head == (64,)
    assert cfg.alpha == 0.44 and cfg.kernel == (5,)
    assert apply(base, {"layers": 1}).hidden == (75,)


@pytest.mark.parametrize("spec, message", [
    ("alpha=2", "--alpha: must be in [0, 1]"), ("nosuch=1", "unknown name 'nosuch'"), ("channels=", "no values"),
    ("hidden=a,b", "expected int"), ("alpha", "NAME=VALUES")])
def test_bad_grids(spec, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grid([spec], Config())


@pytest.mark.parametrize("spec", ["alpha=2", "nosuch=1", "channels="])
def test_bad_grids_exit_2_with_one_line(spec, idx_dir, tmp_path):
    result = tune("--idx-dir", str(idx_dir), "--grid", spec, "--out", str(tmp_path / "t"))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and spec in result.stderr


def test_grid_resumes_after_a_kill_and_writes_outputs(idx_dir, tmp_path):
    out = tmp_path / "tune"
    args = ["--idx-dir", str(idx_dir), *TINY, *GRID, "--final-rounds", "1", "--out", str(out)]
    # Kill the search (SIGKILL, no clean-up) once its first trial has finished.
    proc = tune(*args, wait=False)
    deadline = time.time() + 300
    while not trial_files(out) if (out / "keras_tuner").exists() else True:
        assert proc.poll() is None and time.time() < deadline, "search ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = trial_files(out)
    assert 1 <= len(first) < 4

    result = tune(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    after = trial_files(out)
    assert len(after) == 4
    assert all(after[t] == first[t] for t in first)  # finished trials were not trained again
    points = {tuple(json.loads((out / "keras_tuner" / t / "trial.json").read_text())
                    ["hyperparameters"]["values"].values()) for t in after}
    assert len(points) == 4  # every grid point once
    table = (out / "trials.md").read_text().strip().splitlines()
    assert len(table) == 2 + 4 and "channels" in table[0] and "alpha" in table[0]
    assert (out / "final" / "results.json").exists()

    # A rerun trains nothing.
    again = tune(*args[:-4], "--final-rounds", "0", "--out", str(out))
    assert again.returncode == 0 and trial_files(out) == after and "Running Trial" not in again.stdout

    # best_config.json is a config that mnistcompare-train accepts unchanged.
    best = json.loads((out / "best_config.json").read_text())
    assert Config.from_dict(best).validate()
    train = subprocess.run([sys.executable, "-m", "mnistcompare.cli", "--config", str(out / "best_config.json"),
                            "--idx-dir", str(idx_dir), "--test-pairs", "50", "--quiet", "--out",
                            str(tmp_path / "train")], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert json.loads((tmp_path / "train" / "metrics.json").read_text())["config"]["channels"] == best["channels"]


def test_workers_on_loopback_run_every_point_once(idx_dir, tmp_path):
    out = tmp_path / "tune"
    result = tune("--idx-dir", str(idx_dir), *TINY, *GRID, "--final-rounds", "0", "--workers", "2",
                  "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = trial_files(out)
    assert len(trials) == 4
    points = [tuple(json.loads((out / "keras_tuner" / t / "trial.json").read_text())
                    ["hyperparameters"]["values"].values()) for t in trials]
    assert len(set(points)) == 4
    workers = {json.loads((out / "keras_tuner" / t / "rounds.json").read_text())["tuner_id"] for t in trials}
    assert workers <= {"tuner0", "tuner1"}
    assert len((out / "trials.md").read_text().strip().splitlines()) == 2 + 4


def test_worker_command_lines_drop_workers_and_overwrite():
    from tuning.cli import without_flag

    argv = ["--workers", "2", "--grid", "alpha=0.2,0.4", "--overwrite", "--out", "d"]
    assert without_flag(without_flag(argv, "--workers"), "--overwrite") == ["--grid", "alpha=0.2,0.4", "--out", "d"]
    assert without_flag(["--workers=3", "--out", "d"], "--workers") == ["--out", "d"]
