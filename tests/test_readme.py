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
def test_readme_python_blocks_run_in_order(mnist_dir, tmp_path):
    code = "\n".join(python_blocks(ROOT / "README.md"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "TFDS_DATA_DIR": mnist_dir, "README_EPOCHS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"test accuracy 0\.\d{3}", result.stdout)
    assert re.search(r"\[[0-9. e-]+\]", result.stdout)  # the SavedModel's answers
