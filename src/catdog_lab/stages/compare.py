"""compare(cfg): the book's accuracy ladder, ours next to the book's, in every tool a user has.

Writes reports/comparison.md, reports/accuracy.png, metrics/compare.json (for `dvc metrics
show/diff`), reports/index.html, and logs the table and chart into the pipeline's parent MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from catdog_lab import TRAINING_STAGES  # noqa: E402
from catdog_lab.config import PROJECT_ROOT  # noqa: E402
from catdog_lab.io import atomic_path, write_json, write_text  # noqa: E402
from catdog_lab.serving import crown_champion  # noqa: E402

BOOK_FILE = PROJECT_ROOT / "conf" / "reference" / "book_accuracy.yaml"
TITLES = {
    "scratch": "Small convnet from scratch",
    "augmented": "+ data augmentation, dropout",
    "features": "VGG16 fast feature extraction",
    "features_augmented": "Frozen VGG16 + augmentation",
    "finetune": "Fine-tuned VGG16 block5",
}
# stage settings worth showing side by side (the rest is shared by every stage)
COMPARED_KEYS = ("model", "epochs", "lr", "batch_size", "dropout", "augment", "trainable")


def load_book(path: Path = BOOK_FILE) -> dict:
    return yaml.safe_load(Path(path).read_text())


def gather(metrics_dir: Path) -> dict[str, dict]:
    found = {}
    for stage in TRAINING_STAGES:
        path = Path(metrics_dir) / f"{stage}.json"
        if path.exists():
            found[stage] = json.loads(path.read_text())
    return found


def _pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def build_rows(cfg, metrics: dict, book: dict) -> list[dict]:
    primary = book[book.get("primary", "first_edition")]
    second = book.get("second_edition", {})
    rows = []
    for stage in TRAINING_STAGES:
        if stage not in metrics:
            continue
        m, ref = metrics[stage], primary.get(stage, {})
        settings = OmegaConf.to_container(cfg[stage], resolve=True) if stage in cfg else {}
        rows.append({
            "stage": stage, "title": TITLES[stage],
            "test_acc": m.get("test/acc"), "val_acc": m.get("val/acc"), "test_loss": m.get("test/loss"),
            "epochs": m.get("epochs"), "profile": m.get("profile"), "wall_time_s": m.get("wall_time_s"),
            "seconds_per_epoch": m.get("seconds_per_epoch"),
            "book_acc": ref.get("acc"), "book_split": ref.get("split"),
            "book2_acc": second.get(stage, {}).get("acc"), "book2_split": second.get(stage, {}).get("split"),
            "difference": (m["test/acc"] - ref["acc"]) if ref.get("acc") is not None and m.get("test/acc") is not None
            else None,
            "settings": {k: settings.get(k) for k in COMPARED_KEYS if k in settings},
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| stage | our test acc | book's acc (1st ed.) | difference | book 2nd ed. | our val acc | "
             "test loss | epochs | profile | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "–" if r["difference"] is None else f"{100 * r['difference']:+.1f} pts"
        lines.append(
            f"| {r['stage']} | {_pct(r['test_acc'])} | {_pct(r['book_acc'])} ({r['book_split'] or '–'}) | {diff} | "
            f"{_pct(r['book2_acc'])} ({r['book2_split'] or '–'}) | {_pct(r['val_acc'])} | "
            f"{_loss(r['test_loss'])} | "
            f"{r['epochs']} | {r['profile']} | {_duration(r['wall_time_s'])} |")
    return "\n".join(lines)


def settings_table(rows: list[dict]) -> str:
    keys = [k for k in COMPARED_KEYS if any(k in r["settings"] for r in rows)]
    keys = [k for k in keys if len({json.dumps(r["settings"].get(k)) for r in rows}) > 1]   # only what differs
    lines = ["| stage | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r["settings"].get(k)
            cells.append(", ".join(map(str, v)) if isinstance(v, list) and v else ("–" if v in (None, []) else str(v)))
        lines.append(f"| {r['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loss(value) -> str:
    return "–" if value is None else f"{float(value):.3f}"


def _duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def plot_ladder(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.2))
    xs = range(len(rows))
    ours = [100 * (r["test_acc"] or 0) for r in rows]
    bars = ax.bar(xs, ours, color="tab:blue", alpha=0.8, label="ours (test)")
    for bar, value in zip(bars, ours):
        ax.text(bar.get_x() + bar.get_width() / 2, value - 3, f"{value:.1f}", ha="center", fontsize=8,
                color="white", fontweight="bold")
    for key, marker, color, label in (("book_acc", "D", "tab:red", "book, 1st ed."),
                                      ("book2_acc", "o", "tab:green", "book, 2nd ed.")):
        pts = [(x, 100 * r[key]) for x, r in zip(xs, rows) if r[key] is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, zorder=3, label=label)
    ax.set_xticks(list(xs), [f"{r['stage']}\n({r['epochs']} ep.)" for r in rows], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(min([50] + [v - 5 for v in ours]), 100)
    ax.set_title("Cats vs dogs: the chapter's accuracy ladder")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def compare(cfg) -> dict:
    from catdog_lab.report import build_html
    from catdog_lab.tracking import pipeline_run

    reports, metrics_dir = Path(cfg.paths.reports), Path(cfg.paths.metrics)
    metrics = gather(metrics_dir)
    rows = build_rows(cfg, metrics, load_book())
    table, settings = markdown_table(rows), settings_table(rows)
    champion = crown_champion(cfg, metrics)           # best val/acc -> registry alias `champion`, one line
    md = ("# Accuracy comparison\n\n"
          "Generated by the `compare` stage from `metrics/*.json`; the book's figures are in "
          "`conf/reference/book_accuracy.yaml` with their sources. Our accuracies are on the test split "
          "(1000 images); the book's are on the split in brackets.\n\n"
          f"{table}\n\n{champion}\n\n## Settings that differ between stages\n\n{settings}\n")
    write_text(reports / "comparison.md", md)
    plot_ladder(rows, reports / "accuracy.png")
    summary = {f"{r['stage']}/test_acc": r["test_acc"] for r in rows}
    summary |= {f"{r['stage']}/vs_book": round(r["difference"], 4) for r in rows if r["difference"] is not None}
    write_json(metrics_dir / "compare.json", summary)
    html = build_html(cfg, rows, table, settings)
    with pipeline_run(cfg) as run:
        run.log_metrics({k.replace("/", "."): v for k, v in summary.items() if v is not None})
        for path in (reports / "comparison.md", reports / "accuracy.png", html):
            run.log_artifact(path, "comparison")
    print(md)
    return summary
