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
    tuner.search(train, validation_data=val)
    best = tuner.get_best_models(1)[0]
"""
import copy
import os
import statistics

import keras
import keras_tuner

from mnistcompare.config import Config
from mnistcompare.errors import RunError
from mnistcompare.tuning.grid import apply

OBJECTIVE = keras_tuner.Objective("val_compare_accuracy", "max")


def declare(hp, name, axis):
    """The value of axis `name` for this trial: a list is an hp.Choice, a range an hp.Int or hp.Float."""
    if not isinstance(axis, dict):
        return hp.Choice(name, axis)
    kind = hp.Int if all(isinstance(axis[k], int) for k in ("min", "max")) else hp.Float
    return kind(name, axis["min"], axis["max"], sampling=axis.get("sampling", "linear"))


class ComparisonHyperModel(keras_tuner.HyperModel):
    """A search space over `mnistcompare.Config`, for any keras-tuner tuner.

    `space` maps names (see `mnistcompare.tuning.grid`) to a list of values or
    a range {"min", "max", "sampling"}. `build(hp)` builds and compiles the
    trial's model, standardised with the mean and std of `train_pairs` (without
    them, 0 and 1 until `fit` sets the values of the pairs it trains on).
    `fit(hp, model, train_pairs, validation_data=val_pairs)` trains `runs`
    rounds (seeds seed, seed+1, ...) through `train_round` and returns their
    mean validation accuracy; `fit` given no pairs draws each round's own (its
    seed fixes them) from `source`, with `val_pairs` validation pairs from MNIST
    training images that the training pairs do not use: what mnistcompare-tune
    does. The values of each round of the last trial are in `rounds`.

    keras-tuner's best-weights checkpoint sees one epoch per round, whose logs
    hold the round's final validation accuracy: each trial keeps the weights
    of its best round, which `get_best_models` loads. Hyperband's epoch budget
    (`tuner/epochs`) sets the epochs; each of its trials trains from fresh
    weights (a round here is a run from its seed's initial state).
    """

    def __init__(self, base: Config = None, space=None, train_pairs=None, runs=1, val_pairs=1000, source=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.base, self.space = base or Config(), dict(space or {})
        self.train_pairs, self.runs, self.val_pairs, self.source = train_pairs, runs, val_pairs, source
        self.rounds, self.trained = [], None  # the last trial's rounds and Config

    def config(self, hp, pairs=None) -> Config:
        """The trial's Config (fitted to `pairs`, or the HyperModel's training pairs, where given)."""
        cfg = apply(self.base, {name: declare(hp, name, axis) for name, axis in self.space.items()})
        if "tuner/epochs" in hp.values:  # Hyperband's budget for this trial
            cfg = cfg.replace(epochs=int(hp.values["tuner/epochs"]))
        pairs = self.train_pairs if pairs is None else pairs
        return (cfg if pairs is None else cfg.replace(pairs=len(pairs))).validate()

    def build(self, hp):
        from mnistcompare.data import normalisation
        from mnistcompare.models import build_model
        from mnistcompare.training import compile_model, fit_split

        cfg = self.config(hp)
        mean, std = 0.0, 1.0
        if cfg.normalize and self.train_pairs is not None:
            mean, std = normalisation(fit_split(cfg, self.train_pairs)[0])
        return compile_model(build_model(cfg, mean, std), cfg, _steps(cfg))

    def fit(self, hp, model, *args, callbacks=(), verbose=0, validation_data=None, **kwargs):
        from mnistcompare.data import load_pairs
        from mnistcompare.training import ModelCache, train_round

        pairs = args[0] if args else kwargs.get("x")
        if (pairs is None) != (validation_data is None):
            raise ValueError("fit takes training pairs and validation_data pairs, or neither (each round then "
                             "draws its own)")
        cfg = self.config(hp, pairs)
        self.trained, self.rounds = cfg, []
        # keras-tuner's best-weights checkpoint is given rounds as epochs (see the class docstring); its
        # other callbacks and the user's see every epoch, each TensorBoard callback in a folder per round.
        checkpoints = [c for c in callbacks if type(c).__name__ == "SaveBestEpoch"]
        per_epoch = [c for c in callbacks if c not in checkpoints]
        cache = ModelCache(size=1)  # the rounds train the model `build` made, re-initialised for each
        cache.adopt(cfg, model, _steps(cfg))  # (cfg.pairs is the count of the pairs given, where given)
        for run in range(self.runs):
            run_cfg = cfg.replace(seed=cfg.seed + run)
            train, val = (pairs, validation_data) if pairs is not None else \
                load_pairs(run_cfg, self.source, validation=self.val_pairs)
            try:
                _, metrics, _ = train_round(run_cfg, train, val, verbose=verbose, cache=cache,
                                            callbacks=[_for_round(c, run, self.runs) for c in per_epoch])
            except RunError as e:  # a space over learning rates may hold points that diverge: they score 0
                if "diverged" not in str(e):
                    raise
                self.rounds.append({OBJECTIVE.name: 0.0, "train_seconds": 0.0, "diverged": str(e)})
                continue
            self.rounds.append({OBJECTIVE.name: metrics["test_accuracy"], "train_seconds": metrics["train_seconds"],
                                # nets that read digits: what bounds the comparison
                                **({"val_digit_accuracy": metrics["test_digit_accuracy"]}
                                   if "test_digit_accuracy" in metrics else {})})
            for checkpoint in checkpoints:
                checkpoint.set_model(model)
                checkpoint.on_epoch_end(run, {OBJECTIVE.name: metrics["test_accuracy"]})
        score = statistics.mean(r[OBJECTIVE.name] for r in self.rounds)
        for board in (c for c in per_epoch if isinstance(c, keras.callbacks.TensorBoard)):
            _write_score(board.log_dir, score)  # beside the hparams keras-tuner writes there
        return {OBJECTIVE.name: score}


def _steps(cfg):
    """Steps of an epoch of `cfg`'s rounds: its pairs less those `--val-split` holds out (train_round's split)."""
    from mnistcompare.data import steps_per_epoch

    return steps_per_epoch(cfg.pairs - round(cfg.pairs * cfg.val_split), cfg.batch_size)


def _for_round(callback, run, runs):
    """A TensorBoard callback of its own for each round (LOG_DIR/round-R) where a trial has several;
    other callbacks as they are."""
    if runs == 1 or not isinstance(callback, keras.callbacks.TensorBoard):
        return callback
    board = copy.deepcopy(callback)  # as keras-tuner copies it for each trial
    board.log_dir = os.path.join(callback.log_dir, f"round-{run + 1}")
    return board


def _write_score(log_dir, score):
    """The trial's score as a scalar of its TensorBoard run, the metric of the HParams dashboard."""
    import tensorflow as tf

    with tf.summary.create_file_writer(log_dir).as_default():
        tf.summary.scalar(OBJECTIVE.name, score, step=0)
