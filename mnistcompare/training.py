"""One round: Config + pairs -> compiled model -> fit -> metrics."""
import csv
import json
import os
import time

import keras
import numpy as np

from mnistcompare.config import Config, atomic_path
from mnistcompare.data import normalisation, to_dataset
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


def compile_model(model, cfg: Config, steps_per_epoch, whole_epochs=True):
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
    # A whole epoch per execution: fewer round trips between Python and the graph.
    # (Not under a tf.distribute strategy: TF 2.21 fails there to run several steps per call.)
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=losses, loss_weights=weights,
                  metrics=metrics, steps_per_execution=min(steps_per_epoch, 100) if whole_epochs else 1)
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


class ModelCache:
    """Compiled models kept across rounds, so that each is built and traced once per process.

    Tracing the training step of a new model costs seconds, several times the
    fit of a 1000-pair round. A round on a cached model starts from exactly the
    state a fresh model would have: every variable (weights, BatchNorm
    statistics, dropout seed states, normalisation constants) is copied from a
    model freshly built with the round's seed, and the optimizer's slots and
    step counter are re-initialised. So a round gives the same result either way.
    """

    def __init__(self, size=4):
        self.size, self.models = size, {}

    def get(self, cfg: Config, mean, std, steps_per_epoch):
        fresh = build_model(cfg, mean, std)  # cheap: no tracing
        key = json.dumps(cfg.replace(seed=0).to_dict(), sort_keys=True)
        model = self.models.pop(key, None)
        if model is None:
            model = compile_model(fresh, cfg, steps_per_epoch)
        else:
            for target, source in zip(model.variables, fresh.variables):
                target.assign(source)
            optimizer = make_optimizer(cfg, steps_per_epoch)
            optimizer.build(model.trainable_variables)
            for target, source in zip(model.optimizer.variables, optimizer.variables):
                target.assign(source)
        self.models[key] = model  # most recently used last
        while len(self.models) > self.size:
            self.models.pop(next(iter(self.models)))
        return model


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

    `curves=True` also records the test accuracy after every epoch (excluded
    from the fit time). With a `ModelCache`, a model of the same configuration
    trained earlier in this process is re-initialised instead of rebuilt. With a
    tf.distribute `strategy`, the model is built and trained under its scope
    (each step's batch split across its replicas).
    """
    keras.utils.set_random_seed(cfg.seed)
    fit_pairs, val_pairs = train_pairs, None
    if cfg.val_split:
        fit_pairs, val_pairs = train_pairs.split(round(len(train_pairs) * cfg.val_split))
    mean, std = normalisation(fit_pairs)
    steps = -(-len(fit_pairs) // cfg.batch_size)
    if strategy is not None:
        with strategy.scope():
            model = compile_model(build_model(cfg, mean, std), cfg, steps, whole_epochs=False)
    elif cache is None:
        model = compile_model(build_model(cfg, mean, std), cfg, steps)
    else:
        model = cache.get(cfg, mean, std, steps)

    callbacks = list(callbacks)
    test_curve = TestAccuracy(test_pairs) if curves else None
    if test_curve:
        callbacks.insert(0, test_curve)  # first, so that the other callbacks see its value
    val_data = None
    if val_pairs is not None:
        val_data = to_dataset(val_pairs, 1000, digits=cfg.has_digits)
        if cfg.patience:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_compare_accuracy", mode="max", patience=cfg.patience, restore_best_weights=True))
    data = to_dataset(fit_pairs, cfg.batch_size, shuffle_seed=cfg.seed, swap=cfg.swap, shift=cfg.shift,
                      rotate=cfg.rotate, zoom=cfg.zoom, digits=cfg.has_digits)
    start = time.perf_counter()
    history = model.fit(data, epochs=cfg.epochs, validation_data=val_data, callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # the dataset shuffles itself, seeded
    seconds = time.perf_counter() - start - (test_curve.seconds if test_curve else 0.0)

    train, test = accuracy(model, fit_pairs), accuracy(model, test_pairs)
    metrics = {
        "arch": cfg.arch,
        "test_accuracy": test["accuracy"],
        "train_accuracy": train["accuracy"],
        "params": count_params(model),
        "train_seconds": round(seconds, 3),
        "epochs": len(history.history.get("loss", [])),
        "seed": cfg.seed,
        "train_pairs": len(fit_pairs),
        "test_pairs": len(test_pairs),
    }
    if "digit_accuracy" in test:
        metrics["test_digit_accuracy"] = test["digit_accuracy"]
        metrics["train_digit_accuracy"] = train["digit_accuracy"]
    if val_pairs is not None:
        metrics["val_accuracy"] = accuracy(model, val_pairs)["accuracy"]
    return model, metrics, history.history
