"""MNIST images -> pairs (the reports' protocol) -> tf.data.

Every report's protocol: 2x2 average-pool the images to 14x14, pair consecutive images of a seeded
permutation of a split, target = class(first) <= class(second), both classes kept for the auxiliary losses.
"""
import dataclasses
import functools
import glob
import gzip
import hashlib
import math
import os
import socket
import zipfile

import numpy as np

from mnistcompare.errors import UserError
from mnistcompare.files import TEMPORARY
from mnistcompare.runtime import keras_home, quiet_tensorflow

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
WHERE = ("set TFDS_DATA_DIR or pass --data-dir (a TFDS data dir holding mnist/), --idx-dir (a folder with the "
         "four MNIST IDX files) or --npz (Keras' mnist.npz); see docs/getting-mnist.md")
DOWNLOAD_TIMEOUT = 10  # seconds a network operation may wait: offline, the download fails fast


@dataclasses.dataclass(frozen=True)
class Source:
    """Where MNIST is read from: kind "tfds" (a TFDS data dir), "idx" (the four IDX files) or "npz", and its path."""
    kind: str
    path: str


def find_source(data_dir=None, idx_dir=None, npz=None, download=True):
    """The MNIST to read, checked to exist, in order: --idx-dir, --npz, --data-dir, $TFDS_DATA_DIR,
    ~/tensorflow_datasets, Keras' cache (~/.keras/datasets/mnist.npz), and, unless `download` is False,
    Keras' own download into that cache."""
    if idx_dir:
        if not os.path.isdir(idx_dir):
            raise UserError(f"--idx-dir {idx_dir}: no such folder; {WHERE}")
        for stem in IDX_FILES["train"] + IDX_FILES["test"]:
            _idx_path(idx_dir, stem)
        return Source("idx", os.path.abspath(idx_dir))
    if npz:
        if not os.path.isfile(npz):
            raise UserError(f"--npz {npz}: no such file; {WHERE}")
        return Source("npz", os.path.abspath(npz))
    for origin, folder in (("--data-dir", data_dir), ("TFDS_DATA_DIR", os.environ.get("TFDS_DATA_DIR"))):
        if folder:
            if not os.path.isdir(os.path.join(folder, "mnist")):
                raise UserError(f"no MNIST found: {folder} ({origin}) holds no mnist/; {WHERE}")
            return Source("tfds", os.path.abspath(folder))
    tfds_default = os.path.expanduser(os.path.join("~", "tensorflow_datasets"))
    if os.path.isdir(os.path.join(tfds_default, "mnist")):
        return Source("tfds", tfds_default)
    cached = keras_npz_path()
    if os.path.isfile(cached):
        return Source("npz", cached)
    if not download:
        raise UserError(f"no MNIST found (nothing set, none in {tfds_default} or {cached}, --no-download); {WHERE}")
    return Source("npz", _download())


def keras_npz_path():
    """Where keras.datasets.mnist.load_data() keeps mnist.npz (KERAS_HOME, else ~/.keras)."""
    return os.path.join(keras_home(), "datasets", "mnist.npz")


def _download():
    """Keras' own download of mnist.npz into its cache; one clear line, within seconds, when offline."""
    print("MNIST not found here: downloading it once with keras.datasets.mnist.load_data() ...", flush=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        quiet_tensorflow()
        import keras
        keras.datasets.mnist.load_data()
    except Exception as e:  # urllib, ssl, hash and OS errors all mean the same to the user
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"no MNIST found, and downloading it failed ({reason}); {WHERE}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return keras_npz_path()


# -- 1. MNIST images + labels ---------------------------------------------------
def read_idx(path, ndim):
    """Read one IDX file (gzipped or not) into a uint8 array with `ndim` dims."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    magic = 0x800 + ndim
    if len(raw) < 4 + 4 * ndim or int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"{path} is not an IDX file of {ndim} dimensions (expected magic {magic:#010x})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise UserError(f"{path} is truncated or corrupt: header says {'x'.join(map(str, dims))} "
                        f"values, file holds {len(raw) - offset}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _idx_path(idx_dir, stem):
    for path in (os.path.join(idx_dir, stem), os.path.join(idx_dir, stem + ".gz")):
        if os.path.isfile(path):
            return path
    raise UserError(f"--idx-dir {idx_dir}: missing {stem}[.gz]; {WHERE}")


def load_idx(idx_dir, split):
    return tuple(read_idx(_idx_path(idx_dir, stem), ndim) for stem, ndim in zip(IDX_FILES[split], (3, 1)))


def load_npz(path, split):
    """One split of Keras' mnist.npz (x_train, y_train, x_test, y_test)."""
    x, y = ("x_train", "y_train") if split == "train" else ("x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data[x], np.uint8), np.asarray(data[y])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not Keras' mnist.npz (arrays x_train, y_train, x_test, y_test): "
                        f"{str(e)[:200] or type(e).__name__}") from None


def load_tfds(data_dir, split):
    import tensorflow_datasets as tfds  # slow import: only when this source is used
    try:
        images, labels = tfds.as_numpy(tfds.load(
            "mnist", split=split, data_dir=data_dir, download=False, batch_size=-1, as_supervised=True))
    except Exception as e:  # TFDS raises AssertionError, NotFoundError, ... for a bad dir
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load mnist from TFDS dir {data_dir}: {first}") from None
    return images[..., 0], labels


def cache_dir():
    """Decoded MNIST's folder: $MNISTCOMPARE_CACHE, else $XDG_CACHE_HOME/mnistcompare, else ~/.cache/mnistcompare."""
    return os.environ.get("MNISTCOMPARE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mnistcompare")


def load_tfds_cached(data_dir, split):
    """`load_tfds`, through a decoded copy of the split kept in `cache_dir()`, named by the TFDS files' paths,
    sizes and times: reading it takes 0.1 s, where TFDS takes 3 s (its import and the PNGs it decodes) of a
    15 s main job. Where the copy cannot be written, MNIST is read from TFDS each time."""
    records = sorted(glob.glob(os.path.join(data_dir, "mnist", "*", f"mnist-{split}.tfrecord*")))
    if not records:
        return load_tfds(data_dir, split)
    stamp = "|".join(f"{os.path.abspath(r)}:{os.stat(r).st_size}:{os.stat(r).st_mtime_ns}" for r in records)
    path = os.path.join(cache_dir(), f"mnist-{split}-{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.npz")
    try:
        with np.load(path) as data:
            return data["images"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # not there yet, or damaged: read from TFDS, and written again
    images, labels = load_tfds(data_dir, split)
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = f"{os.path.join(cache_dir(), TEMPORARY)}{os.getpid()}.npz"
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, path)
    except OSError:
        pass
    return images, labels


LOADERS = {"idx": load_idx, "npz": load_npz, "tfds": load_tfds_cached}


@functools.lru_cache(maxsize=4)
def _load_cached(split, source):
    images, labels = LOADERS[source.kind](source.path, split)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise UserError(f"{source.path}: {split} images {images.shape} and labels {labels.shape} are not MNIST "
                        "(N x 28 x 28 images, N labels)")
    if len(images) == 0:
        raise UserError(f"{source.path}: the {split} split holds no images")
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{split} labels outside 0..9 in {source.path}: not MNIST")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_mnist(split, source=None):
    """uint8 images [N, 28, 28] and labels [N] of a split of `source` (default: `find_source()`), kept per process."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _load_cached(split, source or find_source())


# -- 2. pairs ------------------------------------------------------------------
def pool(images):
    """uint8 [N, 28, 28] -> float32 [N, 14, 14, 1], 2x2 average, pixel scale 0..255."""
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(f"pool: expected raw MNIST images of shape [N, 28, 28], got {list(images.shape)}")
    return images.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))[..., None]


@dataclasses.dataclass
class Pairs:
    """N image pairs (float32 [N,14,14,1], pixel scale) with both classes."""
    image_a: np.ndarray
    image_b: np.ndarray
    digit_a: np.ndarray
    digit_b: np.ndarray

    def __post_init__(self):
        for name in ("image_a", "image_b"):
            x = np.asarray(getattr(self, name))
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4 or x.shape[1:] != (14, 14, 1):
                hint = "; raw 28x28 MNIST: mnistcompare.data.pool(images) first" if x.shape[1:3] == (28, 28) else ""
                raise UserError(f"{name}: expected images of shape [N, 14, 14, 1], got {list(x.shape)}{hint}")
            if not np.issubdtype(x.dtype, np.number):
                raise UserError(f"{name}: expected numbers, got dtype {x.dtype}")
            x = x.astype(np.float32)
            if not np.isfinite(x).all():
                raise UserError(f"{name}: contains NaN or infinity")
            setattr(self, name, x)
        for name in ("digit_a", "digit_b"):
            d = np.asarray(getattr(self, name))
            if d.ndim != 1 or not np.issubdtype(d.dtype, np.integer) or (d.size and (d.min() < 0 or d.max() > 9)):
                raise UserError(f"{name}: expected integer classes 0..9 of shape [N], got {d.dtype} {list(d.shape)}")
            setattr(self, name, d.astype(np.int32))
        sizes = {len(self.image_a), len(self.image_b), len(self.digit_a), len(self.digit_b)}
        if len(sizes) != 1:
            raise UserError(f"pairs: image_a, image_b, digit_a, digit_b differ in length ({sorted(sizes)})")

    def __len__(self):
        return len(self.digit_a)

    @property
    def target(self):
        """1.0 where the first digit is <= the second."""
        return (self.digit_a <= self.digit_b).astype(np.float32)

    def split(self, n_held_out):
        """(first len-n pairs, last n pairs)."""
        cut, parts = len(self) - n_held_out, dataclasses.astuple(self)
        return Pairs(*(x[:cut] for x in parts)), Pairs(*(x[cut:] for x in parts))

    def features(self):
        return {"image_a": self.image_a, "image_b": self.image_b}

    def labels(self, digits=True):
        """Targets by output name; `digits=False` for models without digit heads."""
        digit_labels = {"digit_a": self.digit_a, "digit_b": self.digit_b} if digits else {}
        return {"compare": self.target[:, None], **digit_labels}


def as_pairs(x, y=None, what="x"):
    """(Pairs, batch size or None) from what Keras' `fit` takes: Pairs; dicts of arrays, x {"image_a",
    "image_b"} ([N,14,14(,1)], pixel scale) and y {"digit_a", "digit_b"} (a "compare" given is checked); or a
    finite `tf.data.Dataset` of such (x, y), batched (its batch size is returned) or not."""
    if isinstance(x, Pairs) and y is None:
        return x, None
    batch_size = None
    if type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec"):  # a tf.data.Dataset
        if y is not None:
            raise UserError(f"{what} is a tf.data.Dataset: its elements hold the targets, give no y")
        x, y, batch_size = _from_dataset(x, what)
    if not (isinstance(x, dict) and isinstance(y, dict)):
        raise UserError(f"{what}: expected Pairs, dicts of arrays (x {{image_a, image_b}}, y {{digit_a, digit_b}}) "
                        f"or a tf.data.Dataset of such dicts, got {type(x).__name__}")
    missing = [k for k in ("image_a", "image_b") if k not in x] + [k for k in ("digit_a", "digit_b") if k not in y]
    if missing:
        raise UserError(f"{what}: no {', '.join(missing)}; the targets are the two digits (digit_a, digit_b), from "
                        "which the comparison target digit_a <= digit_b is computed")
    pairs = Pairs(x["image_a"], x["image_b"], *(np.asarray(y[k]).reshape(-1) for k in ("digit_a", "digit_b")))
    if "compare" in y and not np.array_equal(np.asarray(y["compare"], np.float32).reshape(-1), pairs.target):
        raise UserError(f"{what}: the compare targets are not digit_a <= digit_b")
    return pairs, batch_size


def _from_dataset(dataset, what):
    """(features, targets, batch size or None) of a finite tf.data.Dataset, read whole."""
    import tensorflow as tf
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise UserError(f"{what}: the tf.data.Dataset repeats forever; give it once (no .repeat())")
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(s, dict) for s in spec)):
        raise UserError(f"{what}: the tf.data.Dataset's elements must be (features, targets), two dicts")
    shape = spec[0]["image_a"].shape if "image_a" in spec[0] else None
    batched = shape is not None and (shape.rank == 4 or (shape.rank == 3 and shape[-1] != 1))
    parts = list(dataset.as_numpy_iterator())
    if not parts:
        raise UserError(f"{what}: the tf.data.Dataset is empty")
    join = np.concatenate if batched else np.stack
    features, targets = ({k: join([p[i][k] for p in parts]) for k in parts[0][i]} for i in (0, 1))
    return features, targets, len(parts[0][1][next(iter(parts[0][1]))]) if batched else None


def sample_pairs(images, labels, counts, rng):
    """The reports' `generate_pair_sets`: one permutation of the split, its first 2*counts[0] images paired two
    by two, then the next 2*counts[1], ... (disjoint samples)."""
    if 2 * sum(counts) > len(images):
        raise UserError(f"{sum(counts)} pairs need {2 * sum(counts)} images, the split has {len(images)}")
    order, starts = rng.permutation(len(images)), np.cumsum([0] + [2 * n for n in counts])
    firsts, seconds = ([order[start + i:end:2] for start, end in zip(starts[:-1], starts[1:])] for i in (0, 1))
    return [Pairs(pool(images[a]), pool(images[b]), labels[a].astype(np.int32), labels[b].astype(np.int32))
            for a, b in zip(firsts, seconds)]


def make_pairs(images, labels, n, rng):
    return sample_pairs(images, labels, [n], rng)[0]


def load_pairs(cfg, source=None, validation=0):
    """(train, test) Pairs for a Config from `source` (default: `find_source()`), fixed by its seed. With
    `validation=N`: (train, validation), N pairs of MNIST training images the training pairs do not use (the
    same training pairs either way)."""
    rng = np.random.default_rng(cfg.validate().seed)  # (unvalidated, --pairs -5 drew 29,995 pairs)
    source = source or find_source()
    train_images, train_labels = load_mnist("train", source)
    if validation:
        return tuple(sample_pairs(train_images, train_labels, [cfg.pairs, validation], rng))
    return (make_pairs(train_images, train_labels, cfg.pairs, rng),  # the training pairs drawn first
            make_pairs(*load_mnist("test", source), cfg.n_test_pairs, rng))


def normalisation(pairs):
    """Mean and std of all training pixels (both images), as in the reports."""
    pixels = np.concatenate([pairs.image_a, pairs.image_b])
    return float(pixels.mean()), float(pixels.std())


# -- 3. tf.data ----------------------------------------------------------------
def steps_per_epoch(n_pairs, batch_size):
    return -(-n_pairs // batch_size)


def epoch_steps(cfg, n_pairs):
    """Batches of an epoch of `cfg` over `n_pairs` training pairs (twice as many pairs with `double`)."""
    return steps_per_epoch(n_pairs * (2 if cfg.double else 1), cfg.batch_size)


def labels_for(labels, outputs):
    """The labels of the `outputs` a model is trained on (its `output_names`)."""
    return {name: labels[name] for name in outputs}


DEFAULT_OUTPUTS = ("compare", "digit_a", "digit_b")


def to_dataset(pairs, cfg, first_epoch=0, training=True, outputs=DEFAULT_OUTPUTS):
    """The pairs as (features, labels) batches of `cfg.batch_size` for `model.fit`, labels of `outputs`.

    training=True: epochs `first_epoch` .. `cfg.epochs` - 1 back to back (pass `epoch_steps` to fit); with
    `cfg.double` every pair twice, the second time swapped. Each epoch's order and augmentation are drawn
    from (seed, epoch) alone, so a resumed run sees an uninterrupted run's batches. training=False: the
    pairs once, in order (validation, test).
    """
    import tensorflow as tf
    x, y = pairs.features(), pairs.labels(digits=True)
    size = cfg.validate().batch_size
    if not training:
        return tf.data.Dataset.from_tensor_slices((x, labels_for(y, outputs))).batch(size).prefetch(tf.data.AUTOTUNE)
    if cfg.double:  # each pair, then each pair swapped with its target flipped (report 002's doubled set)
        swapped = ({"image_a": x["image_b"], "image_b": x["image_a"]},
                   {"compare": 1 - y["compare"], "digit_a": y["digit_b"], "digit_b": y["digit_a"]})
        x, y = tf.nest.map_structure(lambda first, second: np.concatenate([first, second]), (x, y), swapped)
    n = len(y["compare"])
    x, y = tf.nest.map_structure(tf.constant, (x, y))
    moves = (cfg.shift, cfg.rotate, cfg.zoom)
    augment = cfg.swap or any(moves)

    def epoch_batches(epoch):
        seed = tf.stack([tf.constant(cfg.seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed) if cfg.shuffle else tf.range(n)

        def batch(i):  # a whole batch per element: one gather, not `size` elements batched
            i = tf.cast(i, tf.int32)  # as int32, the batch's number folds into the seeds the package always drew
            out = tf.nest.map_structure(lambda t: tf.gather(t, order[i * size:(i + 1) * size]), (x, y))
            if augment:
                out = augment_batch(out, tf.random.experimental.stateless_fold_in(seed, i), cfg.swap, moves)
            return out[0], labels_for(out[1], outputs)

        return tf.data.Dataset.range(steps_per_epoch(n, size)).map(batch)

    # One pipeline thread, no autotuning: tf.data's own competed with training for the cores (docs/performance.md).
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return tf.data.Dataset.range(first_epoch, cfg.epochs).flat_map(epoch_batches).prefetch(2).with_options(options)


def augment_batch(batch, seed, swap, moves):
    """(features, labels) of a batch, each pair swapped with probability 1/2 (`swap`; the compare
    label follows), then each image moved by `moves` = (shift, rotate, zoom); `seed`: [2] ints."""
    import tensorflow as tf
    features, labels = batch
    a, b = features["image_a"], features["image_b"]
    da, db = labels["digit_a"], labels["digit_b"]
    # Five seeds, as when two more moves drew from the last two: the seeds of these stay as they were.
    seeds = tf.random.experimental.stateless_split(seed, 5)
    if swap:
        flip = tf.random.stateless_uniform(tf.shape(da), seeds[0]) < 0.5
        a, b = tf.where(flip[:, None, None, None], b, a), tf.where(flip[:, None, None, None], a, b)
        da, db = tf.where(flip, db, da), tf.where(flip, da, db)
    shift, rotate, zoom = moves
    if shift or rotate or zoom:
        a, b = _affine(a, shift, rotate, zoom, seeds[1]), _affine(b, shift, rotate, zoom, seeds[2])
    compare = labels["compare"]
    if swap:  # a swapped pair's target follows its digits; the others keep theirs
        compare = tf.where(flip[:, None], tf.cast(da <= db, tf.float32)[:, None], compare)
    return {"image_a": a, "image_b": b}, {"compare": compare, "digit_a": da, "digit_b": db}


def _affine(images, max_shift, max_degrees, max_zoom, seed):
    """Random shift (whole pixels), rotation and scaling of each image about its centre;
    background 0 fills in (pixel scale, before the model's normalisation)."""
    import tensorflow as tf
    n = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    d = tf.cast(tf.random.stateless_uniform([n, 2], seeds[0], -max_shift, max_shift + 1, tf.int32), tf.float32)
    angle = tf.random.stateless_uniform([n], seeds[1], -1.0, 1.0) * (max_degrees * math.pi / 180)
    scale = 1.0 + tf.random.stateless_uniform([n], seeds[2], -1.0, 1.0) * max_zoom
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    c = 6.5  # centre of a 14x14 image
    # Projective transform rows [a0 a1 a2 b0 b1 b2 c0 c1]: output(x, y) = input(a0 x + a1 y + a2, b0 x + b1 y + b2).
    transforms = tf.stack([cos, -sin, c - cos * c + sin * c + d[:, 0],
                           sin, cos, c - sin * c - cos * c + d[:, 1], tf.zeros([n]), tf.zeros([n])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR" if max_degrees or max_zoom else "NEAREST", fill_mode="CONSTANT")
