"""This checkout against another, alternately in one run: the loop of the bench scripts that compare versions."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "..", "shared", "bench", "torch_siamese_ref.py")  # the PyTorch reference
IDX_DIR = os.path.join(ROOT, "..", "shared", "data", "mnist")  # the MNIST IDX files it reads


def check_previous(parser, previous):
    """A parser error unless `previous` is a checkout of the package."""
    if not os.path.isdir(os.path.join(previous, "mnistcompare")):
        parser.error(f"--previous {previous}: no mnistcompare/ there")


def alternate(parser, args, side):
    """{"this": [...], "previous": [...]}: `side(root)` for this checkout and for `args.previous`, one after
    the other, `args.pairs` times (a slow spell of a shared machine falls on both sides)."""
    check_previous(parser, args.previous)
    runs = {"this": [], "previous": []}
    for i in range(args.pairs):
        for name, root in (("this", ROOT), ("previous", args.previous)):
            runs[name].append(side(root))
            print(f"pair {i + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
    return runs


def comparison_parser(description, pairs):
    """An argument parser with the options of every comparison: --previous and --pairs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--previous", required=True, metavar="DIR", help="a checkout of the version to compare with")
    parser.add_argument("--pairs", type=int, default=pairs,
                        help=f"alternating (this, previous) pairs (default {pairs})")
    return parser


def run_child(argv, failed):
    """The stdout of the process `argv`; if it fails, the benchmark ends with `failed` and its last error line."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {failed}: "
                 f"{(result.stderr.strip().splitlines() or ['no message'])[-1]}")
    return result.stdout


def torch_reference(python):
    """The PyTorch reference's 10 rounds as a whole process, timed: the yardstick of this machine's speed that hour."""
    start = time.perf_counter()
    result = subprocess.run([python, REFERENCE, "--rounds", "10", "--idx-dir", IDX_DIR], capture_output=True, text=True,
                            cwd=tempfile.mkdtemp())
    if result.returncode:
        return f"failed ({(result.stderr.strip().splitlines() or ['no message'])[-1]})"
    return f"{time.perf_counter() - start:.1f} s for 10 rounds (whole process)"
