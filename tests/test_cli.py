import json
import os
import subprocess
import sys

import pytest

from mnistcompare.cli import train_parser


def run(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "mnistcompare.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["--arch", "nope"], "--arch: unknown value 'nope'"),
    (["--epochs", "-1"], "--epochs: must be a positive integer"),
    (["--epochs", "x"], "--epochs: invalid int value"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--alpha", "1.5"], "--alpha: must be in [0, 1]"),
    (["--pairs", "40000"], "--pairs: at most 30000"),
    (["--preset", "nope"], "--preset: unknown preset"),
    (["--channels", "8,x"], "--channels"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--config", "/no/such/config.json"], "config file not found"),
    (["--idx-dir", "/no/such/folder"], "--idx-dir /no/such/folder: no such folder"),
    (["--data-dir", "/no/such/folder"], "no MNIST found"),
])
def test_user_mistakes_exit_2_with_one_line(args, message, tmp_path):
    result = run(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_data_without_any_setting(tmp_path):
    result = run("--out", str(tmp_path / "out"), env={"TFDS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 2 and "no MNIST found" in result.stderr and "--idx-dir" in result.stderr


def test_help_lists_every_option():
    text = train_parser().format_help()
    for flag in ("--arch", "--preset", "--config", "--alpha", "--epochs", "--batch-size", "--lr", "--optimizer",
                 "--pairs", "--seed", "--data-dir", "--idx-dir", "--out", "--swap", "--shift", "--combine", "--no-xla"):
        assert flag in text
    result = run("--help")
    assert result.returncode == 0 and "mnistcompare-train" in result.stdout


def test_train_writes_every_output_and_config_reruns(idx_dir, tmp_path):
    out = tmp_path / "run"
    common = ["--idx-dir", str(idx_dir), "--pairs", "100", "--test-pairs", "50", "--epochs", "2",
              "--batch-size", "25", "--quiet"]
    result = run("--arch", "digits", "--channels", "4,8", "--kernel", "3", "--pool", "2,1", "--hidden", "16", "--alpha", "0.2", *common,
                 "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "saved_model/saved_model.pb"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("arch", "test_accuracy", "train_accuracy", "params", "train_seconds", "epochs", "seed"):
        assert key in metrics
    assert metrics["arch"] == "digits" and metrics["epochs"] == 2 and metrics["config"]["alpha"] == 0.2
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs

    # A finished run is not overwritten by accident.
    again = run("--config", str(out / "config.json"), *common, "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr

    # The saved config reproduces the run exactly (same seed, same data).
    # (--no-xla changes only the export.)
    rerun = run("--config", str(out / "config.json"), *common, "--out", str(tmp_path / "rerun"), "--no-xla")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics2 = json.loads((tmp_path / "rerun" / "metrics.json").read_text())
    assert metrics2["config"] == metrics["config"]
    assert metrics2["test_accuracy"] == metrics["test_accuracy"]
    assert metrics2["train_accuracy"] == metrics["train_accuracy"]
    compiled = [b"_XlaMustCompile" in (run_dir / "saved_model" / "saved_model.pb").read_bytes()
                for run_dir in (out, tmp_path / "rerun")]
    assert compiled == [True, False]


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"), ('{"epochs": 3, "colour": "red"}', "unknown option(s) colour"),
    ('{"epochs": "25"}', "--epochs: expected int"), ('{"channels": 16}', "--channels: expected tuple")])
def test_malformed_config_file_exits_2_with_one_line(text, message, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(text)
    result = run("--config", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
