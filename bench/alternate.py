"""This checkout against another, alternately in one run: the loop of the bench scripts that compare versions."""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def alternate(parser, args, side):
    """{"this": [...], "previous": [...]}: `side(root)` for this checkout and for `args.previous`, one after
    the other, `args.pairs` times (a slow spell of a shared machine falls on both sides)."""
    if not os.path.isdir(os.path.join(args.previous, "mnistcompare")):
        parser.error(f"--previous {args.previous}: no mnistcompare/ there")
    runs = {"this": [], "previous": []}
    for i in range(args.pairs):
        for name, root in (("this", ROOT), ("previous", args.previous)):
            runs[name].append(side(root))
            print(f"pair {i + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
    return runs
