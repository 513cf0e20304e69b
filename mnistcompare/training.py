"""One round: Config + pairs -> compiled model -> `model.fit` on a tf.data pipeline -> metrics.

Every round, with or without a tf.distribute strategy, trains through Keras'
own `fit` on `data.to_dataset`, with `steps_per_execution` set to a whole
epoch (one graph call per epoch). A `ModelCache` keeps compiled models across
rounds, so that each configuration is traced once per process.
"""
import contextlib
import csv
import glob
import json
import math
import zipfile
import os
import re
import time
import weakref

import keras
import numpy as np

from mnistcompare.config import Config
from mnistcompare.errors import RunError, UserError
from mnistcompare.data import labels_for, normalisation, steps_per_epoch, to_dataset
from mnistcompare.files import atomic_path
from mnistcompare.layers import DigitCrossentropy
from mnistcompare.models import build_model, count_params


def loss_weights(alpha, each=False):
    """loss = alpha*compare + (1 - alpha)/2 * (digit_a + digit_b); each=True: the digit terms are
    each member's own loss (the `members_a` / `members_b` outputs), and the averaged digits only scored."""
    digits = (1 - alpha) / 2
    if each:
        return {"compare": alpha, "digit_a": 0.0, "digit_b": 0.0, "members_a": digits, "members_b": digits}
    return {"compare": alpha, "digit_a": digits, "digit_b": digits}


def make_optimizer(cfg: Config, steps_per_epoch):
    lr = cfg.lr
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=cfg.epochs * steps_per_epoch,
                                                    alpha=cfg.lr_floor)
    elif cfg.schedule == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(cfg.lr, steps_per_epoch, cfg.lr_decay, staircase=True)
    ema = dict(use_ema=True, ema_momentum=cfg.ema) if cfg.ema else {}
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **ema)
    return keras.optimizers.Adam(lr, epsilon=1e-8 if "adam-eps" in cfg.torch_parts else 1e-7, **ema)


def compile_model(model, cfg: Config, steps_per_epoch, distributed=False):
    """Losses, metrics and loss weights keyed by output name (dicts that match exactly:
    a mismatched `loss_weights` dict is applied by position without an error). `distributed`:
    for a model built under a tf.distribute strategy's scope."""
    losses = {"compare": keras.losses.BinaryCrossentropy()}
    # Keras prefixes a metric with its output's name only where a model has several outputs.
    several = len(model.output_names) > 1
    metrics = {"compare": [keras.metrics.BinaryAccuracy(name="accuracy" if several else "compare_accuracy")]}
    weights = {"compare": 1.0}
    if "digit_a" in model.output_names:
        for name in ("digit_a", "digit_b"):
            # Keras' own sparse loss where it suffices, so earlier results repeat to the last bit.
            losses[name] = DigitCrossentropy(cfg.label_smoothing) if cfg.label_smoothing else \
                keras.losses.SparseCategoricalCrossentropy()
            metrics[name] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        each = "members_a" in model.output_names
        if each:
            losses.update(members_a=DigitCrossentropy(cfg.label_smoothing),
                          members_b=DigitCrossentropy(cfg.label_smoothing))
        weights = loss_weights(cfg.alpha, each)
    # A whole epoch per graph call: Keras then runs the steps in a tf.while_loop over the iterator, which
    # saves the per-step overhead of a call from Python (on nets this small, about as long as the step).
    # Not under a strategy: TensorFlow 2.21 fails there ("You must feed a value for placeholder tensor").
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=losses, loss_weights=weights,
                  metrics=metrics, steps_per_execution=1 if distributed else steps_per_epoch)
    model.optimizer.build(model.trainable_variables)  # its variables made now, not inside a traced loop
    return model


_PREDICTORS = weakref.WeakKeyDictionary()


class Predictor:
    """A model's outputs as numpy, in inference mode (no dropout, BN moving statistics), through one
    traced call per batch shape: several times faster than calling the model eagerly. Under a
    tf.distribute strategy too (each process computes the whole batch on its own copy)."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        # one trace for every batch size: TensorFlow counts the traces of all Predictors together (they share
        # this lambda's code) and warns of "excessive retracing" past five
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        self.call = tf.function(lambda x: model(x, training=False),
                                input_signature=[{"image_a": spec, "image_b": spec}])

    @classmethod
    def of(cls, model):
        """The Predictor of `model`, made once: a model reused over rounds is traced once."""
        if model not in _PREDICTORS:
            _PREDICTORS[model] = cls(model)
        return _PREDICTORS[model]

    def __call__(self, pairs, batch_size=2000):
        chunks = [self.call({"image_a": pairs.image_a[i:i + batch_size], "image_b": pairs.image_b[i:i + batch_size]})
                  for i in range(0, len(pairs), batch_size)]
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def predict(model, pairs, batch_size=2000):
    """Outputs of `model` on `pairs` as numpy (see Predictor)."""
    return Predictor.of(model)(pairs, batch_size)


def scores(out, pairs, prefix=""):
    """Compare accuracy and loss and, where the outputs have them, digit accuracy (both images)."""
    target = pairs.target
    p = np.clip(out["compare"][:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
    result = {f"{prefix}accuracy": float(np.mean((p > 0.5) == (target > 0.5))),
              f"{prefix}compare_loss": float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))}
    if "digit_a" in out:
        hits = np.concatenate([out["digit_a"].argmax(1) == pairs.digit_a, out["digit_b"].argmax(1) == pairs.digit_b])
        result[f"{prefix}digit_accuracy"] = float(hits.mean())
    return result


def accuracy(model, pairs, predictor=None):
    """Compare accuracy and, where the model has digit heads, digit accuracy (both images)."""
    out = (predictor or Predictor.of(model))(pairs)
    return {k: v for k, v in scores(out, pairs).items() if not k.endswith("loss")}


class TestCurve(keras.callbacks.Callback):
    """Adds `test_accuracy` and `test_compare_loss` (binary cross-entropy of the comparison, the one
    loss every architecture has) to each epoch's logs, for per-epoch curves; times itself so that
    the fit time can leave it out. `twin`: a model that `predictor` reads, given the trained model's
    weights before each epoch's scores (a model without test-time views: reading every test image
    in each view, after every epoch, would cost more than the epoch; the final scores read them).
    `log_dirs`: TensorBoard log folders; each gets a run `test` beside Keras' `train` and `validation`,
    under the training run's names (epoch_compare_accuracy, epoch_compare_loss), so the curves overlay."""

    def __init__(self, pairs, predictor, twin=None, log_dirs=()):
        super().__init__()
        self.pairs, self.predictor, self.twin, self.seconds = pairs, predictor, twin, 0.0
        self.log_dirs, self.writers = log_dirs, []

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.writers = [tf.summary.create_file_writer(os.path.join(d, "test")) for d in self.log_dirs]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        start = time.perf_counter()
        if self.twin is not None:
            self.twin.set_weights(self.model.get_weights())
        result = scores(self.predictor(self.pairs), self.pairs)
        logs.update(test_accuracy=result["accuracy"], test_compare_loss=result["compare_loss"])
        for writer in self.writers:
            with writer.as_default(step=epoch):
                tf.summary.scalar("epoch_compare_accuracy", result["accuracy"])
                tf.summary.scalar("epoch_compare_loss", result["compare_loss"])
        self.seconds += time.perf_counter() - start

    def on_train_end(self, logs=None):
        for writer in self.writers:
            writer.close()


def confusion(out, pairs):
    """10x10 counts of (true digit, predicted digit) over both images of the pairs."""
    true = np.concatenate([pairs.digit_a, pairs.digit_b])
    predicted = np.concatenate([out["digit_a"].argmax(1), out["digit_b"].argmax(1)])
    return np.bincount(true * 10 + predicted, minlength=100).reshape(10, 10).tolist()


def examples(out, pairs, count=30, mistakes=18):
    """`count` test pairs for a picture, up to `mistakes` mistakes of the comparison first, then pairs it got
    right: their images, true digits and target, and the model's P(a <= b) and digits (-1 where it has no
    digit heads)."""
    p = out["compare"][:, 0]
    wrong = (p > 0.5) != (pairs.target > 0.5)
    shown = np.flatnonzero(wrong)[:mistakes]
    order = np.concatenate([shown, np.flatnonzero(~wrong)[:count - len(shown)]])
    guess = {side: out[f"digit_{side}"].argmax(1)[order] if f"digit_{side}" in out else np.full(len(order), -1)
             for side in ("a", "b")}
    return {"image_a": pairs.image_a[order, ..., 0], "image_b": pairs.image_b[order, ..., 0],
            "digit_a": pairs.digit_a[order], "digit_b": pairs.digit_b[order], "target": pairs.target[order],
            "p": p[order], "predicted_a": guess["a"], "predicted_b": guess["b"]}


class HistoryFile(keras.callbacks.Callback):
    """history.csv, rewritten atomically after every epoch; a resumed run first `load`s the rows of the epochs
    it resumes after (rows from that epoch on are dropped and redone)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.rows = path, []

    @property
    def epochs(self):
        return len(self.rows)

    def load(self, epochs):
        """Keep the rows of the first `epochs` epochs of the file, which must hold them all."""
        try:
            with open(self.path, newline="") as f:
                rows = [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""}
                        for row in csv.DictReader(f, strict=True)]
            self.rows = [row for row in rows if row["epoch"] < epochs]
            if [row["epoch"] for row in self.rows] != list(range(epochs)):
                raise ValueError(f"not the rows of epochs 1 to {epochs}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, csv.Error) as e:
            raise UserError(f"{self.path} is damaged ({type(e).__name__}); pass --overwrite to start the run "
                            "again") from None

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, keys, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


class Checkpoint(keras.callbacks.Callback):
    """The whole training state after every epoch, to resume an interrupted run exactly.

    Not keras.callbacks.BackupAndRestore: its file (`save_weights`) leaves out
    the dropout layers' seed states, so a resumed run draws other dropout masks
    and ends with other numbers; and it writes the weights and the epoch as two
    files, in place, so a kill between or during them resumes at the wrong epoch.

    Every variable of the model and its optimizer (weights, BatchNorm
    statistics, dropout seed states, optimizer slots and step counter) goes to
    FOLDER/epoch-NNNN.npz, written to a temporary file and renamed: a crash or
    a full disk at any byte leaves the previous epoch's file whole. `restore`
    loads the newest and returns how many epochs it holds. `write=False`: a
    process that restores but never writes (a multi-worker peer).
    """

    PATTERN = re.compile(r"epoch-(\d{4,})\.npz$")

    def __init__(self, folder, write=True):
        super().__init__()
        self.folder, self.write = folder, write

    def state_variables(self, model):
        return list(model.variables) + list(model.optimizer.variables)

    def epoch_files(self):
        found = [(int(m.group(1)), path) for path in glob.glob(os.path.join(self.folder, "epoch-*.npz"))
                 if (m := self.PATTERN.search(os.path.basename(path)))]
        return sorted(found)

    def restore(self, model):
        """Load the newest epoch file into `model`; the number of finished epochs (0: none)."""
        files = self.epoch_files()
        if not files:
            return 0
        epochs, path = files[-1]
        variables = self.state_variables(model)
        try:
            with np.load(path) as data:
                values = [data[f"v{i}"] for i in range(len(data.files))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"the backup {path} is damaged ({type(e).__name__}); delete it to redo that epoch, "
                            "or pass --overwrite to start again") from None
        if len(values) != len(variables) or any(v.shape != tuple(x.shape) for v, x in zip(values, variables)):
            raise UserError(f"the backup {path} does not match this model; pass --overwrite to start again")
        for variable, value in zip(variables, values):
            variable.assign(value)
        return epochs

    def clear(self):
        """Delete the epoch files (and the folder, if nothing else is in it)."""
        # with the temporary file of a write that a kill cut short
        for path in [p for _, p in self.epoch_files()] + glob.glob(os.path.join(self.folder, ".tmp-*.npz")):
            os.unlink(path)
        if os.path.isdir(self.folder) and not os.listdir(self.folder):
            os.rmdir(self.folder)

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"epoch-{epoch + 1:04d}.npz")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"v{i}": np.asarray(v) for i, v in enumerate(self.state_variables(self.model))})
            f.flush()
            os.fsync(f.fileno())
        for _, old in self.epoch_files()[:-1]:
            os.unlink(old)


class Diverged(keras.callbacks.Callback):
    """Ends training with RunError as soon as the loss is no longer finite, before the other callbacks see
    the epoch (so nothing of it is saved); keras.callbacks.TerminateOnNaN stops, but lets the epoch be saved."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise RunError(f"training diverged at epoch {self.epoch + 1} (loss {float(loss)}); nothing of that "
                           "epoch is saved: lower --lr, or check the data")


class ModelCache:
    """Compiled models kept across rounds, so that each configuration is built, compiled and traced once
    per process: Keras keeps a model's traced train function until it is compiled again.

    Tracing the training step of a new model costs seconds, more than the whole
    fit of a 1000-pair round. A round on a cached model starts from exactly the
    state a fresh model would have: every variable (weights, BatchNorm
    statistics, dropout seed states, normalisation constants) is copied from a
    model freshly built with the round's seed, and the optimizer's slots and
    step counter from a fresh optimizer. So a round gives the same result either way.
    """

    def __init__(self, size=4):
        self.size, self.entries = size, {}

    def get(self, cfg: Config, mean, std, steps):
        """A compiled model for `cfg`, initialised as if new."""
        fresh = build_model(cfg, mean, std)  # cheap: no tracing
        key = self.key(cfg)
        entry = self.entries.pop(key, None)
        if entry is None:
            entry = self.entry(compile_model(fresh, cfg, steps))
        else:
            optimizer = make_optimizer(cfg, steps)
            optimizer.build(fresh.trainable_variables)
            values = fresh.variables + optimizer.variables
            if [tuple(v.shape) for v in values] != [tuple(v.shape) for v in entry[2]]:
                raise RuntimeError("a fresh model's variables do not match the cached model's")
            entry[1]([v.value for v in values])
        self.keep(key, entry)
        return entry[0]

    def adopt(self, cfg: Config, model, steps):
        """Keep `model` (built for `cfg`, e.g. by a keras-tuner HyperModel) as the model of `cfg`: the rounds
        of `cfg` then train it, re-initialised for each; compiled again if it was for another epoch length."""
        if model.optimizer is None or model.steps_per_execution != steps:
            compile_model(model, cfg, steps)
        self.keep(self.key(cfg), self.entry(model))

    @staticmethod
    def key(cfg):
        return json.dumps(cfg.replace(seed=0).to_dict(), sort_keys=True)

    @staticmethod
    def entry(model):
        import tensorflow as tf

        targets = model.variables + model.optimizer.variables
        # every variable in one traced call, not one call per variable
        return model, tf.function(lambda values: [t.assign(v) for t, v in zip(targets, values)]), targets

    def keep(self, key, entry):
        self.entries.pop(key, None)
        self.entries[key] = entry  # most recently used last
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))


def refresh_batch_norm(model, x, batch_size, updates=60):
    """BatchNorm's moving statistics re-estimated over the training images `x` (no augmentation), in at least
    `updates` forward passes in training mode: after `--ema`, those collected in training belong to the raw
    weights, not to their average."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    passes = -(-updates // steps_per_epoch(len(x["image_a"]), batch_size))
    step = tf.function(lambda batch: model(batch, training=True))
    for batch in data.repeat(passes):
        step(batch)


class _VectorLogs(keras.Model):
    """A model whose train and test steps return each value as a vector of one: Keras 3.15's fit averages
    the replicas' values along axis 0 under MultiWorkerMirroredStrategy, which fails for scalars
    (tensorflow#72388). For training only: train_round returns the same layers as a plain Model."""

    def train_step(self, data):
        return {name: keras.ops.reshape(value, [1]) for name, value in super().train_step(data).items()}

    def test_step(self, data):
        return {name: keras.ops.reshape(value, [1]) for name, value in super().test_step(data).items()}


def distributed_model(cfg, mean, std, steps, strategy, pairs):
    """A compiled model whose variables, optimizer and metrics are made under `strategy`'s scope, for `fit`
    under that scope.

    The Model object itself is made outside the scope, over the same layers:
    Keras 3.15's fit reduces a first batch across the replicas to build a model
    made under a strategy, which fails for dict inputs under
    MultiWorkerMirroredStrategy. So the loss and metric variables are made here,
    on two pairs, as fit would make them.
    """
    import tensorflow as tf

    # BatchNorm statistics over the whole batch, across the replicas, as one process computes them; but
    # PyTorch's way (numerics part "apart") normalises each replica's batch, as its DistributedDataParallel
    # does (and TensorFlow 2.21's collectives fail on that many synchronised calls per step).
    synchronized = "apart" not in cfg.torch_parts
    with strategy.scope():
        built = build_model(cfg, mean, std, synchronized=synchronized)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    model = (_VectorLogs if multiworker else keras.Model)(built.input, built.output, name=built.name)
    with strategy.scope():
        compile_model(model, cfg, steps, distributed=True)
        x, y = tf.nest.map_structure(lambda t: t[:2], (pairs.features(), labels_for(pairs.labels(),
                                                                                    model.output_names)))
        y_pred = model(x, training=False)
        model.compute_loss(x, y, y_pred)
        model.compute_metrics(x, y, y_pred)
    model.reset_metrics()
    return model


def fit_split(cfg: Config, train_pairs):
    """(pairs fit trains on, pairs it validates on or None): `--val-split` holds out the last part."""
    if not cfg.val_split:
        return train_pairs, None
    return train_pairs.split(round(len(train_pairs) * cfg.val_split))


def train_round(cfg: Config, train_pairs, test_pairs, callbacks=(), verbose="auto", curves=False, cache=None,
                strategy=None, checkpoint=None):
    """Train one round from freshly initialised weights with `model.fit`; returns (model, metrics, history dict).

    `curves=True` also logs the test accuracy after every epoch (left out of the
    fit time, as is the final evaluation). With a `ModelCache`, a model of the
    same configuration trained earlier in this process is re-initialised instead
    of rebuilt and retraced (the model returned is then reused by later rounds).
    With a tf.distribute `strategy`, the model is built under its scope and fit
    splits each batch across its replicas. With a `Checkpoint`, a run interrupted
    earlier resumes from its last finished epoch and trains only the rest.
    """
    if len(train_pairs) == 0 or len(test_pairs) == 0:
        raise RunError("no training or test pairs to train on")
    fit_pairs, val_pairs = fit_split(cfg, train_pairs)
    smallest_batch = len(fit_pairs) % cfg.batch_size or min(cfg.batch_size, len(fit_pairs))
    if strategy is not None and smallest_batch < strategy.num_replicas_in_sync:
        raise RunError(f"a batch of {smallest_batch} pairs cannot be split across "
                       f"{strategy.num_replicas_in_sync} replicas; change --batch-size or --pairs")
    mean, std = normalisation(fit_pairs) if cfg.normalize else (0.0, 1.0)
    steps = steps_per_epoch(len(fit_pairs), cfg.batch_size)
    callbacks = [Diverged(), *callbacks]
    if cfg.patience and val_pairs is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_compare_accuracy", mode="max", patience=cfg.patience, restore_best_weights=True))

    if cache is None or strategy is not None or checkpoint is not None:
        # Every draw of a round is seeded from cfg.seed already (initialisers, dropout, data); this also seeds
        # Python's, NumPy's and TensorFlow's global generators for a user's own code. Not for a cached model:
        # TensorFlow's set_seed clears the kernel caches, which the next epoch would rebuild (docs/performance.md).
        keras.utils.set_random_seed(cfg.seed)
    if strategy is not None:
        model = distributed_model(cfg, mean, std, steps, strategy, fit_pairs)
    elif cache is not None and checkpoint is None:  # (a restored model is never shared)
        model = cache.get(cfg, mean, std, steps)
    else:
        model = compile_model(build_model(cfg, mean, std), cfg, steps)
    initial_epoch = 0
    if checkpoint is not None:
        initial_epoch = checkpoint.restore(model)
        callbacks.append(checkpoint)
    predictor = Predictor.of(model)
    if curves:
        twin = build_model(cfg.without_views()) if cfg.tta else None
        boards = [c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)]
        test_curve = TestCurve(test_pairs, Predictor.of(twin) if twin else predictor, twin,
                               [board.log_dir for board in boards])
        # after TensorBoard, which would log its values in the training run; before the rest, which record them
        callbacks = [callbacks[0], *boards, test_curve, *(c for c in callbacks[1:] if c not in boards)]
    outputs = model.output_names
    start = time.perf_counter()
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        history = model.fit(to_dataset(fit_pairs, cfg, initial_epoch, outputs=outputs), epochs=cfg.epochs,
                            steps_per_epoch=steps, initial_epoch=initial_epoch, callbacks=callbacks,
                            verbose=1 if verbose == "auto" else verbose, shuffle=False,  # to_dataset shuffles
                            validation_data=to_dataset(val_pairs, cfg, training=False, outputs=outputs)
                            if val_pairs is not None else None)
    if isinstance(model, _VectorLogs):  # the same layers, as the Model every other round returns
        model = compile_model(keras.Model(model.input, model.output, name=model.name), cfg, steps)
        predictor = Predictor.of(model)
    if cfg.ema:  # fit ended on the weights' moving average
        refresh_batch_norm(model, fit_pairs.features(), cfg.batch_size)
    seconds = time.perf_counter() - start - (test_curve.seconds if curves else 0.0)
    metrics = round_metrics(model, predictor, cfg, fit_pairs, val_pairs, test_pairs)
    metrics.update(train_seconds=round(seconds, 3), epochs=initial_epoch + len(history.history.get("loss", [])),
                   resumed_at_epoch=initial_epoch)
    return model, metrics, history.history


def round_metrics(model, predictor, cfg, fit_pairs, val_pairs, test_pairs):
    """Accuracies of a trained model (compare and, where it has them, digits, with the test digits'
    confusion matrix), with what defines the round."""
    train, out = accuracy(model, fit_pairs, predictor), predictor(test_pairs)
    test = scores(out, test_pairs)
    metrics = {
        "arch": cfg.arch,
        "test_accuracy": test["accuracy"],
        "train_accuracy": train["accuracy"],
        "params": count_params(model),
        "seed": cfg.seed,
        "train_pairs": len(fit_pairs),
        "test_pairs": len(test_pairs),
    }
    if "digit_accuracy" in test:
        metrics["test_digit_accuracy"] = test["digit_accuracy"]
        metrics["train_digit_accuracy"] = train["digit_accuracy"]
        metrics["confusion"] = confusion(out, test_pairs)
    if val_pairs is not None:
        metrics["val_accuracy"] = accuracy(model, val_pairs, predictor)["accuracy"]
    return metrics
