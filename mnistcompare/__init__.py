"""mnistcompare: learn whether one handwritten digit is <= another (Keras 3).

Modules, in the order the data flows (each imports only those before it):
`config` (one Config per run, the architectures), `files` (atomic outputs,
folder locks), `runtime` (TensorFlow start-up, strategies), `data` (MNIST ->
pairs), `layers` and `models` (functional builders), `training` (one round),
`reports` (the reports' presets and tables), `experiments` (many rounds,
tables), `plots`, `export` (SavedModel), `predict` (your own images), `cli`
(the command-line programs), `serve` (TF Serving's REST API and the drawing
page) and `tuning` (keras-tuner searches).

Importing the package loads no TensorFlow; it sets the environment TensorFlow
starts with where the user has not (`runtime.tensorflow_environment`), so
that a script computes the numbers the commands compute. The package's Keras
layers are registered with Keras when `mnistcompare.layers` is imported (as
every module that builds or trains a model does): `import mnistcompare.layers`
is what `keras.models.load_model("model.keras")` needs.
"""
from mnistcompare import runtime
from mnistcompare.config import ARCHS, Config
from mnistcompare.errors import RunError, UserError

__version__ = "0.2.0"
__all__ = ["ARCHS", "Config", "RunError", "UserError", "__version__"]

runtime.tensorflow_environment()
