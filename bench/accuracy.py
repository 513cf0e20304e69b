"""Test accuracy of a preset over many rounds, on two sets of seeds: mean ± std, as the reports give it.

    python bench/accuracy.py [--preset best] [--rounds 10] [--seeds 0,100] [--out DIR] [--jobs 1]
                             [--torch-python PYTHON]

Rounds on seeds S..S+N-1 for each S of --seeds (0 and 100 by default: the
first set is the one results are usually quoted on, the second a check that
nothing was fitted to it). A thin wrapper over `mnistcompare-evaluate` (same
outputs in --out/seeds-S, resumable); prints one summary line per set: test
accuracy, digit accuracy and the median fit seconds per round. Rounds one at a
time by default, so that each round's fit time is its own. With
--torch-python, the PyTorch reference (`../shared/bench/torch_siamese_ref.py
--rounds 10`) runs before each set: the yardstick of this machine's speed at
that moment. A benchmark, never a test.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mnistcompare.reports import PRESETS  # noqa: E402 (after the path)


def seed_list(text):
    return [int(s) for s in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best", choices=PRESETS)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seeds", default="0,100", type=seed_list,
                        help="first seed of each set of rounds, comma-separated (default: 0,100)")
    parser.add_argument("--out", help="output folder (default: runs/bench-accuracy-<preset>)")
    parser.add_argument("--data-dir")
    parser.add_argument("--idx-dir")
    parser.add_argument("--torch-python", help="a Python with torch: time the PyTorch reference before each set")
    parser.add_argument("--jobs", type=int, default=1,
                        help="rounds side by side (default 1: each round's fit seconds are its own)")
    args = parser.parse_args()

    from mnistcompare.data import find_source
    from mnistcompare.experiments import evaluate
    from mnistcompare.reports import Entry, preset

    out = args.out or os.path.join("runs", f"bench-accuracy-{args.preset}")
    source = find_source(args.data_dir, args.idx_dir)
    from speed import reference  # bench/speed.py, beside this script

    for first in args.seeds:
        if args.torch_python:
            seconds, summary = reference(args.torch_python)
            print(f"yardstick: the PyTorch reference, 10 rounds, {seconds:.1f} s ({summary})", flush=True)
        e = evaluate([Entry(args.preset, preset(args.preset).replace(seed=first).validate())], args.rounds,
                     os.path.join(out, f"seeds-{first}"), source, jobs=args.jobs)["entries"][0]
        digits = (f"; digit accuracy {e['test_digit_accuracy_mean']:.4f}" if "test_digit_accuracy_mean" in e else "")
        print(f"accuracy {args.preset}, seeds {first}-{first + args.rounds - 1}: test "
              f"{e['test_accuracy_mean']:.4f} ± {e['test_accuracy_std']:.4f} (min {e['test_accuracy_min']:.4f}, "
              f"max {e['test_accuracy_max']:.4f}){digits}; fit {e['train_seconds_median']:.1f} s per round "
              f"(median, {args.jobs} at a time)", flush=True)
    print(f"outputs in {out}/")


if __name__ == "__main__":
    from mnistcompare.cli import run  # a user's mistake (no MNIST, a bad flag value): one line, exit 2

    run(main, "accuracy.py")
