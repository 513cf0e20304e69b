"""The effect of each of PyTorch's numerics on report 000's siamese net (its Appendix A), side by side.

    python bench/numerics.py [--rounds 10] [--jobs 2] [--out runs/bench-numerics]

Trains `report000-siamese` with Keras' defaults, then with each PyTorch
default alone (kernel init, bias init, BatchNorm epsilon, Adam epsilon), all
of them, and all of them with the two-logit output the report used; rounds on
seeds 0..N-1, the same pairs for every variant. A thin wrapper over
`mnistcompare-evaluate` (its outputs in --out, resumable); prints the table.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

VARIANTS = (  # name, numerics, output
    ("Keras defaults", "keras", "sigmoid"),
    ("+ kernel init", "kernel-init", "sigmoid"),
    ("+ bias init", "bias-init", "sigmoid"),
    ("+ BatchNorm epsilon", "bn-eps", "sigmoid"),
    ("+ Adam epsilon", "adam-eps", "sigmoid"),
    ("all PyTorch numerics", "torch", "sigmoid"),
    ("all PyTorch numerics, two logits (the preset)", "torch", "softmax2"),
    ("Keras defaults, two logits", "keras", "softmax2"),
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
    entries = [Entry(name, base.replace(numerics=numerics, output=output).validate())
               for name, numerics, output in VARIANTS]
    results = evaluate(entries, args.rounds, args.out, find_source(args.data_dir, args.idx_dir), jobs=args.jobs)
    print(markdown_table(results), end="")


if __name__ == "__main__":
    main()
