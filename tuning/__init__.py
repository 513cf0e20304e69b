"""keras-tuner searches over `mnistcompare.Config`, installed as `mnistcompare.tuning`.

`grid` parses search spaces (no TensorFlow), `hypermodel` is the keras-tuner
HyperModel that any tuner drives, `search` the tuners of mnistcompare-tune
(keras-tuner's oracles, resumable), `studies` the reports' own searches,
`cli` the `mnistcompare-tune` command and its chief + workers launcher.

`ComparisonHyperModel` and `OBJECTIVE` are importable from here; they load
keras-tuner (and TensorFlow) when first used.
"""
PROJECT = "keras_tuner"  # keras-tuner's project folder inside the output folder
TUNERS = ("grid", "random", "bayesian", "hyperband")  # mnistcompare-tune --tuner: keras-tuner's four oracles


def __getattr__(name):
    if name in ("ComparisonHyperModel", "OBJECTIVE"):
        from . import hypermodel

        return getattr(hypermodel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
