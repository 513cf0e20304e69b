"""Functional builders of every architecture (described once, in `config.ARCHS`).

Every model takes `image_a` and `image_b` (float32 [B, 14, 14, 1], pixel scale 0..255), standardises them
inside, and returns a dict: `compare` ([B, 1], P(a <= b)) and, where it has them, `digit_a` / `digit_b`.
"""
import math
import random

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras
from keras import layers

from mnistcompare.config import ARCHS, PADDINGS, Config
from mnistcompare.layers import (ExactCompare, FusedBatchNormalization, InferenceViews, MeanOfViews, PooledConv,
                                 PoolUnits, SplitPair, StackPair, Standardize, TwoClassProbability)

# PyTorch's BatchNorm momentum (0.1), the reports': Keras' 0.99 leaves the moving averages poor after 100s of steps.
BN_MOMENTUM = 0.9


class Layers:
    """Dense, Conv2D, BatchNormalization and activation layers with Keras' defaults, or PyTorch's where
    `cfg.numerics` says (initialisers, BatchNorm epsilon, LeakyReLU slope)."""

    def __init__(self, cfg: Config, synchronized=False):
        self.cfg, self.parts, self.synchronized = cfg, cfg.torch_parts, synchronized
        self.regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
        self.negative_slope = 0.01 if "slope" in self.parts else 0.2  # 0.2: keras.activations.leaky_relu
        # Seeded from the config's: unseeded, Keras draws from the global `random`, which other code shares.
        self.seeds = random.Random(cfg.seed)

    def seed(self):
        return self.seeds.randrange(1, 2 ** 31)

    def _init(self, fan_in):
        """PyTorch initialises kernel and bias uniform in +-1/sqrt(fan_in) (kaiming_uniform_(a=sqrt(5)) for the
        kernel: VarianceScaling(1/3, fan_in, uniform) has exactly that bound)."""
        kernel = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=self.seed()) \
            if "kernel-init" in self.parts else keras.initializers.GlorotUniform(seed=self.seed())
        bound = 1 / math.sqrt(fan_in)
        bias = keras.initializers.RandomUniform(-bound, bound, seed=self.seed()) if "bias-init" in self.parts \
            else "zeros"
        return dict(kernel_initializer=kernel, bias_initializer=bias, kernel_regularizer=self.regularizer)

    def dropout(self, x, rate, name):
        return layers.Dropout(rate, seed=self.seed(), name=name)(x)

    def dense(self, x, units, name, activation=None):
        return layers.Dense(units, activation=activation, name=name, **self._init(x.shape[-1]))(x)

    def conv(self, x, channels, kernel, padding, groups, name):
        fan_in = kernel * kernel * x.shape[-1] // groups
        return layers.Conv2D(channels, kernel, padding=padding, groups=groups, name=name, **self._init(fan_in))(x)

    def batch_norm(self, x, name):
        return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-5 if "bn-eps" in self.parts else 1e-3,
                                       synchronized=self.synchronized, name=name)(x)

    def activation(self, x, name, kind=None):
        kind = kind or self.cfg.activation
        if kind == "leaky_relu":
            return layers.LeakyReLU(negative_slope=self.negative_slope, name=name)(x)
        return layers.Activation(kind, name=name)(x)

    def dense_block(self, x, units, name, activation=None):
        """Dense -> [BatchNorm] -> activation -> [max over adjacent units] -> [Dropout]."""
        cfg = self.cfg
        x = self.dense(x, units, f"{name}_dense")
        if cfg.batch_norm:
            x = self.batch_norm(x, f"{name}_bn")
        x = self.activation(x, f"{name}_act", activation)
        if cfg.dense_pool > 1:
            x = PoolUnits(cfg.dense_pool, name=f"{name}_pool")(x)
        if cfg.dropout:
            x = self.dropout(x, cfg.dropout, f"{name}_drop")
        return x

    def conv_stack(self, x, groups=1, pooled_conv=False):
        cfg = self.cfg
        for i, (channels, kernel, padding, pool) in enumerate(
                zip(cfg.channels, cfg.per_conv("kernel"), cfg.per_conv("padding"), cfg.per_conv("pool"))):
            if padding not in PADDINGS:  # PyTorch-style explicit zero padding
                x = layers.ZeroPadding2D(int(padding), name=f"conv{i}_pad")(x)
                padding = "valid"
            if pooled_conv and i == 0 and x.shape[-1] == 1:
                # conv, BatchNorm (folded in by export.serving_model), activation and pooling in one kernel
                x = PooledConv(channels, kernel, padding, pool, cfg.activation, self.negative_slope, name="conv0")(x)
            else:
                x = self.conv(x, channels, kernel, padding, groups if i == 0 else 1, f"conv{i}")
                if cfg.conv_batch_norm:
                    x = self.batch_norm(x, f"conv{i}_bn")
                x = self.activation(x, f"conv{i}_act")
                if pool > 1:
                    x = layers.MaxPooling2D(pool, name=f"conv{i}_pool")(x)
            if cfg.conv_dropout:
                x = self.dropout(x, cfg.conv_dropout, f"conv{i}_drop")
        return layers.Flatten(name="flatten")(x)

    def compare_output(self, x):
        """P(a <= b), [B, 1]: one sigmoid unit, or two logits through a softmax (`cfg.output`)."""
        if self.cfg.output == "sigmoid":
            return self.dense(x, 1, "compare", activation="sigmoid")
        logits = self.dense(x, 2, "compare_logits")
        if self.cfg.output == "relu-softmax2":
            logits = layers.Activation("relu", name="compare_relu")(logits)
        return TwoClassProbability(name="compare")(logits)


def build_tower(cfg, make, name="tower", pooled_conv=False):
    """One image (standardised) -> 10 digit logits (conv stack, dense blocks, Dense(10)), or with head_input
    "features" the last block's features. pooled_conv=True: the first conv as one PooledConv (serving)."""
    image = keras.Input((14, 14, 1), name="image")
    x = make.conv_stack(image, pooled_conv=pooled_conv) if cfg.has_conv else layers.Flatten(name="flatten")(image)
    for i, units in enumerate(cfg.hidden):
        x = make.dense_block(x, units, f"hidden{i}")
    return keras.Model(image, x if cfg.head_input == "features" else make.dense(x, 10, "logits"), name=name)


def _inputs(mean, std):
    """The two image inputs, and the layer that standardises them."""
    inputs = {k: keras.Input((14, 14, 1), name=k) for k in ("image_a", "image_b")}
    return inputs, Standardize(mean, std, name="standardize")


def _compare_head(a, b, cfg, make):
    """(P(a <= b), the head's last layer) from the two towers' outputs."""
    combine = {"concat": layers.Concatenate, "difference": layers.Subtract, "max": layers.Maximum}[cfg.combine]
    x = combine(name=f"combine_{cfg.combine}")([a, b])
    for i, units in enumerate(cfg.head):
        x = make.dense_block(x, units, f"head{i}", None if cfg.head_activation == "same" else cfg.head_activation)
    return make.compare_output(x), x


def _per_image(fn, inputs, standardize, apart):
    """`fn` (shared weights) on both standardised images -> (out_a, out_b): once on the two stacked into one
    batch (one BatchNorm update a step), or `apart` (serving, numerics part "apart"): two calls, in parallel."""
    if not apart:
        both = standardize(StackPair(name="stack_pair")([inputs["image_a"], inputs["image_b"]]))
        return SplitPair(name="split_pair")(fn(both))
    return fn(standardize(inputs["image_a"])), fn(standardize(inputs["image_b"]))


def _towers_and_heads(inputs, tower_a, tower_b, cfg, make):
    """The two towers' outputs (digit logits, or features) -> compare and the two digit outputs."""
    if cfg.head_input == "features":
        # Report 003's auxiliary model: the comparison and both digits read from the head's last layer.
        compare, joint = _compare_head(tower_a, tower_b, cfg, make)
        tower_a, tower_b = make.dense(joint, 10, "digit_a_logits"), make.dense(joint, 10, "digit_b_logits")
    digit_a, digit_b = layers.Softmax(name="digit_a")(tower_a), layers.Softmax(name="digit_b")(tower_b)
    if cfg.head_input != "features":
        compare, _ = _compare_head(*((digit_a, digit_b) if cfg.head_input == "probs" else (tower_a, tower_b)),
                                   cfg, make)
    return keras.Model(inputs, {"compare": compare, "digit_a": digit_a, "digit_b": digit_b}, name=cfg.arch)


def build_siamese(cfg, make, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 000 Fig. A2 / report 001: shared tower, digit heads, learned compare head."""
    inputs, standardize = _inputs(mean, std)
    # ONE tower object for both images: shared weights.
    logits_a, logits_b = _per_image(build_tower(cfg, make, "tower", xla), inputs, standardize,
                                    serving or "apart" in cfg.torch_parts)
    return _towers_and_heads(inputs, logits_a, logits_b, cfg, make)


def build_two_tower(cfg, make, mean=0.0, std=1.0, serving=False, xla=False):
    """The same as siamese with two separate towers: no weight sharing (they already run apart)."""
    inputs, standardize = _inputs(mean, std)
    logits_a = build_tower(cfg, make, "tower_a", xla)(standardize(inputs["image_a"]))
    logits_b = build_tower(cfg, make, "tower_b", xla)(standardize(inputs["image_b"]))
    return _towers_and_heads(inputs, logits_a, logits_b, cfg, make)


def build_digits(cfg, make, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 002 transfer learning / 003 direct classification: a shared digit
    classifier, and compare = P(a <= b) computed exactly from its two outputs."""
    inputs, standardize = _inputs(mean, std)
    # members > 1: an ensemble inside one model, each member its own tower, probabilities averaged.
    suffixes = [""] if cfg.members == 1 else [str(k) for k in range(cfg.members)]
    towers = [build_tower(cfg, make, f"tower{k}", xla) for k in suffixes]
    softmaxes = [layers.Softmax(name=f"probs{k}") for k in suffixes]
    average = layers.Average(name="probs") if cfg.members > 1 else None
    # tta: at inference, each image's views (made at pixel scale, before standardising)
    views = InferenceViews(cfg.tta_rotate, cfg.tta_zoom, name="tta_views") if cfg.tta else None
    mean_of_views = MeanOfViews(views.count, name="tta_mean") if cfg.tta else None

    def classify(images):
        probs = [softmax(tower(images)) for tower, softmax in zip(towers, softmaxes)]
        probs = average(probs) if average else probs[0]
        return mean_of_views(probs) if mean_of_views else probs

    p_a, p_b = _per_image(classify, inputs, (lambda x: standardize(views(x))) if views else standardize,
                          serving or "apart" in cfg.torch_parts)
    digit_a, digit_b = layers.Identity(name="digit_a")(p_a), layers.Identity(name="digit_b")(p_b)
    compare = ExactCompare(name="compare")([digit_a, digit_b])
    return keras.Model(inputs, {"compare": compare, "digit_a": digit_a, "digit_b": digit_b}, name="digits")


def _flat_head(x, cfg, make):
    for i, units in enumerate(cfg.hidden):
        x = make.dense_block(x, units, f"hidden{i}")
    if cfg.bottleneck:
        x = make.dense(x, cfg.bottleneck, "bottleneck")
    return make.compare_output(x)


def build_baseline(cfg, make, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 000 Fig. A1 / 003 TwoChannels: the two images as 2 channels of one CNN (one form only)."""
    inputs, standardize = _inputs(mean, std)
    x = layers.Concatenate(axis=-1, name="two_channels")(
        [standardize(inputs["image_a"]), standardize(inputs["image_b"])])
    x = make.conv_stack(x, groups=cfg.groups)
    return keras.Model(inputs, {"compare": _flat_head(x, cfg, make)}, name="baseline")


def build_mlp(cfg, make, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 001 Basic Net / 004 Baseline: dense layers on the 392 pixels (one form only)."""
    inputs, standardize = _inputs(mean, std)
    x = layers.Concatenate(name="pixels")([layers.Flatten(name="flat_a")(standardize(inputs["image_a"])),
                                           layers.Flatten(name="flat_b")(standardize(inputs["image_b"]))])
    return keras.Model(inputs, {"compare": _flat_head(x, cfg, make)}, name="mlp")


def build_model(cfg: Config, mean=0.0, std=1.0, serving=False, xla=False, synchronized=False):
    """The model a Config describes, standardising with the given pixel statistics. serving=True: its
    inference form (towers called on each image apart; with xla, a first conv as one PooledConv), the same
    outputs given the same weights. synchronized=True: BatchNorm statistics across a strategy's replicas."""
    builder = globals()[ARCHS[cfg.validate().arch].builder]
    return builder(cfg, Layers(cfg, synchronized), mean, std, serving=serving, xla=serving and xla)


def count_params(model):
    """Trainable parameters (what PyTorch's `parameters()` counts; BN moving stats excluded)."""
    return int(sum(v.numpy().size for v in model.trainable_weights))
