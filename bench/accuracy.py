"""Test accuracy of a preset over many rounds: mean ± std, as the reports give it.

    python bench/accuracy.py [--preset best] [--rounds 10] [--out DIR]

A thin wrapper over `mnistcompare-evaluate` (same outputs in --out, resumable);
prints one summary line. A benchmark, never a test.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mnistcompare.reports import PRESETS  # noqa: E402 (after the path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best", choices=PRESETS)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", help="output folder (default: runs/bench-accuracy-<preset>)")
    parser.add_argument("--data-dir")
    parser.add_argument("--idx-dir")
    parser.add_argument("--jobs", type=int, default=1,
                        help="rounds side by side (default 1: each round's fit seconds are its own)")
    args = parser.parse_args()

    from mnistcompare.data import find_source
    from mnistcompare.experiments import evaluate
    from mnistcompare.reports import Entry, preset
    from mnistcompare.runtime import start_tensorflow

    start_tensorflow()
    out = args.out or os.path.join("runs", f"bench-accuracy-{args.preset}")
    e = evaluate([Entry(args.preset, preset(args.preset).validate())], args.rounds, out,
                 find_source(args.data_dir, args.idx_dir), jobs=args.jobs)["entries"][0]
    print(f"accuracy {args.preset}: test {e['test_accuracy_mean']:.4f} ± {e['test_accuracy_std']:.4f} "
          f"(min {e['test_accuracy_min']:.4f}, max {e['test_accuracy_max']:.4f}) over {e['rounds']} rounds; "
          f"fit {e['train_seconds_median']:.1f} s per round (median, {args.jobs} at a time); outputs in {out}/")


if __name__ == "__main__":
    main()
