import gc
import os
import pathlib

import numpy as np
import pytest

from helpers import fake_idx_dir, fake_mnist
from mnistcompare.runtime import tensorflow_environment

tensorflow_environment()  # before any test imports TensorFlow: the commands' own settings

SHARED_TFDS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tensorflow_datasets"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: over about five seconds: trains on real MNIST or many models, or starts "
                                       "processes (deselect with -m 'not slow')")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest -n, the slow tests first and the quick ones after (with --dist worksteal, setup.cfg):
        # the processes then end together, not one of them alone on a long test. Those of the trained model
        # lead, in the first process's share: the other one does not wait for it to be trained.
        items.sort(key=lambda item: ("trained_run" not in item.fixturenames, item.get_closest_marker("slow") is None))


def pytest_collection_finish(session):
    # What the test modules' imports made (TensorFlow, Keras, keras-tuner: most of this process's objects) is
    # frozen, as the commands freeze their TensorFlow (runtime.quiet_tensorflow): keras-tuner's trials, run
    # here, collect garbage twice each, and scanning those objects took 0.2 s a time.
    gc.freeze()


@pytest.fixture
def idx_dir(tmp_path):
    """A folder with the four IDX files of a tiny fake MNIST (400 train, 200 test images)."""
    return fake_idx_dir(tmp_path / "idx")


@pytest.fixture
def tiny_pairs():
    from mnistcompare.data import make_pairs

    rng = np.random.default_rng(0)
    train = make_pairs(*fake_mnist(128, 3), 64, rng)
    test = make_pairs(*fake_mnist(64, 4), 32, rng)
    return train, test


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST as a TFDS data dir: $TFDS_DATA_DIR, else ../shared beside the checkout."""
    for candidate in (os.environ.get("TFDS_DATA_DIR"), SHARED_TFDS):
        if candidate and (pathlib.Path(candidate) / "mnist").is_dir():
            return str(pathlib.Path(candidate).resolve())
    pytest.skip("real MNIST not found: set TFDS_DATA_DIR to a TFDS data dir holding mnist/")


@pytest.fixture
def cli():
    """Runs an installed command to its end: cli("train", "--epochs", 2, ...) -> CompletedProcess."""
    from helpers import run

    return run


@pytest.fixture
def main(capsys, monkeypatch):
    """Runs a command in this process, as a script calling `train_main([...])` does: main("train", "--epochs", 2,
    ...) -> CompletedProcess of its exit code, stdout and stderr. It saves the seconds of a new process and
    TensorFlow's start-up; `cli` is for what only a process shows (its start, signals, its exit)."""
    import subprocess
    from importlib.metadata import entry_points

    mains = {e.name.removeprefix("mnistcompare-"): e for e in entry_points(group="console_scripts")
             if e.name.startswith("mnistcompare-")}  # the installed commands' own functions

    def call(name, *args, env=None, cwd=None):
        argv = [str(a) for a in args]
        with monkeypatch.context() as patch:
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            if cwd:
                patch.chdir(cwd)
            capsys.readouterr()
            try:
                mains[name].load()(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess([f"mnistcompare-{name}", *argv], code, out, err)
    return call


@pytest.fixture(scope="session")
def trained_run(mnist_dir, tmp_path_factory):
    """One real training of report 000's siamese net (seed 0), shared by the tests that need a trained model:
    (run folder, its metrics, its test pairs). Read-only. Under pytest -n, the first process to need it trains
    it and the others wait for it, in the folder the processes of one run share (pytest-xdist's own recipe)."""
    import fcntl
    import json

    from mnistcompare.cli import train_main
    from mnistcompare.data import find_source, load_pairs
    from mnistcompare.reports import preset

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    out = root / "trained" / "run"
    with open(root / "trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "metrics.json").exists():
            train_main(["--preset", "report000-siamese", "--seed", "0", "--data-dir", mnist_dir, "--out", str(out),
                        "--quiet"])
    _, test = load_pairs(preset("report000-siamese"), find_source(data_dir=mnist_dir))
    return out, json.loads((out / "metrics.json").read_text()), test


PLAIN_TENSORFLOW = r"""
import contextlib, io, json, sys, traceback
sys.modules["mnistcompare"] = None  # importing it fails: the programs are a user's, without the package
replies = sys.stdout
for request in map(json.loads, sys.stdin):
    sys.argv, out, err, code = ["-c", *request["argv"]], io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(request["code"], "<program>", "exec"), {"__name__": "__main__"})
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    replies.write(json.dumps({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    replies.flush()
"""


@pytest.fixture(scope="session")
def plain_tf(tmp_path_factory):
    """Runs a program of plain TensorFlow and Keras, which cannot import mnistcompare, as a user's would:
    plain_tf(code, *argv) -> CompletedProcess (exit 1 and the traceback if it raised). The programs run one
    after another in one Python process kept for the session, rather than a process each paying TensorFlow's
    start-up (about 5 s of CPU)."""
    import json
    import select
    import subprocess
    import sys

    log_path = tmp_path_factory.mktemp("plain_tf") / "stderr.txt"
    log, server = open(log_path, "a"), {}

    def call(code, *argv, timeout=300):
        if "process" not in server or server["process"].poll() is not None:
            server["process"] = subprocess.Popen([sys.executable, "-c", PLAIN_TENSORFLOW], stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, stderr=log, text=True)
        process = server["process"]
        process.stdin.write(json.dumps({"code": code, "argv": [str(a) for a in argv]}) + "\n")
        process.stdin.flush()
        if not select.select([process.stdout], [], [], timeout)[0]:
            process.kill()
        reply = process.stdout.readline()
        if not reply:  # it died (or hung, and was killed)
            process.kill()
            return subprocess.CompletedProcess(argv, process.wait(), "", log_path.read_text()[-3000:])
        return subprocess.CompletedProcess(argv, **json.loads(reply))

    yield call
    if "process" in server:
        server["process"].stdin.close()
        server["process"].wait(timeout=60)
    log.close()
