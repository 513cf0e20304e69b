"""The effect of each of PyTorch's numerics on report 000's siamese net (its Appendix A), side by side.

    python bench/numerics.py [--rounds 10] [--jobs 2] [--out runs/bench-numerics]

Trains `report000-siamese` with Keras' defaults, then with each of PyTorch's
ways alone (kernel init, bias init, BatchNorm epsilon, Adam epsilon, the
shared tower called on each image apart, no shuffling, two logits), then all
of them; rounds on seeds 0..N-1, the same pairs for every variant. A thin wrapper over
`mnistcompare-evaluate` (its outputs in --out, resumable); prints the table.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

VARIANTS = (  # name, numerics, output, shuffle
    ("Keras defaults", "keras", "sigmoid", True),
    ("+ kernel init", "kernel-init", "sigmoid", True),
    ("+ bias init", "bias-init", "sigmoid", True),
    ("+ BatchNorm epsilon", "bn-eps", "sigmoid", True),
    ("+ Adam epsilon", "adam-eps", "sigmoid", True),
    ("+ tower on each image apart", "apart", "sigmoid", True),
    ("+ no shuffling", "keras", "sigmoid", False),
    ("Keras defaults, two logits", "keras", "softmax2", True),
    ("all PyTorch numerics", "torch", "sigmoid", True),
    ("all PyTorch numerics, two logits (the preset)", "torch", "softmax2", True),
    ("all PyTorch numerics, two logits, no shuffling", "torch", "softmax2", False),
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=os.path.join("runs", "bench-numerics"))
    parser.add_argument("--data-dir")
    parser.add_argument("--idx-dir")
    args = parser.parse_args()

    from mnistcompare.data import find_source
    from mnistcompare.experiments import evaluate, markdown_table
    from mnistcompare.reports import Entry, preset

    base = preset("report000-siamese")
    entries = [Entry(name, base.replace(numerics=numerics, output=output, shuffle=shuffle).validate())
               for name, numerics, output, shuffle in VARIANTS]
    results = evaluate(entries, args.rounds, args.out, find_source(args.data_dir, args.idx_dir), jobs=args.jobs)
    print(markdown_table(results), end="")


if __name__ == "__main__":
    from mnistcompare.cli import run  # a user's mistake (no MNIST, a bad flag value): one line, exit 2

    run(main, "numerics.py")
