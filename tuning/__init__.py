"""keras-tuner searches over `mnistcompare.Config`, installed as `mnistcompare.tuning`.

`grid` (search spaces, no TensorFlow), `hypermodel` (the HyperModel any tuner drives), `search` (the
resumable tuners of mnistcompare-tune), `studies` (the reports' searches), `cli` (the command). Importing
`ComparisonHyperModel` or `OBJECTIVE` from here loads keras-tuner and TensorFlow.
"""
import importlib.util

from mnistcompare.errors import UserError

PROJECT = "keras_tuner"  # keras-tuner's project folder inside the output folder
SEARCH_FILE = "search.json"  # beside it: the search's space, base Config and protocol, to resume or refuse
TUNERS = ("grid", "random", "bayesian", "hyperband")  # mnistcompare-tune --tuner: keras-tuner's four oracles


def check_bayesian():
    """keras-tuner's Bayesian oracle needs scikit-learn and SciPy, an extra of the package: said before any
    search starts (found, not imported: before TensorFlow starts)."""
    missing = [name for module, name in (("sklearn", "scikit-learn"), ("scipy", "SciPy"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f"--tuner bayesian needs {' and '.join(missing)} (keras-tuner's Bayesian oracle): "
                        "pip install 'mnistcompare[bayesian]'")


def __getattr__(name):
    if name in ("ComparisonHyperModel", "OBJECTIVE"):
        from . import hypermodel
        return getattr(hypermodel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
