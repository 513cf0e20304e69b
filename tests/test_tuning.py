"""mnistcompare-tune: grids, resuming, one search per folder, chief and workers that survive each other."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import children, event_tags, one_line, running, start, wait_for
from mnistcompare.config import Config
from mnistcompare.errors import UserError
from mnistcompare.tuning.grid import apply, parse_grid, parse_values

TINY = ["--pairs", "100", "--val-pairs", "50", "--test-pairs", "50", "--epochs", "1", "--batch-size", "50",
        "--channels", "4,8", "--kernel", "3", "--pool", "2,1", "--hidden", "16", "--head", "8",
        "--runs-per-trial", "1"]
GRID = ["--grid", "channels=4,8", "--grid", "alpha=0.3,0.6"]


def trial_files(out):
    folder = out / "keras_tuner"
    if not folder.exists():
        return {}
    return {p: (folder / p / "rounds.json").stat().st_mtime_ns for p in sorted(os.listdir(folder))
            if (folder / p / "rounds.json").exists()}


def completed(out):
    """Trials the search recorded as finished. A trial whose rounds were written but not yet recorded (a
    search killed in between, or a worker's last trial when the chief died) is rightly run again."""
    def status(trial):
        try:  # the chief may be writing it
            return json.loads((out / "keras_tuner" / trial / "trial.json").read_text())["status"]
        except (OSError, ValueError):
            return None
    return {t: stamp for t, stamp in trial_files(out).items() if status(t) == "COMPLETED"}


def points(out):
    return [tuple(json.loads((out / "keras_tuner" / t / "trial.json").read_text())["hyperparameters"]["values"]
                  .values()) for t in trial_files(out)]


def test_ranges_are_inclusive_and_exact():
    assert parse_values("0.2:0.8:0.2", float) == [0.2, 0.4, 0.6, 0.8]
    assert parse_values("0:1:0.25", float) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_values("8,16,32", int) == [8, 16, 32]
    assert parse_values("1:3:1", int) == [1, 2, 3]


def test_grid_points_map_onto_the_config():
    base = Config(channels=(16, 32, 64), hidden=(75, 75), head=(50, 10))
    cfg = apply(base, {"channels": 8, "hidden": 128, "head_layers": 1, "head": 64, "alpha": 0.44, "kernel": 5})
    assert cfg.channels == (8, 16, 32) and cfg.hidden == (128, 128) and cfg.head == (64,)
    assert cfg.alpha == 0.44 and cfg.kernel == (5,)
    assert apply(base, {"layers": 1}).hidden == (75,)
    cfg = apply(base, {"swap": 1, "epochs": 3.0})  # as keras-tuner's messages may hand them back
    assert cfg.swap is True and cfg.epochs == 3 and isinstance(cfg.epochs, int)


@pytest.mark.parametrize("spec, message", [
    ("alpha=2", "--alpha: must be in [0, 1]"), ("nosuch=1", "unknown name 'nosuch'"), ("channels=", "no values"),
    ("hidden=a,b", "expected int"), ("alpha", "NAME=VALUES"), ("epochs=1:2:0.5", "expected int values, got '0.5'"),
    ("channels=0", "channels must be >= 1"), ("swap=yes", "expected bool values (true or false)"),
    ("seed=1.5", "expected int values")])
def test_bad_grids(spec, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        parse_grid([spec], Config())


@pytest.mark.parametrize("spec", ["alpha=2", "swap=yes"])
def test_bad_grids_exit_2_with_one_line(spec, idx_dir, tmp_path, cli):
    assert spec in one_line(cli("tune", "--idx-dir", idx_dir, "--grid", spec, "--out", tmp_path / "t"))


def test_grid_resumes_after_a_kill_and_writes_outputs(idx_dir, tmp_path, cli):
    out = tmp_path / "tune"
    args = ["--idx-dir", idx_dir, *TINY, *GRID, "--final-rounds", "1", "--out", out]
    # Kill the search (SIGKILL, no clean-up) once it has recorded its first trial as finished. (A trial whose
    # rounds are written but not yet recorded, killed in between, is rightly trained again.)
    proc = start("tune", *args)
    wait_for(lambda: completed(out), proc, what="a finished trial")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = completed(out)
    assert 1 <= len(first) < 4

    result = cli("tune", *args, "--tensorboard", tmp_path / "tb")
    assert result.returncode == 0, result.stderr[-3000:]
    after = trial_files(out)
    assert len(after) == 4
    tags = event_tags(tmp_path / "tb")  # the trials trained now: a run per round, and HParams per trial
    trained = [t for t in tags if t.endswith("round-1/train")]
    assert len(trained) == 4 - len(first) and all("epoch_loss" in tags[t] for t in trained)
    for run in trained:
        hparams = tags[run.split("/")[0]]
        assert "_hparams_/session_start_info" in hparams and "val_compare_accuracy" in hparams
    assert all(after[t] == first[t] for t in first)  # finished trials were not trained again
    assert len(set(points(out))) == 4  # every grid point once
    table = (out / "trials.md").read_text().strip().splitlines()
    assert len(table) == 2 + 4 and "channels" in table[0] and "alpha" in table[0]
    assert (out / "final" / "results.json").exists()

    # A rerun trains nothing.
    again = cli("tune", *args[:-4], "--final-rounds", "0", "--out", out)
    assert again.returncode == 0 and trial_files(out) == after and "Running Trial" not in again.stdout

    # Another search into the same folder is refused, and leaves its outputs as they are.
    outputs = {name: (out / name).read_bytes() for name in ("trials.md", "best_config.json")}
    other = cli("tune", "--idx-dir", idx_dir, *TINY, "--grid", "lr=0.001,0.01", "--out", out)
    assert "holds another search" in one_line(other)
    assert {name: (out / name).read_bytes() for name in outputs} == outputs

    # best_config.json is a config that mnistcompare-train accepts unchanged (it reads it with Config.load).
    best = Config.load(out / "best_config.json").validate()
    assert best.channels in ((4, 8), (8, 16)) and best.alpha in (0.3, 0.6)


def test_workers_start_from_the_installed_package_even_beside_a_tuning_py(idx_dir, tmp_path, cli):
    (tmp_path / "tuning.py").write_text("raise SystemExit('the working directory was imported')\n")
    (tmp_path / "mnistcompare.py").write_text("raise SystemExit('the working directory was imported')\n")
    result = cli("tune", "--idx-dir", idx_dir, *TINY, "--grid", "alpha=0.3,0.6", "--final-rounds", "0",
                 "--workers", "1", "--out", "t", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(trial_files(tmp_path / "t")) == 2


def test_a_failing_grid_point_stops_the_search_and_is_retried_by_the_rerun(idx_dir, tmp_path):
    out = tmp_path / "tune"
    code = ("import sys, mnistcompare.tuning.search as s\n"
            "train = s.train_round\n"
            "def failing(cfg, *a, **k):\n"
            "    if cfg.alpha == 0.6: raise ValueError('boom')\n"
            "    return train(cfg, *a, **k)\n"
            "s.train_round = failing\n"
            "from mnistcompare.tuning.cli import tune_main; tune_main()")
    args = ["--idx-dir", idx_dir, *TINY, "--grid", "alpha=0.3,0.6", "--final-rounds", "0", "--out", out]
    failed = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    # (the test's own import of the search module lets TensorFlow print its start-up lines first)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "failed in round 1: ValueError: boom" in failed.stderr.strip().splitlines()[-1]
    assert len(trial_files(out)) == 1  # the point that worked is kept, the failed one is not dropped silently
    from helpers import run

    assert run("tune", *args).returncode == 0
    assert sorted(points(out)) == [(0.3,), (0.6,)]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["tuner0", "chief"])
def test_a_killed_worker_or_chief_ends_the_search_in_seconds_and_the_rerun_trains_each_point_once(
        victim, idx_dir, tmp_path, cli):
    out = tmp_path / "tune"
    args = ["--idx-dir", idx_dir, *TINY, "--epochs", "30", "--grid", "channels=4,8", "--grid", "alpha=0.3,0.6",
            "--final-rounds", "0", "--workers", "2", "--out", out]
    launcher = start("tune", *args)
    try:
        def process(role):
            return [pid for pid in children(launcher.pid)
                    if f"KERASTUNER_TUNER_ID={role}".encode() in open(f"/proc/{pid}/environ", "rb").read()]
        wait_for(lambda: process("tuner1") and completed(out), launcher, what="workers with a finished trial")
        everyone = children(launcher.pid)
        os.kill(process(victim)[0], signal.SIGKILL)
        start_time = time.time()
        _, stderr = launcher.communicate(timeout=60)
        assert time.time() - start_time < 30
    finally:
        launcher.kill()
    name = "worker 0" if victim == "tuner0" else "chief"
    assert launcher.returncode == 1 and f"tune {name} ended (killed by SIGKILL)" in stderr, stderr[-3000:]
    assert len(stderr.strip().splitlines()) == 1, stderr
    wait_for(lambda: not any(running(pid) for pid in everyone), timeout=30, what="chief and workers to end")
    done = completed(out)
    assert 1 <= len(done) < 4

    result = cli("tune", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    after = trial_files(out)
    assert all(after[t] == done[t] for t in done)  # finished trials kept, not retrained
    assert sorted(points(out)) == sorted(set(points(out))) and len(points(out)) == 4  # each point once


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_launchers_death_ends_chief_and_workers(sig, idx_dir, tmp_path):
    out = tmp_path / "tune"
    launcher = start("tune", "--idx-dir", idx_dir, *TINY, "--epochs", "200", "--grid", "alpha=0.3,0.6",
                     "--final-rounds", "0", "--workers", "1", "--out", out)
    wait_for(lambda: len(children(launcher.pid)) >= 2, launcher, what="chief and worker")
    time.sleep(3)
    everyone = children(launcher.pid)
    launcher.send_signal(sig)
    launcher.wait(timeout=30)
    wait_for(lambda: not any(running(pid) for pid in everyone), timeout=30, what="chief and workers to end")


def test_a_search_saved_before_a_config_field_existed_still_resumes(tmp_path):
    from mnistcompare.tuning import PROJECT
    from mnistcompare.tuning.cli import check_search, save_search

    search = {"grid": {"lr": [0.001, 0.01]}, "base": Config().to_dict(), "runs_per_trial": 2}
    (tmp_path / PROJECT).mkdir()
    older = json.loads(json.dumps(search))
    del older["base"]["label_smoothing"]  # as saved before that field existed: its default was in force
    save_search(tmp_path, older)
    check_search(tmp_path, search, overwrite=False)
    changed = {**search, "base": Config(label_smoothing=0.1).to_dict()}
    with pytest.raises(UserError, match="holds another search"):
        check_search(tmp_path, changed, overwrite=False)


def test_a_trial_finished_in_its_own_file_is_not_retrained_after_the_chief_dies(tmp_path):
    from mnistcompare.tuning.search import GridOracle

    grid = {"alpha": [0.3, 0.6]}
    oracle = GridOracle(grid)
    oracle._set_project_dir(str(tmp_path), "project")
    first = oracle.create_trial("tuner0")
    oracle.save()  # the oracle's state lists the trial as running ...
    first.status = "COMPLETED"  # ... and the chief dies after writing the trial's own file as finished
    first.metrics.update("val_compare_accuracy", 0.9)
    first.save(str(tmp_path / "project" / f"trial_{first.trial_id}" / "trial.json"))

    reloaded = GridOracle(grid)
    reloaded._set_project_dir(str(tmp_path), "project")
    reloaded.reload()
    second = reloaded.create_trial("tuner0")
    assert second.trial_id != first.trial_id and second.hyperparameters.values == {"alpha": 0.6}


def test_a_trial_started_in_its_own_file_only_is_run_after_the_chief_dies(tmp_path):
    from mnistcompare.tuning.search import GridOracle

    grid = {"alpha": [0.3, 0.6]}
    oracle = GridOracle(grid)
    oracle._set_project_dir(str(tmp_path), "project")
    oracle.save()  # the oracle's state, written before the trial exists ...
    state = (tmp_path / "project" / "oracle.json").read_text()
    first = oracle.create_trial("tuner0")  # ... the trial's own file, and the state again ...
    (tmp_path / "project" / "oracle.json").write_text(state)  # ... which the chief did not live to write

    reloaded = GridOracle(grid)
    reloaded._set_project_dir(str(tmp_path), "project")
    reloaded.reload()
    again = reloaded.create_trial("tuner0")
    assert again.trial_id == first.trial_id and again.hyperparameters.values == {"alpha": 0.3}
    again.status = "COMPLETED"
    again.metrics.update("val_compare_accuracy", 0.9)
    reloaded.end_trial(again)
    assert reloaded.create_trial("tuner1").hyperparameters.values == {"alpha": 0.6}


def test_trials_table_gives_the_digit_accuracy_of_nets_that_read_digits():
    from types import SimpleNamespace

    from mnistcompare.tuning.search import trials_markdown

    def trial(trial_id, lr):
        return SimpleNamespace(trial_id=trial_id, hyperparameters=SimpleNamespace(values={"lr": lr}))

    digits = (trial("0", 0.001), {}, [{"val_compare_accuracy": 0.99, "val_digit_accuracy": 0.985},
                                      {"val_compare_accuracy": 0.98, "val_digit_accuracy": 0.975}])
    older = (trial("1", 0.01), {}, [{"val_compare_accuracy": 0.97}])  # saved before the field existed
    table = trials_markdown([digits, older], {"lr": [0.001, 0.01]}).splitlines()
    assert "digit accuracy" in table[0] and table[1].count("---") == 6
    assert table[2] == "| 1 | #1 (trial_0) | 0.001 | 0.9850 ± 0.0071 | 0.9800 | 2 |"
    assert table[3] == "| 2 | #2 (trial_1) | 0.01 | 0.9700 ± – | | 1 |"  # one round: no spread
    assert "digit" not in trials_markdown([older], {"lr": [0.01]})  # nets without digits: no column
