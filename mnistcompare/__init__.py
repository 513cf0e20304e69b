"""mnistcompare: learn whether one handwritten digit is <= another (Keras 3).

Stages, in the order the data flows: `config` (one Config per run),
`data` (MNIST -> pairs -> tf.data), `layers` and `models` (functional builders
and the registry), `training` (compile + fit one round), `experiments` (many
rounds, studies, tables) and `plots`, `export` (SavedModel), `cli` (the
command-line programs). Importing the package loads no TensorFlow.
"""
from mnistcompare.config import ARCHS, PRESETS, Config, UserError

__version__ = "0.1.0"
__all__ = ["ARCHS", "PRESETS", "Config", "UserError"]
