"""The command-line programs: outputs, --help, --version, and one line for every user mistake."""
import json
import subprocess
import sys

import pytest

from helpers import xla_functions, event_tags, one_line
from mnistcompare.cli import train_parser


@pytest.mark.parametrize("args, message", [
    (["--arch", "nope"], "--arch: must be one of baseline"),
    (["--epochs", "-1"], "--epochs: must be >= 1, got -1"),
    (["--epochs", "x"], "--epochs: invalid int value"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--alpha", "1.5"], "--alpha: must be in [0, 1]"),
    (["--pairs", "40000"], "--pairs: must be in [1, 30000]"),
    (["--preset", "nope"], "--preset: unknown preset"),
    (["--channels", "8,x"], "--channels"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--config", "/no/such/config.json"], "config file not found"),
    (["--idx-dir", "/no/such/folder"], "--idx-dir /no/such/folder: no such folder"),
    (["--data-dir", "/no/such/folder"], "no MNIST found"),
    (["--npz", "/no/such/mnist.npz"], "--npz /no/such/mnist.npz: no such file"),
    (["--seed", "99999999999"], "--seed: must be in [0, 4294967295]"),
    (["--padding", "²"], "--padding: expected valid, same or a number of pixels"),
    (["--epochs", "²"], "--epochs: invalid int value"),
    (["--numerics", "pytorch"], "--numerics: must be one of keras, torch"),
    (["--pairs", "1", "--val-split", "0.6"], "--val-split: leaves no training pair"),
    (["--strategy", "multiworker"], "TF_CONFIG is not a valid cluster description"),
])
def test_user_mistakes_exit_2_with_one_line(args, message, tmp_path, cli):
    env = {"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}'}
    assert message in one_line(cli("train", *args, "--out", tmp_path / "out", env=env))
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_missing_data_without_any_setting_fails_fast_offline(tmp_path, cli):
    import time

    env = {"TFDS_DATA_DIR": "", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / ".keras"),
           # offline here; a proxy that refuses makes the download fail at once on a machine with internet too
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    start = time.perf_counter()
    result = cli("train", "--out", tmp_path / "out", env=env)
    # Without the socket timeout a refused or silent network holds the command for minutes. TensorFlow's
    # start-up alone took up to 20 s on a slow 2-core machine busy with other work, so the bound leaves room.
    assert time.perf_counter() - start < 60
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "downloading it failed" in line and "--idx-dir" in line
    no_download = cli("train", "--no-download", "--out", tmp_path / "out", env=env)
    assert "--no-download" in one_line(no_download)


def test_help_lists_every_option_with_its_bounds(cli):
    text = train_parser().format_help()
    for flag in ("--arch", "--preset", "--config", "--alpha", "--epochs", "--batch-size", "--lr", "--optimizer",
                 "--pairs", "--seed", "--data-dir", "--idx-dir", "--npz", "--no-download", "--out", "--swap",
                 "--shift", "--combine", "--xla", "--numerics", "--version"):
        assert flag in text
    assert "dropout after each hidden dense layer; in [0, 1) (default: 0.25)" in " ".join(text.split())
    for command in ("train", "evaluate", "tune"):
        result = cli(command, "--help")
        assert result.returncode == 0 and f"mnistcompare-{command}" in result.stdout
        version = cli(command, "--version")
        assert version.returncode == 0 and version.stdout.strip() == f"mnistcompare-{command} 0.2.0"


@pytest.mark.slow
def test_train_writes_every_output_and_config_reruns(idx_dir, tmp_path, main):
    out = tmp_path / "run"
    common = ["--idx-dir", str(idx_dir), "--pairs", "100", "--test-pairs", "50", "--epochs", "2",
              "--batch-size", "25", "--quiet"]
    result = main("train", "--arch", "digits", "--channels", "4,8", "--kernel", "3", "--pool", "2,1", "--hidden", "16",
                 "--alpha", "0.2", *common, "--out", out, "--tensorboard", tmp_path / "tb")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "saved_model/1/saved_model.pb", "pairs.png",
                 "confusion.png"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("arch", "test_accuracy", "train_accuracy", "params", "train_seconds", "epochs", "seed"):
        assert key in metrics
    assert metrics["arch"] == "digits" and metrics["epochs"] == 2 and metrics["config"]["alpha"] == 0.2
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    tags = event_tags(tmp_path / "tb")  # the test curve in its own run, under the training run's names
    assert {"epoch_loss", "epoch_compare_accuracy"} <= tags["train"] and "epoch_test_accuracy" not in tags["train"]
    assert {"epoch_compare_accuracy", "epoch_compare_loss"} <= tags["test"]

    # A finished run is not overwritten by accident.
    again = main("train", "--config", out / "config.json", *common, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    # The saved config reproduces the run exactly (same seed, same data).
    # (--xla changes only the export.)
    rerun = main("train", "--config", out / "config.json", *common, "--out", tmp_path / "rerun", "--xla")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics2 = json.loads((tmp_path / "rerun" / "metrics.json").read_text())
    assert metrics2["config"] == metrics["config"]
    assert metrics2["test_accuracy"] == metrics["test_accuracy"]
    assert metrics2["train_accuracy"] == metrics["train_accuracy"]
    compiled = [bool(xla_functions(run_dir / "saved_model" / "1")) for run_dir in (out, tmp_path / "rerun")]
    assert compiled == [False, True]


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"), ('{"epochs": 3, "colour": "red"}', "unknown option(s) colour"),
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
    ('{"epochs": "25"}', "\"epochs\": expected int"), ('{"channels": 16}', "\"channels\": expected a list")])
def test_malformed_config_file_exits_2_with_one_line(text, message, tmp_path, cli):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert message in one_line(cli("train", "--config", path, "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_python_m_mnistcompare_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "mnistcompare"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    from importlib.metadata import entry_points

    installed = [e.name for e in entry_points(group="console_scripts") if e.name.startswith("mnistcompare-")]
    assert {"mnistcompare-train", "mnistcompare-serve"} <= set(installed)  # (found: the loop checks something)
    for name in installed:
        assert name in result.stdout


@pytest.mark.parametrize("profile", [[], ["--profile"]])
@pytest.mark.parametrize("flag, message", [
    ("--flag=--frobnicate", "epochs.py --flag: error: unrecognized arguments: --frobnicate"),
    ("--flag=--batch-size=0", "--batch-size: must be >= 1, got 0"),
])
def test_epochs_bench_refuses_a_bad_option_before_training(flag, message, profile):
    import os

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "epochs.py")
    result = subprocess.run([sys.executable, script, flag, *profile], capture_output=True, text=True, timeout=120)
    assert message in one_line(result)


def test_a_keras_backend_other_than_tensorflow_is_one_line(idx_dir, tmp_path, cli):
    line = one_line(cli("train", "--idx-dir", idx_dir, "--out", tmp_path / "run", env={"KERAS_BACKEND": "jax"}))
    assert "Keras' backend is 'jax'" in line and "KERAS_BACKEND" in line
