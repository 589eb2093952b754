"""compare(cfg): the book's accuracy ladder, ours next to the book's, in every tool a user has.

Writes reports/comparison.md, reports/accuracy.png, metrics/compare.json (for `dvc metrics
show/diff`), reports/index.html, and logs the table and chart into the pipeline's parent MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from catdog_lab import BOOK_CLASSES
from catdog_lab.config import PROJECT_ROOT, read_path
from catdog_lab.io import atomic_path, write_json, write_text
from catdog_lab.model_registry import published_champion
from catdog_lab.plots import plt
from catdog_lab.registry import REGISTRY, TRAINING_STAGES
from catdog_lab.seeds import entries, precision, prediction_band, summarise, verdict
from catdog_lab.stages import plain, tracking_for

BOOK_FILE = PROJECT_ROOT / "conf" / "reference" / "book_accuracy.yaml"
# stage settings worth showing side by side (the rest is shared by every stage)
COMPARED_KEYS = ("model", "epochs", "lr", "batch_size", "dropout", "augment", "trainable", "precision")


def load_book(path: Path = BOOK_FILE) -> dict:
    return yaml.safe_load(Path(path).read_text())


EDITION_LABELS = {"first_edition": "1st ed.", "second_edition": "2nd ed."}


def is_book_data(split_dir: Path, data=None) -> bool:
    """Is the split the book's cats and dogs (the kaggle layout)? Only then do the book's figures belong
    beside ours. The split's report says; without one (a split copied without it, or written before
    layouts existed) the config's `data` section does: its layout, and its classes when it picks some."""
    path = Path(split_dir) / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if "layout" not in report and data is not None:
        source = data.get("source") or {}
        classes = data.get("classes")
        return source.get("layout", "kaggle") == "kaggle" and (classes is None or tuple(classes) == BOOK_CLASSES)
    return report.get("layout", "kaggle") == "kaggle" and tuple(report.get("classes", BOOK_CLASSES)) == BOOK_CLASSES


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
    """The ledger's runs of this stage's current recipe. The workspace's `metrics/<stage>.json` only when
    the ledger has none and the file says it is of the current recipe (a run that records no seed, e.g.
    fast_dev_run): a workspace file of another recipe never mixes into a row."""
    from catdog_lab.seeds import recipe_hash
    ledger = bool(OmegaConf.select(cfg, "paths.seeds")) and stage in cfg
    # the ledger upstream (read_path): the workspace's, or in a CLI job the upstream run's or sweep's
    found = entries(plain(cfg), stage, read_path(cfg, "seeds")) if ledger else []
    if not found and workspace and workspace.get("test/acc") is not None and stage in cfg \
            and workspace.get("recipe_hash") == recipe_hash(plain(cfg), stage):
        found = [workspace | {"seed": workspace.get("seed", cfg.get("seed"))}]
    return found


def _mean(values: list) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def epoch_seconds(run: dict) -> float | None:
    """A run's training time: its epochs' seconds summed, across resumes (the per-epoch history keeps every
    epoch; `wall_time_s` counts only the last process). Older entries: seconds per epoch x epochs."""
    if run.get("epoch_seconds") is not None:
        return float(run["epoch_seconds"])
    if run.get("seconds_per_epoch") is not None and run.get("epochs"):
        return float(run["seconds_per_epoch"]) * int(run["epochs"])
    return None


def _eval_images(cfg, runs: list[dict], split: str) -> int | None:
    """Our images behind a figure: the test images the runs recorded, or the validation split's size."""
    if split == "test":
        return int(runs[-1].get("test_images") or 0) or None
    counts = OmegaConf.select(cfg, "data.split.validation")       # per class; the runs record their classes
    classes = len(runs[-1].get("classes") or ("cat", "dog"))
    return classes * int(counts) if isinstance(counts, int) and not isinstance(counts, bool) else None


def build_rows(cfg, metrics: dict, book: dict) -> list[dict]:
    """One row per stage with runs of the current recipe; every column comes from those runs alone."""
    edition = edition_for(book, str(cfg.get("profile", "")))
    other = "second_edition" if edition == "first_edition" else "first_edition"
    rows = []
    for stage in TRAINING_STAGES:
        runs = seed_accuracies(cfg, stage, metrics.get(stage))
        if not runs:
            continue
        ref, ref2 = book.get(edition, {}).get(stage, {}), book.get(other, {}).get(stage, {})
        settings = {}
        if stage in cfg:        # the precision resolved: the row's recipe fact (null in the section = trainer's)
            settings = OmegaConf.to_container(cfg[stage], resolve=True) | {"precision": precision(plain(cfg), stage)}
        tests = [float(r["test/acc"]) for r in runs]
        test_images = _eval_images(cfg, runs, "test")            # as the runs counted them
        stats = summarise(tests, test_images)
        vals = [float(r["val/acc"]) for r in runs if r.get("val/acc") is not None]
        # like with like: our validation figure against a book figure measured on validation
        on = "validation" if ref.get("split") == "validation" and len(vals) == len(runs) else "test"
        ours = vals if on == "validation" else tests
        book_images = book.get("images", {}).get(edition, {}).get(ref.get("split") or on)
        band = prediction_band(ours, _eval_images(cfg, runs, on), ref.get("acc"), book_images)
        durations = [epoch_seconds(r) for r in runs]
        rows.append({
            "stage": stage, "title": REGISTRY[stage].for_config(cfg).title, "seeds": [r.get("seed") for r in runs],
            "test_acc": stats["mean"], "test_std": stats["std"], "low": stats["low"], "high": stats["high"],
            "interval_kind": stats["interval_kind"], "n": stats["n"], "test_images": test_images,
            "val_acc": _mean(vals), "test_loss": _mean([r.get("test/loss") for r in runs]),
            "epochs": _same([r.get("epochs") for r in runs]), "profile": _same([r.get("profile") for r in runs]),
            "epoch_seconds": _mean(durations),
            "seconds_per_epoch": _mean([r.get("seconds_per_epoch") for r in runs]),
            "select": _same([r.get("select") for r in runs]),
            "edition": edition, "book_acc": ref.get("acc"), "book_split": ref.get("split"),
            "book_images": book_images, "other_edition": other, "book2_acc": ref2.get("acc"),
            "book2_split": ref2.get("split"), "compared_on": on, "ours_compared": _mean(ours),
            "band_low": band["low"], "band_high": band["high"], "seed_spread": band["seed_spread"],
            "verdict": verdict(band, ref.get("acc")), "macro_f1": _mean([r.get("test/macro_f1") for r in runs]),
            "difference": (_mean(ours) - ref["acc"]) if ref.get("acc") is not None else None,
            "settings": {k: settings.get(k) for k in COMPARED_KEYS if k in settings},
        })
    return rows


# The chapter's ladder: each rung's test accuracy above the one before, as the book's figures rise
# (augmentation beats the small convnet; the frozen base with augmentation at least matches the cached
# features, and fine-tuning at least matches that). (lower stage, upper stage, strict)
LADDER = (("scratch", "augmented", True), ("features", "features_augmented", False),
          ("features_augmented", "finetune", False))


def ladder(rows: list[dict]) -> list[dict]:
    """Each rung of LADDER on our test means: met, not met, or not measured (a stage not run yet)."""
    means = {r["stage"]: r["test_acc"] for r in rows if r.get("test_acc") is not None}
    seeds = {r["stage"]: r["n"] for r in rows}
    rungs = []
    for lower, upper, strict in LADDER:
        rung = {"lower": lower, "upper": upper, "relation": "<" if strict else "<=",
                "seeds": (seeds.get(lower), seeds.get(upper))}
        absent = [s for s in (lower, upper) if s not in means]
        if absent:
            rung |= {"status": "not measured", "why": " and ".join(absent) + " not run yet", "difference": None}
        else:
            diff = means[upper] - means[lower]
            rung |= {"status": "met" if (diff > 0 if strict else diff >= 0) else "not met", "why": "",
                     "difference": diff, "means": (means[lower], means[upper])}
        rungs.append(rung)
    return rungs


LADDER_INTRO = ("The chapter's ladder on our test means (the mean over each stage's seeds; the intervals above "
                "say how far apart they could be):")


def rung_sentence(r: dict, markup: bool = True) -> str:
    """One rung said plainly, met or not (`markup`: Markdown code and bold)."""
    code, bold = ("`", "**") if markup else ("", "")
    claim = f"{code}{r['lower']}{code} {r['relation']} {code}{r['upper']}{code}"
    if r["status"] == "not measured":
        return f"{claim}: not measured ({r['why']})"
    (lo, hi), (n_lo, n_hi) = r["means"], r["seeds"]
    return (f"{claim}: {bold}{r['status']}{bold} ({_pct(lo)} vs {_pct(hi)}, {100 * r['difference']:+.1f} pts; "
            f"{n_lo} and {n_hi} seed{'s' if n_hi != 1 else ''})")


def ladder_text(rungs: list[dict]) -> str:
    return "\n".join([LADDER_INTRO, ""] + [f"- {rung_sentence(r)}" for r in rungs])


def test_split_size(rows: list[dict]) -> str:
    """" (N images)" from the runs' own test counts (metrics/<stage>.json `test_images`), per stage when they
    differ; "" when no run recorded it."""
    counts = {r["stage"]: r["test_images"] for r in rows if r.get("test_images")}
    if not counts:
        return ""
    if len(set(counts.values())) == 1:
        return f" ({next(iter(counts.values()))} images)"
    return " (" + ", ".join(f"{stage}: {count} images" for stage, count in counts.items()) + ")"


def _same(values: list):
    """The value the runs share, or the distinct ones joined (runs of one recipe normally agree)."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    return None if not distinct else distinct[0] if len(distinct) == 1 else "/".join(map(str, distinct))


def _verdict_cell(row: dict) -> str:
    if row["verdict"] == "–" or row["seed_spread"]:
        return row["verdict"]
    return f"{row['verdict']} (1 seed: seed spread not included)"


def markdown_table(rows: list[dict], missing: list[str] = ()) -> str:
    """The ladder: ours and the book's, the verdict like with like; `missing` stages as "not run yet"."""
    if not any(r["book_acc"] is not None or r["book2_acc"] is not None for r in rows):
        return _table_without_book(rows, missing)
    edition = EDITION_LABELS.get(rows[0]["edition"], rows[0]["edition"]) if rows else "book"
    other = EDITION_LABELS.get(rows[0]["other_edition"], "") if rows else ""
    columns = ["stage", "seeds", "our test acc (mean ± sd)", "95% interval of the mean", "our val acc (mean)",
               f"book ({edition})", "ours on the book's split", "95% band for one run", "verdict", "difference",
               f"book ({other})", "epochs", "kept epoch", "training time (epochs summed)"]
    body = {}
    for r in rows:
        diff = "–" if r["difference"] is None else f"{100 * r['difference']:+.1f} pts"
        sd = f" ± {100 * r['test_std']:.1f}" if r["test_std"] is not None else ""
        interval = "–" if r["low"] is None else f"{100 * r['low']:.1f}–{100 * r['high']:.1f}%"
        band = "–" if r["band_low"] is None else f"{100 * r['band_low']:.1f}–{100 * r['band_high']:.1f}%"
        cells = [r["stage"], str(r["n"]), f"{_pct(r['test_acc'])}{sd}", interval, _pct(r["val_acc"]),
                 f"{_pct(r['book_acc'])} ({r['book_split'] or '–'})",
                 f"{_pct(r['ours_compared'])} ({r['compared_on']})", band, _verdict_cell(r), diff,
                 f"{_pct(r['book2_acc'])} ({r['book2_split'] or '–'})", str(r["epochs"]), r["select"] or "–",
                 _duration(r["epoch_seconds"])]
        body[r["stage"]] = "| " + " | ".join(cells) + " |"
    for stage in missing:
        body[stage] = f"| {stage} | 0 | not run yet |" + " – |" * (len(columns) - 3)
    ladder = sorted(body, key=lambda s: TRAINING_STAGES.index(s) if s in TRAINING_STAGES else len(TRAINING_STAGES))
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [body[s] for s in ladder])


def _table_without_book(rows: list[dict], missing: list[str] = ()) -> str:
    """The ladder on data other than the book's: ours only, with macro-F1 (classes may be unbalanced)."""
    columns = ["stage", "seeds", "our test acc (mean ± sd)", "95% interval of the mean", "macro-F1",
               "our val acc (mean)", "epochs", "kept epoch", "training time (epochs summed)"]
    body = {}
    for r in rows:
        sd = f" ± {100 * r['test_std']:.1f}" if r["test_std"] is not None else ""
        interval = "–" if r["low"] is None else f"{100 * r['low']:.1f}–{100 * r['high']:.1f}%"
        f1 = "–" if r.get("macro_f1") is None else f"{r['macro_f1']:.3f}"
        body[r["stage"]] = (f"| {r['stage']} | {r['n']} | {_pct(r['test_acc'])}{sd} | {interval} | {f1} | "
                            f"{_pct(r['val_acc'])} | {r['epochs']} | {r['select'] or '–'} | "
                            f"{_duration(r['epoch_seconds'])} |")
    for stage in missing:
        body[stage] = f"| {stage} | 0 | not run yet |" + " – |" * (len(columns) - 3)
    ladder = sorted(body, key=lambda s: TRAINING_STAGES.index(s) if s in TRAINING_STAGES else len(TRAINING_STAGES))
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [body[s] for s in ladder])


def settings_table(rows: list[dict]) -> str:
    keys = [k for k in COMPARED_KEYS if any(k in r["settings"] for r in rows)]
    keys = [k for k in keys if len({_setting(r["settings"].get(k)) for r in rows}) > 1]   # only what differs
    if not keys:        # one stage compared, or stages that share every setting: no table to draw
        return ("None: only one stage was compared." if len(rows) < 2 else
                f"None: every stage has the same {', '.join(COMPARED_KEYS)}.")
    lines = ["| stage | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['stage']} | " + " | ".join(_setting(r["settings"].get(key)) for key in keys) + " |")
    return "\n".join(lines)


def _setting(value) -> str:
    """A setting as the table shows it (so that "no key" and an empty list, both "–", do not differ)."""
    if isinstance(value, list) and value:
        return ", ".join(map(str, value))
    return "–" if value in (None, []) else str(value)


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
    ax.set_title("Cats vs dogs: the chapter's accuracy ladder" if any(r["book_acc"] is not None for r in rows)
                 else "The chapter's accuracy ladder on this data")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def introduction(rows: list[dict], on_book_data: bool) -> str:
    """What the table shows and how it was computed; the book's figures and verdicts on its data only."""
    book = ("The book's figures are in `conf/reference/book_accuracy.yaml` with their sources. " if on_book_data
            else "")
    verdict = ("The verdict compares like with like: our validation accuracy where the book's figure is a validation "
               "one, our test accuracy where it is a test one. It is *matches* when the book's figure lies in the "
               "95% band for one run: a prediction interval for one new run of ours (t · sd · sqrt(1 + 1/n)), our "
               "images' binomial noise and the book figure's own (its split's size), added in quadrature; else "
               "*above* or *below*. With one seed the spread over seeds is unknown and left out, which the verdict "
               "says. The 1st edition's 90% for `features` came from feeding VGG16 the wrong preprocessing (1/255 "
               "instead of Caffe's), which ours does not repeat. " if on_book_data else "")
    return ("Generated by the `compare` stage from the seed ledger (`metrics/seeds/`): every column of a row comes "
            f"from the runs of this config's recipe only. {book}Our test accuracies are on the test split"
            f"{test_split_size(rows)}: the mean over the seeds, the sample standard deviation, and a 95% interval of "
            f"the mean (Student t over seeds; with one seed, the binomial (Wilson) interval of the test set). {verdict}"
            "Training time: the epochs' seconds summed over resumes, mean over seeds.")


def compare(cfg) -> dict:
    from catdog_lab.report import build_html
    from catdog_lab.tracking import pipeline_run

    # reads the training stages' metrics (read_path: the workspace, or upstream in a CLI job), writes its own
    reports, metrics_dir = Path(cfg.paths.reports), Path(cfg.paths.metrics)
    metrics = gather(read_path(cfg, "metrics"))
    # the book's figures sit beside ours only on the book's data
    book = load_book() if is_book_data(read_path(cfg, "split"), cfg.get("data")) else {}
    rows = build_rows(cfg, metrics, book)
    missing = [stage for stage in TRAINING_STAGES if stage not in {r["stage"] for r in rows}]
    table, settings = markdown_table(rows, missing), settings_table(rows)
    tracking = tracking_for(cfg)
    # the line `publish` wrote for the upstream models (read_path), like the metrics it reads: best val/acc
    champion = published_champion(read_path(cfg, "models"), metrics)
    seeds = sorted({int(m["seed"]) for m in metrics.values() if m.get("seed") is not None})
    if seeds:     # not the ledger's means above: the models a `publish` or `catdog-predict` would use now
        champion = (f"Of the models in `models/` (each stage's last run: seed{'s' * (len(seeds) > 1)} "
                    f"{', '.join(map(str, seeds))}): {champion}")
    rungs = ladder(rows)
    intro = introduction(rows, on_book_data=bool(book))
    md = ("# Accuracy comparison\n\n" + intro + "\n\n"
          f"{table}\n\n{ladder_text(rungs)}\n\n{champion}\n\n"
          f"## Settings that differ between stages\n\n{settings}\n")
    write_text(reports / "comparison.md", md)
    plot_ladder(rows, reports / "accuracy.png")
    summary = {}
    for r in rows:
        summary |= {f"{r['stage']}/test_acc": round(r["test_acc"], 6), f"{r['stage']}/seeds": r["n"],
                    f"{r['stage']}/verdict": r["verdict"]}
        summary |= {f"{r['stage']}/{k}": round(r[k], 6) for k in ("test_std", "low", "high", "band_low", "band_high")
                    if r[k] is not None}
        summary[f"{r['stage']}/compared_on"] = r["compared_on"]
        if r["difference"] is not None:
            summary[f"{r['stage']}/vs_book"] = round(r["difference"], 4)
    summary |= {f"ladder/{r['lower']}-{r['upper']}": r["status"] for r in rungs}
    write_json(metrics_dir / "compare.json", summary)
    html = build_html(reports, read_path(cfg, "reports"), str(cfg.get("profile", "")), rows, table, settings,
                      split_dir=read_path(cfg, "split"), metrics_dir=read_path(cfg, "metrics"),
                      ladder=[LADDER_INTRO] + [rung_sentence(r, markup=False) for r in rungs],
                      intro=intro.replace("`", "").replace("*", ""))
    with pipeline_run(tracking) as run:
        run.log_metrics({k.replace("/", "."): v for k, v in summary.items() if v is not None})
        run.set_tags({f"{r['stage']}.verdict": r["verdict"] for r in rows}
                     | {f"ladder.{r['lower']}-{r['upper']}": r["status"] for r in rungs})
        for path in (reports / "comparison.md", reports / "accuracy.png", html):
            run.log_artifact(path, "comparison")
    print(md)
    return summary
