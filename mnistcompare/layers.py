"""Small serialisable layers the models need (no Lambda layers)."""
import math

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras
import numpy as np
import tensorflow as tf  # PooledConv only: XLA compilation
from keras import ops


@keras.saving.register_keras_serializable(package="mnistcompare")
class Standardize(keras.layers.Layer):
    """(x - mean) / std with the training pixels' statistics, kept as non-trainable weights (exports carry
    them; `set_stats` fits a built model to a new sample of pairs)."""

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
    """[a, b] -> concat along the batch axis, so a shared tower runs once per step (one larger matmul, one
    BatchNorm update of the moving statistics, where a tower called twice updates them twice)."""

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
    """P(a <= b) = sum_{i <= j} p_a(i) p_b(j) = sum_j p_b(j) CDF_a(j): exact, differentiable."""

    def call(self, inputs):
        p_a, p_b = inputs
        p = ops.sum(ops.cumsum(p_a, axis=-1) * p_b, axis=-1, keepdims=True)
        return ops.clip(p, 0.0, 1.0)  # rounding can step just past 1

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 1)


@keras.saving.register_keras_serializable(package="mnistcompare")
class TwoClassProbability(keras.layers.Layer):
    """Two logits [B, 2] -> the second class's softmax probability [B, 1]: with binary cross-entropy, the
    loss is PyTorch's CrossEntropyLoss on the reports' Linear(k, 2), in every other model's output form."""

    def call(self, logits):
        return ops.softmax(logits, axis=-1)[:, 1:]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)


@keras.saving.register_keras_serializable(package="mnistcompare")
class PoolUnits(keras.layers.Layer):
    """Max over each run of `pool` adjacent units: [B, N] -> [B, N / pool] (PyTorch's MaxPool1d on a
    [B, N] tensor, as report 004 applies it after a dense layer)."""

    def __init__(self, pool=2, **kwargs):
        super().__init__(**kwargs)
        self.pool = int(pool)

    def call(self, x):
        return ops.max(ops.reshape(x, (-1, x.shape[-1] // self.pool, self.pool)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] // self.pool)

    def get_config(self):
        return {**super().get_config(), "pool": self.pool}


# Test-time augmentation: the image itself and its four one-pixel shifts (rows, columns), then, where asked,
# the image rotated both ways and scaled both ways about its centre.
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def view_transforms(rotate=0.0, zoom=0.0):
    """The (angle in degrees, scale, dy, dx) of each test-time view, the image itself first."""
    views = [(0.0, 1.0, dy, dx) for dy, dx in SHIFTS]
    if rotate:
        views += [(rotate, 1.0, 0, 0), (-rotate, 1.0, 0, 0)]
    if zoom:
        views += [(0.0, 1.0 + zoom, 0, 0), (0.0, 1.0 - zoom, 0, 0)]
    return views


def view_matrix(h, w, angle=0.0, scale=1.0, dy=0.0, dx=0.0):
    """[h*w, h*w] M: a flattened image times M is that image rotated by `angle` degrees, scaled by `scale`
    about its centre and shifted by (dy, dx), bilinear with 0 outside, as ImageProjectiveTransformV3 does;
    fixed, so that the views are one matmul, which every runtime (SavedModel, TFLite) has."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    c, s = math.cos(math.radians(angle)) / scale, math.sin(math.radians(angle)) / scale
    ys, xs = np.mgrid[0:h, 0:w]
    u, v = xs - cx - dx, ys - cy - dy
    src_x, src_y = c * u + s * v + cx, -s * u + c * v + cy  # where each output pixel reads the input
    x0, y0 = np.floor(src_x), np.floor(src_y)
    m = np.zeros((h * w, h * w))
    out = (ys * w + xs).ravel()
    for ny, wy in ((y0, y0 + 1 - src_y), (y0 + 1, src_y - y0)):
        for nx, wx in ((x0, x0 + 1 - src_x), (x0 + 1, src_x - x0)):
            inside = ((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)).ravel()
            src = (ny * w + nx).ravel().astype(int)
            np.add.at(m, (src[inside], out[inside]), (wy * wx).ravel()[inside])
    return m


@keras.saving.register_keras_serializable(package="mnistcompare")
class InferenceViews(keras.layers.Layer):
    """At inference, [B, H, W, C] -> [V*B, H, W, C]: each image's test-time views (`view_transforms`), view
    by view, made at pixel scale (the background, 0, fills in) by one fixed matrix; in training, the images as
    they are."""

    def __init__(self, rotate=0.0, zoom=0.0, **kwargs):
        super().__init__(**kwargs)
        self.rotate, self.zoom = float(rotate), float(zoom)
        self.count = len(view_transforms(self.rotate, self.zoom))

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        self.matrix = np.concatenate([view_matrix(h, w, *t) for t in view_transforms(self.rotate, self.zoom)],
                                     axis=1).astype("float32")

    def call(self, x, training=False):
        if training:
            return x
        h, w, c = x.shape[1:]
        pixels = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, c, h * w))  # [B, C, HW]
        views = ops.reshape(ops.matmul(pixels, ops.convert_to_tensor(self.matrix)), (-1, c, self.count, h, w))
        return ops.reshape(ops.transpose(views, (2, 0, 3, 4, 1)), (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotate": self.rotate, "zoom": self.zoom}


@keras.saving.register_keras_serializable(package="mnistcompare")
class ShiftViews(InferenceViews):
    """The shifts alone (models saved before InferenceViews had rotations and scalings)."""


@keras.saving.register_keras_serializable(package="mnistcompare")
class MeanOfViews(keras.layers.Layer):
    """The inverse of InferenceViews at inference: [V*B, ...] -> [B, ...], the mean over the V views."""

    def __init__(self, views=len(SHIFTS), **kwargs):
        super().__init__(**kwargs)
        self.views = views

    def call(self, x, training=False):
        return x if training else ops.mean(ops.reshape(x, (self.views, -1, *x.shape[1:])), axis=0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="mnistcompare")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, trained through TensorFlow's fused kernel: Keras 3 uses a dozen ops, each
    with its own gradient, where FusedBatchNormV3 is one oneDNN kernel each way, faster (docs/best.md).
    Keras' arithmetic up to float rounding (the biased variance feeds the moving average). Inference, masks,
    synchronised statistics and other dtypes take Keras' own path, so it serves and exports as Keras' does.
    """

    def call(self, inputs, training=None, mask=None):
        rank = len(inputs.shape)
        if (not (training and self.trainable) or mask is not None or self.renorm or rank not in (2, 4)
                or self.axis not in (-1, rank - 1) or inputs.dtype != tf.float32
                or (self.synchronized and tf.distribute.has_strategy())):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        x = inputs if rank == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        empty = tf.constant([], tf.float32)  # no running statistics in: the batch's own come out
        y, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma.value if self.scale else tf.ones([channels]),
            offset=self.beta.value if self.center else tf.zeros([channels]), mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = unbiased * (n - 1.0) / tf.maximum(n, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y if rank == 4 else tf.reshape(y, tf.shape(inputs))


@keras.saving.register_keras_serializable(package="mnistcompare")
class PooledConv(keras.layers.Layer):
    """Conv2D on a one-channel image -> activation -> MaxPooling2D, as one XLA kernel: the serving form of a
    tower's first conv layer (`export.serving_model`). oneDNN runs a one-channel convolution slowly and writes
    the unpooled map; here each pooled output is the max of shifted multiply-adds compiled together, a few
    times faster (docs/deploying.md). The batch is padded to a power of two (with ops TFLite has built in),
    so that XLA compiles a handful of shapes, not one per batch size.
    """

    def __init__(self, filters, kernel_size, padding="valid", pool=1, activation="relu", negative_slope=0.2,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.padding = int(filters), int(kernel_size), padding
        self.pool, self.activation, self.negative_slope = int(pool), activation, float(negative_slope)

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(f"PooledConv takes one-channel images, got shape {input_shape}")
        self.kernel = self.add_weight(shape=(self.kernel_size, self.kernel_size, 1, self.filters), name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        # one per layer: TFLite's converter gives every caller of a shared one the same weights (an ensemble's)
        self.compiled = tf.function(_pooled_conv, jit_compile=True)

    def call(self, x):
        n = tf.shape(x)[0]
        # 2 ** ceil(log2(n)); the small margin keeps exact powers of two from rounding up, max() any rounding down
        exponent = tf.math.ceil(tf.math.log(tf.cast(n, tf.float32)) / math.log(2.0) - 1e-4)
        padded = tf.maximum(tf.cast(tf.pow(2.0, exponent), tf.int32), n)
        x = tf.pad(x, [[0, padded - n], [0, 0], [0, 0], [0, 0]])
        return self.compiled(x, self.kernel.value, self.bias.value, self.padding, self.pool, self.activation,
                            self.negative_slope)[:n]

    def compute_output_shape(self, input_shape):
        size = input_shape[1] if self.padding == "same" else input_shape[1] - self.kernel_size + 1
        return (input_shape[0], size // self.pool, size // self.pool, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "padding": self.padding, "pool": self.pool, "activation": self.activation,
                "negative_slope": self.negative_slope}


def _pooled_conv(x, kernel, bias, padding, pool, activation, negative_slope):
    k = kernel.shape[0]
    if padding == "same":  # as Keras pads for stride 1: the odd pixel after
        x = tf.pad(x, [[0, 0], [(k - 1) // 2, k // 2], [(k - 1) // 2, k // 2], [0, 0]])
    height, width = (x.shape[1] - k + 1) // pool, (x.shape[2] - k + 1) // pool
    act = (lambda y: tf.nn.leaky_relu(y, negative_slope)) if activation == "leaky_relu" else \
        keras.activations.get(activation)
    pooled = None
    for py in range(pool):  # every position inside the pooling window
        for px in range(pool):
            y = bias
            for i in range(k):
                for j in range(k):
                    rows = slice(py + i, py + i + pool * (height - 1) + 1, pool)
                    cols = slice(px + j, px + j + pool * (width - 1) + 1, pool)
                    y = y + x[:, rows, cols, :] * kernel[i, j, 0]
            y = act(y)
            pooled = y if pooled is None else tf.maximum(pooled, y)
    return pooled
