"""split(cfg): choose, check and decode the photos once (see catdog_lab.data.split)."""
from __future__ import annotations

import time
from pathlib import Path

from catdog_lab import SPLITS
from catdog_lab.data.sources import local_source, resolve_source
from catdog_lab.data.split import make_split, manifest_hash, resolve_workers, write_split
from catdog_lab.schema import Data, check
from catdog_lab.stages import tracking_for
from catdog_lab.tracking import stage_run


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
        result = make_split(root, {name: getattr(data.split, name) for name in SPLITS}, seed=data.split.seed,
                            image_size=data.image_size, max_pixels=data.max_image_pixels,
                            cache_dir=Path(cfg.paths.cache), workers=resolve_workers(data.workers))
        report = write_split(split_dir, result, root)
        seconds = time.perf_counter() - started
        run.log_metrics({"images": sum(sum(c.values()) for c in report["counts"].values()),
                         "skipped": report["skipped"], "wall_time_s": seconds})
        run.set_tags({"data_manifest": manifest_hash(split_dir)})
        for name in ("manifest.csv", "skipped.csv", "report.json"):
            run.log_artifact(split_dir / name, "split")
    print(f"[split] done in {seconds:.1f}s")
    return report
