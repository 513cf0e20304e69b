"""Functional builders of every architecture, and the registry that names them.

All models take the same two inputs, `image_a` and `image_b` (float32
[B, 14, 14, 1], pixel scale 0..255), standardise them with the training
pixels' mean/std (stored in the model), and return a dict of outputs:
`compare` ([B, 1], P(a <= b)) and, where the architecture has them,
`digit_a` / `digit_b` ([B, 10] class probabilities).
"""
import keras
from keras import layers

from mnistcompare.config import Config
from mnistcompare.layers import ExactCompare, PooledConv, SplitPair, StackPair, Standardize

# Momentum 0.9 is PyTorch's BatchNorm convention (0.1), which the reports used;
# Keras' 0.99 leaves moving averages poorly estimated after a few hundred steps.
BN_MOMENTUM = 0.9


def _regularizer(cfg):
    return keras.regularizers.L2(cfg.l2) if cfg.l2 else None


def _dense_block(x, units, cfg, name):
    x = layers.Dense(units, kernel_regularizer=_regularizer(cfg), name=f"{name}_dense")(x)
    if cfg.batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.Activation(cfg.activation, name=f"{name}_act")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name=f"{name}_drop")(x)
    return x


def _conv_stack(x, cfg, groups=1, pooled_conv=False):
    for i, (channels, kernel, padding, pool) in enumerate(
            zip(cfg.channels, cfg.per_conv("kernel"), cfg.per_conv("padding"), cfg.per_conv("pool"))):
        if padding.isdigit():  # PyTorch-style explicit zero padding
            x = layers.ZeroPadding2D(int(padding), name=f"conv{i}_pad")(x)
            padding = "valid"
        if pooled_conv and i == 0 and x.shape[-1] == 1:
            # conv, BatchNorm (folded in by export.serving_model), activation and pooling in one kernel
            x = PooledConv(channels, kernel, padding, pool, cfg.activation, name="conv0")(x)
            if cfg.conv_dropout:
                x = layers.Dropout(cfg.conv_dropout, name="conv0_drop")(x)
            continue
        x = layers.Conv2D(channels, kernel, padding=padding, groups=groups if i == 0 else 1,
                          kernel_regularizer=_regularizer(cfg), name=f"conv{i}")(x)
        if cfg.conv_batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn")(x)
        x = layers.Activation(cfg.activation, name=f"conv{i}_act")(x)
        if pool > 1:
            x = layers.MaxPooling2D(pool, name=f"conv{i}_pool")(x)
        if cfg.conv_dropout:
            x = layers.Dropout(cfg.conv_dropout, name=f"conv{i}_drop")(x)
    return layers.Flatten(name="flatten")(x)


def build_tower(cfg, name="tower", pooled_conv=False):
    """One image (standardised) -> 10 digit logits: conv stack (or none), dense blocks, Dense(10).

    pooled_conv=True: the first conv layer as one PooledConv (for serving).
    """
    image = keras.Input((14, 14, 1), name="image")
    x = _conv_stack(image, cfg, pooled_conv=pooled_conv) if cfg.has_conv else layers.Flatten(name="flatten")(image)
    for i, units in enumerate(cfg.hidden):
        x = _dense_block(x, units, cfg, f"hidden{i}")
    logits = layers.Dense(10, kernel_regularizer=_regularizer(cfg), name="logits")(x)
    return keras.Model(image, logits, name=name)


def _inputs(mean, std):
    image_a = keras.Input((14, 14, 1), name="image_a")
    image_b = keras.Input((14, 14, 1), name="image_b")
    standardize = Standardize(mean, std, name="standardize")
    return {"image_a": image_a, "image_b": image_b}, standardize


def _compare_head(logits_a, logits_b, cfg):
    combine = {"concat": layers.Concatenate, "difference": layers.Subtract, "max": layers.Maximum}[cfg.combine]
    x = combine(name=f"combine_{cfg.combine}")([logits_a, logits_b])
    for i, units in enumerate(cfg.head):
        x = _dense_block(x, units, cfg, f"head{i}")
    return layers.Dense(1, activation="sigmoid", kernel_regularizer=_regularizer(cfg), name="compare")(x)


def _per_image(fn, inputs, standardize, serving):
    """`fn` (shared weights) on both standardised images -> (out_a, out_b).

    For training, once on the two images stacked into one batch: one call per
    step. For serving, on each image apart: the two calls are independent, so
    TensorFlow runs them in parallel.
    """
    if not serving:
        both = standardize(StackPair(name="stack_pair")([inputs["image_a"], inputs["image_b"]]))
        return SplitPair(name="split_pair")(fn(both))
    return fn(standardize(inputs["image_a"])), fn(standardize(inputs["image_b"]))


def _digit_outputs(logits_a, logits_b):
    return layers.Softmax(name="digit_a")(logits_a), layers.Softmax(name="digit_b")(logits_b)


def build_siamese(cfg, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 000 Fig. A2 / report 001: shared tower, digit heads, learned compare head."""
    inputs, standardize = _inputs(mean, std)
    # ONE tower object for both images: shared weights.
    logits_a, logits_b = _per_image(build_tower(cfg, "tower", xla), inputs, standardize, serving)
    digit_a, digit_b = _digit_outputs(logits_a, logits_b)
    compare = _compare_head(logits_a, logits_b, cfg)
    return keras.Model(inputs, {"compare": compare, "digit_a": digit_a, "digit_b": digit_b}, name=cfg.arch)


def build_two_tower(cfg, mean=0.0, std=1.0, serving=False, xla=False):
    """The same as siamese with two separate towers: no weight sharing (they already run apart)."""
    inputs, standardize = _inputs(mean, std)
    logits_a = build_tower(cfg, "tower_a", xla)(standardize(inputs["image_a"]))
    logits_b = build_tower(cfg, "tower_b", xla)(standardize(inputs["image_b"]))
    digit_a, digit_b = _digit_outputs(logits_a, logits_b)
    compare = _compare_head(logits_a, logits_b, cfg)
    return keras.Model(inputs, {"compare": compare, "digit_a": digit_a, "digit_b": digit_b}, name="two_tower")


def build_digits(cfg, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 002 transfer learning / 003 direct classification: a shared digit
    classifier, and compare = P(a <= b) computed exactly from its two outputs."""
    inputs, standardize = _inputs(mean, std)
    # members > 1: an ensemble inside one model, each member its own tower, probabilities averaged.
    suffixes = [""] if cfg.members == 1 else [str(k) for k in range(cfg.members)]
    towers = [build_tower(cfg, f"tower{k}", xla) for k in suffixes]
    softmaxes = [layers.Softmax(name=f"probs{k}") for k in suffixes]
    average = layers.Average(name="probs") if cfg.members > 1 else None

    def classify(images):
        probs = [softmax(tower(images)) for tower, softmax in zip(towers, softmaxes)]
        return average(probs) if average else probs[0]

    p_a, p_b = _per_image(classify, inputs, standardize, serving)
    digit_a, digit_b = layers.Identity(name="digit_a")(p_a), layers.Identity(name="digit_b")(p_b)
    compare = ExactCompare(name="compare")([digit_a, digit_b])
    return keras.Model(inputs, {"compare": compare, "digit_a": digit_a, "digit_b": digit_b}, name="digits")


def _flat_head(x, cfg):
    for i, units in enumerate(cfg.hidden):
        x = _dense_block(x, units, cfg, f"hidden{i}")
    return layers.Dense(1, activation="sigmoid", kernel_regularizer=_regularizer(cfg), name="compare")(x)


def build_baseline(cfg, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 000 Fig. A1 / 003 TwoChannels: the two images as 2 channels of one CNN (one form only)."""
    inputs, standardize = _inputs(mean, std)
    x = layers.Concatenate(axis=-1, name="two_channels")(
        [standardize(inputs["image_a"]), standardize(inputs["image_b"])])
    x = _conv_stack(x, cfg, groups=cfg.groups)
    return keras.Model(inputs, {"compare": _flat_head(x, cfg)}, name="baseline")


def build_mlp(cfg, mean=0.0, std=1.0, serving=False, xla=False):
    """Report 001 Basic Net / 004 Baseline: dense layers on the 392 pixels (one form only)."""
    inputs, standardize = _inputs(mean, std)
    x = layers.Concatenate(name="pixels")([layers.Flatten(name="flat_a")(standardize(inputs["image_a"])),
                                           layers.Flatten(name="flat_b")(standardize(inputs["image_b"]))])
    return keras.Model(inputs, {"compare": _flat_head(x, cfg)}, name="mlp")


# Every builder: (cfg, mean, std, serving, xla) -> keras.Model (see build_model).
REGISTRY = {
    "baseline": build_baseline,
    "mlp": build_mlp,
    "siamese": build_siamese,
    "two_tower": build_two_tower,
    "siamese_mlp": build_siamese,  # a siamese net whose tower has no conv layers
    "digits": build_digits,
}


def build_model(cfg: Config, mean=0.0, std=1.0, serving=False, xla=True):
    """The model a Config describes, standardising with the given pixel statistics.

    serving=True builds the inference form of the same model (see
    export.serving_model): shared towers called on each image apart and, with
    xla, a tower's first conv layer as one XLA-compiled PooledConv. Given the
    trained weights, it computes the same outputs.
    """
    return REGISTRY[cfg.arch](cfg, mean, std, serving=serving, xla=serving and xla)


def count_params(model):
    """Trainable parameters (what PyTorch's `parameters()` counts; BN moving stats excluded)."""
    return int(sum(v.numpy().size for v in model.trainable_weights))
