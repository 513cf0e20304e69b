"""One round: Config + pairs -> compiled model -> `model.fit` on a tf.data pipeline -> metrics.

`train_round` is one straight path (model -> `fit`, a whole epoch per graph call -> scores); the
variations hand it their model: `ModelCache.get` (traced once per process), `Checkpoint.restore` (a
killed run's state, with its `initial_epoch`) and `distributed_model` (under a tf.distribute strategy).
"""
import contextlib
import json
import time
import weakref

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras
import numpy as np
import tensorflow as tf

from mnistcompare.callbacks import Diverged, TestCurve
from mnistcompare.config import Config
from mnistcompare.data import epoch_steps, labels_for, normalisation, to_dataset
from mnistcompare.errors import RunError, UserError
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
    return keras.optimizers.Adam(lr, epsilon=1e-8 if "adam-eps" in cfg.torch_parts else 1e-7)


def compile_model(model, cfg: Config, steps_per_epoch, distributed=False):
    """Losses, metrics and loss weights keyed by output name (a mismatched `loss_weights` dict would be
    applied by position without an error). `distributed`: a model built under a strategy's scope."""
    losses = {"compare": keras.losses.BinaryCrossentropy()}
    # Keras prefixes a metric with its output's name only where a model has several outputs.
    several = len(model.output_names) > 1
    metrics = {"compare": [keras.metrics.BinaryAccuracy(name="accuracy" if several else "compare_accuracy")]}
    weights = {"compare": 1.0}
    if "digit_a" in model.output_names:
        for name in ("digit_a", "digit_b"):
            losses[name] = keras.losses.SparseCategoricalCrossentropy()
            metrics[name] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        weights = loss_weights(cfg.alpha)
    # A whole epoch per graph call (a tf.while_loop: no per-step call from Python, as long as a step here); not under
    # a strategy, where TensorFlow 2.21 fails ("You must feed a value for placeholder tensor").
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=losses, loss_weights=weights,
                  metrics=metrics, steps_per_execution=1 if distributed else steps_per_epoch)
    model.optimizer.build(model.trainable_variables)  # its variables made now, not inside a traced loop
    return model


def fit_split(cfg: Config, train_pairs):
    """(pairs fit trains on, pairs it validates on or None): `--val-split` holds out the last part."""
    if not cfg.val_split:
        return train_pairs, None
    held_out = round(len(train_pairs) * cfg.val_split)
    if not 0 < held_out < len(train_pairs):  # (Config.validate checks cfg.pairs, not the pairs given)
        raise UserError(f"--val-split {cfg.val_split:g} holds out {held_out} of the {len(train_pairs)} pairs given")
    return train_pairs.split(held_out)


def pixel_stats(cfg: Config, fit_pairs):
    """(mean, std) the model standardises with: the training pixels', or (0, 1) with --no-normalize."""
    return normalisation(fit_pairs) if cfg.normalize else (0.0, 1.0)


def new_model(cfg: Config, fit_pairs):
    """A compiled model of `cfg`, freshly initialised from its seed, standardising with `fit_pairs`."""
    # Every draw is seeded from cfg.seed already; this seeds the global generators for a user's code. Not for a
    # cached model: TensorFlow's set_seed clears the kernel caches (docs/performance.md).
    keras.utils.set_random_seed(cfg.seed)
    return compile_model(build_model(cfg, *pixel_stats(cfg, fit_pairs)), cfg, epoch_steps(cfg, len(fit_pairs)))


_PREDICTORS = weakref.WeakKeyDictionary()


class Predictor:
    """A model's outputs as numpy, in inference mode, through one traced call: several times faster than
    calling the model eagerly; under a strategy too (each process computes the whole batch)."""

    def __init__(self, model):
        self.model = model
        # one trace for every batch size: TensorFlow counts all Predictors' traces together, and warns past five
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        self.call = tf.function(lambda x: model(x, training=False), autograph=False,  # nothing to convert
                                input_signature=[{"image_a": spec, "image_b": spec}])

    @classmethod
    def of(cls, model):
        """The Predictor of `model`, made once: a model reused over rounds is traced once."""
        if model not in _PREDICTORS:
            _PREDICTORS[model] = cls(model)
        return _PREDICTORS[model]

    def __call__(self, pairs, batch_size=2000):
        if len(pairs) == 0:  # outputs of no rows (TensorFlow's convolutions fail on an empty batch)
            return {k: np.zeros((0, *t.shape[1:]), np.float32) for k, t in self.model.output.items()}
        chunks = [self.call({"image_a": pairs.image_a[i:i + batch_size], "image_b": pairs.image_b[i:i + batch_size]})
                  for i in range(0, len(pairs), batch_size)]
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def model_outputs(model, pairs, batch_size=2000):
    """Outputs of `model` on `pairs` as numpy (see Predictor)."""
    return Predictor.of(model)(pairs, batch_size)


def scores(out, pairs):
    """Compare accuracy and loss and, where the outputs have them, digit accuracy (both images)."""
    if len(pairs) == 0:
        raise UserError("no pairs to score")
    target = pairs.target
    p = np.clip(out["compare"][:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
    result = {"accuracy": float(np.mean((p > 0.5) == (target > 0.5))),
              "compare_loss": float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))}
    if "digit_a" in out:
        hits = np.concatenate([out["digit_a"].argmax(1) == pairs.digit_a, out["digit_b"].argmax(1) == pairs.digit_b])
        result["digit_accuracy"] = float(hits.mean())
    return result


def accuracy(model, pairs, predictor=None):
    """Compare accuracy and, where the model has digit heads, digit accuracy (both images)."""
    out = (predictor or Predictor.of(model))(pairs)
    return {k: v for k, v in scores(out, pairs).items() if not k.endswith("loss")}


def confusion(out, pairs):
    """10x10 counts of (true digit, predicted digit) over both images of the pairs."""
    true = np.concatenate([pairs.digit_a, pairs.digit_b])
    predicted = np.concatenate([out["digit_a"].argmax(1), out["digit_b"].argmax(1)])
    return np.bincount(true * 10 + predicted, minlength=100).reshape(10, 10).tolist()


def examples(out, pairs, count=30, mistakes=18):
    """`count` test pairs for a picture, up to `mistakes` mistakes first: images, digits, target, the model's
    P(a <= b) and digits (-1 without digit heads)."""
    p = out["compare"][:, 0]
    wrong = (p > 0.5) != (pairs.target > 0.5)
    shown = np.flatnonzero(wrong)[:mistakes]
    order = np.concatenate([shown, np.flatnonzero(~wrong)[:count - len(shown)]])
    guess = {side: out[f"digit_{side}"].argmax(1)[order] if f"digit_{side}" in out else np.full(len(order), -1)
             for side in ("a", "b")}
    return {"image_a": pairs.image_a[order, ..., 0], "image_b": pairs.image_b[order, ..., 0],
            "digit_a": pairs.digit_a[order], "digit_b": pairs.digit_b[order], "target": pairs.target[order],
            "p": p[order], "predicted_a": guess["a"], "predicted_b": guess["b"]}


class ModelCache:
    """Compiled models kept across rounds, so that each configuration is traced once per process (seconds,
    more than a 1000-pair round's fit): Keras keeps a model's traced train function until it is compiled
    again. A round on a cached model starts from exactly a fresh model's state: every variable (weights,
    BatchNorm statistics, dropout seeds, normalisation) and the optimizer's are copied from fresh ones.
    """

    def __init__(self, size=4):
        self.size, self.entries = size, {}

    def get(self, cfg: Config, fit_pairs):
        """A compiled model for `cfg`, initialised as `new_model` would initialise it."""
        fresh = build_model(cfg, *pixel_stats(cfg, fit_pairs))  # cheap: no tracing
        steps = epoch_steps(cfg, len(fit_pairs))
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

    def adopt(self, cfg: Config, model, fit_pairs):
        """Keep `model` (built for `cfg`, e.g. by a keras-tuner HyperModel) as the model of `cfg`: the rounds
        of `cfg` then train it, re-initialised for each; compiled again if it was for another epoch length."""
        steps = epoch_steps(cfg, len(fit_pairs))
        if model.optimizer is None or model.steps_per_execution != steps:
            compile_model(model, cfg, steps)
        self.keep(self.key(cfg), self.entry(model))

    @staticmethod
    def key(cfg):
        return json.dumps(cfg.replace(seed=0).to_dict(), sort_keys=True)

    @staticmethod
    def entry(model):
        targets = model.variables + model.optimizer.variables
        # every variable in one traced call, not one call per variable
        return model, tf.function(lambda values: [t.assign(v) for t, v in zip(targets, values)], autograph=False), targets

    def keep(self, key, entry):
        self.entries.pop(key, None)
        self.entries[key] = entry  # most recently used last
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))


class _VectorLogs(keras.Model):
    """Train and test steps that return each value as a vector of one: Keras 3.15's fit averages the
    replicas' values along axis 0 under MultiWorkerMirroredStrategy, which fails for scalars
    (tensorflow#72388). For training only (see `as_saved`)."""

    def train_step(self, data):
        return {name: keras.ops.reshape(value, [1]) for name, value in super().train_step(data).items()}

    def test_step(self, data):
        return {name: keras.ops.reshape(value, [1]) for name, value in super().test_step(data).items()}


def distributed_model(cfg, strategy, fit_pairs):
    """A compiled model whose variables, optimizer and metrics are made under `strategy`'s scope. The Model
    object is made outside it, over the same layers, and its loss and metric variables here on two pairs:
    Keras 3.15's fit would reduce a first batch across the replicas to build it, which fails for dict
    inputs under MultiWorkerMirroredStrategy."""
    # BatchNorm statistics across the replicas, as one process computes them; but per replica with numerics part
    # "apart", as PyTorch's DistributedDataParallel (and TensorFlow 2.21's collectives fail on that many calls).
    synchronized = "apart" not in cfg.torch_parts
    keras.utils.set_random_seed(cfg.seed)  # as new_model
    steps = epoch_steps(cfg, len(fit_pairs))
    with strategy.scope():
        built = build_model(cfg, *pixel_stats(cfg, fit_pairs), synchronized=synchronized)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    model = (_VectorLogs if multiworker else keras.Model)(built.input, built.output, name=built.name)
    with strategy.scope():
        compile_model(model, cfg, steps, distributed=True)
        x, y = tf.nest.map_structure(lambda t: t[:2], (fit_pairs.features(), labels_for(fit_pairs.labels(),
                                                                                        model.output_names)))
        y_pred = model(x, training=False)
        model.compute_loss(x, y, y_pred)
        model.compute_metrics(x, y, y_pred)
    model.reset_metrics()
    return model


def as_saved(model, cfg: Config, fit_pairs):
    """`model` as it is saved: a `distributed_model` as the plain compiled keras.Model of its layers."""
    if not isinstance(model, _VectorLogs):
        return model
    return compile_model(keras.Model(model.input, model.output, name=model.name), cfg, epoch_steps(cfg, len(fit_pairs)))


def train_round(cfg: Config, train_pairs, test_pairs, model=None, initial_epoch=0, callbacks=(), verbose="auto",
                curves=False, strategy=None):
    """Train one round with `model.fit`; returns (model, metrics, history dict).

    `model`: the compiled model to train (default: `new_model`); `initial_epoch`: the epochs it has been
    trained (a restored backup: later epochs get an uninterrupted run's batches). `strategy`: the model is
    made under it and fit runs in its scope. `curves=True` logs the test scores after every epoch
    (`TestCurve`, left out of the fit time).
    """
    cfg.validate()  # a Config made in Python and not validated: one UserError, not a nonsense round
    if len(train_pairs) == 0 or len(test_pairs) == 0:
        raise RunError("no training or test pairs to train on")
    fit_pairs, val_pairs = fit_split(cfg, train_pairs)
    smallest_batch = len(fit_pairs) % cfg.batch_size or min(cfg.batch_size, len(fit_pairs))
    if strategy is not None and smallest_batch < strategy.num_replicas_in_sync:
        raise RunError(f"a batch of {smallest_batch} pairs cannot be split across "
                       f"{strategy.num_replicas_in_sync} replicas; change --batch-size or --pairs")
    if model is None:
        model = new_model(cfg, fit_pairs) if strategy is None else distributed_model(cfg, strategy, fit_pairs)
    callbacks = [Diverged(), *callbacks]
    if cfg.patience and val_pairs is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_compare_accuracy", mode="max", patience=cfg.patience, restore_best_weights=True))
    test_curve = None
    if curves:
        boards = [c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)]
        test_curve = TestCurve(test_scorer(cfg, test_pairs), [board.log_dir for board in boards])
        # after TensorBoard, which would log its values in the training run; before the rest, which record them
        callbacks = [callbacks[0], *boards, test_curve, *(c for c in callbacks[1:] if c not in boards)]
    outputs = model.output_names
    start = time.perf_counter()
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        history = model.fit(to_dataset(fit_pairs, cfg, initial_epoch, outputs=outputs), epochs=cfg.epochs,
                            steps_per_epoch=epoch_steps(cfg, len(fit_pairs)),
                            initial_epoch=initial_epoch, callbacks=callbacks,
                            verbose=1 if verbose == "auto" else verbose, shuffle=False,  # to_dataset shuffles
                            validation_data=to_dataset(val_pairs, cfg, training=False, outputs=outputs)
                            if val_pairs is not None else None)
    seconds = time.perf_counter() - start - (test_curve.seconds if test_curve else 0.0)
    metrics = round_metrics(model, cfg, fit_pairs, val_pairs, test_pairs)
    metrics.update(train_seconds=round(seconds, 3), epochs=initial_epoch + len(history.history.get("loss", [])),
                   resumed_at_epoch=initial_epoch)
    return model, metrics, history.history


def test_scorer(cfg: Config, pairs):
    """score(model) -> `scores` of a model on `pairs`. A model with test-time views is scored through a twin
    without them, given its weights: reading every view after every epoch would cost more than the epoch."""
    if not cfg.tta:
        return lambda model: scores(Predictor.of(model)(pairs), pairs)
    twin = build_model(cfg.without_views())

    def score(model):
        twin.set_weights(model.get_weights())
        return scores(Predictor.of(twin)(pairs), pairs)
    return score


def round_metrics(model, cfg, fit_pairs, val_pairs, test_pairs):
    """A trained model's accuracies (compare, digits and their test confusion matrix), with what defines the round."""
    predictor = Predictor.of(model)
    train, out = accuracy(model, fit_pairs, predictor), predictor(test_pairs)
    test = scores(out, test_pairs)
    metrics = {"arch": cfg.arch, "test_accuracy": test["accuracy"], "train_accuracy": train["accuracy"],
               "params": count_params(model), "seed": cfg.seed, "train_pairs": len(fit_pairs),
               "test_pairs": len(test_pairs)}
    if "digit_accuracy" in test:
        metrics["test_digit_accuracy"] = test["digit_accuracy"]
        metrics["train_digit_accuracy"] = train["digit_accuracy"]
        metrics["confusion"] = confusion(out, test_pairs)
    if val_pairs is not None:
        metrics["val_accuracy"] = accuracy(model, val_pairs, predictor)["accuracy"]
    return metrics
