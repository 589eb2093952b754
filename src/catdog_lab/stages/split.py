"""split(cfg): choose, check and decode the photos once (see catdog_lab.data.split)."""
from __future__ import annotations

import time
from pathlib import Path

from catdog_lab import SPLITS
from catdog_lab.config import validate_data
from catdog_lab.data.sources import resolve_source
from catdog_lab.data.split import make_split, manifest_hash, resolve_workers, write_split
from catdog_lab.tracking import Tracking, stage_run


def split(cfg) -> dict:
    validate_data(cfg)
    started = time.perf_counter()
    data, split_dir = cfg.data, Path(cfg.paths.split)
    with stage_run(Tracking.from_config(cfg), "split") as run:
        root = resolve_source(data.source)
        result = make_split(root, {name: data.split[name] for name in SPLITS}, seed=int(data.split.seed),
                            image_size=int(data.image_size), max_pixels=int(data.max_image_pixels),
                            cache_dir=Path(cfg.paths.cache), workers=resolve_workers(data.workers),
                            order=str(data.split.order))
        report = write_split(split_dir, result, root)
        seconds = time.perf_counter() - started
        run.log_metrics({"images": sum(sum(c.values()) for c in report["counts"].values()),
                         "skipped": report["skipped"], "wall_time_s": seconds})
        run.set_tags({"data_manifest": manifest_hash(split_dir)})
        for name in ("manifest.csv", "skipped.csv", "report.json"):
            run.log_artifact(split_dir / name, "split")
    print(f"[split] done in {seconds:.1f}s")
    return report
