"""Interrupted, concurrent, diverging and disk-starved runs; every parser mistake is one line."""
import json
import os
import resource
import signal
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import DENSE, SMALL, TINY, command, fake_idx_dir, history_rows, one_line, start, wait_for, write_idx
from mnistcompare.cli import config_from_args, entries_from_args, evaluate_parser, train_parser
from mnistcompare.errors import UserError
from mnistcompare.tuning.cli import tune_parser
from mnistcompare.tuning.grid import parse_grid


def interrupt_after(proc, out, rows, sig):
    wait_for(lambda: len(history_rows(out)) >= rows, proc, what=f"{rows} epochs")
    proc.send_signal(sig)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_sigkill_then_rerun_trains_exactly_the_missing_epochs(idx_dir, tmp_path, main):
    import keras

    out = tmp_path / "run"
    args = ["--idx-dir", idx_dir, *TINY, "--epochs", "40", "--quiet", "--out", out]
    interrupt_after(start("train", *args), out, 3, signal.SIGKILL)
    done = len(history_rows(out))
    assert 3 <= done < 40 and not (out / "metrics.json").exists()

    other = main("train", *args[:-2], "--lr", "0.01", "--out", out)  # another config may not mix in
    assert "another configuration" in one_line(other)

    result = main("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_at = int(result.stdout.split("at epoch ")[1].split()[0]) - 1
    assert done - 1 <= resumed_at <= done  # the last epoch's backup may not have been written when killed
    assert [int(r["epoch"]) for r in history_rows(out)] == list(range(40))
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 40
    # The optimizer counts every step since the start: 40 epochs of 15 steps, restored then continued.
    # Had the rerun trained every epoch again, it would count (resumed_at + 40) * 15.
    model = keras.models.load_model(out / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 40 * 15
    assert not (out / "backup").exists()  # a finished run keeps no backup


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(idx_dir, tmp_path):
    out = tmp_path / "run"
    proc = start("train", "--idx-dir", idx_dir, *TINY, "--epochs", "60", "--quiet", "--out", out)
    assert interrupt_after(proc, out, 2, signal.SIGINT) == 130
    stderr = proc.stderr.read()
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "config.json").read_text())["epochs"] == 60


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(tiny_pairs):
    from mnistcompare.config import Config
    from mnistcompare.training import train_round

    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=3, batch_size=16, dropout=0.3, swap=True, shift=1).validate()
    (_, a, ha), (_, b, hb), (_, c, hc) = (train_round(cfg.replace(seed=seed), train, test, verbose=0)
                                          for seed in (5, 5, 6))
    keys = ("test_accuracy", "train_accuracy", "test_digit_accuracy")
    assert [a[k] for k in keys] == [b[k] for k in keys] and ha["loss"] == hb["loss"]
    assert hc["loss"] != ha["loss"]


@pytest.mark.slow
def test_two_runs_on_one_folder_at_once_the_second_is_refused(idx_dir, tmp_path, main):
    out = tmp_path / "run"
    first = start("train", "--idx-dir", idx_dir, *TINY, "--epochs", "200", "--quiet", "--out", out)
    try:
        wait_for(lambda: len(history_rows(out)) >= 1, first, what="the first epoch")
        second = main("train", "--idx-dir", idx_dir, *TINY, "--epochs", "200", "--quiet", "--out", out)
        assert "is in use by pid" in one_line(second)
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_overwrite_deletes_only_what_a_run_wrote(idx_dir, tmp_path, main):
    folder = tmp_path / "thesis"
    (folder / "backup").mkdir(parents=True)
    (folder / "backup" / "thesis.tex").write_text("x")
    args = ["--idx-dir", idx_dir, *DENSE, "--epochs", "1", "--quiet"]
    refused = main("train", *args, "--out", ".", "--overwrite", cwd=folder)
    assert "holds files but no run" in one_line(refused)
    assert (folder / "backup" / "thesis.tex").read_text() == "x"

    run = tmp_path / "run"
    assert main("train", *args, "--out", run).returncode == 0
    (run / "saved_model" / "1" / "notes.txt").write_text("mine")
    again = main("train", *args, "--out", run, "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "saved_model" / "1" / "notes.txt").read_text() == "mine" and (run / "metrics.json").exists()


def test_a_diverging_run_ends_with_one_line_and_is_not_saved_as_finished(idx_dir, tmp_path, main):
    out = tmp_path / "nan"
    result = main("train", "--idx-dir", idx_dir, *TINY, "--epochs", "2", "--lr", "1e9", "--no-batch-norm", "--quiet",
                  "--out", out)
    assert "diverged at epoch" in one_line(result, code=1)
    assert not (out / "metrics.json").exists() and not (out / "saved_model").exists()


def _limit_file_size(size):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_resumes(idx_dir, tmp_path, main):
    out = tmp_path / "run"  # config.json (~2 KB) fits, the first backup (~20 KB) does not
    args = command("train", "--idx-dir", idx_dir, *DENSE, "--epochs", "2", "--quiet", "--out", out)
    full = subprocess.run(args, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size(12_000))
    assert "cannot write" in one_line(full, code=1) and "backup" in full.stderr
    assert not [p for p in out.rglob(".tmp-*")]  # no half-written file left behind
    rerun = main("train", "--idx-dir", idx_dir, *DENSE, "--epochs", "2", "--quiet", "--out", out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_a_failed_write_is_one_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    import errno

    import pytest

    from mnistcompare.config import Config
    from mnistcompare.errors import RunError
    from mnistcompare.files import write_json

    write_json(tmp_path / "config.json", {"old": True})

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)  # the disk fills up while the new file is written
    with pytest.raises(RunError, match="cannot write .*config.json: No space left on device"):
        Config().save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left behind


def test_data_and_output_mistakes_are_one_line_and_write_nothing(idx_dir, tmp_path, main):
    # (the many ways an IDX file can be broken are tests of data.py: here, that the command says it in one line)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(idx_dir):
        (broken / name).write_bytes((idx_dir / name).read_bytes())
    write_idx(broken / "t10k-labels-idx1-ubyte", [[1, 2], [3, 4]])  # wrong number of dimensions
    cases = [
        (["--idx-dir", idx_dir, "--out", blocker], "not a folder"),
        (["--idx-dir", broken, "--out", tmp_path / "o1"], "not an IDX file of 1 dimensions"),
        (["--idx-dir", idx_dir, "--pairs", "300", "--out", tmp_path / "o2"], "300 pairs need 600 images"),
    ]
    for args, message in cases:
        result = main("train", *args, "--pairs", "100", "--test-pairs", "50") if "--pairs" not in args else \
            main("train", *args)
        assert message in one_line(result), (args, result.stderr)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 3))


FLAGS = ["--arch", "--preset", "--config", "--epochs", "--batch-size", "--lr", "--alpha", "--pairs", "--seed",
         "--channels", "--kernel", "--padding", "--pool", "--hidden", "--dropout", "--combine", "--swap",
         "--no-swap", "--shift", "--val-split", "--patience", "--schedule", "--optimizer", "--rounds", "--study",
         "--grid", "--runs-per-trial", "--workers", "--final-rounds", "--numerics", "--output", "--help",
         "--nonsense"]
VALUES = st.one_of(st.sampled_from(["siamese", "nope", "report000-siamese", "reports", "-1", "0", "1", "1.5",
                                    "nan", "inf", "8,16", "8,,x", "", "none", "alpha=2", "channels=", "3:1:1",
                                    "alpha=0:1:0.5", "/no/such/file", "same", "valid,3", "1e9", "²", "torch",
                                    "swap=yes", "epochs=1:2:0.5", "channels=0", "99999999999"]),
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


class DiskFull:
    """A disk that fills up, for the outputs under `out`: every commit of an output (os.replace, through
    which atomic_path and the SavedModel export rename their temporary files) and every SavedModel that
    TensorFlow writes count as a write; from the `fail_from`-th on (0: never), they fail with ENOSPC, or
    with `once`, that write alone (a big file that did not fit, where later small ones do). A SavedModel
    write fails as TensorFlow's does: its temporary saved_model.pb.tmp<hex> left in the folder."""

    def __init__(self, out, fail_from=0, once=False):
        from tensorflow.python.saved_model import save as saved_model

        self.out, self.fail_from, self.once, self.count, self.failed = str(out), fail_from, once, 0, None
        self.paths = []
        self.real_replace, self.real_save = os.replace, saved_model.save_and_return_nodes

    def install(self, monkeypatch):
        # What tf.saved_model.save calls, looked up at each call: a patch of tf.saved_model.save itself
        # is undone by TensorFlow's imports during a process's first export (that write went uncounted).
        from tensorflow.python.saved_model import save as saved_model

        monkeypatch.setattr(os, "replace", self.replace)
        monkeypatch.setattr(saved_model, "save_and_return_nodes", self.save)
        return self

    def fails(self, path):
        if not str(path).startswith(self.out):
            return False
        self.count += 1
        self.paths.append(str(path))
        fails = self.fail_from and (self.count == self.fail_from or self.count > self.fail_from and not self.once)
        self.failed = self.failed or (path if fails else None)
        return fails

    def replace(self, src, dst, *args, **kwargs):
        if self.fails(dst):
            import errno

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real_replace(src, dst, *args, **kwargs)

    def save(self, obj, path, *args, **kwargs):
        if self.fails(path):
            import tensorflow as tf

            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "saved_model.pb.tmp5bf3d13b"), "wb") as f:
                f.write(b"\0" * 1000)
            raise tf.errors.ResourceExhaustedError(None, None, f"{path}/saved_model.pb.tmp5bf3d13b; No space "
                                                               "left on device")
        return self.real_save(obj, path, *args, **kwargs)


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != ".lock")


# A run's writes, in order; a new one is to be added here (and so tested failing).
WRITES = {"train": ("config.json", "history.csv", "backup", "model.keras", "saved_model (written)",
                    "saved_model (renamed)", "pairs.png", "metrics.json"),
          "evaluate": ("pairs.png", "results.json", "results.md", "results.json", "results.md", "curves.png",
                       "rounds.png")}


@pytest.fixture(scope="module")
def full_disk_runs(tmp_path_factory):
    """Per command: its arguments and what an uninterrupted run of it writes (the files, and each write's
    path), run once per test process."""
    from mnistcompare.cli import evaluate_main, train_main

    data = fake_idx_dir(tmp_path_factory.mktemp("full-disk") / "idx")
    runs = {}

    def run(command):
        if command not in runs:
            main, extra = {"train": (train_main, []), "evaluate": (evaluate_main, ["--rounds", "1", "--jobs", "1"])}[
                command]
            args = ["--idx-dir", str(data), *DENSE, "--epochs", "1", *extra, "--quiet"]
            reference = data.parent / command
            with pytest.MonkeyPatch.context() as patched:
                counter = DiskFull(reference).install(patched)
                main([*args, "--out", str(reference)])
            runs[command] = main, args, _files(reference), counter.paths
        return runs[command]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("command, fail_from", [pytest.param(command, n, id=f"{command}-{n}-{name}")
                                                for command, names in WRITES.items()
                                                for n, name in enumerate(names, start=1)])
def test_a_disk_full_at_each_write_then_the_rerun_writes_every_artifact(command, fail_from, full_disk_runs,
                                                                        tmp_path, monkeypatch, capsys):  # D1, D2
    """A run whose disk fills up at this write ends with one line naming that write, and the same command,
    with space again, writes every artifact of an uninterrupted run and no temporary file. The disk stays full
    after an odd-numbered write fails (every later write fails too: the first failure must be the one
    reported), and only that write fails after an even-numbered one (a big file that did not fit, while later
    small ones do: nothing it held may be lost)."""
    main, args, expected, writes = full_disk_runs(command)
    names = WRITES[command]  # a write added or moved: name it there
    assert len(writes) == len(names) and all(name.split()[0] in path for name, path in zip(names, writes)), writes
    assert any(".tmp-" in path for path in writes) == (command == "train"), writes  # the SavedModel's counted
    capsys.readouterr()
    out = tmp_path / "full"
    with monkeypatch.context() as patched, pytest.raises(SystemExit) as failed:
        disk = DiskFull(out, fail_from, once=fail_from % 2 == 0).install(patched)
        main([*args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    name = os.path.basename(str(disk.failed)).split(".tmp-")[-1].split("-")[0]  # (a renamed temporary)
    assert failed.value.code == 1 and len(err) == 1 and "No space left on device" in err[0], err
    assert name in err[0], (disk.failed, err)  # the first failure is the one reported
    main([*args, "--out", str(out)])  # the same command, with space again
    assert _files(out) == expected  # every artifact, no temporary file


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_sigterm_ends_a_run_with_one_line_and_exit_143(command, idx_dir, tmp_path):
    out = tmp_path / "run"
    extra = ["--rounds", "2", "--jobs", "2"] if command == "evaluate" else []  # its worker pool ended too
    proc = start(command, "--idx-dir", idx_dir, *TINY, "--epochs", "200", *extra, "--quiet", "--out", out)
    wait_for(lambda: (out / ".lock").exists(), proc, what="the run to start")
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    stderr = proc.stderr.read()
    assert stderr.strip().splitlines()[-1].endswith("terminated; rerun the same command to resume"), stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
