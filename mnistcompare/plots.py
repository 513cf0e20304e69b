"""Figures of runs and evaluations, drawn on matplotlib `Figure` objects: no pyplot, so no screen
is needed and a notebook's or a program's matplotlib backend is left alone."""
import matplotlib
import numpy as np
from matplotlib.figure import Figure

from mnistcompare.files import atomic_path


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")


def _band(ax, runs, label, color):
    """Mean line with a min/max band over rounds (rounds stopped early are cut to the shortest)."""
    length = min(len(r) for r in runs)
    values = np.array([r[:length] for r in runs], dtype=float)
    epochs = np.arange(1, length + 1)
    ax.plot(epochs, values.mean(0), color=color, label=label)
    ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.2)


def plot_curves(results, path):
    """Test accuracy and training loss per epoch, mean and min/max over rounds (report 000 Fig. 2-3)."""
    fig = Figure(figsize=(12, 4.5))
    acc_ax, loss_ax = fig.subplots(1, 2)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, entry in enumerate(e for e in results["entries"] if e["per_round"]):
        color = colors[i % len(colors)]
        label = f"{entry['name']} ({len(entry['per_round'])} rounds)"
        histories = [r["history"] for r in entry["per_round"]]
        if all("test_accuracy" in h for h in histories):
            _band(acc_ax, [h["test_accuracy"] for h in histories], label, color)
        _band(loss_ax, [h["loss"] for h in histories], label, color)
    acc_ax.set(title="Test accuracy per epoch (mean, min–max band)", xlabel="epoch", ylabel="test accuracy")
    loss_ax.set(title="Training loss per epoch (mean, min–max band)", xlabel="epoch", ylabel="training loss")
    loss_ax.set_yscale("log")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_rounds(results, path):
    """Train error, test error and fit time of every round (report 004 Fig. 2)."""
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    for entry in results["entries"]:
        rounds = entry["per_round"]
        if not rounds:
            continue
        x = [r["round"] + 1 for r in rounds]
        for ax, values in zip(axes, ([100 * (1 - r["train_accuracy"]) for r in rounds],
                                     [100 * (1 - r["test_accuracy"]) for r in rounds],
                                     [r["train_seconds"] for r in rounds])):
            ax.plot(x, values, marker="o", label=entry["name"])
    for ax, title, ylabel in zip(axes, ("Train error", "Test error", "Fit time"),
                                 ("train error [%]", "test error [%]", "seconds per round")):
        ax.set(title=title, xlabel="round", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
