"""The package against a hostile user and a hostile machine, class by class: (A) permissions, (B) a full disk
inside keras-tuner's writes, (C) ties on resume (test_tuning.py), (D) messages that must send the user the right
way, (F) memory that must not grow with the input, (G) paths checked before TensorFlow starts, (H) a loss that
explodes but stays finite. (E), the server's deadlines and bounds, is in test_serve.py.

As root, permissions are tried with the capabilities that ignore them dropped (capsh), as a user meets them."""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import DENSE, command, one_line

DROP = ["capsh", "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--", "-c"]


def as_user(name, *args, timeout=300):
    """`mnistcompare-<name> args` run as a user who meets file permissions (root without its capabilities)."""
    argv = command(name, *args)
    if os.geteuid() == 0:
        assert shutil.which("capsh"), "as root, the permission tests need capsh (Debian's libcap2-bin)"
        argv = [*DROP, " ".join(f"'{a}'" for a in argv)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def quick_line(result, seconds, code=2):
    """One line and `code`, within `seconds` (before TensorFlow and MNIST load)."""
    assert result.elapsed < seconds, f"took {result.elapsed:.1f} s: {result.stderr[-500:]}"
    return one_line(result, code)


def timed(name, *args):
    start = time.monotonic()
    result = as_user(name, *args)
    result.elapsed = time.monotonic() - start
    return result


@pytest.fixture
def shared(idx_dir, tmp_path):
    """`tmp_path` and the IDX folder, readable by everyone (the folders a user without root's powers sees)."""
    for folder in (tmp_path, idx_dir):
        os.chmod(folder, 0o777)
    for path in glob.glob(str(idx_dir / "*")):
        os.chmod(path, 0o644)
    return tmp_path, ["--idx-dir", str(idx_dir), *DENSE, "--epochs", "1", "--quiet"]


# -- A. permissions ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", ["a lock file it cannot write", "a folder it cannot make"])
@pytest.mark.parametrize("name", ["train", "evaluate", "tune"])
def test_an_out_that_cannot_be_written_is_one_line_before_tensorflow_starts(name, case, shared):
    tmp_path, args = shared
    if case == "a lock file it cannot write":
        out = tmp_path / "run"
        out.mkdir(mode=0o777)
        (out / ".lock").write_text("")
        os.chmod(out / ".lock", 0o444)
        expected = f"cannot open its lock file {out / '.lock'} (Permission denied)"
    else:
        (tmp_path / "closed").mkdir(mode=0o555)
        out = tmp_path / "closed" / "run"
        expected = f"--out {out}: cannot write in {tmp_path / 'closed'} (Permission denied)"
    extra = {"evaluate": ["--rounds", "1"], "tune": ["--grid", "dropout=0,0.5"]}.get(name, [])
    line = quick_line(timed(name, *args, *extra, "--out", out), 10)
    assert expected in line, line


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_a_tensorboard_folder_that_cannot_be_written_leaves_no_run_behind(name, shared):
    tmp_path, args = shared
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o555)
    extra = ["--rounds", "1"] if name == "evaluate" else []
    line = quick_line(timed(name, *args, *extra, "--out", tmp_path / "run", "--tensorboard", closed / "logs"), 10)
    assert f"--tensorboard {closed / 'logs'}: cannot write in {closed} (Permission denied)" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["predict", "serve"])
@pytest.mark.parametrize("folder", ["saved_model", "saved_model/1"])
def test_a_saved_model_that_cannot_be_read_is_named_with_the_reason(name, folder, trained_run, tmp_path):
    out, _, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(out / "saved_model", run / "saved_model")
    for path in [run, *run.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(tmp_path, 0o755)
    os.chmod(run / folder, 0o000)
    images = [os.path.join(os.path.dirname(__file__), "..", "docs", "examples", f"{d}.png") for d in (2, 7)]
    args = [run, *images] if name == "predict" else [run, "--port", 8597]
    line = quick_line(timed(name, *args), 10)
    assert f"cannot read {run / folder} (Permission denied)" in line, line


@pytest.mark.slow
def test_a_pairs_file_that_cannot_be_read_is_one_line(trained_run, tmp_path):
    out, _, _ = trained_run
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a.png,b.png\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(pairs, 0o000)
    line = quick_line(timed("predict", out, "--pairs", pairs), 10)
    assert f"--pairs {pairs}: cannot read it (Permission denied)" in line, line


# -- B. a full disk inside keras-tuner's own writes -----------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs, for a full disk (root on a machine that allows mounts: CI's)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()[:100]}): the full-disk case "
                    "of keras-tuner's writes needs root and mounts")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_a_disk_filled_by_keras_tuners_checkpoints_is_one_line_no_half_file_and_the_search_resumes(
        small_disk, idx_dir, tmp_path, cli):
    args = ["--idx-dir", idx_dir, *DENSE, "--epochs", "1", "--val-pairs", "50", "--runs-per-trial", "1",
            "--final-rounds", "0", "--quiet", "--grid", "hidden=" + ",".join(str(16 + k) for k in range(6))]
    result = cli("tune", *args, "--out", small_disk / "t")
    line = one_line(result, 1)  # (and no crash: exit 1, not a signal)
    assert "No space left on device" in line and "checkpoint.weights.h5" in line, line
    assert not [p for p in small_disk.rglob("*") if p.name.startswith(".tmp-")]
    import h5py

    for weights in small_disk.rglob("checkpoint.weights.h5"):  # every checkpoint on the disk is whole
        with h5py.File(weights, "r"):
            pass
    moved = tmp_path / "moved"
    shutil.copytree(small_disk / "t", moved)  # room again: the same search resumes and ends
    again = cli("tune", *args, "--out", moved)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list(moved.glob("keras_tuner/trial_*/rounds.json"))) == 6


# -- D. advice that sends the user the right way ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_damaged_newest_backup_resumes_from_the_one_before_not_from_the_start(idx_dir, tmp_path, main):
    import keras

    args = ["--idx-dir", idx_dir, *DENSE, "--epochs", "4", "--quiet", "--out", tmp_path / "run"]
    with pytest.MonkeyPatch.context() as patch:  # killed after its epochs, before its outputs
        patch.setattr(keras.Model, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main("train", *args).returncode == 130
    newest = tmp_path / "run" / "backup" / "epoch-0004.npz"
    newest.write_bytes(newest.read_bytes()[:100])
    resumed = main("train", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch-0004.npz (BadZipFile)" in resumed.stderr and "resuming from epoch-0003.npz, epoch 3" in \
        resumed.stderr
    assert "at epoch 4 of 4" in resumed.stdout  # one epoch redone, not four
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["resumed_at_epoch"] == 3


# -- F. memory that does not grow with the input -------------------------------------------------------------------
# runs a command, then prints its peak resident memory in kB on stderr's last line (the only child of a new process)
PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


@pytest.mark.slow
def test_predict_reads_its_pairs_in_batches_its_memory_does_not_grow_with_them(trained_run, tmp_path):
    from PIL import Image

    from helpers import fake_mnist

    out, _, _ = trained_run
    images, _ = fake_mnist(2, 0)
    for k, image in enumerate(images):  # 28x28 digits: read as they are (the pairs' count is what is measured)
        Image.fromarray(image).save(tmp_path / f"{k}.png")
    peaks = {}
    for count in (100, 3000):
        pairs = tmp_path / f"pairs{count}.csv"
        pairs.write_text("0.png,1.png\n" * count)
        result = subprocess.run([sys.executable, "-c", PEAK, *command("predict", out, "--pairs", pairs, "--json")],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(json.loads(result.stdout)) == count
        peaks[count] = int(result.stderr.strip().splitlines()[-1])  # kB
    assert peaks[3000] < 1.15 * peaks[100], peaks


@pytest.mark.slow
def test_predict_piped_into_a_reader_that_stops_ends_quietly(trained_run, tmp_path):
    from PIL import Image

    from helpers import fake_mnist

    out, _, _ = trained_run
    images, _ = fake_mnist(2, 0)
    for k, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{k}.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("0.png,1.png\n" * 2000)  # more than a pipe holds: the writes after the reader left fail
    reader = subprocess.Popen(command("predict", out, "--pairs", pairs), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    first = reader.stdout.readline()  # as `| head -1`: one line read, then the pipe closed
    reader.stdout.close()
    stderr = reader.stderr.read()
    reader.wait(timeout=300)
    assert "P(a <= b)" in first
    assert reader.returncode == 1 and stderr == "", stderr[-3000:]


# -- H. a loss that explodes but stays finite --------------------------------------------------------------------------
def test_a_loss_past_the_limit_is_a_divergence_and_no_committed_round_comes_near_it():
    from mnistcompare.callbacks import LOSS_LIMIT, Diverged
    from mnistcompare.errors import RunError

    watch = Diverged()
    watch.on_epoch_begin(0)
    watch.on_train_batch_end(0, {"loss": LOSS_LIMIT / 2})
    for loss in (5.6e17, float("inf"), float("nan")):
        with pytest.raises(RunError, match="diverged at epoch 1"):
            watch.on_train_batch_end(0, {"loss": loss})
    highest = max(loss for path in glob.glob(os.path.join(os.path.dirname(__file__), "..", "docs", "results", "*",
                                                          "results.json"))
                  for entry in json.load(open(path)).get("entries", [])
                  for round_ in entry.get("per_round", [])
                  for loss in round_.get("history", {}).get("loss", []) if loss is not None)
    assert highest < LOSS_LIMIT / 50, highest  # every report's training, far below
