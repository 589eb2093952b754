"""Training curves as the book draws them: raw and smoothed by an exponential moving average.

Also the one place that picks matplotlib's backend: every module of the package draws with
`from catdog_lab.plots import plt`."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from catdog_lab.io import atomic_path

# Files only, never a window, even where a display is available. In time although pyplot is
# already imported: pyplot resolves its backend lazily, at the first figure.
matplotlib.use("Agg")


def ema(values: list[float], factor: float = 0.8) -> list[float]:
    """The book's smooth_curve: previous * factor + point * (1 - factor)."""
    out: list[float] = []
    for value in values:
        out.append(out[-1] * factor + value * (1 - factor) if out else value)
    return out


def plot_curves(rows: list[dict], path: str | Path, title: str, factor: float = 0.8) -> None:
    epochs = [row["epoch"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("acc", "loss")):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            values = [row.get(f"{split}/{metric}") for row in rows]
            if any(value is None or value == "" for value in values):
                continue
            values = [float(value) for value in values]
            ax.plot(epochs, values, "o", color=color, alpha=0.35, markersize=3, label=f"{split} (raw)")
            ax.plot(epochs, ema(values, factor), "-", color=color, label=f"{split} (EMA {factor})")
        ax.set_xlabel("epoch")
        ax.set_title(f"{title}: {'accuracy' if metric == 'acc' else 'loss'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_confusion(confusion, classes, path: str | Path, title: str) -> None:
    """The test set's confusion matrix: rows the true class, columns the predicted one, each cell its count
    and its share of the row (the class's recall on the diagonal)."""
    import numpy as np

    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(3.5, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45 if len(classes) > 3 else 0, ha="right"
                  if len(classes) > 3 else "center")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title(f"{title}: test confusion matrix")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def confusion_rows(confusion, classes) -> list[dict]:
    """One {actual, predicted} row per test image (what DVC's confusion template counts)."""
    return [{"actual": classes[i], "predicted": classes[j]}
            for i, row in enumerate(confusion) for j, count in enumerate(row) for _ in range(int(count))]
