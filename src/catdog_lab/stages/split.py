"""split(cfg): choose, check and decode the photos once (see catdog_lab.data.split)."""
from __future__ import annotations

import time

from catdog_lab.config import validate_data
from catdog_lab.data.split import manifest_hash, split_and_cache
from catdog_lab.tracking import Tracking, stage_run


def split(cfg) -> dict:
    validate_data(cfg)
    t0 = time.perf_counter()
    with stage_run(Tracking.from_config(cfg), "split") as run:
        report = split_and_cache(cfg)
        seconds = time.perf_counter() - t0
        run.log_metrics({"images": sum(sum(c.values()) for c in report["counts"].values()),
                         "skipped": report["skipped"], "wall_time_s": seconds})
        run.set_tags({"data_manifest": manifest_hash(cfg.paths.split)})
        for name in ("manifest.csv", "skipped.csv", "report.json"):
            run.log_artifact(f"{cfg.paths.split}/{name}", "split")
    print(f"[split] done in {seconds:.1f}s")
    return report
