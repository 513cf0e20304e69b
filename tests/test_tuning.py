"""mnistcompare-tune: grids, resuming, one search per folder, chief and workers that survive each other."""
import json
import os
import signal
import sys
import time

import numpy as np
import pytest

from helpers import children, event_tags, one_line, running, start, wait_for
from mnistcompare.config import Config
from mnistcompare.errors import UserError
from mnistcompare.tuning.cli import tune_main
from mnistcompare.tuning.hypermodel import ComparisonHyperModel
from mnistcompare.tuning.grid import apply, parse_grid, parse_values

TINY = ["--pairs", "100", "--val-pairs", "50", "--test-pairs", "50", "--epochs", "1", "--batch-size", "50",
        "--channels", "4,8", "--kernel", "3", "--pool", "2,1", "--hidden", "16", "--head", "8",
        "--runs-per-trial", "1"]
GRID = ["--grid", "channels=4,8", "--grid", "alpha=0.3,0.6"]
# For what is about the search, not the model: the dense net trains a trial in a third of the siamese net's time.
DENSE = [*TINY, "--arch", "mlp"]
DENSE_GRID = ["--grid", "hidden=16,32", "--grid", "dropout=0.0,0.5"]


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


def killed_after_a_finished_trial(args, out):
    """Start `mnistcompare-tune args`, SIGKILL it (no clean-up) once it has recorded its first trial as finished,
    and return the finished trials (of 4). A trial whose rounds are written but not yet recorded, killed in
    between, is rightly trained again."""
    proc = start("tune", *args)
    wait_for(lambda: completed(out), proc, what="a finished trial")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = completed(out)
    assert 1 <= len(first) < 4
    return first


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


@pytest.mark.slow
def test_grid_resumes_after_a_kill_and_writes_outputs(idx_dir, tmp_path, main):
    out = tmp_path / "tune"
    args = ["--idx-dir", idx_dir, *DENSE, *DENSE_GRID, "--final-rounds", "1", "--out", out]
    first = killed_after_a_finished_trial(args, out)

    result = main("tune", *args, "--tensorboard", tmp_path / "tb")
    assert result.returncode == 0, result.stderr[-3000:]
    after = trial_files(out)
    assert len(after) == 4
    # the trials trained now, in keras-tuner's layout (TRIAL/execution0): a run each (one round per trial),
    # with the trial's values and score for the HParams dashboard
    tags = event_tags(tmp_path / "tb")
    trained = [t for t in tags if t.endswith("execution0/train")]
    assert len(trained) == 4 - len(first) and all("epoch_loss" in tags[t] for t in trained)
    for run in trained:
        hparams = tags[os.path.dirname(run)]
        assert "_hparams_/session_start_info" in hparams and "val_compare_accuracy" in hparams
    assert all(after[t] == first[t] for t in first)  # finished trials were not trained again
    assert len(set(points(out))) == 4  # every grid point once
    table = (out / "trials.md").read_text().strip().splitlines()
    assert len(table) == 2 + 4 and "hidden" in table[0] and "dropout" in table[0]
    assert (out / "final" / "results.json").exists()

    # A rerun trains nothing.
    again = main("tune", *args[:-4], "--final-rounds", "0", "--out", out)
    assert again.returncode == 0 and trial_files(out) == after and "Running Trial" not in again.stdout

    # Another search into the same folder is refused, and leaves its outputs as they are.
    outputs = {name: (out / name).read_bytes() for name in ("trials.md", "best_config.json")}
    other = main("tune", "--idx-dir", idx_dir, *DENSE, "--grid", "lr=0.001,0.01", "--out", out)
    assert "holds another search" in one_line(other)
    assert {name: (out / name).read_bytes() for name in outputs} == outputs

    # best_config.json is a config that mnistcompare-train accepts unchanged (it reads it with Config.load).
    best = Config.load(out / "best_config.json").validate()
    assert best.hidden in ((16,), (32,)) and best.dropout in (0.0, 0.5)


def test_a_search_stopped_in_its_first_trial_is_reloaded_not_started_again(idx_dir, tmp_path, monkeypatch):
    # keras-tuner reloads a project only where its tuner file exists: written before the first trial, a
    # search killed before that trial's end (its own file already COMPLETED) does not train it twice
    from mnistcompare.tuning import PROJECT
    from mnistcompare.tuning.hypermodel import ComparisonHyperModel

    out, seen = tmp_path / "tune", []

    def stopped(self, *args, **kwargs):
        seen.append(sorted(os.listdir(out / PROJECT)))
        raise KeyboardInterrupt

    monkeypatch.setattr(ComparisonHyperModel, "fit", stopped)
    with pytest.raises(SystemExit):
        tune_main(["--idx-dir", str(idx_dir), *TINY, *GRID, "--quiet", "--out", str(out)])
    assert "tuner0.json" in seen[0] and "oracle.json" in seen[0], seen


@pytest.mark.slow
def test_workers_start_from_the_installed_package_even_beside_a_tuning_py(idx_dir, tmp_path, cli):
    (tmp_path / "tuning.py").write_text("raise SystemExit('the working directory was imported')\n")
    (tmp_path / "mnistcompare.py").write_text("raise SystemExit('the working directory was imported')\n")
    result = cli("tune", "--idx-dir", idx_dir, *DENSE, "--grid", "dropout=0.0,0.5", "--final-rounds", "0",
                 "--workers", "1", "--out", "t", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(trial_files(tmp_path / "t")) == 2


@pytest.mark.slow
def test_a_failing_grid_point_stops_the_search_and_is_retried_by_the_rerun(idx_dir, tmp_path, main, monkeypatch):
    import mnistcompare.tuning.hypermodel as hypermodel

    out = tmp_path / "tune"
    train = hypermodel.train_round

    def failing(cfg, *args, **kwargs):
        if cfg.dropout == 0.5:
            raise ValueError("boom")
        return train(cfg, *args, **kwargs)

    args = ["--idx-dir", idx_dir, *DENSE, "--grid", "dropout=0.0,0.5", "--final-rounds", "0", "--out", out]
    with monkeypatch.context() as patch:
        patch.setattr(hypermodel, "train_round", failing)  # where the HyperModel's rounds look it up
        failed = main("tune", *args)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "failed in round 1: ValueError: boom" in failed.stderr.strip().splitlines()[-1]
    assert len(trial_files(out)) == 1  # the point that worked is kept, the failed one is not dropped silently
    assert main("tune", *args).returncode == 0
    assert sorted(points(out)) == [(0.0,), (0.5,)]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["tuner0", "chief"])
def test_a_killed_worker_or_chief_ends_the_search_in_seconds_and_the_rerun_trains_each_point_once(
        victim, idx_dir, tmp_path, main):
    out = tmp_path / "tune"
    args = ["--idx-dir", idx_dir, *DENSE, "--epochs", "30", *DENSE_GRID, "--final-rounds", "0", "--out", out]
    workers = 2 if victim == "tuner0" else 1  # a killed worker ends the other one too; a killed chief, its worker
    launcher = start("tune", *args, "--workers", workers)
    try:
        def process(role):
            return [pid for pid in children(launcher.pid)
                    if f"KERASTUNER_TUNER_ID={role}".encode() in open(f"/proc/{pid}/environ", "rb").read()]
        wait_for(lambda: process(f"tuner{workers - 1}") and completed(out), launcher,
                 what="workers with a finished trial")
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

    result = main("tune", *args)  # the search a folder holds is its grid and protocol, whoever trains it
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
    from mnistcompare.tuning.cli import check_search

    search = {"grid": {"lr": [0.001, 0.01]}, "base": Config().to_dict(), "runs_per_trial": 2}
    (tmp_path / PROJECT).mkdir()
    older = json.loads(json.dumps(search))
    del older["base"]["tta_zoom"]  # as saved before that field existed: its default was in force
    older["base"]["ema"] = 0.0  # and with one removed since, at the value that meant "off"
    (tmp_path / "search.json").write_text(json.dumps(older))
    check_search(tmp_path, search, overwrite=False)
    changed = {**search, "base": Config(tta_zoom=0.1).to_dict()}
    with pytest.raises(UserError, match="holds another search"):
        check_search(tmp_path, changed, overwrite=False)


def test_keras_tuners_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    # keras-tuner writes them in place: a search killed during the write of tuner0.json left it unreadable,
    # and the rerun could only start the search again
    from mnistcompare.tuning import PROJECT
    from mnistcompare.tuning.search import ComparisonTuner, make_oracle

    tuner = ComparisonTuner(oracle=make_oracle("grid", {"alpha": [0.3, 0.6]}), hypermodel=ComparisonHyperModel(
        Config(), {"alpha": [0.3, 0.6]}), directory=tmp_path, project_name=PROJECT, progress=False)
    trial = tuner.oracle.create_trial(tuner.tuner_id)
    tuner.save()
    files = sorted((tmp_path / PROJECT).rglob("*.json"))
    before = {path: path.read_bytes() for path in files}
    assert {path.name for path in files} == {"oracle.json", "tuner0.json", "trial.json"}

    def killed(*args):  # the process dies between writing each file and putting it in place
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", killed)
    trial.status = "COMPLETED"
    for save in (tuner.save, tuner.oracle.save, lambda: tuner.oracle._save_trial(trial)):
        with pytest.raises(KeyboardInterrupt):
            save()
    assert {path: path.read_bytes() for path in files} == before  # each still the whole of its last state


def test_a_trial_finished_in_its_own_file_is_not_retrained_after_the_chief_dies(tmp_path):
    from mnistcompare.tuning.search import make_oracle

    grid = {"alpha": [0.3, 0.6]}
    oracle = make_oracle("grid", grid)
    oracle._set_project_dir(str(tmp_path), "project")
    first = oracle.create_trial("tuner0")
    oracle.save()  # the oracle's state lists the trial as running ...
    first.status = "COMPLETED"  # ... and the chief dies after writing the trial's own file as finished
    first.metrics.update("val_compare_accuracy", 0.9)
    folder = tmp_path / "project" / f"trial_{first.trial_id}"
    (folder / "rounds.json").write_text(json.dumps({"config": Config().to_dict(),  # (ComparisonTuner's, before)
                                                    "rounds": [{"val_compare_accuracy": 0.9}]}))
    first.save(str(folder / "trial.json"))

    reloaded = make_oracle("grid", grid)
    reloaded._set_project_dir(str(tmp_path), "project")
    reloaded.reload()
    second = reloaded.create_trial("tuner0")
    assert second.trial_id != first.trial_id and second.hyperparameters.values == {"alpha": 0.6}


def test_a_trial_started_in_its_own_file_only_is_run_after_the_chief_dies(tmp_path):
    from mnistcompare.tuning.search import make_oracle

    grid = {"alpha": [0.3, 0.6]}
    oracle = make_oracle("grid", grid)
    oracle._set_project_dir(str(tmp_path), "project")
    oracle.save()  # the oracle's state, written before the trial exists ...
    state = (tmp_path / "project" / "oracle.json").read_text()
    first = oracle.create_trial("tuner0")  # ... the trial's own file, and the state again ...
    (tmp_path / "project" / "oracle.json").write_text(state)  # ... which the chief did not live to write

    reloaded = make_oracle("grid", grid)
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


# -- keras-tuner as its users know it --------------------------------------------------------------
SMALL = Config(arch="mlp", pairs=64, test_pairs=32, epochs=1, batch_size=32, channels=(4, 8), kernel=(3,),
               pool=(2, 1), hidden=(16,), head=(8,))


@pytest.mark.slow
def test_a_users_random_search_standardises_with_the_training_pairs_and_scores_each_trial(tiny_pairs, tmp_path):
    import keras_tuner as kt

    from mnistcompare.data import normalisation
    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel

    train, val = tiny_pairs
    hypermodel = ComparisonHyperModel(SMALL, {"dropout": [0.0, 0.5], "lr": {"min": 1e-4, "max": 1e-2,
                                                                          "sampling": "log"}}, train)
    tuner = kt.RandomSearch(hypermodel, objective=OBJECTIVE, max_trials=2, directory=tmp_path, project_name="user")
    built = hypermodel.build(tuner.oracle.get_space())
    mean, std = normalisation(train)
    assert built.get_layer("standardize").get_weights() == pytest.approx([mean, std], rel=1e-6)
    assert mean > 1 and std > 1  # raw 0..255 pixels: (0, 1) would leave them as they are

    tuner.search(train, validation_data=val, verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(t.status == "COMPLETED" and 0 <= t.score <= 1 for t in trials)
    best = tuner.get_best_models(1)[0]
    assert best.get_layer("standardize").get_weights() == pytest.approx([mean, std], rel=1e-6)
    from mnistcompare.training import accuracy

    assert accuracy(best, val)["accuracy"] == pytest.approx(trials[0].score, abs=1e-6)  # its one round's weights


def test_a_models_normalisation_follows_the_pairs_fit_trains_on_when_build_had_none(tiny_pairs, tmp_path):
    import keras_tuner as kt

    from mnistcompare.data import normalisation
    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel

    train, val = tiny_pairs
    hypermodel = ComparisonHyperModel(SMALL, {"dropout": [0.25]})
    tuner = kt.GridSearch(hypermodel, objective=OBJECTIVE, directory=tmp_path, project_name="user")
    tuner.search(train, validation_data=val, verbose=0)
    weights = tuner.get_best_models(1)[0].get_layer("standardize").get_weights()
    assert weights == pytest.approx(list(normalisation(train)), rel=1e-6)


def _as_keras_arrays(pairs):
    """Pairs as keras-tuner's guide hands data to search: dicts of numpy arrays keyed by the model's names."""
    return pairs.features(), pairs.labels()


@pytest.mark.parametrize("form", ["arrays", "datasets"])
def test_keras_tuners_own_search_call_trains_the_epochs_asked_and_scores_every_trial(form, tiny_pairs, tmp_path):
    import keras_tuner as kt
    import tensorflow as tf

    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel
    from mnistcompare.training import accuracy

    train, val = tiny_pairs
    hypermodel = ComparisonHyperModel(SMALL.replace(epochs=5), {"dropout": [0.0, 0.5]})
    tuner = kt.RandomSearch(hypermodel, objective=OBJECTIVE, max_trials=2, directory=tmp_path, project_name=form)
    if form == "arrays":  # as keras-tuner's guide: search(x, y, epochs=N, validation_data=(x_val, y_val))
        tuner.search(*_as_keras_arrays(train), epochs=2, validation_data=_as_keras_arrays(val), verbose=0)
        assert hypermodel.trained.batch_size == SMALL.batch_size
    else:  # batched datasets of (features, targets): their batch size is the trial's
        tuner.search(tf.data.Dataset.from_tensor_slices(_as_keras_arrays(train)).batch(16), epochs=2,
                     validation_data=tf.data.Dataset.from_tensor_slices(_as_keras_arrays(val)).batch(8), verbose=0)
        assert hypermodel.trained.batch_size == 16
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(t.status == "COMPLETED" and t.score is not None for t in trials)
    assert [r["epochs"] for r in hypermodel.rounds] == [2]
    assert accuracy(tuner.get_best_models(1)[0], val)["accuracy"] == pytest.approx(trials[0].score, abs=1e-6)


def test_the_hypermodel_gives_train_rounds_numbers_for_the_same_config_and_seed(tiny_pairs, tmp_path):
    import keras_tuner as kt

    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel
    from mnistcompare.training import train_round

    train, val = tiny_pairs
    cfg = SMALL.replace(epochs=2, seed=3, pairs=len(train))
    tuner = kt.GridSearch(ComparisonHyperModel(cfg, {"dropout": [cfg.dropout]}), objective=OBJECTIVE,
                          directory=tmp_path, project_name="same")
    tuner.search(*_as_keras_arrays(train), validation_data=_as_keras_arrays(val), verbose=0)
    _, metrics, _ = train_round(cfg.validate(), train, val, verbose=0)
    assert tuner.oracle.get_best_trials(1)[0].score == metrics["test_accuracy"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(class_weight={0: 1.0}), "class_weight: not taken"),
    (dict(validation_data=None), "no validation_data"),
    (dict(validation_data=({"image_a": 0}, {})), "validation_data: no image_b, digit_a, digit_b"),
    (dict(batch_size=0), "--batch-size: must be >= 1, got 0")])  # (0 was taken for None: the Config's size)
def test_an_argument_the_hypermodel_cannot_honour_stops_the_search_at_its_first_trial(kwargs, message, tiny_pairs,
                                                                                     tmp_path):
    import keras_tuner as kt

    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel

    train, val = tiny_pairs
    tuner = kt.RandomSearch(ComparisonHyperModel(SMALL, {"dropout": [0.0, 0.5]}), objective=OBJECTIVE, max_trials=3,
                            directory=tmp_path, project_name="bad")
    with pytest.raises(kt.errors.FatalError) as raised:
        tuner.search(*_as_keras_arrays(train), **{"validation_data": _as_keras_arrays(val), **kwargs}, verbose=0)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert len(tuner.oracle.trials) == 1  # no trial spent on it after the first


def test_a_space_made_in_python_with_a_name_the_config_does_not_have_is_refused(tmp_path):
    # it was accepted, and the tuner searched an axis that set nothing
    import keras_tuner as kt

    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel

    with pytest.raises(UserError, match="unknown name 'nonsense'; use a training option"):
        kt.RandomSearch(ComparisonHyperModel(SMALL, {"nonsense": [1, 2]}), objective=OBJECTIVE, max_trials=1,
                        directory=tmp_path, project_name="unknown")


def test_validation_split_holds_out_the_last_pairs_as_keras_fit_does(tiny_pairs, tmp_path):
    import keras_tuner as kt

    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel
    from mnistcompare.training import accuracy

    train, _ = tiny_pairs
    hypermodel = ComparisonHyperModel(SMALL, {"dropout": [0.0]})
    tuner = kt.GridSearch(hypermodel, objective=OBJECTIVE, directory=tmp_path, project_name="split")
    tuner.search(*_as_keras_arrays(train), validation_split=0.25, verbose=0)
    held_out = train.split(16)[1]
    assert hypermodel.trained.pairs == 48
    assert accuracy(tuner.get_best_models(1)[0], held_out)["accuracy"] == tuner.oracle.get_best_trials(1)[0].score


@pytest.mark.slow
def test_keras_tuners_hyperband_continues_a_trial_from_the_weights_it_hands_on(tiny_pairs, tmp_path):
    import keras_tuner as kt

    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel

    train, val = tiny_pairs
    hypermodel = ComparisonHyperModel(SMALL, {"lr": {"min": 1e-3, "max": 1e-2, "sampling": "log"}})
    tuner = kt.Hyperband(hypermodel, objective=OBJECTIVE, max_epochs=3, factor=3, hyperband_iterations=1,
                         directory=tmp_path, project_name="hyperband")
    starts = []
    fit = ComparisonHyperModel.fit

    def spy(self, hp, model, *args, **kwargs):
        starts.append((hp.values.get("tuner/trial_id"), kwargs.get("initial_epoch", 0),
                       [w.copy() for w in model.get_weights()]))
        return fit(self, hp, model, *args, **kwargs)
    ComparisonHyperModel.fit = spy
    try:
        tuner.search(*_as_keras_arrays(train), validation_data=_as_keras_arrays(val), verbose=0)
    finally:
        ComparisonHyperModel.fit = fit
    continued = [(trial_id, initial, weights) for trial_id, initial, weights in starts if trial_id is not None]
    assert continued and all(initial == 1 for _, initial, _ in continued)
    assert [r["epochs"] for r in hypermodel.rounds] == [3]  # epochs 2 and 3 trained on top of epoch 1's weights
    for trial_id, _, weights in continued:  # the model arrived with the earlier trial's best weights
        saved = tuner.load_model(tuner.oracle.get_trial(trial_id)).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(weights, saved))


@pytest.mark.parametrize("spec, message", [
    ("lr=0.01..0.001", "low < high"), ("lr=0..0.1:log", "log range needs low > 0"),
    ("lr=1e-4..1e-2:cubic", "low..high:log"), ("swap=0..1", "number option"), ("alpha=0..2", "--alpha")])
def test_bad_ranges(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_grid([spec], Config(), ranges=True)


def test_ranges_parse_for_the_tuners_that_sample_and_are_refused_by_a_grid():
    assert parse_grid(["lr=1e-4..1e-2:log", "hidden=16..64"], Config(), ranges=True) == {
        "lr": {"min": 1e-4, "max": 1e-2, "sampling": "log"}, "hidden": {"min": 16, "max": 64, "sampling": "linear"}}
    with pytest.raises(UserError, match="a range low..high is for --tuner random, bayesian or hyperband"):
        parse_grid(["lr=1e-4..1e-2"], Config())


@pytest.mark.slow
def test_best_model_of_a_search_scores_its_trials_validation_accuracy(idx_dir, tmp_path):
    from mnistcompare.data import find_source, load_pairs
    from mnistcompare.training import accuracy
    from mnistcompare.tuning.search import load_tuner

    out = tmp_path / "tune"
    tune_main(["--idx-dir", str(idx_dir), *DENSE, "--grid", "dropout=0.0,0.5", "--final-rounds", "0", "--quiet",
               "--out", str(out)])  # in this process: the test's time is the search's
    tuner = load_tuner(str(out))
    best = tuner.oracle.get_best_trials(1)[0]
    assert tuner.get_best_hyperparameters(1)[0].values == best.hyperparameters.values
    model = tuner.get_best_models(1)[0]
    cfg = Config.from_dict(json.loads((out / "best_config.json").read_text()))
    _, val = load_pairs(cfg, find_source(idx_dir=str(idx_dir)), validation=50)
    assert abs(accuracy(model, val)["accuracy"] - best.score) <= 0.005


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_keras_tuners_sampling_tuners_finish_on_a_tiny_space(tuner, idx_dir, tmp_path):
    out = tmp_path / tuner
    trials = ["--max-trials", "3"] if tuner != "hyperband" else ["--epochs", "3"]  # its budgets: 1 and 3 epochs
    tune_main(["--idx-dir", str(idx_dir), *DENSE, "--tuner", tuner, *trials, "--grid", "dropout=0..0.5",
               "--grid", "lr=1e-3..1e-2:log", "--final-rounds", "0", "--quiet", "--out", str(out)])
    done = completed(out)
    assert len(done) == 3 if tuner != "hyperband" else len(done) >= 3
    table = (out / "trials.md").read_text().splitlines()
    assert len(table) == 2 + len(done) and "lr" in table[0]


@pytest.mark.slow
def test_a_killed_random_search_ends_with_exactly_max_trials(idx_dir, tmp_path, main):
    out = tmp_path / "random"
    args = ["--idx-dir", idx_dir, *DENSE, "--epochs", "3", "--tuner", "random", "--max-trials", "4",
            "--grid", "dropout=0..0.5", "--final-rounds", "0", "--quiet", "--out", out]
    first = killed_after_a_finished_trial(args, out)
    result = main("tune", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    after = completed(out)
    assert len(after) == 4 and all(after[t] == first[t] for t in first)


def test_the_bayesian_tuner_without_its_extra_is_one_line_naming_the_install(tmp_path, main, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as in an install without mnistcompare[bayesian]
    result = main("tune", "--tuner", "bayesian", "--grid", "lr=1e-3..1e-2", "--out", tmp_path / "b")
    assert "--tuner bayesian needs scikit-learn" in one_line(result)
    assert "pip install 'mnistcompare[bayesian]'" in result.stderr and not (tmp_path / "b").exists()
    from mnistcompare.tuning.search import make_oracle

    with pytest.raises(UserError, match=r"mnistcompare\[bayesian\]"):  # from Python too
        make_oracle("bayesian", {"lr": {"min": 1e-3, "max": 1e-2}}, max_trials=2)


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_a_sampling_search_from_seed_0_samples_the_same_points_each_run(kind):
    # keras-tuner takes a seed of 0 for none: the default --seed sampled other points each run
    from mnistcompare.tuning.search import make_oracle

    space = {"lr": {"min": 1e-3, "max": 1e-2, "sampling": "log"}, "dropout": [0.0, 0.25, 0.5]}
    first, again, other = ([make_oracle(kind, space, seed=seed, max_trials=3, max_epochs=3).populate_space(f"{i}")
                            ["values"] for i in range(3)] for seed in (0, 0, 1))
    assert first == again != other


def test_a_study_refuses_a_grid_of_its_own(tmp_path, cli):
    line = one_line(cli("tune", "--study", "report000-optimizer", "--grid", "lr=0.1", "--out", tmp_path / "s"))
    assert "--study runs the report's own grids" in line


@pytest.mark.slow
def test_a_staged_study_starts_each_stage_from_the_best_of_the_one_before_and_writes_its_page(idx_dir, tmp_path,
                                                                                              monkeypatch):
    from mnistcompare.tuning import studies

    monkeypatch.setitem(studies.SEARCHES, "tiny", studies.Search(
        lambda: Config(arch="mlp", hidden=(16,), batch_size=50),
        (studies.Stage("D", {"dropout": [0.0, 0.5]}, {"dropout": 0.5}, 0.8), studies.Stage("H", {"hidden": [8, 16]},
                                                                                           {"hidden": 16})),
        runs_per_trial=2, final_rounds=1, about="tiny", source="a test", final={"test_accuracy": 0.9},
        assumptions=("none",)))
    out = tmp_path / "study"
    args = ["--study", "tiny", "--idx-dir", str(idx_dir), "--pairs", "100", "--val-pairs", "50", "--test-pairs",
            "50", "--epochs", "1", "--quiet", "--out", str(out)]
    tune_main(args)
    results = json.loads((out / "results.json").read_text())
    one, two = results["stages"]
    assert len(one["rounds"]) == 2 and one["trials"] == 2 and two["trials"] == 2
    base_two = json.loads((out / "stage-2" / "search.json").read_text())["base"]
    assert base_two["dropout"] == one["best"]["dropout"]  # stage 2 from stage 1's best
    assert results["final"][0]["rounds"] == 1 and results["off_protocol"]  # flags given: off the protocol
    page = (out / "results.md").read_text()
    assert "| D | dropout 0, 0.5 | dropout 0.5 |" in page and "| H | hidden 8, 16 |" in page and "- none" in page
    trained = {stage: trial_files(out / stage) for stage in ("stage-1", "stage-2")}
    tune_main(args)  # resumed: nothing trained again
    assert {stage: trial_files(out / stage) for stage in ("stage-1", "stage-2")} == trained
    assert json.loads((out / "results.json").read_text())["stages"] == results["stages"]


@pytest.mark.slow
def test_a_finished_search_whose_trials_tie_reruns_to_the_same_files(idx_dir, tmp_path, main):
    # tta_zoom changes nothing without --tta: two trials of the very same net, the very same score
    args = ["--idx-dir", idx_dir, *TINY, "--arch", "mlp", "--grid", "tta_zoom=0.0,0.1", "--final-rounds", "1",
            "--quiet", "--out", tmp_path / "tie"]
    first = main("tune", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    names = ("trials.md", "best_config.json", "final/results.json")
    files = {name: (tmp_path / "tie" / name).read_bytes() for name in names}
    assert json.loads(files["best_config.json"])["tta_zoom"] == 0.0  # the tie goes to the earlier trial
    for _ in range(2):  # keras-tuner lists tied trials in the order its files come: the package does not
        again = main("tune", *args)
        assert again.returncode == 0, again.stderr[-3000:]
        assert {name: (tmp_path / "tie" / name).read_bytes() for name in names} == files
