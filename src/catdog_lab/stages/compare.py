"""compare(cfg): the book's accuracy ladder, ours next to the book's, in every tool a user has.

Writes reports/comparison.md, reports/accuracy.png, metrics/compare.json (for `dvc metrics
show/diff`), reports/index.html, and logs the table and chart into the pipeline's parent MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from catdog_lab.config import PROJECT_ROOT, read_path
from catdog_lab.io import atomic_path, write_json, write_text
from catdog_lab.plots import plt
from catdog_lab.registry import REGISTRY, TRAINING_STAGES
from catdog_lab.seeds import entries, summarise, verdict
from catdog_lab.serving import crown_champion
from catdog_lab.stages import plain, tracking_for

BOOK_FILE = PROJECT_ROOT / "conf" / "reference" / "book_accuracy.yaml"
# stage settings worth showing side by side (the rest is shared by every stage)
COMPARED_KEYS = ("model", "epochs", "lr", "batch_size", "dropout", "augment", "trainable")


def load_book(path: Path = BOOK_FILE) -> dict:
    return yaml.safe_load(Path(path).read_text())


EDITION_LABELS = {"first_edition": "1st ed.", "second_edition": "2nd ed."}


def gather(metrics_dir: Path) -> dict[str, dict]:
    found = {}
    for stage in TRAINING_STAGES:
        path = Path(metrics_dir) / f"{stage}.json"
        if path.exists():
            found[stage] = json.loads(path.read_text())
    return found


def edition_for(book: dict, profile: str) -> str:
    """The edition a profile reproduces (conf/reference/book_accuracy.yaml `editions`), else `primary`."""
    return book.get("editions", {}).get(profile, book.get("primary", "first_edition"))


def _pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def seed_accuracies(cfg, stage: str, workspace: dict | None) -> list[dict]:
    """The ledger's runs of this stage's current recipe; the workspace metrics alone when it has none."""
    found = entries(plain(cfg), stage) if OmegaConf.select(cfg, "paths.seeds") and stage in cfg else []
    if not found and workspace and workspace.get("test/acc") is not None:
        found = [workspace | {"seed": workspace.get("seed", cfg.get("seed"))}]
    return found


def build_rows(cfg, metrics: dict, book: dict) -> list[dict]:
    edition = edition_for(book, str(cfg.get("profile", "")))
    other = "second_edition" if edition == "first_edition" else "first_edition"
    rows = []
    for stage in TRAINING_STAGES:
        runs = seed_accuracies(cfg, stage, metrics.get(stage))
        if not runs:
            continue
        latest = metrics.get(stage, runs[-1])         # the workspace's run, else the ledger's last
        ref, ref2 = book.get(edition, {}).get(stage, {}), book.get(other, {}).get(stage, {})
        settings = OmegaConf.to_container(cfg[stage], resolve=True) if stage in cfg else {}
        stats = summarise([float(r["test/acc"]) for r in runs], int(latest.get("test_images") or 1000))
        val_accs = [float(r["val/acc"]) for r in runs if r.get("val/acc") is not None]
        rows.append({
            "stage": stage, "title": REGISTRY[stage].title, "seeds": [r.get("seed") for r in runs],
            "test_acc": stats["mean"], "test_std": stats["std"], "low": stats["low"], "high": stats["high"],
            "interval_kind": stats["interval_kind"], "n": stats["n"],
            "val_acc": sum(val_accs) / len(val_accs) if val_accs else None, "test_loss": latest.get("test/loss"),
            "epochs": latest.get("epochs"), "profile": latest.get("profile"), "wall_time_s": latest.get("wall_time_s"),
            "seconds_per_epoch": latest.get("seconds_per_epoch"), "select": latest.get("select"),
            "edition": edition, "book_acc": ref.get("acc"), "book_split": ref.get("split"),
            "other_edition": other, "book2_acc": ref2.get("acc"), "book2_split": ref2.get("split"),
            "verdict": verdict(stats, ref.get("acc")),
            "difference": (stats["mean"] - ref["acc"]) if ref.get("acc") is not None else None,
            "settings": {k: settings.get(k) for k in COMPARED_KEYS if k in settings},
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    edition = EDITION_LABELS.get(rows[0]["edition"], rows[0]["edition"]) if rows else "book"
    other = EDITION_LABELS.get(rows[0]["other_edition"], "") if rows else ""
    lines = [f"| stage | seeds | our test acc (mean ± sd) | 95% interval | book ({edition}) | verdict | difference | "
             f"book ({other}) | our val acc | epochs | kept epoch | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "–" if r["difference"] is None else f"{100 * r['difference']:+.1f} pts"
        sd = f" ± {100 * r['test_std']:.1f}" if r["test_std"] is not None else ""
        interval = "–" if r["low"] is None else f"{100 * r['low']:.1f}–{100 * r['high']:.1f}%"
        lines.append(
            f"| {r['stage']} | {r['n']} | {_pct(r['test_acc'])}{sd} | {interval} | "
            f"{_pct(r['book_acc'])} ({r['book_split'] or '–'}) | {r['verdict']} | {diff} | "
            f"{_pct(r['book2_acc'])} ({r['book2_split'] or '–'}) | {_pct(r['val_acc'])} | "
            f"{r['epochs']} | {r['select'] or '–'} | {_duration(r['wall_time_s'])} |")
    return "\n".join(lines)


def settings_table(rows: list[dict]) -> str:
    keys = [k for k in COMPARED_KEYS if any(k in r["settings"] for r in rows)]
    keys = [k for k in keys if len({json.dumps(r["settings"].get(k)) for r in rows}) > 1]   # only what differs
    if not keys:        # one stage compared, or stages that share every setting: no table to draw
        return ("None: only one stage was compared." if len(rows) < 2 else
                f"None: every stage has the same {', '.join(COMPARED_KEYS)}.")
    lines = ["| stage | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for key in keys:
            value = r["settings"].get(key)
            cells.append(", ".join(map(str, value)) if isinstance(value, list) and value
                         else ("–" if value in (None, []) else str(value)))
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
    xs = list(range(len(rows)))
    ours = [100 * (r["test_acc"] or 0) for r in rows]
    # error bars: the 95% interval of the mean over seeds (binomial test-set interval for a single seed)
    lower = [100 * (r["test_acc"] - r["low"]) if r["low"] is not None else 0 for r in rows]
    upper = [100 * (r["high"] - r["test_acc"]) if r["high"] is not None else 0 for r in rows]
    bottom = min([50] + [v - 8 for v in ours])
    bars = ax.bar(xs, ours, width=0.6, color="tab:blue", alpha=0.8, label="ours (test, mean over seeds, 95% interval)",
                  yerr=[lower, upper], capsize=4, error_kw={"elinewidth": 1.2, "ecolor": "black"})
    for bar, value in zip(bars, ours):              # at the foot of the bar, clear of the error bar
        ax.text(bar.get_x() + bar.get_width() / 2, bottom + 2, f"{value:.1f}", ha="center", fontsize=8,
                color="white", fontweight="bold")
    if rows:
        # the book's markers beside the error bar, the compared edition on the left
        for key, marker, color, edition, shift in (("book_acc", "D", "tab:red", rows[0]["edition"], -0.18),
                                                   ("book2_acc", "o", "tab:green", rows[0]["other_edition"], 0.18)):
            pts = [(x + shift, 100 * r[key]) for x, r in zip(xs, rows) if r[key] is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=color, zorder=3,
                           label=f"book, {EDITION_LABELS.get(edition, edition)}")
    ax.set_xticks(xs, [f"{r['stage']}\n({r['epochs']} ep., {r['n']} seed{'s' if r['n'] != 1 else ''})"
                       for r in rows], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(bottom, 100)
    ax.set_title("Cats vs dogs: the chapter's accuracy ladder")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def compare(cfg) -> dict:
    from catdog_lab.report import build_html
    from catdog_lab.tracking import pipeline_run

    # reads the training stages' metrics (read_path: the workspace, or upstream in a CLI job), writes its own
    reports, metrics_dir = Path(cfg.paths.reports), Path(cfg.paths.metrics)
    metrics = gather(read_path(cfg, "metrics"))
    rows = build_rows(cfg, metrics, load_book())
    table, settings = markdown_table(rows), settings_table(rows)
    tracking = tracking_for(cfg)
    champion = crown_champion(metrics, Path(cfg.paths.models), tracking)   # best val/acc -> alias `champion`, one line
    md = ("# Accuracy comparison\n\n"
          "Generated by the `compare` stage from `metrics/*.json`; the book's figures are in "
          "`conf/reference/book_accuracy.yaml` with their sources. Our accuracies are on the test split "
          "(1000 images): the mean over the seeds run with this recipe (`metrics/seeds/`), the sample standard "
          "deviation, and a 95% interval of the mean (Student t over seeds; with one seed, the binomial interval "
          "of the test set). Verdict: *matches* when the book's figure lies inside our interval, else *above* "
          "or *below* it. The book's figures are on the split in brackets; the 1st edition's 90% for "
          "`features` came from feeding VGG16 the wrong preprocessing (1/255 instead of Caffe's), which ours "
          "does not repeat.\n\n"
          f"{table}\n\n{champion}\n\n## Settings that differ between stages\n\n{settings}\n")
    write_text(reports / "comparison.md", md)
    plot_ladder(rows, reports / "accuracy.png")
    summary = {}
    for r in rows:
        summary |= {f"{r['stage']}/test_acc": round(r["test_acc"], 6), f"{r['stage']}/seeds": r["n"],
                    f"{r['stage']}/verdict": r["verdict"]}
        summary |= {f"{r['stage']}/{k}": round(r[k], 6) for k in ("test_std", "low", "high") if r[k] is not None}
        if r["difference"] is not None:
            summary[f"{r['stage']}/vs_book"] = round(r["difference"], 4)
    write_json(metrics_dir / "compare.json", summary)
    html = build_html(reports, read_path(cfg, "reports"), str(cfg.get("profile", "")), rows, table, settings)
    with pipeline_run(tracking) as run:
        run.log_metrics({k.replace("/", "."): v for k, v in summary.items() if v is not None})
        run.set_tags({f"{r['stage']}.verdict": r["verdict"] for r in rows})
        for path in (reports / "comparison.md", reports / "accuracy.png", html):
            run.log_artifact(path, "comparison")
    print(md)
    return summary
