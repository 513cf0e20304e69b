"""Every file the package writes and reads back, damaged three ways (cut in half, emptied, replaced with
garbage), and results.json's fields edited: the command that reads it says so in one line, exit 2, no traceback,
and writes nothing over it."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import DENSE, fake_mnist, one_line, write_idx

DAMAGES = {"half": lambda data: data[:len(data) // 2], "empty": lambda data: b"",
           "garbage": lambda data: b"PK\x03\x04\x00garbage\xff" * 37}


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """A tiny fake MNIST and, written from it, what each command leaves: an unfinished train run, a finished
    one, an evaluation and a search. Read-only; under pytest -n, written once for every process (the first
    to need them writes them, the others wait), as conftest's trained_run."""
    import fcntl
    import os

    base = tmp_path_factory.getbasetemp()
    base = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = base / "written"
    common = ["--idx-dir", str(root / "idx"), *DENSE, "--quiet"]
    args = {"train": [*common, "--epochs", "2"], "evaluate": [*common, "--epochs", "1", "--jobs", "1"],
            "tune": [*common, "--epochs", "1", "--grid", "dropout=0.0,0.5", "--runs-per-trial", "1",
                     "--final-rounds", "0", "--val-pairs", "50"]}
    with open(base / "written.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "a.png").exists():
            _write(root, args)
    return root, args


def _write(root, args):
    import keras

    from mnistcompare.cli import evaluate_main, train_main
    from mnistcompare.tuning.cli import tune_main

    idx = root / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), n, seed in ((("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), 400, 1),
                                               (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 200, 2)):
        images, labels = fake_mnist(n, seed)
        write_idx(idx / images_name, images)
        write_idx(idx / labels_name, labels)
    train_main([*args["train"], "--out", str(root / "finished")])
    with pytest.MonkeyPatch.context() as patch:  # killed after its epochs, before its outputs
        patch.setattr(keras.Model, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(SystemExit):
            train_main([*args["train"], "--out", str(root / "unfinished")])
    evaluate_main([*args["evaluate"], "--rounds", "1", "--out", str(root / "evaluate")])
    tune_main([*args["tune"], "--out", str(root / "tune")])
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255
    Image.fromarray(digit).save(root / "a.png")  # written last: the folders are ready


def _damaged_copy(folders, name, path, damage, tmp_path):
    """A copy of a written folder with every file matching `path` damaged (both backups of a run: with one left
    whole, a run resumes from it); the copy and its last damaged file."""
    root, _ = folders
    copy = tmp_path / name
    shutil.copytree(root / name, copy)
    files = sorted(copy.glob(path))
    assert files, path
    for file in files:
        file.write_bytes(DAMAGES[damage](file.read_bytes()))
    return copy, files[-1]


CASES = [("train", "unfinished", "config.json"), ("train", "unfinished", "history.csv"),
         ("train", "unfinished", "backup/epoch-*.npz"), ("evaluate", "evaluate", "results.json"),
         ("tune", "tune", "search.json"), ("tune", "tune", "keras_tuner/oracle.json"),
         ("tune", "tune", "keras_tuner/tuner0.json"), ("tune", "tune", "keras_tuner/trial_0000/trial.json"),
         ("predict", "finished", "saved_model/1/saved_model.pb"),
         ("predict", "finished", "saved_model/1/variables/variables.index"),
         ("predict", "finished", "saved_model/1/variables/variables.data-*")]


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command, name, path", CASES, ids=[f"{c}:{p}" for c, _, p in CASES])
def test_a_damaged_file_is_one_line_and_exit_2(command, name, path, damage, folders, tmp_path, main):
    root, args = folders
    folder, file = _damaged_copy(folders, name, path, damage, tmp_path)
    damaged = file.read_bytes()
    argv = {"train": [*args["train"], "--out", folder],
            "evaluate": [*args["evaluate"], "--rounds", "2", "--out", folder],
            "tune": [*args["tune"], "--out", folder],
            "predict": [folder, root / "a.png", root / "a.png"]}[command]
    line = one_line(main(command, *argv))
    assert file.name.split("-")[0] in line or "SavedModel" in line, line  # names what is damaged
    assert file.read_bytes() == damaged  # nothing written over it
    if damage == "garbage" and "pass --overwrite" in line:  # the advice, followed literally, does what it says
        followed = main(command, *argv, "--overwrite")
        assert followed.returncode == 0, followed.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "deleted"])  # (every damage reads as none: rounds_of)
def test_a_trial_whose_rounds_are_damaged_or_gone_is_trained_again(damage, folders, tmp_path, main):
    _, args = folders
    folder = tmp_path / "tune"
    shutil.copytree(folders[0] / "tune", folder)
    rounds = folder / "keras_tuner" / "trial_0001" / "rounds.json"
    if damage == "deleted":
        rounds.unlink()
    else:
        rounds.write_bytes(DAMAGES[damage](rounds.read_bytes()))
    before = (folder / "trials.md").read_text()
    result = main("tune", *args["tune"], "--out", folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trial 0001: its rounds.json is missing or damaged; training it again" in result.stderr
    assert json.loads(rounds.read_text())["rounds"]  # trained, under its own number
    assert (folder / "trials.md").read_text() == before  # the same trials, the same numbers (same seeds)


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    (lambda e: e.update(per_round=[1, 2]), "round 1: not a record"),
    (lambda e: e["per_round"][0].update(test_accuracy=None), "test_accuracy is None, not a number"),
    (lambda e: e["per_round"][0].update(history="garbage"), "history is not lists of numbers"),
    (lambda e: e["per_round"][0].update(confusion=[[1]]), "confusion is not a 10x10 matrix"),
    (lambda e: e.update(config={"arch": 3}), "entry 'mlp'"),
])
def test_an_edited_results_json_is_one_line_naming_the_field(edit, message, folders, tmp_path, main):  # D6
    root, args = folders
    folder = tmp_path / "evaluate"
    shutil.copytree(root / "evaluate", folder)
    results = json.loads((folder / "results.json").read_text())
    edit(results["entries"][0])
    (folder / "results.json").write_text(json.dumps(results))
    line = one_line(main("evaluate", *args["evaluate"], "--rounds", "2", "--out", folder))
    assert "results.json" in line and message in line and "--overwrite" in line, line
