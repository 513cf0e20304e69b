"""A keras-tuner HyperModel whose search space is a grid over `mnistcompare.Config`."""
import keras_tuner

from mnistcompare.config import Config
from mnistcompare.tuning.grid import apply


class ComparisonHyperModel(keras_tuner.HyperModel):
    """One hp.Choice per grid axis, mapped onto the base Config."""

    def __init__(self, base: Config, grid: dict, **kwargs):
        super().__init__(**kwargs)
        self.base, self.grid = base, grid

    def config(self, hp) -> Config:
        return apply(self.base, {name: hp.Choice(name, values) for name, values in self.grid.items()}).validate()

    def build(self, hp):
        from mnistcompare.models import build_model
        from mnistcompare.training import compile_model

        cfg = self.config(hp)
        return compile_model(build_model(cfg), cfg, steps_per_epoch=-(-cfg.pairs // cfg.batch_size))
