import gzip
import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_TFDS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tensorflow_datasets"


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


@pytest.fixture
def idx_dir(tmp_path):
    """A folder with the four IDX files of a tiny fake MNIST (400 train, 200 test images)."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for (images_name, labels_name), n, seed, gz in (
            (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), 400, 1, True),
            (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 200, 2, False)):
        images, labels = fake_mnist(n, seed)
        ext = ".gz" if gz else ""
        write_idx(folder / (images_name + ext), images)
        write_idx(folder / (labels_name + ext), labels)
    return folder


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
