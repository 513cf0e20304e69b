"""A warm round of a preset, this checkout against another (the previous release), alternately in one run.

    python bench/warm.py --previous DIR [--preset report000-siamese] [--rounds 4] [--pairs 3] [--epochs N]

DIR is a checkout of the other version (for example `git worktree add
../prev v0.x`). Each side runs in a fresh process of this Python, with its
own `mnistcompare` first on the path: it loads report 000's pairs once, trains
one round to trace the model, then `--rounds` more rounds on the same traced
model (seeds 1, 2, ...), and reports the median fit seconds of those warm
rounds, the first round's (tracing included) and the mean test accuracy. The
two sides alternate `--pairs` times; the table gives each side's median and
their ratio. A benchmark, never a test: it never fails on timing.
"""
import json
import os
import statistics
import sys

from alternate import ROOT, alternate, comparison_parser, run_child

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from mnistcompare.runtime import start_tensorflow
start_tensorflow()
from mnistcompare.data import find_source, load_pairs
from mnistcompare.reports import preset
from mnistcompare.training import ModelCache, train_round
cfg, rounds = preset(sys.argv[2]), int(sys.argv[3])
cfg = cfg.replace(epochs=int(sys.argv[5])) if int(sys.argv[5]) else cfg
cache, seconds, accuracies = ModelCache(), [], []
for seed in range(rounds + 1):
    train, test = load_pairs(cfg.replace(seed=seed), find_source(idx_dir=sys.argv[4]))
    start = time.perf_counter()
    round_cfg = cfg.replace(seed=seed)
    _, metrics, _ = train_round(round_cfg, train, test, model=cache.get(round_cfg, train), verbose=0)
    seconds.append(metrics["train_seconds"] if seed else time.perf_counter() - start)
    accuracies.append(metrics["test_accuracy"])
import mnistcompare
assert mnistcompare.__file__.startswith(sys.argv[1]), mnistcompare.__file__  # this side's own code
print(json.dumps({"warm": statistics.median(seconds[1:]), "first": seconds[0],
                  "accuracy": statistics.mean(accuracies)}))
"""


def side(root, args):
    stdout = run_child([sys.executable, "-c", CHILD, root, args.preset, str(args.rounds), args.idx_dir,
                        str(args.epochs)], f"the round in {root} failed")
    return json.loads(stdout.strip().splitlines()[-1])


def main():
    parser = comparison_parser(__doc__.splitlines()[0], pairs=3)
    parser.add_argument("--preset", default="report000-siamese")
    parser.add_argument("--rounds", type=int, default=4, help="warm rounds per process (default 4)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per round (default: the preset's)")
    parser.add_argument("--idx-dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"))
    args = parser.parse_args()
    runs = alternate(parser, args, lambda root: side(root, args))
    print(f"\n| {args.preset} | warm round, s (median) | first round, s | test accuracy |\n|---|---|---|---|")
    for name, results in runs.items():
        print(f"| {name} | {statistics.median(r['warm'] for r in results):.2f} | "
              f"{statistics.median(r['first'] for r in results):.1f} | "
              f"{statistics.mean(r['accuracy'] for r in results):.4f} |")
    ratio = statistics.median(r["warm"] for r in runs["this"]) / statistics.median(r["warm"] for r in runs["previous"])
    print(f"\nthis / previous, warm round: {ratio:.2f}")


if __name__ == "__main__":
    main()
