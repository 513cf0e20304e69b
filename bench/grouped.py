"""Rounds trained together: K rounds of report 000's siamese net as one model whose layers hold every round's
weights side by side, the time per round against K = 1.

    python bench/grouped.py [--together 1,10] [--pairs 3] [--conv split|grouped|patches]

The question it answers: does training a configuration's rounds together pay the per-kernel cost once for all
of them? Each K runs in a process of its own (alternating, --pairs times): the grouped net is built (dense
layers as one batched matmul for all rounds, BatchNorm over every round's channels at once, Adam on the
stacked weights) and trained 25 epochs of 10 batches of 100 pairs on random pixels (the time does not depend on
them); the first epoch (tracing) is timed apart. The convolutions, by --conv: one per round (split), Keras'
Conv2D with groups=K (grouped), or patches times a kernel per round (patches). Then the PyTorch reference's 10
rounds, as a yardstick. A benchmark, never a test; a prototype, not the package's training path.
"""
import argparse
import statistics
import sys
import time

from alternate import ROOT, run_child, torch_reference


def child(k, conv):
    """Train the grouped net of `k` rounds in this process; print 'first EPOCH_S rest REST_S'."""
    sys.path.insert(0, ROOT)
    from mnistcompare.runtime import start_tensorflow

    start_tensorflow("none")
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import layers

    from mnistcompare.layers import SplitPair, StackPair

    class Grouped(layers.Layer):
        """A per-round op of [B, ..., K*C] tensors: `dense` [B, K, I] -> [B, K, O]; `conv` valid, stride 1."""

        def __init__(self, kind, units, size=1, relu=False):
            super().__init__()
            self.kind, self.units, self.size, self.relu = kind, units, size, relu

        def build(self, shape):
            self.c = shape[-1] // (k if self.kind != "dense" else 1)
            kernel = (k, self.size, self.size, self.c, self.units) if self.kind != "dense" else (k, self.c, self.units)
            self.kernel = self.add_weight(shape=kernel, initializer="glorot_uniform")
            self.bias = self.add_weight(shape=(k, self.units) if self.kind == "dense" else (k * self.units,),
                                        initializer="zeros")

        def call(self, x):
            if self.kind == "dense":
                y = tf.einsum("bki,kio->bko", x, self.kernel)
            elif conv == "split":
                y = tf.concat([tf.nn.conv2d(xi, ki, 1, "VALID") for xi, ki in
                               zip(tf.split(x, k, axis=-1), tf.unstack(self.kernel))], axis=-1)
            elif conv == "grouped":  # TensorFlow's grouped convolution: filters [s, s, C, K*O]
                kernel = tf.reshape(tf.transpose(self.kernel, (1, 2, 3, 0, 4)), (self.size, self.size, self.c, -1))
                y = tf.nn.conv2d(x, kernel, 1, "VALID")
            else:
                s = self.size
                p = tf.image.extract_patches(x, [1, s, s, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
                h, w = p.shape[1], p.shape[2]
                y = tf.einsum("bhwpkc,kpco->bhwko", tf.reshape(p, (-1, h, w, s * s, k, self.c)),
                              tf.reshape(self.kernel, (k, s * s, self.c, self.units)))
                y = tf.reshape(y, (-1, h, w, k * self.units))
            y = y + self.bias
            return tf.nn.relu(y) if self.relu else y

    class PerRoundBatchNorm(layers.Layer):
        """BatchNorm of [B, K, C]: each round's channels their own (as K*C channels)."""

        def build(self, shape):
            self.norm = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
            self.norm.build((None, shape[1] * shape[2]))

        def call(self, x, training=None):
            return tf.reshape(self.norm(tf.reshape(x, (-1, x.shape[1] * x.shape[2])), training=training),
                              tf.shape(x))

    class Second(layers.Layer):  # P(a <= b) of each round from its two logits' softmax
        def call(self, x):
            return tf.nn.softmax(x)[..., 1]

    def block(x, units):
        x = PerRoundBatchNorm()(Grouped("dense", units)(x))
        return layers.Dropout(0.25)(layers.ReLU()(x))

    images = {side: keras.Input((14, 14, k), name=side) for side in ("image_a", "image_b")}
    x = StackPair()([images["image_a"], images["image_b"]])
    x = layers.MaxPooling2D(2)(Grouped("conv", 16, 3, relu=True)(x))
    x = layers.MaxPooling2D(2)(Grouped("conv", 32, 2, relu=True)(x))
    x = layers.Reshape((k, 64))(Grouped("conv", 64, 2, relu=True)(x))
    logits_a, logits_b = SplitPair()(Grouped("dense", 10)(block(block(x, 75), 75)))
    head = Grouped("dense", 2)(block(block(layers.Concatenate()([logits_a, logits_b]), 50), 10))
    model = keras.Model(images, {"compare": Second(name="compare")(head),
                                 "digit_a": layers.Softmax(name="digit_a")(logits_a),
                                 "digit_b": layers.Softmax(name="digit_b")(logits_b)})
    # Each round's loss is the mean over its batch; the rounds' losses are summed, so that each round's
    # gradient is the one it would have alone.
    bce = keras.losses.BinaryCrossentropy(reduction="sum")
    sce = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    model.compile(keras.optimizers.Adam(0.005), steps_per_execution=10,
                  loss={"compare": lambda y, p: bce(y, p) / 100, "digit_a": lambda y, p: sce(y, p) / 100,
                        "digit_b": lambda y, p: sce(y, p) / 100}, loss_weights={name: 1 / 3 for name in model.output})
    rng = np.random.default_rng(0)
    x = {side: rng.uniform(0, 255, (1000, 14, 14, k)).astype("float32") for side in images}
    y = {"compare": rng.integers(0, 2, (1000, k)).astype("float32"), "digit_a": rng.integers(0, 10, (1000, k)),
         "digit_b": rng.integers(0, 10, (1000, k))}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(100).repeat().prefetch(2)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=10, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(data, epochs=24, steps_per_epoch=10, verbose=0)
    print(f"first {first:.3f} rest {time.perf_counter() - start:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--together", default="1,10", help="the K to compare, comma-separated (default 1,10)")
    parser.add_argument("--pairs", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--conv", choices=("split", "grouped", "patches"), default="split",
                        help="how each round's convolutions run (default: split, one per round)")
    parser.add_argument("--torch-python", default=sys.executable, help="a Python with torch, for the reference")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.conv)
    together = [int(k) for k in args.together.split(",")]
    seconds = {k: [] for k in together}
    for i in range(args.pairs):
        for k in together:
            out = run_child([sys.executable, __file__, "--child", str(k), "--conv", args.conv], f"K={k}")
            first, rest = float(out.split()[1]), float(out.split()[3])
            seconds[k].append(rest / k)
            print(f"pass {i + 1}, K={k}: first epoch {first:.2f} s, other 24 epochs {rest:.2f} s, "
                  f"{rest / k:.3f} s a round", flush=True)
    print(f"\nthe PyTorch reference in the same run: {torch_reference(args.torch_python)}")
    base = statistics.median(seconds[together[0]])
    for k in together:
        median = statistics.median(seconds[k])
        print(f"K={k} ({args.conv} convolutions): median {median:.3f} s a round for 24 epochs, "
              f"{median / base:.2f} of K={together[0]}'s")


if __name__ == "__main__":
    main()
