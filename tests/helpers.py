"""What several test files share: tiny fake MNIST, IDX writing, tiny model options, running the commands."""
import csv
import gzip
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

BIN = os.path.dirname(sys.executable)  # the venv's console scripts: the commands as installed
# Model options small enough to train in a second or two.
SMALL = dict(channels=(4, 8), kernel=(3,), pool=(2, 1), hidden=(16,), head=(8,))
TINY = ["--channels", "4,8", "--kernel", "3", "--pool", "2,1", "--hidden", "16", "--head", "8", "--pairs", "150",
        "--test-pairs", "50", "--batch-size", "10"]
# For what is about files, processes or a strategy, not a model: the dense net traces and exports in half the
# siamese net's time.
DENSE = [*TINY, "--arch", "mlp"]


def write_idx(path, array):
    """Write an IDX file (gzipped if the name ends in .gz)."""
    array = np.asarray(array, np.uint8)
    header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_mnist(n, seed):
    """Images whose mean brightness encodes the digit, so tiny nets can learn something."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.float32)
    images[:, 6:22, 6:22] += labels[:, None, None] * 20.0
    return images.clip(0, 255).astype(np.uint8), labels


def fake_idx_dir(folder):
    """`folder` made, with the four IDX files of a tiny fake MNIST (400 train, 200 test images)."""
    folder.mkdir()
    for (images_name, labels_name), n, seed, gz in (
            (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), 400, 1, True),
            (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 200, 2, False)):
        images, labels = fake_mnist(n, seed)
        ext = ".gz" if gz else ""
        write_idx(folder / (images_name + ext), images)
        write_idx(folder / (labels_name + ext), labels)
    return folder


def command(name, *args):
    return [os.path.join(BIN, f"mnistcompare-{name}"), *map(str, args)]


def run(name, *args, env=None, timeout=600, cwd=None):
    """Run `mnistcompare-<name> args` to the end; the CompletedProcess (text stdout/stderr)."""
    return subprocess.run(command(name, *args), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def start(name, *args, env=None, stdout=subprocess.DEVNULL, cwd=None):
    """Start `mnistcompare-<name> args` (SIGINT restored: a shell starting the tests in the background
    leaves it ignored)."""
    return subprocess.Popen(command(name, *args), stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def one_line(result, code=2):
    """The single stderr line of a command that failed with `code`, and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def history_rows(out):
    path = os.path.join(out, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wait_for(condition, proc=None, timeout=300, what="the condition"):
    """Poll `condition()` until true; fail if `proc` ends first or time runs out."""
    deadline = time.time() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the process ended before {what}: " + \
            (proc.stderr.read()[-3000:] if proc.stderr else "")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def event_tags(folder):
    """{run folder (relative): tags} of the TensorBoard event files under `folder`."""
    import tensorflow as tf

    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith("events.out.tfevents"):
                for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                    found.setdefault(os.path.relpath(root, folder), set()).update(v.tag for v in event.summary.value)
    return found


def xla_functions(saved_model):
    """Names of the functions of a SavedModel folder that must be compiled by XLA (attribute _XlaMustCompile):
    what a server without XLA, a stock TF Serving, cannot run."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(saved_model) / "saved_model.pb").read_bytes())
    return sorted(f.signature.name for graph in proto.meta_graphs for f in graph.graph_def.library.function
                  if f.attr["_XlaMustCompile"].b)
