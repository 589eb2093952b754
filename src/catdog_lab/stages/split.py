"""split(cfg): choose, check and decode the photos once (see catdog_lab.data.split)."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from catdog_lab import SPLITS
from catdog_lab.data.sources import local_source, resolve_source
from catdog_lab.data.split import make_split, manifest_hash, resolve_workers, split_counts, write_split
from catdog_lab.registry import REGISTRY
from catdog_lab.schema import Data, check
from catdog_lab.stages import tracking_for
from catdog_lab.tracking import metric_name, stage_run


def validate_data(cfg) -> Data:
    """`data.*` checked once (schema.Data), and a local `data.source.path` found."""
    data = check(cfg, "data", Data)
    local_source(data.source)
    return data


def split(cfg) -> dict:
    data = validate_data(cfg)
    started = time.perf_counter()
    split_dir = Path(cfg.paths.split)
    with stage_run(tracking_for(cfg), "split") as run:
        root = resolve_source(data.source)
        result = make_split(root, split_counts(data.split), seed=data.split.seed,
                            image_size=data.image_size, max_pixels=data.max_image_pixels,
                            min_side=data.min_image_side, max_aspect=data.max_aspect_ratio,
                            cache_dir=Path(cfg.paths.cache), workers=resolve_workers(data.workers),
                            order=data.split.order, layout=data.source.layout,
                            classes=None if data.classes is None else list(data.classes))
        report = write_split(split_dir, result, root)
        seconds = time.perf_counter() - started
        run.log_metrics({"images": sum(sum(c.values()) for c in report["counts"].values()),
                         "skipped": report["skipped"], "wall_time_s": seconds})
        run.set_tags({"data_manifest": manifest_hash(split_dir), "classes": ",".join(report["classes"]),
                      "mlflow.runName": run_name(report["counts"])})
        run.log_metrics({f"images/{split}/{metric_name(label)}": count for split in SPLITS
                         for label, count in report["counts"][split].items()})
        for name in ("manifest.csv", "skipped.csv", "report.json"):
            run.log_artifact(split_dir / name, "split")
    print(f"[split] done in {seconds:.1f}s")
    return report


def run_name(counts: dict[str, dict[str, int]]) -> str:
    """The split's MLflow run name from the classes and counts it made (report.json's `counts`), e.g.
    `0 split: 2 classes, 1000/500/500 per class` (`... images` when the classes differ)."""
    per_class = [set(counts[name].values()) for name in SPLITS]
    if all(len(values) == 1 for values in per_class):
        summary = "/".join(str(next(iter(values))) for values in per_class) + " per class"
    else:
        summary = "/".join(str(sum(counts[name].values())) for name in SPLITS) + " images (train/validation/test)"
    return replace(REGISTRY["split"], summary=f"{len(counts['train'])} classes, {summary}").run_name
