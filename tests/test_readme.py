"""Every Python block of README.md runs as written (fewer epochs, through README_EPOCHS, which the README
does not need), in a fresh process, from a scratch folder."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(python_blocks(ROOT / "README.md")) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run_in_order_and_give_the_commands_numbers(mnist_dir, tmp_path):
    from helpers import command
    from mnistcompare.runtime import ENVIRONMENT

    # A user's shell: none of the settings the package gives TensorFlow (conftest set them for this process).
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    code = "\n".join(python_blocks(ROOT / "README.md"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**env, "TFDS_DATA_DIR": mnist_dir, "README_EPOCHS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cuda" not in result.stderr.lower() and "onednn" not in result.stderr.lower(), result.stderr[-3000:]
    script = re.search(r"test accuracy (0\.\d{4})", result.stdout)
    assert re.search(r"\[[0-9. e-]+\]", result.stdout)  # the SavedModel's answers
    # The same Config and seed through the command, in a fresh process: the same test accuracy, to its last digit.
    train = subprocess.run(command("train", "--arch", "siamese", "--epochs", 1, "--out", tmp_path / "cmd"),
                           capture_output=True, text=True, timeout=600, cwd=tmp_path,
                           env={**env, "TFDS_DATA_DIR": mnist_dir})
    assert train.returncode == 0, train.stderr[-3000:]
    assert script and f"test accuracy {script.group(1)}," in train.stdout, (result.stdout, train.stdout)
