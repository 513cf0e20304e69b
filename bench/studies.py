"""Reports' studies from scratch, this checkout against another (the previous release), alternately in one run.

    python bench/studies.py --previous DIR [--studies report000-table1,report003-table1,report004-table4]
                            [--rounds N] [--pairs 1] [--torch-python PY]

DIR is a checkout of the other version (`git worktree add ../prev COMMIT`). Each side runs, in a fresh
process of this Python with its own `mnistcompare` first on the path, `mnistcompare-evaluate --study NAME`
for every study into an empty folder: all the study's rounds (or --rounds), their pages and pictures, its
default --jobs. The sides alternate --pairs times; the PyTorch reference's 10 rounds
(`../shared/bench/torch_siamese_ref.py --rounds 10`, whole process) run once between them, as the yardstick
of the machine's speed that hour. Prints each side's median wall time per study and in all, and the ratio.
A benchmark, never a test.
"""
import json
import os
import statistics
import sys
import tempfile
import time

from alternate import alternate, comparison_parser, run_child, torch_reference

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import mnistcompare
assert mnistcompare.__file__.startswith(sys.argv[1]), mnistcompare.__file__  # this side's own code
from mnistcompare.cli import evaluate_main
study, out, rounds = sys.argv[2], sys.argv[3], sys.argv[4]
try:
    evaluate_main(["--study", study, "--out", out, "--quiet", *(["--rounds", rounds] if rounds != "0" else [])])
except SystemExit as e:
    if e.code:
        raise
"""


def study_seconds(root, study, rounds):
    out = os.path.join(tempfile.mkdtemp(), study)
    start = time.perf_counter()
    run_child([sys.executable, "-c", CHILD, root, study, out, str(rounds)], f"{study} in {root} failed")
    return time.perf_counter() - start


def main():
    parser = comparison_parser(__doc__.splitlines()[0], pairs=1)
    parser.add_argument("--studies", default="report000-table1,report003-table1,report004-table4")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per entry (default: each study's own)")
    parser.add_argument("--torch-python", default=sys.executable, help="a Python with torch (default: this one)")
    args = parser.parse_args()
    studies = [s for s in args.studies.split(",") if s]
    reference = {}

    def side(root):
        times = {study: study_seconds(root, study, args.rounds) for study in studies}
        if not reference:  # once, between the first two sides
            reference["text"] = torch_reference(args.torch_python)
        return times

    runs = alternate(parser, args, side)
    print(f"\n| study ({args.rounds or 'all'} rounds) | this, s | previous, s | this / previous |\n|---|---|---|---|")
    for study in [*studies, "all"]:
        this, previous = (statistics.median(sum(r.values()) if study == "all" else r[study] for r in runs[name])
                          for name in ("this", "previous"))
        print(f"| {study} | {this:.0f} | {previous:.0f} | {this / previous:.2f} |")
    print(f"\nThe PyTorch reference in the same run: {reference['text']}.")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
