"""mnistcompare: learn whether one handwritten digit is <= another (Keras 3).

Modules, in the order the data flows (docs/layout.md draws them): `config`, `files`, `runtime`, `data`,
`layers`, `models`, `training`, `reports`, `experiments`, `plots`, `export`, `predict`, `cli`, `serve`, and
`tuning` (keras-tuner searches). Importing the package loads no TensorFlow; it sets the environment
TensorFlow starts with where the user has not, so that a script computes the commands' numbers.
`import mnistcompare.layers` registers the package's layers, as `keras.models.load_model` needs.
"""
from mnistcompare import runtime
from mnistcompare.config import ARCHS, Config
from mnistcompare.errors import RunError, UserError

__version__ = "0.2.0"
__all__ = ["ARCHS", "Config", "RunError", "UserError", "__version__"]

runtime.tensorflow_environment()
