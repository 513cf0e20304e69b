"""One round: Config + pairs -> compiled model -> fit -> metrics."""
import contextlib
import csv
import json
import os
import time

import keras
import numpy as np

from mnistcompare.config import Config, atomic_path
from mnistcompare.data import augment_batch, normalisation, to_dataset
from mnistcompare.models import build_model, count_params


def loss_weights(alpha):
    """loss = alpha*compare + (1 - alpha)/2 * (digit_a + digit_b)."""
    return {"compare": alpha, "digit_a": (1 - alpha) / 2, "digit_b": (1 - alpha) / 2}


def make_optimizer(cfg: Config, steps_per_epoch):
    lr = cfg.lr
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=cfg.epochs * steps_per_epoch)
    elif cfg.schedule == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(cfg.lr, steps_per_epoch, cfg.lr_decay, staircase=True)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return keras.optimizers.Adam(lr)


def compile_model(model, cfg: Config, steps_per_epoch):
    """Losses, metrics and loss weights keyed by output name (dicts that match exactly:
    a mismatched `loss_weights` dict is applied by position without an error)."""
    losses = {"compare": keras.losses.BinaryCrossentropy()}
    metrics = {"compare": [keras.metrics.BinaryAccuracy(name="accuracy")]}
    weights = {"compare": 1.0}
    if "digit_a" in model.output_names:
        for name in ("digit_a", "digit_b"):
            losses[name] = keras.losses.SparseCategoricalCrossentropy()
            metrics[name] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        weights = loss_weights(cfg.alpha)
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=losses, loss_weights=weights,
                  metrics=metrics)
    model.optimizer.build(model.trainable_variables)  # its variables made now, not inside a traced loop
    return model


def predict(model, pairs, batch_size=2000):
    """Outputs as numpy, in inference mode (no dropout, BN moving statistics).

    `predict_on_batch` runs the model's traced predict function (built once per
    model), several times faster than calling the model eagerly. A model made
    under a tf.distribute strategy is called directly: there, `predict_on_batch`
    returned one copy of the outputs per replica (TF 2.21).
    """
    def run(x):
        if getattr(model, "_distribute_strategy", None) is not None:
            return model(x, training=False)
        return model.predict_on_batch(x)

    chunks = [run({"image_a": pairs.image_a[i:i + batch_size], "image_b": pairs.image_b[i:i + batch_size]})
              for i in range(0, len(pairs), batch_size)]
    return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def accuracy(model, pairs):
    """Compare accuracy and, where the model has digit heads, digit accuracy (both images)."""
    out = predict(model, pairs)
    result = {"accuracy": float(np.mean((out["compare"][:, 0] > 0.5) == (pairs.target > 0.5)))}
    if "digit_a" in out:
        hits = np.concatenate([out["digit_a"].argmax(1) == pairs.digit_a, out["digit_b"].argmax(1) == pairs.digit_b])
        result["digit_accuracy"] = float(hits.mean())
    return result


class TestAccuracy(keras.callbacks.Callback):
    """Adds `test_accuracy` to each epoch's logs (for accuracy-per-epoch curves); times itself
    so that the fit time can leave it out."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs, self.seconds = pairs, 0.0

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        logs["test_accuracy"] = accuracy(self.model, self.pairs)["accuracy"]
        self.seconds += time.perf_counter() - start


class HistoryFile(keras.callbacks.Callback):
    """history.csv, rewritten atomically after every epoch; continues the rows of a run
    resumed by BackupAndRestore (rows from the restored epoch on are dropped and redone)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.rows, self.started = path, [], False

    @property
    def epochs(self):
        return len(self.rows)

    def on_epoch_begin(self, epoch, logs=None):
        if not self.started:  # after every on_train_begin, so after BackupAndRestore has restored
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


class EpochFunction:
    """One whole training epoch as one traced call, over pairs held as tensors.

    Called with (x, y, seed): resets the metrics, shuffles the pairs
    (stateless, from `seed`), then for each batch applies the augmentation of
    data.to_dataset and Keras' own `train_step` (losses, loss weights,
    optimizer, metrics as compiled); returns the epoch's metrics. Keras' fit
    feeds every step from a tf.data iterator; on nets this small that costs
    about as much as the step itself. The pairs are arguments, not captured
    constants, so one trace serves every round of the same shapes.
    """

    def __init__(self, model, cfg: Config):
        import tensorflow as tf

        self.model, self.reset = model, None
        step = tf.autograph.experimental.do_not_convert(model.train_step)
        affine = (cfg.shift, cfg.rotate, cfg.zoom)
        augment = cfg.swap or any(affine)
        size = cfg.batch_size

        @tf.function(reduce_retracing=True)
        def run(x, y, seed):
            n = tf.shape(y["compare"])[0]
            order = tf.random.experimental.stateless_shuffle(tf.range(n), seed)
            for i in tf.range((n + size - 1) // size):
                take = order[i * size:(i + 1) * size]
                batch = tf.nest.map_structure(lambda t: tf.gather(t, take), (x, y))
                if augment:
                    batch = augment_batch(batch, tf.random.experimental.stateless_fold_in(seed, i), cfg.swap, affine)
                features, labels = batch
                if not cfg.has_digits:
                    labels = {"compare": labels["compare"]}
                step((features, labels))
            return model.get_metrics_result()

        self.run = run

    def __call__(self, x, y, seed):
        import tensorflow as tf

        if self.reset is None:
            self.model.reset_metrics()
            result = self.run(x, y, seed)
            self.reset = tf.function(self.model.reset_metrics)  # traced now that every metric exists
            return result
        self.reset()
        return self.run(x, y, seed)


def fit_tensors(run, cfg: Config, pairs, val_pairs=None, callbacks=(), verbose="auto"):
    """Keras' fit loop (callbacks, history, progress bar, validation, resume by
    BackupAndRestore, early stopping) with one call of `run`, an EpochFunction,
    per epoch; returns the History."""
    import tensorflow as tf

    model = run.model
    x, y = (tf.nest.map_structure(tf.constant, d) for d in (pairs.features(), pairs.labels(digits=True)))
    val_data = to_dataset(val_pairs, 1000, digits=cfg.has_digits) if val_pairs is not None else None
    steps = -(-len(pairs) // cfg.batch_size)
    history = keras.callbacks.History()
    callbacks = keras.callbacks.CallbackList([*callbacks, history], add_progbar=verbose != 0,
                                             verbose=1 if verbose == "auto" else verbose, epochs=cfg.epochs,
                                             steps=steps, model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    logs = {}
    for epoch in range(getattr(model, "_initial_epoch", None) or 0, cfg.epochs):  # set by BackupAndRestore
        callbacks.on_epoch_begin(epoch)
        logs = {k: float(v) for k, v in run(x, y, tf.constant([cfg.seed, epoch], tf.int64)).items()}
        callbacks.on_train_batch_end(steps - 1, logs)  # the progress bar shows the epoch done
        if val_data is not None:
            val = model.evaluate(val_data, verbose=0, return_dict=True)
            logs.update({f"val_{k}": v for k, v in val.items()})
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
        """(model, EpochFunction) for `cfg`, initialised as if new."""
        import tensorflow as tf

        fresh = build_model(cfg, mean, std)  # cheap: no tracing
        key = json.dumps(cfg.replace(seed=0).to_dict(), sort_keys=True)
        entry = self.entries.pop(key, None)
        if entry is None:
            model = compile_model(fresh, cfg, steps_per_epoch)
            entry = model, EpochFunction(model, cfg), tf.function(
                lambda values: [v.assign(x) for v, x in zip(model.variables + model.optimizer.variables, values)])
        else:
            optimizer = make_optimizer(cfg, steps_per_epoch)
            optimizer.build(fresh.trainable_variables)
            entry[2]([v.value for v in fresh.variables + optimizer.variables])  # one call, not one per variable
        self.entries[key] = entry  # most recently used last
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))
        return entry[:2]


def one_thread_per_op():
    """Run each TensorFlow op on one thread; independent ops still run side by side on every core.

    The ops of nets this small are too small to split across threads: on two
    cores this trains faster than TensorFlow's default, leaves the other cores
    to rounds trained side by side (evaluate --jobs), and a round's numbers do
    not depend on how many rounds run at once. Call before TensorFlow runs
    its first op; TF_NUM_INTRAOP_THREADS, when set, wins.
    """
    import tensorflow as tf

    if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
        with contextlib.suppress(RuntimeError):  # TensorFlow already started: it keeps its threads
            tf.config.threading.set_intra_op_parallelism_threads(1)


def make_strategy(name):
    """None, or the tf.distribute strategy `name` names: "mirrored" (all local GPUs, or the CPU),
    "multiworker" (MultiWorkerMirroredStrategy, configured by the TF_CONFIG variable)."""
    if name in (None, "none"):
        return None
    import tensorflow as tf

    return {"mirrored": tf.distribute.MirroredStrategy,
            "multiworker": tf.distribute.MultiWorkerMirroredStrategy}[name]()


def train_round(cfg: Config, train_pairs, test_pairs, callbacks=(), verbose="auto", curves=False, cache=None,
                strategy=None):
    """Train one round from freshly initialised weights; returns (model, metrics, history dict).

    `curves=True` also logs the test accuracy after every epoch (left out of the
    fit time, as is the final evaluation). With a `ModelCache`, a model of the
    same configuration trained earlier in this process is re-initialised instead
    of rebuilt and retraced (the model returned is then reused by later rounds).
    With a tf.distribute `strategy`, the model is built and trained under its
    scope by Keras' fit (each step's batch split across its replicas).
    """
    fit_pairs, val_pairs = train_pairs, None
    if cfg.val_split:
        fit_pairs, val_pairs = train_pairs.split(round(len(train_pairs) * cfg.val_split))
    mean, std = normalisation(fit_pairs)
    steps = -(-len(fit_pairs) // cfg.batch_size)
    callbacks = list(callbacks)
    if cfg.patience and val_pairs is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_compare_accuracy", mode="max", patience=cfg.patience, restore_best_weights=True))

    keras.utils.set_random_seed(cfg.seed)
    if strategy is not None:
        with strategy.scope():
            model = compile_model(build_model(cfg, mean, std), cfg, steps)
    elif cache is not None:
        model, run = cache.get(cfg, mean, std, steps)
    else:
        model = compile_model(build_model(cfg, mean, std), cfg, steps)
        run = EpochFunction(model, cfg)
    test_curve = TestAccuracy(test_pairs) if curves else None
    if test_curve:
        callbacks.insert(0, test_curve)  # first, so that the other callbacks see its value
    start = time.perf_counter()
    if strategy is None:
        history = fit_tensors(run, cfg, fit_pairs, val_pairs, callbacks, verbose)
    else:
        val_data = to_dataset(val_pairs, 1000, digits=cfg.has_digits) if val_pairs is not None else None
        data = to_dataset(fit_pairs, cfg.batch_size, shuffle_seed=cfg.seed, swap=cfg.swap, shift=cfg.shift,
                          rotate=cfg.rotate, zoom=cfg.zoom, digits=cfg.has_digits)
        history = model.fit(data, epochs=cfg.epochs, validation_data=val_data, callbacks=callbacks,
                            verbose=verbose, shuffle=False)  # the dataset shuffles itself, seeded
    seconds = time.perf_counter() - start - (test_curve.seconds if test_curve else 0.0)
    metrics = round_metrics(model, cfg, fit_pairs, val_pairs, test_pairs)
    metrics.update(train_seconds=round(seconds, 3), epochs=len(history.history.get("loss", [])))
    return model, metrics, history.history


def round_metrics(model, cfg, fit_pairs, val_pairs, test_pairs):
    """Accuracies of a trained model (compare and, where it has them, digits), with what defines the round."""
    train, test = accuracy(model, fit_pairs), accuracy(model, test_pairs)
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
    if val_pairs is not None:
        metrics["val_accuracy"] = accuracy(model, val_pairs)["accuracy"]
    return metrics
