"""Seconds per training epoch of a preset, as every command runs it and with one environment change, alternately.

    python bench/epochs.py [--preset best] [--epochs 8] [--pairs 2] [--env TF_ENABLE_ONEDNN_OPTS=0]
                           [--torch-python PYTHON]

Each pair trains one round of the preset (seed 0) twice, in fresh processes:
first as the commands do, then with --env set (default: TensorFlow's own
choice of kernels, Eigen's on an AVX2-only CPU, instead of oneDNN's). A
round's first epoch traces the step; the median of the others is its time per
epoch. With --torch-python, the PyTorch reference (`torch_siamese_ref.py
--rounds 10`) is timed after each pair, as a yardstick for this machine's speed
that hour. A benchmark, never a test: it never fails on timing.
"""
import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from speed import REFERENCE, timed  # noqa: E402 (bench/ is this script's folder)

from mnistcompare.reports import PRESETS  # noqa: E402


def one_round(preset, epochs):
    """Train one round; print its epochs' seconds and test accuracy as JSON."""
    import time

    from mnistcompare.runtime import start_tensorflow

    start_tensorflow()
    import keras

    from mnistcompare.data import load_pairs
    from mnistcompare.reports import preset as preset_config
    from mnistcompare.training import train_round

    cfg = preset_config(preset).replace(epochs=epochs)
    train, test = load_pairs(cfg)
    seconds = []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    _, metrics, _ = train_round(cfg, train, test, callbacks=[EpochTimes()], verbose=0)
    print(json.dumps({"seconds": seconds, "test_accuracy": metrics["test_accuracy"]}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best", choices=PRESETS)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per round, the first traced (default 8)")
    parser.add_argument("--pairs", type=int, default=2, help="alternating pairs of rounds (default 2)")
    parser.add_argument("--env", default="TF_ENABLE_ONEDNN_OPTS=0", metavar="NAME=VALUE",
                        help="the environment change of each pair's second round (default %(default)s)")
    parser.add_argument("--torch-python", help="a Python with torch: time the PyTorch reference after each pair")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return one_round(args.preset, args.epochs)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces the step and is not counted")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if "=" not in args.env:
        parser.error(f"--env: expected NAME=VALUE, got {args.env!r}")
    name, value = args.env.split("=", 1)
    command = [sys.executable, os.path.abspath(__file__), "--child", "--preset", args.preset,
               "--epochs", str(args.epochs)]
    medians = {"default": [], args.env: []}
    references = []
    for i in range(args.pairs):
        for label, env in (("default", {}), (args.env, {name: value})):
            _, stdout = timed(command, env)
            result = json.loads(stdout.strip().splitlines()[-1])
            medians[label].append(statistics.median(result["seconds"][1:]))
            print(f"pair {i + 1}, {label}: {medians[label][-1]:.3f} s per epoch "
                  f"(test accuracy {result['test_accuracy']:.4f})", flush=True)
        if args.torch_python:
            seconds, _ = timed([args.torch_python, REFERENCE, "--rounds", "10"])
            references.append(seconds)
            print(f"pair {i + 1}: PyTorch reference {seconds:.1f} s for 10 rounds", flush=True)
    ours, other = statistics.median(medians["default"]), statistics.median(medians[args.env])
    yardstick = f"; PyTorch reference median {statistics.median(references):.1f} s" if references else ""
    print(f"{args.preset}: {ours:.3f} s per epoch as the commands run, {other:.3f} s with {args.env} "
          f"(ratio {other / ours:.2f}){yardstick}")


if __name__ == "__main__":
    main()
