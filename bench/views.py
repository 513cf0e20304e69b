"""Test-time views compared on the same trained weights, on validation pairs.

    python bench/views.py [--preset best] [--seed 1000] [--rounds 3] [--val-pairs 5000]
                          [--views none,0:0,8:0,0:0.08,8:0.08] [--epochs N] [--out FILE]

Each round trains the preset once without test-time views (seed S, S+1, ...;
validation pairs from MNIST training images the training pairs do not use, as
`mnistcompare-tune` draws them), then scores those validation pairs with each
set of views: `none`, or ROTATE:ZOOM for the image and its four one-pixel
shifts plus, where not 0, its rotations by ±ROTATE degrees and scalings by
1 ± ZOOM (`--tta --tta-rotate ROTATE --tta-zoom ZOOM`), the same weights
copied into each. Views change no training, so the differences between sets
are free of the training noise that separates two configurations trained
apart. Prints one JSON line per round and a table of the means and of each
set's gain over `none`, round by round. A benchmark, never a test.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mnistcompare.reports import PRESETS  # noqa: E402 (after the path)


def view_set(text):
    """'none' -> None; 'ROTATE:ZOOM' -> (rotate, zoom)."""
    if text == "none":
        return None
    rotate, zoom = text.split(":")
    return float(rotate), float(zoom)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best", choices=PRESETS)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first round (default 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--val-pairs", type=int, default=5000)
    parser.add_argument("--views", default="none,0:0,8:0,0:0.08,8:0.08",
                        help="comma list of view sets: none, or ROTATE:ZOOM (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the preset's")
    parser.add_argument("--out", help="also append each round's JSON line to this file")
    parser.add_argument("--data-dir")
    parser.add_argument("--idx-dir")
    args = parser.parse_args()
    from mnistcompare.errors import UserError
    from mnistcompare.reports import preset

    base = preset(args.preset).without_views()
    if args.epochs:
        base = base.replace(epochs=args.epochs)
    names = args.views.split(",")
    try:
        sets = [view_set(name) for name in names]
        for views in filter(None, sets):  # the bounds of --tta-rotate and --tta-zoom, checked before any training
            base.replace(tta=True, tta_rotate=views[0], tta_zoom=views[1]).validate()
    except ValueError:
        parser.error(f"--views: expected none or ROTATE:ZOOM items, got {args.views!r}")
    except UserError as e:
        parser.error(f"--views: {e}")

    from mnistcompare.runtime import start_tensorflow

    start_tensorflow()
    from mnistcompare.data import find_source, load_pairs
    from mnistcompare.models import build_model
    from mnistcompare.training import accuracy, train_round

    try:
        source = find_source(args.data_dir, args.idx_dir)
    except UserError as e:
        parser.error(str(e))
    rows = []
    for seed in range(args.seed, args.seed + args.rounds):
        cfg = base.replace(seed=seed).validate()
        train, val = load_pairs(cfg, source, validation=args.val_pairs)
        model, metrics, _ = train_round(cfg, train, val, verbose=0)
        row = {"seed": seed, "fit_seconds": metrics["train_seconds"]}
        for name, views in zip(names, sets):
            scored = model
            if views is not None:
                scored = build_model(cfg.replace(tta=True, tta_rotate=views[0], tta_zoom=views[1]))
                scored.set_weights(model.get_weights())  # the pixel statistics too: they are weights
            row[name] = accuracy(scored, val)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n{args.preset}, seeds {args.seed}-{args.seed + args.rounds - 1}, {args.val_pairs} validation pairs")
    print("| views | validation accuracy | digit accuracy | gain over none, round by round |")
    print("|---|---|---|---|")
    for name in names:
        acc = [r[name]["accuracy"] for r in rows]
        digits = [r[name]["digit_accuracy"] for r in rows]
        gains = " ".join(f"{a - r['none']['accuracy']:+.4f}" for a, r in zip(acc, rows)) if "none" in names else ""
        print(f"| {name} | {statistics.mean(acc):.4f} | {statistics.mean(digits):.4f} | {gains} |")


if __name__ == "__main__":
    main()
