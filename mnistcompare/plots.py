"""Figures of runs and evaluations, drawn on matplotlib `Figure` objects: no pyplot, so no screen
is needed and a notebook's or a program's matplotlib backend is left alone."""
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from mnistcompare.config import DIGIT_ARCHS
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole


def plot_curves(results, path):
    """Test accuracy and the comparison's loss on the test pairs per epoch, mean and min/max over rounds
    (report 000 Fig. 2-3); the comparison's loss is the one loss every architecture has, so the entries'
    curves compare (a total loss with auxiliary terms would not)."""
    entries = [e for e in results["entries"] if e["per_round"]]
    fig = Figure(figsize=(12, 4.5 + 0.18 * max(0, len(entries) - 4)))
    acc_ax, loss_ax = fig.subplots(1, 2, gridspec_kw=dict(wspace=0.3))
    for entry, color in zip(entries, _colors(len(entries))):
        label = f"{entry['name']} ({len(entry['per_round'])} rounds)"
        if entry.get("config", {}).get("tta"):  # see training.TestCurve
            label += ", each test image once per epoch (the final scores read the test-time views)"
        histories = [r["history"] for r in entry["per_round"]]
        for ax, key in ((acc_ax, "test_accuracy"), (loss_ax, "test_compare_loss")):
            if all(h.get(key) for h in histories):
                _band(ax, [h[key] for h in histories], label, color)
    acc_ax.set(title="Test accuracy per epoch (mean, min–max band)", xlabel="epoch", ylabel="test accuracy")
    loss_ax.set(title="Comparison loss on the test pairs (mean, min–max band)", xlabel="epoch",
                ylabel="cross-entropy of P(a ≤ b)")
    loss_ax.set_yscale("log")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    _legend(fig, acc_ax)
    _save(fig, path)


def _epochs_band(ax, runs, label, color, linestyle="-"):
    """Mean over the rounds still running at each epoch (early-stopped rounds end sooner), with the min/max
    band: report 000's error bars, 'the maximum displacement with respect to the mean'."""
    length = max(len(r) for r in runs)
    values = np.full((len(runs), length), np.nan)
    for i, run in enumerate(runs):
        values[i, :len(run)] = [np.nan if v is None else v for v in run]
    epochs = np.arange(1, length + 1)
    ax.plot(epochs, np.nanmean(values, 0), color=color, label=label, linestyle=linestyle)
    ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0), color=color, alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_figure(results, figure, path):
    """A report's figure (reports.Figure) redrawn from the rounds' per-epoch histories: each panel's
    series for each of its entries, mean with a min/max band over the rounds."""
    by_name = {e["name"]: e for e in results["entries"] if e["per_round"]}
    panels = figure.panels
    fig = Figure(figsize=(6.2 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw=dict(wspace=0.25))[0]
    fig.suptitle(f"{figure.number} (redrawn): {figure.title}", fontsize=11)
    for ax, panel in zip(axes, panels):
        names = [n for n in (panel.entries or by_name) if n in by_name]
        colors = _colors(len(names) * (len(panel.series) if len(names) == 1 else 1))
        for i, name in enumerate(names):
            histories = [r["history"] for r in by_name[name]["per_round"]]
            config = by_name[name].get("config", {})
            factor = 3.0 if panel.summed and config.get("arch") in DIGIT_ARCHS and \
                abs(config.get("alpha", 1.0) - 1 / 3) < 1e-9 else 1.0
            for j, (key, what) in enumerate(panel.series):
                if not all(h.get(key) for h in histories):
                    continue
                single = len(names) == 1
                label = what if single else f"{name}{', ' + what if what else ''}"
                color = colors[j] if single else colors[i]
                _epochs_band(ax, [[None if v is None else v * factor for v in h[key]] for h in histories], label,
                             color, "-" if single or j == 0 else "--")
        rounds = {len(by_name[n]["per_round"]) for n in names}
        ax.set(title=panel.title or (names[0] if len(names) == 1 else ""), xlabel="epoch", ylabel=panel.ylabel)
        if panel.log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if names:
            ax.text(0.99, 0.01, f"{'/'.join(map(str, sorted(rounds)))} rounds", transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=8, color="0.4")
            ax.legend(fontsize=7 if len(names) > 4 else 8, frameon=False)
    _save(fig, path)


def _colors(n):
    """n distinct colours: matplotlib's default cycle, or tab20 for more than 10 entries."""
    if n <= 10:
        return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][:n] or ["C0"]
    return [matplotlib.colormaps["tab20"](i % 20) for i in range(n)]


def _legend(fig, ax):
    """One legend for the figure, below the panels, so that it never hides a curve."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2 if len(labels) > 4 else
                   len(labels), fontsize=8, frameon=False)


def plot_rounds(results, path):
    """Train error, test error and fit time of every round (report 004 Fig. 2), as points: the rounds are
    independent draws, not a series. Each entry's mean is a dashed line, with a band of one standard deviation."""
    entries = [e for e in results["entries"] if e["per_round"]]
    fig = Figure(figsize=(15, 4.5 + 0.18 * max(0, len(entries) - 4)))
    axes = fig.subplots(1, 3)
    for entry, color in zip(entries, _colors(len(entries))):
        rounds = entry["per_round"]
        x = [r["round"] + 1 for r in rounds]
        for ax, values in zip(axes, ([100 * (1 - r["train_accuracy"]) for r in rounds],
                                     [100 * (1 - r["test_accuracy"]) for r in rounds],
                                     [r["train_seconds"] for r in rounds])):
            ax.plot(x, values, "o", markersize=4, color=color, label=entry["name"])
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            ax.axhline(mean, color=color, linestyle="--", linewidth=1)
            ax.axhspan(max(mean - std, min(values)), min(mean + std, max(values)), color=color, alpha=0.08)
    for ax, title, ylabel in zip(axes, ("Train error", "Test error", "Fit time"),
                                 ("train error [%]", "test error [%]", "seconds per round")):
        ax.set(title=f"{title} of each round (dashed: mean ± 1 std)", xlabel="round (seed + round - 1)", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    _save(fig, path)


def plot_pairs(examples, path, title):
    """A grid of test pairs as the model sees them (14x14, image a left of image b): true digits and
    comparison above; below, the model's P(a <= b) and its answer, and where it has digit heads, the digits
    they read (marked where they order the pair otherwise than P does); mistakes of the comparison first,
    framed in red."""
    n = len(examples["p"])
    columns = 6
    rows = -(-n // columns)
    # One axes for every pair, in pixels (a cell: 29x14 and its text): thirty axes took most of the drawing time.
    width, height, above = 37, 26, 4
    inches, title_inches = 1.55 * rows + 0.6, 0.6
    fig = Figure(figsize=(2.2 * columns, inches))
    fig.suptitle(f"{title}\nabove: true digits; below: the model's P(a ≤ b) and its answer, and the digits its "
                 "digit heads read (✱ where they order the pair otherwise)", fontsize=10)
    ax = fig.add_axes((0, 0, 1, 1 - title_inches / inches))  # the pairs below the title
    canvas = np.full((rows * height, columns * width), 255.0)
    gap = np.full((14, 1), 128.0)  # a grey line between the two images
    for i in range(n):
        x, y = i % columns * width + 4, i // columns * height + above
        canvas[y:y + 14, x:x + 29] = np.hstack([examples["image_a"][i], gap, examples["image_b"][i]])
        wrong = (examples["p"][i] > 0.5) != (examples["target"][i] > 0.5)
        color = "#c62828" if wrong else "#1b5e20"
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 29, 14, fill=False, edgecolor=color, linewidth=2 if wrong else 0.5))
        truth = f"{examples['digit_a'][i]} {'≤' if examples['target'][i] > 0.5 else '>'} {examples['digit_b'][i]}"
        said = "≤" if examples["p"][i] > 0.5 else ">"
        answer = f"P(a≤b)={examples['p'][i]:.2f}: a {said} b"
        da, db = examples["predicted_a"][i], examples["predicted_b"][i]
        if da >= 0:  # the digit heads' reading, marked where it orders the pair otherwise than P
            answer += f"\nheads {da}, {db}" + (" ✱" if (da <= db) != (examples["p"][i] > 0.5) else "")
        ax.text(x + 14, y - 1, f"true {truth}", fontsize=8, ha="center", va="bottom")
        ax.text(x + 14, y + 14.2, answer, fontsize=8, ha="center", va="top", color=color, linespacing=1.3)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    _save(fig, path)


def plot_confusion(matrix, path, title):
    """The 10x10 digit confusion matrix of the test images (rows: true digit, columns: predicted), with
    counts; the diagonal is what the digit heads got right."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(6.2, 5.4))
    ax = fig.subplots()
    # Off-diagonal counts are what matter: the colour scale ignores the diagonal, which would swamp them.
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    image = ax.imshow(off, cmap="Reds", vmin=0, vmax=max(1, off.max()))
    for i in range(10):
        for j in range(10):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        fontweight="bold" if i == j else "normal",
                        color="#1b5e20" if i == j else ("white" if off[i, j] > off.max() / 2 else "black"))
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set(title=f"{title}\ndigit accuracy {accuracy:.4f} on {matrix.sum():,} test images", xlabel="predicted digit",
           ylabel="true digit", xticks=range(10), yticks=range(10))
    fig.colorbar(image, ax=ax, label="mistakes (off-diagonal counts)", shrink=0.8)
    _save(fig, path)
