"""The keras-tuner HyperModel of a comparison net: `build` builds and compiles, `fit` trains rounds.

    import keras_tuner as kt
    from mnistcompare import Config
    from mnistcompare.data import load_pairs
    from mnistcompare.tuning import OBJECTIVE, ComparisonHyperModel
    base = Config(arch="siamese", epochs=10)
    train, val = load_pairs(base, validation=1000)
    hypermodel = ComparisonHyperModel(base, {"alpha": [0.3, 0.5, 0.7],
                                             "lr": {"min": 1e-4, "max": 1e-2, "sampling": "log"}}, train)
    tuner = kt.RandomSearch(hypermodel, objective=OBJECTIVE, max_trials=5, directory="runs", project_name="alpha")
    tuner.search(train, validation_data=val)           # or dict arrays: search(x, y, validation_data=(xv, yv))
    best = tuner.get_best_models(1)[0]
"""
import copy
import os
import statistics

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras
import keras_tuner
import tensorflow as tf

from mnistcompare.config import Config
from mnistcompare.data import as_pairs, epoch_steps, load_pairs
from mnistcompare.errors import RunError, UserError
from mnistcompare.files import write_weights
from mnistcompare.models import build_model
from mnistcompare.training import ModelCache, compile_model, fit_split, pixel_stats, train_round
from .grid import apply

OBJECTIVE = keras_tuner.Objective("val_compare_accuracy", "max")


def declare(hp, name, axis):
    """The value of axis `name` for this trial: a list is an hp.Choice, a range an hp.Int or hp.Float."""
    if not isinstance(axis, dict):
        return hp.Choice(name, axis)
    kind = hp.Int if all(isinstance(axis[k], int) for k in ("min", "max")) else hp.Float
    return kind(name, axis["min"], axis["max"], sampling=axis.get("sampling", "linear"))


class ComparisonHyperModel(keras_tuner.HyperModel):
    """A search space over `mnistcompare.Config`, for any keras-tuner tuner.

    `space` maps names (see `tuning.grid`) to a list of values or a range {"min", "max", "sampling"}.
    `build(hp)` builds and compiles the trial's model, standardised with `train_pairs`' statistics (else
    0 and 1). `fit(hp, model, x, y, validation_data=..., epochs=..., batch_size=...)` takes what
    `tuner.search` is given, as `model.fit` does (`Pairs`, dicts of arrays, `tf.data.Dataset`s;
    `validation_data` or `validation_split`), trains `runs` rounds (seed, seed+1, ...) and returns their
    mean validation accuracy; given no pairs, each round draws its own from `source` with `val_pairs`
    held-out validation pairs, as mnistcompare-tune does. An argument it cannot honour stops the search
    (FatalValueError). keras-tuner's best-weights checkpoint sees a round as one epoch, so a trial keeps
    its best round's weights; further executions of a trial continue the seeds; Hyperband's budget sets
    the epochs, and its rounds continue from a trial's handed-on weights.
    """

    def __init__(self, base: Config = None, space=None, train_pairs=None, runs=1, val_pairs=1000, source=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.base, self.space = base or Config(), dict(space or {})
        self.train_pairs, self.runs, self.val_pairs, self.source = train_pairs, runs, val_pairs, source
        self.rounds, self.trained = [], None  # the last trial's rounds and Config
        self._last = (None, 0)  # the last fit's hyperparameters and executions, to continue the seeds

    def config(self, hp, pairs=None) -> Config:
        """The trial's Config (fitted to `pairs`, or the HyperModel's training pairs, where given)."""
        cfg = apply(self.base, {name: declare(hp, name, axis) for name, axis in self.space.items()})
        if "tuner/epochs" in hp.values:  # Hyperband's budget for this trial
            cfg = cfg.replace(epochs=int(hp.values["tuner/epochs"]))
        pairs = self.train_pairs if pairs is None else pairs
        return (cfg if pairs is None else cfg.replace(pairs=len(pairs))).validate()

    def build(self, hp):
        cfg = self.config(hp)
        stats = pixel_stats(cfg, fit_split(cfg, self.train_pairs)[0]) if self.train_pairs is not None else (0.0, 1.0)
        steps = epoch_steps(cfg, cfg.pairs - round(cfg.pairs * cfg.val_split))  # less what --val-split holds out
        return compile_model(build_model(cfg, *stats), cfg, steps)

    def fit(self, hp, model, x=None, y=None, *args, validation_data=None, validation_split=0.0, epochs=None,
            batch_size=None, shuffle=None, initial_epoch=0, callbacks=(), verbose=0, **others):
        try:
            if args or others:
                raise UserError(f"{', '.join(sorted(others)) or 'more than x and y as positional arguments'}: not "
                                "taken (x, y, validation_data, validation_split, epochs, batch_size, shuffle, "
                                "callbacks and verbose are)")
            pairs, val, given = _trial_pairs(x, y, validation_data, validation_split)
            batch_size = given if batch_size is None else batch_size  # (0 is checked, not taken for None)
            changes = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("shuffle", shuffle))
                       if v is not None}
            cfg = self.config(hp, pairs).replace(**changes).validate()
        except UserError as e:
            raise keras_tuner.errors.FatalValueError(f"ComparisonHyperModel.fit: {e}") from None
        executions = self._last[1] + 1 if hp is self._last[0] else 0
        self._last = (hp, executions)
        first_seed = cfg.seed + executions * self.runs
        self.trained, self.rounds = cfg.replace(seed=first_seed), []
        # keras-tuner's best-weights checkpoint sees rounds as epochs; other callbacks see every epoch.
        checkpoints = [c for c in callbacks if type(c).__name__ == "SaveBestEpoch"]
        per_epoch = [c for c in callbacks if c not in checkpoints]
        handed_on = model.get_weights() if initial_epoch and "tuner/trial_id" in hp.values else None
        cache = ModelCache(size=1)  # the rounds train the model `build` made, re-initialised for each
        for run in range(self.runs):
            run_cfg = cfg.replace(seed=first_seed + run)
            train, test = (pairs, val) if pairs is not None else \
                load_pairs(run_cfg, self.source, validation=self.val_pairs)
            fit_pairs = fit_split(run_cfg, train)[0]
            if run == 0:
                cache.adopt(run_cfg, model, fit_pairs)
            start = cache.get(run_cfg, fit_pairs)
            if handed_on is not None:  # Hyperband: continue from the weights of the trial it continues
                start.set_weights(handed_on)
            try:
                _, metrics, _ = train_round(run_cfg, train, test, model=start, verbose=verbose,
                                            initial_epoch=initial_epoch if handed_on is not None else 0,
                                            callbacks=[_for_round(c, run, self.runs) for c in per_epoch])
            except RunError as e:  # a space over learning rates may hold points that diverge: they score 0
                if "diverged" not in str(e):
                    raise
                self.rounds.append({OBJECTIVE.name: 0.0, "train_seconds": 0.0, "diverged": str(e)})
                continue
            self.rounds.append({OBJECTIVE.name: metrics["test_accuracy"], "train_seconds": metrics["train_seconds"],
                                "epochs": metrics["epochs"], "seed": run_cfg.seed,
                                # nets that read digits: what bounds the comparison
                                **({"val_digit_accuracy": metrics["test_digit_accuracy"]}
                                   if "test_digit_accuracy" in metrics else {})})
            for checkpoint in checkpoints:
                _keep_if_best(checkpoint, model, metrics["test_accuracy"])
        score = statistics.mean(r[OBJECTIVE.name] for r in self.rounds)
        for board in (c for c in per_epoch if isinstance(c, keras.callbacks.TensorBoard)):
            # the trial's score in its TensorBoard run, beside keras-tuner's hparams: the HParams dashboard's metric
            with tf.summary.create_file_writer(board.log_dir).as_default():
                tf.summary.scalar(OBJECTIVE.name, score, step=0)
        return {OBJECTIVE.name: score}


def _trial_pairs(x, y, validation_data, validation_split):
    """(training Pairs or None, validation Pairs or None, a batched Dataset's batch size or None) from fit's
    arguments; UserError for what cannot be used."""
    if validation_split and validation_data is not None:
        raise UserError("give validation_data or validation_split, not both")
    if x is None:
        if y is not None or validation_data is not None or validation_split:
            raise UserError("validation data without training data (x)")
        return None, None, None
    pairs, batch_size = as_pairs(x, y)
    if validation_split:
        if not 0 < validation_split < 1 or round(len(pairs) * validation_split) < 1:
            raise UserError(f"validation_split {validation_split} holds out no pair of {len(pairs)}")
        pairs, val = pairs.split(round(len(pairs) * validation_split))  # the last ones, as Keras' fit
        return pairs, val, batch_size
    if validation_data is None:
        raise UserError("no validation_data (or validation_split): the objective is the validation accuracy")
    given = validation_data if isinstance(validation_data, (tuple, list)) else (validation_data,)
    if len(given) not in (1, 2):
        raise UserError("validation_data: (x, y), without sample weights")
    return pairs, as_pairs(*given, what="validation_data")[0], batch_size


def _keep_if_best(checkpoint, model, value):
    """What keras-tuner's SaveBestEpoch does at the end of an epoch, for a round: the weights saved where it
    saves them when `value` beats its best; written beside and renamed, with the disk's room checked first
    (files.write_weights): its own `save_weights` in place left a half file, or a crash, on a full disk."""
    if checkpoint.objective.better_than(value, checkpoint.best_value):
        checkpoint.best_value = value
        write_weights(model, checkpoint.filepath)


def _for_round(callback, run, runs):
    """A TensorBoard callback of its own for each round (LOG_DIR/round-R) of a trial of several; others as they are."""
    if runs == 1 or not isinstance(callback, keras.callbacks.TensorBoard):
        return callback
    board = copy.deepcopy(callback)  # as keras-tuner copies it for each trial
    board.log_dir = os.path.join(callback.log_dir, f"round-{run + 1}")
    return board

