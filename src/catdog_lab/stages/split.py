"""split(cfg): choose, check and decode the photos once (see catdog_lab.data.split)."""
from __future__ import annotations

import time
from pathlib import Path

from catdog_lab import SPLITS
from catdog_lab.data.sources import local_source, resolve_source
from catdog_lab.data.split import make_split, manifest_hash, resolve_workers, split_counts, split_name, write_split
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
                            cache_dir=Path(cfg.paths.cache), workers=resolve_workers(data.workers),
                            layout=data.source.layout, classes=None if data.classes is None else list(data.classes))
        report = write_split(split_dir, result, root)
        seconds = time.perf_counter() - started
        run.log_metrics({"images": sum(sum(c.values()) for c in report["counts"].values()),
                         "skipped": report["skipped"], "wall_time_s": seconds})
        # the run's name says the real split (classes and counts), known only now
        run.set_tags({"data_manifest": manifest_hash(split_dir), "classes": ",".join(report["classes"]),
                      "mlflow.runName": f"{REGISTRY['split'].index} split: {split_name(report)}"})
        run.log_metrics({f"images/{split}/{metric_name(label)}": count for split in SPLITS
                         for label, count in report["counts"][split].items()})
        for name in ("manifest.csv", "skipped.csv", "report.json"):
            run.log_artifact(split_dir / name, "split")
    print(f"[split] done in {seconds:.1f}s")
    return report
