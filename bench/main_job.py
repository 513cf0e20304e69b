"""The main job (`mnistcompare-train --arch siamese`, one round) as a whole process, beside PyTorch's, and where
its time goes.

    python bench/main_job.py [--pairs 3] [--idx-dir DIR] [--torch-python PY] [--previous DIR]

Alternates --pairs times: this package's whole process, then the PyTorch reference's whole process for one
round (`../shared/bench/torch_siamese_ref.py --rounds 1`), and prints the medians and their ratio. Then one
more process of ours with each part timed: Python and TensorFlow start-up (imports), MNIST (read and paired),
the model (built and compiled), fit (its first epoch, tracing included, and the rest), the final scores,
model.keras, the SavedModel, the pictures, and what is left. Both read MNIST from TFDS_DATA_DIR (ours) and
the IDX files (PyTorch's). Ours is the `mnistcompare-train` of the Python that runs this script: run it with
the Python of a plain install (`pip install -e .`, no extras) to time what a new user's first command costs.
With --previous DIR (a checkout of another version: `git worktree add ../prev REV`), each pair also runs
that version's command, with the same Python, between the two. A benchmark, never a test.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from alternate import IDX_DIR, REFERENCE, check_previous, run_child

COMMAND = os.path.join(os.path.dirname(sys.executable), "mnistcompare-train")  # this Python's environment's
# The command of the checkout given first on its command line, as a whole process
OTHER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'mnistcompare-train'; "
         "from mnistcompare.cli import train_main; train_main()")

# One run of the command in this process, with its parts timed by wrapping the functions that do them.
PARTS = r"""
import json, sys, time
start = time.perf_counter()
marks = {}

def timed(module, name, part):
    function = getattr(module, name)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            marks[part] = marks.get(part, 0.0) + time.perf_counter() - t
    setattr(module, name, wrapper)

import mnistcompare.cli as cli, mnistcompare.runtime as runtime, mnistcompare.data as data
runtime.own_process()  # as the command's own process starts (cli.run)
timed(runtime, "start_tensorflow", "imports: TensorFlow, Keras")
timed(data, "load_pairs", "MNIST: read and paired")
import mnistcompare.training as training, mnistcompare.export as export, keras
timed(training, "new_model", "model: built and compiled")
timed(training, "round_metrics", "final scores")
timed(keras.Model, "save", "model.keras")
timed(export, "export_saved_model", "SavedModel")
timed(cli, "draw_run", "pictures")

class FirstEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            marks["fit: first epoch (tracing)"] = time.perf_counter() - self.t
fit = keras.Model.fit
def fit_timed(self, *args, callbacks=(), **kwargs):
    t = time.perf_counter()
    try:
        return fit(self, *args, callbacks=[FirstEpoch(), *callbacks], **kwargs)
    finally:
        marks["fit: the other epochs"] = time.perf_counter() - t - marks["fit: first epoch (tracing)"]
keras.Model.fit = fit_timed
imported = time.perf_counter() - start
try:
    cli.train_main(sys.argv[1:])
except SystemExit:
    pass
marks["imports: the package"] = imported
print(json.dumps({"marks": marks, "whole": time.perf_counter() - start}))
"""


def whole(argv, name):
    """Seconds of the process `argv`, start to end; a failed one ends the benchmark with its last error line."""
    start = time.perf_counter()
    run_child(argv, name)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating (ours, PyTorch's) pairs (default 3)")
    parser.add_argument("--idx-dir", default=IDX_DIR, help="the IDX files PyTorch's reference reads")
    parser.add_argument("--torch-python", default=sys.executable, help="a Python with torch (default: this one)")
    parser.add_argument("--previous", metavar="DIR", help="also time this checkout's command in each pair")
    args = parser.parse_args()
    if args.previous:
        check_previous(parser, args.previous)
    ours, previous, theirs = [], [], []
    job = ["--arch", "siamese", "--quiet", "--out"]
    for _ in range(args.pairs):
        ours.append(whole([COMMAND, *job, os.path.join(tempfile.mkdtemp(), "run")], "ours"))
        if args.previous:
            previous.append(whole([sys.executable, "-c", OTHER, args.previous, *job,
                                   os.path.join(tempfile.mkdtemp(), "run")], "previous"))
        theirs.append(whole([args.torch_python, REFERENCE, "--idx-dir", args.idx_dir, "--rounds", "1"],
                            "the PyTorch reference"))
        print(f"ours {ours[-1]:.1f} s, " + (f"previous {previous[-1]:.1f} s, " if previous else "")
              + f"PyTorch {theirs[-1]:.1f} s", flush=True)
    torch = statistics.median(theirs)
    print(f"\nwhole process, median of {args.pairs}: ours {statistics.median(ours):.1f} s, PyTorch "
          f"{torch:.1f} s; ratio {statistics.median(ours) / torch:.2f}")
    if previous:
        print(f"previous: {statistics.median(previous):.1f} s, ratio {statistics.median(previous) / torch:.2f}; "
              f"ours / previous {statistics.median(ours) / statistics.median(previous):.2f}")
    out = os.path.join(tempfile.mkdtemp(), "run")
    stdout = run_child([sys.executable, "-c", PARTS, "--arch", "siamese", "--quiet", "--out", out],
                       "the process timed part by part")
    parts = json.loads(stdout.strip().splitlines()[-1])
    marks = parts["marks"]
    marks["the rest (argument checks, files, Python's exit)"] = parts["whole"] - sum(marks.values())
    print(f"\n| part of one process of ours ({parts['whole']:.1f} s in this process) | seconds |\n|---|---|")
    for name, seconds in marks.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
