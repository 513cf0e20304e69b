"""Small serialisable layers the models need (no Lambda layers)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mnistcompare")
class Standardize(keras.layers.Layer):
    """(x - mean) / std with the training pixels' statistics, kept in the model.

    Stored as non-trainable weights so that a built model can be reused for a
    new sample of pairs (see `set_stats`) and exports carry the values.
    """

    def __init__(self, mean=0.0, std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_mean, self.initial_std = float(mean), float(std)

    def build(self, input_shape):
        self.mean = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial_mean),
                                    trainable=False, name="mean")
        self.std = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial_std),
                                   trainable=False, name="std")

    def set_stats(self, mean, std):
        self.mean.assign(mean)
        self.std.assign(std)

    def call(self, x):
        return (ops.cast(x, self.compute_dtype) - self.mean) / self.std

    def get_config(self):
        return {**super().get_config(), "mean": float(self.mean.numpy()) if self.built else self.initial_mean,
                "std": float(self.std.numpy()) if self.built else self.initial_std}


@keras.saving.register_keras_serializable(package="mnistcompare")
class StackPair(keras.layers.Layer):
    """[a, b] -> concat along the batch axis, so a shared tower runs once per step.

    One call instead of two: one larger matmul and one BatchNorm update of the
    moving statistics per step (a tower called twice updates them twice).
    """

    def call(self, inputs):
        return ops.concatenate(inputs, axis=0)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="mnistcompare")
class SplitPair(keras.layers.Layer):
    """Inverse of StackPair: first half, second half of the batch."""

    def call(self, x):
        n = ops.shape(x)[0] // 2
        return [x[:n], x[n:]]

    def compute_output_shape(self, input_shape):
        return [input_shape, input_shape]


@keras.saving.register_keras_serializable(package="mnistcompare")
class ExactCompare(keras.layers.Layer):
    """P(a <= b) = sum_{i <= j} p_a(i) p_b(j) from two independent digit distributions.

    Computed as sum_j p_b(j) * CDF_a(j), which is exact and differentiable.
    """

    def call(self, inputs):
        p_a, p_b = inputs
        p = ops.sum(ops.cumsum(p_a, axis=-1) * p_b, axis=-1, keepdims=True)
        return ops.clip(p, 0.0, 1.0)  # rounding can step just past 1

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 1)
