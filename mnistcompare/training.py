"""One round: Config + pairs -> compiled model -> fit -> metrics.

Every round trains through one loop, with or without a tf.distribute
strategy: `EpochFunction` runs a whole epoch (shuffle, augment, Keras'
`train_step` on every batch) as one traced call, and `fit_tensors` wraps it
in Keras' callback machinery (history, progress bar, early stopping,
`Checkpoint` for resuming).
"""
import csv
import glob
import json
import math
import os
import re
import time

import keras
import numpy as np

from mnistcompare.config import Config, RunError
from mnistcompare.data import augment_batch, normalisation
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


def training_labels(model, labels):
    """The labels dict `model`'s compiled losses take: the comparison only, or with the digits (the
    members' outputs have the digits' labels)."""
    if "digit_a" not in model.output_names:
        return {"compare": labels["compare"]}
    if "members_a" in model.output_names:
        return {**labels, "members_a": labels["digit_a"], "members_b": labels["digit_b"]}
    return labels


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


def compile_model(model, cfg: Config, steps_per_epoch):
    """Losses, metrics and loss weights keyed by output name (dicts that match exactly:
    a mismatched `loss_weights` dict is applied by position without an error)."""
    losses = {"compare": keras.losses.BinaryCrossentropy()}
    metrics = {"compare": [keras.metrics.BinaryAccuracy(name="accuracy")]}
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
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=losses, loss_weights=weights,
                  metrics=metrics)
    model.optimizer.build(model.trainable_variables)  # its variables made now, not inside a traced loop
    return model


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

    def __call__(self, pairs, batch_size=2000):
        chunks = [self.call({"image_a": pairs.image_a[i:i + batch_size], "image_b": pairs.image_b[i:i + batch_size]})
                  for i in range(0, len(pairs), batch_size)]
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def predict(model, pairs, batch_size=2000):
    """Outputs of `model` on `pairs` as numpy (see Predictor; traces once per call, so keep a
    Predictor for repeated use)."""
    return Predictor(model)(pairs, batch_size)


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
    out = (predictor or Predictor(model))(pairs)
    return {k: v for k, v in scores(out, pairs).items() if not k.endswith("loss")}


class TestCurve(keras.callbacks.Callback):
    """Adds `test_accuracy` and `test_compare_loss` (binary cross-entropy of the comparison, the one
    loss every architecture has) to each epoch's logs, for per-epoch curves; times itself so that
    the fit time can leave it out. `twin`: a model that `predictor` reads, given the trained model's
    weights before each epoch's scores (see EpochFunction.curve_predictor)."""

    def __init__(self, pairs, predictor, twin=None):
        super().__init__()
        self.pairs, self.predictor, self.twin, self.seconds = pairs, predictor, twin, 0.0

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        if self.twin is not None:
            self.twin.set_weights(self.model.get_weights())
        result = scores(self.predictor(self.pairs), self.pairs)
        logs.update(test_accuracy=result["accuracy"], test_compare_loss=result["compare_loss"])
        self.seconds += time.perf_counter() - start


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
    """history.csv, rewritten atomically after every epoch; continues the rows of a resumed run
    (rows from the epoch it resumes at on are dropped and redone)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.rows, self.started = path, [], False

    @property
    def epochs(self):
        return len(self.rows)

    def on_epoch_begin(self, epoch, logs=None):
        if not self.started:
            self.started = True
            if os.path.exists(self.path):
                with open(self.path, newline="") as f:
                    self.rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, keys, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


class Checkpoint(keras.callbacks.Callback):
    """The whole training state after every epoch, to resume an interrupted run exactly.

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
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"cannot read the backup {path} ({e}); pass --overwrite to start again") from None
        if len(values) != len(variables) or any(v.shape != tuple(x.shape) for v, x in zip(values, variables)):
            raise RunError(f"the backup {path} does not match this model; pass --overwrite to start again")
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


class EpochFunction:
    """One whole training epoch as one traced call, over pairs held as tensors.

    Called with (x, y, seed): resets the metrics, shuffles the pairs
    (stateless, from `seed`), then for each batch applies the augmentation of
    data.augment_batch and Keras' own `train_step` (losses, loss weights,
    optimizer, metrics as compiled); returns the epoch's metrics. Keras' fit
    feeds every step from a tf.data iterator; on nets this small that costs
    about as much as the step itself. The pairs are arguments, not captured
    constants, so one trace serves every round of the same shapes.

    With a tf.distribute `strategy`, every process shuffles and augments the
    same whole batch (the same data order as one process for a seed), and each
    replica trains on its slice of it through `strategy.run`, as Keras' fit does.
    """

    def __init__(self, model, cfg: Config, strategy=None):
        import tensorflow as tf

        self.model, self.strategy, self.reset, self.size, self.cfg = model, strategy, None, cfg.batch_size, cfg
        self.predictor, self.twin, self.twin_predictor = Predictor(model), None, None
        step = tf.autograph.experimental.do_not_convert(model.train_step)
        moves = (cfg.shift, cfg.rotate, cfg.zoom, cfg.elastic, cfg.erase)
        augment = cfg.swap or any(moves)
        size = cfg.batch_size

        def replica_slice(batch):
            """This replica's part of a whole batch."""
            context = tf.distribute.get_replica_context()
            n, k = tf.shape(tf.nest.flatten(batch)[0])[0], context.num_replicas_in_sync
            r = context.replica_id_in_sync_group
            return tf.nest.map_structure(lambda t: t[r * n // k:(r + 1) * n // k], batch)

        @tf.function(reduce_retracing=True)
        def run(x, y, seed):
            n = tf.shape(y["compare"])[0]
            order = tf.random.experimental.stateless_shuffle(tf.range(n), seed) if cfg.shuffle else tf.range(n)
            for i in tf.range((n + size - 1) // size):
                take = order[i * size:(i + 1) * size]
                batch = tf.nest.map_structure(lambda t: tf.gather(t, take), (x, y))
                if augment:
                    batch = augment_batch(batch, tf.random.experimental.stateless_fold_in(seed, i), cfg.swap, moves)
                features, labels = batch
                labels = training_labels(model, labels)
                if strategy is None:
                    step((features, labels))
                else:
                    strategy.run(lambda batch: step(replica_slice(batch)), args=((features, labels),))
            return model.get_metrics_result()

        self.run = run

        @tf.function(reduce_retracing=True)
        def refresh(x, passes):
            """`passes` epochs of forward calls in training mode, in order: batch-norm statistics only."""
            n = tf.shape(x["image_a"])[0]
            steps = (n + size - 1) // size
            for i in tf.range(passes * steps):
                batch = tf.nest.map_structure(lambda t: t[(i % steps) * size:(i % steps + 1) * size], x)
                if strategy is None:
                    model(batch, training=True)
                else:
                    strategy.run(lambda b: model(replica_slice(b), training=True), args=(batch,))

        self.refresh = refresh

    def curve_predictor(self):
        """(Predictor, twin) for per-epoch test curves: the model's own Predictor and no twin; or, with
        test-time views, one of a twin without them (built once), which TestCurve gives the trained
        weights: reading every test image in each view, after every epoch, would cost more than the
        epoch. The final scores read the views."""
        if not self.cfg.tta:
            return self.predictor, None
        if self.twin is None:
            self.twin = build_model(self.cfg.without_views())
            self.twin_predictor = Predictor(self.twin)
        return self.twin_predictor, self.twin

    def use_average_weights(self, x, updates=60):
        """The weights replaced by their moving average (the optimizer's EMA), and batch-norm's moving
        statistics re-estimated for them over the training images `x` (no augmentation), in at least
        `updates` forward passes in training mode: those collected in training belong to the raw weights."""
        import tensorflow as tf

        self.model.optimizer.finalize_variable_values(self.model.trainable_variables)
        steps = -(-len(x["image_a"]) // self.size)
        self.refresh(tf.nest.map_structure(tf.constant, x), tf.constant(-(-updates // steps)))

    def __call__(self, x, y, seed):
        import tensorflow as tf

        if self.reset is None:
            self._build_metrics(x, y)
            result = self.run(x, y, seed)
            self.reset = tf.function(self.model.reset_metrics)  # traced now that every metric exists
            return result
        self.reset()
        return self.run(x, y, seed)

    def _build_metrics(self, x, y):
        """Create the compiled loss and metric variables eagerly, on two pairs: Keras makes them on
        first use, which a traced loop under a tf.distribute strategy cannot do."""
        import contextlib

        import tensorflow as tf

        x, y = tf.nest.map_structure(lambda t: t[:2], (x, y))
        y = training_labels(self.model, y)
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            y_pred = self.model(x, training=False)
            self.model.compute_loss(x, y, y_pred)
            self.model.compute_metrics(x, y, y_pred, None)
        self.model.reset_metrics()


def fit_tensors(run, cfg: Config, pairs, val_pairs=None, callbacks=(), verbose="auto", initial_epoch=0):
    """Keras' fit loop (callbacks, history, progress bar, validation, early stopping) with one call of
    `run`, an EpochFunction, per epoch from `initial_epoch`; returns the History.

    A loss that is no longer finite ends training with RunError (the epoch is
    not recorded, so nothing of it is saved)."""
    import tensorflow as tf

    model = run.model
    x, y = (tf.nest.map_structure(tf.constant, d) for d in (pairs.features(), pairs.labels(digits=True)))
    steps = -(-len(pairs) // cfg.batch_size)
    history = keras.callbacks.History()
    callbacks = keras.callbacks.CallbackList([*callbacks, history], add_progbar=verbose != 0,
                                             verbose=1 if verbose == "auto" else verbose, epochs=cfg.epochs,
                                             steps=steps, model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, cfg.epochs):
        callbacks.on_epoch_begin(epoch)
        logs = {k: float(v) for k, v in run(x, y, tf.constant([cfg.seed, epoch], tf.int64)).items()}
        if "accuracy" in logs:  # a model with one output: Keras leaves the output's name out
            logs["compare_accuracy"] = logs.pop("accuracy")
        if not math.isfinite(logs["loss"]):
            raise RunError(f"training diverged at epoch {epoch + 1} (loss {logs['loss']}); nothing of that epoch "
                           "is saved: lower --lr, or check the data")
        callbacks.on_train_batch_end(steps - 1, logs)  # the progress bar shows the epoch done
        if val_pairs is not None:
            val = scores(run.predictor(val_pairs), val_pairs, prefix="val_")
            logs.update({"val_compare_accuracy": val.pop("val_accuracy"), **val})
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return history


class ModelCache:
    """Compiled models, and their epoch functions, kept across rounds, so that each is built and
    traced once per process.

    Tracing the training step of a new model costs seconds, more than the whole
    fit of a 1000-pair round. A round on a cached model starts from exactly the
    state a fresh model would have: every variable (weights, BatchNorm
    statistics, dropout seed states, normalisation constants) is copied from a
    model freshly built with the round's seed, and the optimizer's slots and
    step counter are re-initialised. So a round gives the same result either way.
    """

    def __init__(self, size=4):
        self.size, self.entries = size, {}

    def get(self, cfg: Config, mean, std, steps_per_epoch):
        """An EpochFunction (with its model) for `cfg`, initialised as if new."""
        import tensorflow as tf

        fresh = build_model(cfg, mean, std)  # cheap: no tracing
        key = json.dumps(cfg.replace(seed=0).to_dict(), sort_keys=True)
        entry = self.entries.pop(key, None)
        if entry is None:
            model = compile_model(fresh, cfg, steps_per_epoch)
            targets = model.variables + model.optimizer.variables
            entry = EpochFunction(model, cfg), tf.function(
                lambda values: [v.assign(x) for v, x in zip(targets, values)]), targets
        else:
            optimizer = make_optimizer(cfg, steps_per_epoch)
            optimizer.build(fresh.trainable_variables)
            values = fresh.variables + optimizer.variables
            if [tuple(v.shape) for v in values] != [tuple(v.shape) for v in entry[2]]:
                raise RuntimeError("a fresh model's variables do not match the cached model's")
            entry[1]([v.value for v in values])  # one call, not one per variable
        self.entries[key] = entry  # most recently used last
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))
        return entry[0]


def train_round(cfg: Config, train_pairs, test_pairs, callbacks=(), verbose="auto", curves=False, cache=None,
                strategy=None, checkpoint=None):
    """Train one round from freshly initialised weights; returns (model, metrics, history dict).

    `curves=True` also logs the test accuracy after every epoch (left out of the
    fit time, as is the final evaluation). With a `ModelCache`, a model of the
    same configuration trained earlier in this process is re-initialised instead
    of rebuilt and retraced (the model returned is then reused by later rounds).
    With a tf.distribute `strategy`, the model is built under its scope and each
    batch is split across its replicas. With a `Checkpoint`, a run interrupted
    earlier resumes from its last finished epoch and trains only the rest.
    """
    if len(train_pairs) == 0 or len(test_pairs) == 0:
        raise RunError("no training or test pairs to train on")
    fit_pairs, val_pairs = train_pairs, None
    if cfg.val_split:
        fit_pairs, val_pairs = train_pairs.split(round(len(train_pairs) * cfg.val_split))
    smallest_batch = len(fit_pairs) % cfg.batch_size or min(cfg.batch_size, len(fit_pairs))
    if strategy is not None and smallest_batch < strategy.num_replicas_in_sync:
        raise RunError(f"a batch of {smallest_batch} pairs cannot be split across "
                       f"{strategy.num_replicas_in_sync} replicas; change --batch-size or --pairs")
    mean, std = normalisation(fit_pairs) if cfg.normalize else (0.0, 1.0)
    steps = -(-len(fit_pairs) // cfg.batch_size)
    callbacks = list(callbacks)
    if cfg.patience and val_pairs is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_compare_accuracy", mode="max", patience=cfg.patience, restore_best_weights=True))

    keras.utils.set_random_seed(cfg.seed)
    if strategy is not None:
        # BatchNorm statistics over the whole batch, across the replicas, as one process computes them; but
        # PyTorch's way (numerics part "apart") normalises each replica's batch, as its DistributedDataParallel
        # does (and TensorFlow 2.21's collectives fail on that many synchronised calls per step).
        synchronized = "apart" not in cfg.torch_parts
        with strategy.scope():
            model = compile_model(build_model(cfg, mean, std, synchronized=synchronized), cfg, steps)
        run = EpochFunction(model, cfg, strategy)
    elif cache is not None:
        run = cache.get(cfg, mean, std, steps)
        model = run.model
    else:
        model = compile_model(build_model(cfg, mean, std), cfg, steps)
        run = EpochFunction(model, cfg)
    initial_epoch = 0
    if checkpoint is not None:
        initial_epoch = checkpoint.restore(model)
        callbacks.append(checkpoint)
    test_curve = TestCurve(test_pairs, *run.curve_predictor()) if curves else None
    if test_curve:
        callbacks.insert(0, test_curve)  # first, so that the other callbacks see its value
    start = time.perf_counter()
    history = fit_tensors(run, cfg, fit_pairs, val_pairs, callbacks, verbose, initial_epoch)
    if cfg.ema:
        run.use_average_weights(fit_pairs.features())
    seconds = time.perf_counter() - start - (test_curve.seconds if test_curve else 0.0)
    metrics = round_metrics(model, run.predictor, cfg, fit_pairs, val_pairs, test_pairs)
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
