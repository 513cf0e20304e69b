"""Training speed beside the PyTorch reference, measured alternately in one run.

    python bench/speed.py [--pairs 3] [--rounds 10] [--torch-python PYTHON]

Each pair runs, one after the other, the whole of
`mnistcompare-evaluate --preset report000-siamese --rounds N --idx-dir D` and
`python ../shared/bench/torch_siamese_ref.py --rounds N --idx-dir D` (report
000's siamese net in PyTorch), timing each process's wall clock from start to
exit (imports, data loading, tracing and training included). Both read the
same MNIST IDX files, D (default ../shared/data/mnist); `--tfds` has ours read
TFDS_DATA_DIR instead, which costs about 3 s more (PNG decoding). Prints both
medians and their ratio, and each side's mean test accuracy. Needs a Python with torch for the
reference (--torch-python). A benchmark, never a test: it never fails on timing.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mnistcompare.reports import PRESETS  # noqa: E402 (after the path)

REFERENCE = os.path.join(ROOT, "..", "shared", "bench", "torch_siamese_ref.py")
IDX_DIR = os.path.join(ROOT, "..", "shared", "data", "mnist")


def timed(command, env=None):
    """(wall-clock seconds, stdout) of a command; one line and exit 1 if it cannot run or fails."""
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    except OSError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: cannot run {command[0]} ({e.strerror})")
    seconds = time.perf_counter() - start
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {os.path.basename(str(command[1]))} failed "
                 f"(exit {result.returncode}): {last}")
    return seconds, result.stdout


def reference(python):
    """(wall-clock seconds, its summary line) of the PyTorch reference, 10 rounds: the yardstick of this
    machine's speed at that moment."""
    seconds, stdout = timed([python, REFERENCE, "--rounds", "10"])
    return seconds, (stdout.strip().splitlines() or [""])[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating (ours, reference) pairs (default 3)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per run (default 10)")
    parser.add_argument("--preset", default="report000-siamese", choices=PRESETS)
    parser.add_argument("--torch-python", default=sys.executable, help="a Python with torch installed")
    parser.add_argument("--reference", default=REFERENCE, help="the PyTorch reference script")
    parser.add_argument("--idx-dir", default=IDX_DIR, help="MNIST IDX files both sides read (default %(default)s)")
    parser.add_argument("--tfds", action="store_true", help="ours reads TFDS (TFDS_DATA_DIR) instead of --idx-dir")
    args = parser.parse_args()
    source = ["--data-dir", os.environ.get("TFDS_DATA_DIR", os.path.join(ROOT, "..", "shared", "data",
                                                                         "tensorflow_datasets"))] \
        if args.tfds else ["--idx-dir", args.idx_dir]

    ours_s, ref_s, ours_acc, ref_acc = [], [], [], []
    for i in range(args.pairs):
        out = tempfile.mkdtemp()
        seconds, _ = timed([sys.executable, "-c", "from mnistcompare.cli import evaluate_main; evaluate_main()",
                            "--preset", args.preset, "--rounds", str(args.rounds), *source, "--out", out])
        with open(os.path.join(out, "results.json")) as f:
            ours_acc.append(json.load(f)["entries"][0]["test_accuracy_mean"])
        ours_s.append(seconds)
        seconds, stdout = timed([args.torch_python, args.reference, "--rounds", str(args.rounds),
                                 "--idx-dir", args.idx_dir])
        ref_s.append(seconds)
        ref_acc.append(float(re.search(r"acc_mean=([\d.]+)", stdout).group(1)))
        print(f"pair {i + 1}: ours {ours_s[-1]:.1f} s (acc {ours_acc[-1]:.4f})   "
              f"torch {ref_s[-1]:.1f} s (acc {ref_acc[-1]:.4f})", flush=True)
    ours, ref = statistics.median(ours_s), statistics.median(ref_s)
    print(f"speed: ours median {ours:.1f} s, torch median {ref:.1f} s for {args.rounds} rounds; "
          f"ratio ours/torch {ours / ref:.2f}; accuracy ours {statistics.mean(ours_acc):.4f}, "
          f"torch {statistics.mean(ref_acc):.4f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
