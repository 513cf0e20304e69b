"""Serving throughput of an exported SavedModel: pairs/s through `serve` and `serve_mnist`.

    python bench/serve.py [--saved-model DIR] [--preset report000-siamese] [--batch 1024] [--seconds 5] [--xla]

Without --saved-model, exports the preset's model (untrained: the cost of a
forward pass does not depend on the weights) to a temporary folder. The model
is loaded with plain `tf.saved_model.load`, as any TensorFlow program would.
Prints the median pairs/s over several timed windows; a benchmark, never a test.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mnistcompare.reports import PRESETS  # noqa: E402 (after the path)


def throughput(fn, a, b, batch, seconds, windows=5):
    fn(a, b)  # warm-up: the first call may build the graph
    rates = []
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows:
            fn(a, b)["compare"].numpy()
            calls += 1
        rates.append(calls * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model", help="an exported saved_model folder (default: export --preset)")
    parser.add_argument("--preset", default="report000-siamese", choices=PRESETS)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per endpoint")
    parser.add_argument("--xla", action="store_true", help="export as mnistcompare-train --xla does")
    args = parser.parse_args()

    from mnistcompare.runtime import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    folder = args.saved_model
    if not folder:
        from mnistcompare.export import export_saved_model
        from mnistcompare.models import build_model
        from mnistcompare.reports import preset

        folder = os.path.join(tempfile.mkdtemp(), "saved_model")
        cfg = preset(args.preset)
        export_saved_model(build_model(cfg, 33.3, 78.6), cfg, folder, xla=args.xla)
    model = tf.saved_model.load(folder)
    rng = np.random.default_rng(0)
    raw_a = tf.constant(rng.integers(0, 256, (args.batch, 28, 28), dtype=np.uint8))
    raw_b = tf.constant(rng.integers(0, 256, (args.batch, 28, 28), dtype=np.uint8))
    pooled_a = tf.nn.avg_pool2d(tf.cast(raw_a, tf.float32)[..., None], 2, 2, "VALID")
    pooled_b = tf.nn.avg_pool2d(tf.cast(raw_b, tf.float32)[..., None], 2, 2, "VALID")
    serve = throughput(model.serve, pooled_a, pooled_b, args.batch, args.seconds)
    mnist = throughput(model.serve_mnist, raw_a, raw_b, args.batch, args.seconds)
    print(f"serve: {serve:,.0f} pairs/s   serve_mnist: {mnist:,.0f} pairs/s   "
          f"(batch {args.batch}, {os.cpu_count()} CPUs, {folder})")


if __name__ == "__main__":
    main()
