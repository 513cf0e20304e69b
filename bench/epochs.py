"""Seconds per training epoch of a preset, as every command runs it and with one environment change, alternately.

    python bench/epochs.py [--preset best] [--epochs 8] [--pairs 2] [--env TF_ENABLE_ONEDNN_OPTS=0]
                           [--torch-python PYTHON]
    python bench/epochs.py --flag=--no-shuffle [--preset best] [--epochs 8] [--pairs 2] [--torch-python PYTHON]
    python bench/epochs.py --profile [--preset best] [--epochs 8] [--flag=OPTION] [--torch-python PYTHON]

Each pair trains one round of the preset (seed 0) twice, in fresh processes:
first as the commands do, then with --env set (default: TensorFlow's own
choice of kernels, Eigen's on an AVX2-only CPU, instead of oneDNN's), or with
--flag, one `mnistcompare-train` option added to the preset. A
round's first epoch traces the step; the median of the others is its time per
epoch. With --torch-python, the PyTorch reference (`torch_siamese_ref.py
--rounds 10`) is timed after each pair, as a yardstick for this machine's speed
that hour. A benchmark, never a test: it never fails on timing.

--profile instead trains one round under TensorFlow's profiler (every epoch
after the traced first) and prints where an epoch's time goes: milliseconds of
op time per epoch by kernel, and by layer (forward, backward).
Op time is summed over the threads that run ops side by side, so it exceeds
the wall time when both cores are busy; with more op threads than cores (a
round alone has one spare), it also counts the time an op waited for a core.
TensorFlow fuses some ops into one kernel, named after the last of them: a conv
fused with its activation counts under the activation's layer.
"""
import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from speed import reference, timed  # noqa: E402 (bench/ is this script's folder)

from mnistcompare.errors import UserError  # noqa: E402
from mnistcompare.reports import PRESETS  # noqa: E402


def one_round(preset, epochs, profile_dir=None, flags=()):
    """Train one round; its epochs' seconds and test accuracy. With `profile_dir`, every
    epoch after the first runs under TensorFlow's profiler, which writes its trace there.
    `flags`: `mnistcompare-train` options that change the preset."""
    import time

    from mnistcompare.runtime import start_tensorflow

    start_tensorflow()
    import keras
    import tensorflow as tf

    from mnistcompare.data import load_pairs
    from mnistcompare.training import train_round

    cfg = preset_with(preset, flags).replace(epochs=epochs)
    train, test = load_pairs(cfg)
    seconds = []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if profile_dir and epoch == 1:
                tf.profiler.experimental.start(profile_dir)
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)
            if profile_dir and epoch == epochs - 1:
                tf.profiler.experimental.stop()

    model, metrics, _ = train_round(cfg, train, test, callbacks=[EpochTimes()], verbose=0)
    return {"seconds": seconds, "test_accuracy": metrics["test_accuracy"], "layers": layer_names(model)}


def preset_with(preset, flags):
    """The preset's Config changed by `flags`, as `mnistcompare-train --preset PRESET FLAGS` would build it."""
    from mnistcompare.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog=f"{os.path.basename(sys.argv[0])} --flag", usage=argparse.SUPPRESS)
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(["--preset", preset, *flags]))


def layer_names(model):
    """The names of a model's layers, those of the models inside it (a tower) included."""
    names = set()
    for layer in model.layers:
        names.add(layer.name)
        if hasattr(layer, "layers"):
            names |= layer_names(layer)
    return names


def op_times(profile_dir, layers):
    """{(kernel, layer or None, backward?): seconds} summed over the profile's op events. An op's profiler name
    is its graph path, a colon, its kernel; its layer is the path's last part that names one of `layers`
    (TensorFlow adds "_N" to a name scope entered again)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    traces = glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True)
    if not traces:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: TensorFlow's profiler wrote no trace")
    space = xplane_pb2.XSpace()
    with open(traces[0], "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                path, _, kernel = name.rpartition(":")
                if not path or "/" not in path:  # not an op of the traced epoch
                    continue
                named = [part for part in (re.sub(r"_\d+$", "", p) for p in path.split("/")) if part in layers]
                times[kernel, named[-1] if named else None, "gradient_tape/" in path] += event.duration_ps / 1e12
    return times


def print_profile(preset, epochs, flags=()):
    """One round under the profiler; the op time per epoch by kernel and by layer."""
    with tempfile.TemporaryDirectory() as folder:
        result = one_round(preset, epochs, folder, flags)
        times = op_times(folder, result["layers"])
    wall = statistics.median(result["seconds"][1:])
    per_epoch = 1000 / (epochs - 1)
    total = sum(times.values())
    print(f"{preset}, epochs 2-{epochs} of one round: {wall:.2f} s of wall per epoch (median), "
          f"{total * per_epoch / 1000:.2f} s of op time summed over threads ({total * per_epoch / 1000 / wall:.1f} "
          "threads busy on average)")
    kernels = collections.Counter()
    layers = collections.defaultdict(lambda: [0.0, 0.0])
    for (kernel, layer, backward), seconds in times.items():
        kernels[kernel] += seconds
        layers[layer or "(optimizer, loss, data)"][backward] += seconds
    print(f"\n{'kernel':44s} {'ms/epoch':>9s} {'share':>6s}")
    for kernel, seconds in kernels.most_common(15):
        print(f"{kernel:44s} {seconds * per_epoch:9.1f} {seconds / total:6.1%}")
    print(f"\n{'layer (members summed)':28s} {'forward':>9s} {'backward':>9s} {'share':>6s}")
    for layer, (forward, backward) in sorted(layers.items(), key=lambda item: -sum(item[1])):
        if forward + backward < total / 1000:
            continue
        print(f"{layer:28s} {forward * per_epoch:9.1f} {backward * per_epoch:9.1f} "
              f"{(forward + backward) / total:6.1%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best", choices=PRESETS)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per round, the first traced (default 8)")
    parser.add_argument("--pairs", type=int, default=2, help="alternating pairs of rounds (default 2)")
    parser.add_argument("--env", default="TF_ENABLE_ONEDNN_OPTS=0", metavar="NAME=VALUE",
                        help="the environment change of each pair's second round (default %(default)s)")
    parser.add_argument("--flag", action="append", default=[], metavar="OPTION",
                        help="instead of --env: a mnistcompare-train option for each pair's second round (with "
                             "--profile: for the round profiled), written --flag=--batch-size=200 (repeat it for "
                             "several)")
    parser.add_argument("--torch-python",
                        help="a Python with torch: time the PyTorch reference after each pair (or the profile)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: one round under TensorFlow's profiler, and where an epoch's time goes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces the step and is not counted")
    if args.flag and args.env != parser.get_default("env"):
        parser.error("--env and --flag: give one change, not both")
    if args.child:
        result = one_round(args.preset, args.epochs, flags=args.flag)
        return print(json.dumps({k: result[k] for k in ("seconds", "test_accuracy")}))
    try:  # a mistyped option fails now, not after TensorFlow's start-up or in the first child
        preset_with(args.preset, args.flag)
    except UserError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if args.profile:
        try:
            print_profile(args.preset, args.epochs, args.flag)
        except UserError as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        if args.torch_python:
            seconds, summary = reference(args.torch_python)
            print(f"\nPyTorch reference, just after: {seconds:.1f} s for 10 rounds ({summary})", flush=True)
        return
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if "=" not in args.env:
        parser.error(f"--env: expected NAME=VALUE, got {args.env!r}")
    name, value = args.env.split("=", 1)
    command = [sys.executable, os.path.abspath(__file__), "--child", "--preset", args.preset,
               "--epochs", str(args.epochs)]
    if args.flag:
        change, second = " ".join(args.flag), ({}, [f"--flag={flag}" for flag in args.flag])
    else:
        change, second = args.env, ({name: value}, [])
    medians = {"default": [], change: []}
    references = []
    for i in range(args.pairs):
        for label, (env, extra) in (("default", ({}, [])), (change, second)):
            _, stdout = timed(command + extra, env)
            result = json.loads(stdout.strip().splitlines()[-1])
            medians[label].append(statistics.median(result["seconds"][1:]))
            print(f"pair {i + 1}, {label}: {medians[label][-1]:.3f} s per epoch "
                  f"(test accuracy {result['test_accuracy']:.4f})", flush=True)
        if args.torch_python:
            seconds, _ = reference(args.torch_python)
            references.append(seconds)
            print(f"pair {i + 1}: PyTorch reference {seconds:.1f} s for 10 rounds", flush=True)
    ours, other = statistics.median(medians["default"]), statistics.median(medians[change])
    yardstick = f"; PyTorch reference median {statistics.median(references):.1f} s" if references else ""
    print(f"{args.preset}: {ours:.3f} s per epoch as the commands run, {other:.3f} s with {change} "
          f"(ratio {other / ours:.2f}){yardstick}")


if __name__ == "__main__":
    main()
