"""Run every stage in pipeline order (what `dvc repro` runs), writing only under --out, and print
wall time, test accuracy and, on a GPU, its utilisation per stage.

For a machine where DVC or MLflow is not installed (a GPU box), and for a plumbing check on
generated photos that needs neither the Kaggle photos nor the VGG16 weights:

    python scripts/run_all_stages.py --out /tmp/smoke --generated 24          # smoke profile, random VGG
    python scripts/run_all_stages.py --out /tmp/book --no-tracking \\
        data.source.path=/data/dogs-vs-cats backbone.weights=/w/vgg16.pt profile=book

A stage whose metrics are already in --out is skipped, and an interrupted training stage resumes
from its checkpoint: rerun the same command after a kill.

Several seeds (the error bars of `compare`), up to --jobs at once: the small convnets leave most of a
GPU idle (one `scratch` run used an H100 12.6% on average), so seeds side by side use the rest. The
split and the conv base's features are made once and shared; each seed trains into <out>/seed-<N>/
(its output in <out>/seed-<N>/run.log), all of them into one ledger, <out>/seeds, and `compare` then
reads the ledger:

    python scripts/run_all_stages.py --out /tmp/book --no-tracking --seeds 1337 1338 1339 --jobs 3 \
        data.source.path=/data/dogs-vs-cats backbone.weights=/w/vgg16.pt profile=book
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from catdog_lab.config import compose
from catdog_lab.data.toy import toy_photo
from catdog_lab.entry import stage_function
from catdog_lab.errors import exit_on_user_error
from catdog_lab.registry import STAGES, TRAINING_STAGES, WRITTEN
from catdog_lab.settings import trainer_settings


def make_photos(root: Path, per_class: int, size: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for label in ("cat", "dog"):
        for i in range(per_class):
            toy_photo(label, i, size, size).save(root / f"{label}.{i}.jpg")
    return root


class GpuSampler:
    """Samples GPU utilisation (%) twice a second while a stage runs; nothing on a machine without CUDA/NVML."""

    def __init__(self):
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = None
        try:
            torch.cuda.utilization()
            self.available = True
        except Exception:              # no GPU, or no NVML bindings
            self.available = False

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.5):
            self.samples.append(int(torch.cuda.utilization()))

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        return {"gpu_util_mean": round(float(np.mean(self.samples)), 1), "gpu_util_max": max(self.samples)}


def main() -> int | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--generated", type=int, metavar="N",
                   help="generate N toy photos per class (split 50/25/25%%), profile smoke, random VGG16")
    p.add_argument("--size", type=int, default=64, help="image size of the generated photos")
    p.add_argument("--no-tracking", action="store_true", help="skip MLflow (a machine without it installed)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--seeds", nargs="+", type=int, metavar="N",
                   help="train every stage once per seed (default: the config's one seed, in --out itself)")
    p.add_argument("--jobs", type=int, default=1, metavar="K", help="with --seeds: seeds trained at once (default 1)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=book trainer.precision=32-true")
    args = p.parse_args()
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")

    out = args.out.resolve()
    data = []
    if args.generated:
        raw = make_photos(out / "raw", args.generated, args.size)
        n_train, n_val = args.generated // 2, args.generated // 4
        data += [f"data.source.path={raw}", f"data.split.train={n_train}", f"data.split.validation={n_val}",
                 f"data.split.test={args.generated - n_train - n_val}", f"data.image_size={args.size}",
                 "profile=smoke", "backbone.weights=none"]
    overrides = [
        *data, "trainer.progress_bar=false", f"tracking.enabled={str(not args.no_tracking).lower()}",
        f"tracking.uri=sqlite:///{out}/mlflow.db", f"tracking.artifact_location={out}/mlartifacts",
        *[f"paths.{k}={out}/{k}" for k in WRITTEN], *args.overrides,
    ]
    cfg = exit_on_user_error(compose, overrides)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; torch {torch.__version__}; profile {cfg.get('profile')}", flush=True)
    if args.seeds:
        return run_seeds(args, cfg, out, [*data, *args.overrides], device)
    run_stages(args.stages, cfg, out, device)


def run_stages(stages: list[str], cfg, out: Path, device: str) -> None:
    summary_path = out / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"stages": {}}
    summary["device"] = device
    for stage in stages:
        # a finished training or visualize stage is not run again; split and compare are quick, and compare
        # must see every stage
        done = stage in (*TRAINING_STAGES, "visualize") and (out / "metrics" / f"{stage}.json").exists()
        if done and stage in summary["stages"]:
            print(f"{stage:20s} done before, skipped", flush=True)
            continue
        t = time.perf_counter()
        with GpuSampler() as gpu:
            result = exit_on_user_error(stage_function(stage), cfg)
        row = {"seconds": round(time.perf_counter() - t, 2), **gpu.summary()}
        if isinstance(result, dict) and "test/acc" in result and stage in TRAINING_STAGES:
            row["test/acc"] = result["test/acc"]
        summary["stages"][stage] = row
        summary_path.write_text(json.dumps(summary, indent=2))
        print(f"{stage:20s} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    total = sum(r["seconds"] for r in summary["stages"].values())
    print(f"all stages: {total:.1f} s on {device}", flush=True)


def run_seeds(args, cfg, out: Path, overrides: list[str], device: str) -> int:
    """The split and the frozen base's features once, then each seed's training stages in its own process
    (at most --jobs at a time) writing into <out>/seed-<N>/ and the shared ledger, then `compare`."""
    shared = [s for s in args.stages if s == "split"]
    run_stages(shared, cfg, out, device)
    per_seed = [s for s in args.stages if s not in ("split", "compare")]
    if "features" in per_seed:          # extracted here once, not by every seed at the same time
        from catdog_lab.stages.train import cached_features
        exit_on_user_error(cached_features, cfg, trainer_settings(cfg), True)
    script = [sys.executable, str(Path(__file__).resolve()), *(["--no-tracking"] if args.no_tracking else [])]
    # every seed reads the one split, cache and features and writes the one ledger (the user's paths.*, if given)
    shared_paths = [f"paths.{k}={cfg.paths[k]}" for k in ("split", "cache", "features", "seeds")]
    waiting = list(args.seeds)
    running: dict[int, tuple[subprocess.Popen, object]] = {}
    failed = []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            seed = waiting.pop(0)
            seed_dir = out / f"seed-{seed}"
            seed_dir.mkdir(parents=True, exist_ok=True)
            log = open(seed_dir / "run.log", "a")
            command = [*script, "--out", str(seed_dir), "--stages", *per_seed, "--", *overrides, *shared_paths,
                       f"seed={seed}"]
            running[seed] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log
            print(f"seed {seed}: started, log {seed_dir / 'run.log'}", flush=True)
        time.sleep(1)
        for seed, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                del running[seed]
                log.close()
                tail = (out / f"seed-{seed}" / "run.log").read_text().strip().splitlines()[-1:] or [""]
                print(f"seed {seed}: {'done' if proc.returncode == 0 else f'FAILED ({proc.returncode})'}: {tail[0]}",
                      flush=True)
                if proc.returncode:
                    failed.append(seed)
    if "compare" in args.stages:
        run_stages(["compare"], cfg, out, device)
    if failed:
        print(f"error: seed(s) {failed} failed; rerun the same command to resume them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
