"""mnistcompare: learn whether one handwritten digit is <= another (Keras 3).

Modules, in the order the data flows (each imports only those before it):
`config` (one Config per run, the architectures), `files` (atomic outputs,
folder locks), `runtime` (TensorFlow start-up, strategies), `data` (MNIST ->
pairs), `layers` and `models` (functional builders), `training` (one round),
`reports` (the reports' presets and tables), `experiments` (many rounds,
tables), `plots`, `export` (SavedModel), `predict` (your own images), `cli`
(the command-line programs), `serve` (TF Serving's REST API and the drawing
page) and `tuning` (keras-tuner searches).

Importing the package loads no TensorFlow. Its Keras layers are registered
as soon as Keras is imported, so `import mnistcompare` is all that
`keras.models.load_model("model.keras")` needs.
"""
import importlib
import importlib.abc
import importlib.util
import sys

from mnistcompare.config import ARCHS, Config
from mnistcompare.errors import RunError, UserError

__version__ = "0.2.0"
__all__ = ["ARCHS", "Config", "RunError", "UserError", "__version__"]


class _RegisterLayersAfterKeras(importlib.abc.MetaPathFinder):
    """Imports mnistcompare.layers (which registers its layers with Keras) right after Keras itself,
    without importing Keras, and so TensorFlow, before anything asks for it."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            importlib.import_module("mnistcompare.layers")

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    importlib.import_module("mnistcompare.layers")
else:
    sys.meta_path.insert(0, _RegisterLayersAfterKeras())
