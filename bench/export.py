"""SavedModel export time, this checkout against another (the previous release), alternately in one run.

    python bench/export.py --previous DIR [--preset report000-siamese,digits] [--exports 3] [--pairs 3]
                           [--torch-python PY]

DIR is a checkout of the other version (`git worktree add ../prev REV`). Each
side runs in a fresh process of this Python, with its own `mnistcompare` first
on the path: it builds each preset's model (untrained: tracing does not depend
on the weights) and exports it `--exports` times, reporting the first export
(TensorFlow's one-time costs included) and the median of the others. The two
sides alternate `--pairs` times; the table gives each side's medians and their
ratio. With --torch-python, the PyTorch reference (../shared/bench/
torch_siamese_ref.py --rounds 10) is timed once in the same run, as a
yardstick. A benchmark, never a test: it never fails on timing.
"""
import json
import statistics
import sys

from alternate import alternate, comparison_parser, run_child, torch_reference

CHILD = r"""
import json, os, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from mnistcompare.runtime import start_tensorflow
start_tensorflow()
from mnistcompare.config import Config
from mnistcompare.export import export_saved_model
from mnistcompare.models import build_model
from mnistcompare.reports import PRESETS
import mnistcompare
assert mnistcompare.__file__.startswith(sys.argv[1]), mnistcompare.__file__  # this side's own code
out = {}
for name in sys.argv[2].split(","):
    cfg = Config(**PRESETS[name]) if name in PRESETS else Config(arch=name)
    model, seconds = build_model(cfg, 33.3, 78.6), []
    for i in range(int(sys.argv[3])):
        start = time.perf_counter()
        export_saved_model(model, cfg, os.path.join(tempfile.mkdtemp(), "1"))
        seconds.append(time.perf_counter() - start)
    out[name] = {"first": seconds[0], "later": statistics.median(seconds[1:] or seconds)}
print(json.dumps(out))
"""


def side(root, args):
    stdout = run_child([sys.executable, "-c", CHILD, root, args.preset, str(args.exports)],
                       f"the export in {root} failed")
    return json.loads(stdout.strip().splitlines()[-1])


def main():
    parser = comparison_parser(__doc__.splitlines()[0], pairs=3)
    parser.add_argument("--preset", default="report000-siamese,digits",
                        help="presets or architectures, comma-separated (default: report000-siamese,digits)")
    parser.add_argument("--exports", type=int, default=3, help="exports per process (default 3)")
    parser.add_argument("--torch-python", metavar="PY", help="a Python with torch, to time the PyTorch reference")
    args = parser.parse_args()
    runs = alternate(parser, args, lambda root: side(root, args))
    print("\n| model | this: first, later export (s) | previous: first, later (s) | ratio (later) |\n|---|---|---|---|")
    for model in args.preset.split(","):
        cells, later = [], {}
        for name, results in runs.items():
            first = statistics.median(r[model]["first"] for r in results)
            later[name] = statistics.median(r[model]["later"] for r in results)
            cells.append(f"{first:.2f}, {later[name]:.2f}")
        print(f"| {model} | {cells[0]} | {cells[1]} | {later['this'] / later['previous']:.2f} |")
    if args.torch_python:
        print(f"\nPyTorch reference in the same run: {torch_reference(args.torch_python)}")


if __name__ == "__main__":
    main()
