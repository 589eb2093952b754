"""The whole Kaggle set's scale on this machine: split speed with 1 and N decoding workers, peak resident
memory of the split and of one training epoch, and the cache's size on disk.

    python benchmarks/split_bench.py                      # 25,000 generated JPEGs (12,500 per class)
    python benchmarks/split_bench.py --images 2000 --workers 1 2 --epoch-steps 50

The photos are generated (not committed): toy cat/dog pictures (catdog_lab.data.toy) with noise, at the
sizes of the Kaggle photos (sides drawn from 200-500 px, JPEG quality 90), written once to --photos and
reused. Each measurement runs in a fresh subprocess, so its peak resident memory (ru_maxrss of the
process and of its decoding workers) is its own. Prints a table and writes --out (JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generate(folder: Path, count: int, seed: int = 0) -> Path:
    """count photos, half cats half dogs, Kaggle-named; skipped when already there."""
    from PIL import Image

    from catdog_lab.data.toy import toy_photo

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_class = count // 2
    for label in ("cat", "dog"):
        for i in range(per_class):
            path = folder / f"{label}.{i}.jpg"
            width, height = (int(v) for v in rng.integers(200, 501, 2))
            if path.exists():
                continue
            base = np.asarray(toy_photo(label, i, width, height), dtype=np.int16)
            noise = rng.integers(-25, 26, base.shape, dtype=np.int16)      # texture, so JPEGs are photo-sized
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
    return folder


def _peak_mb() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_workers_mb": round(children, 1)}


def run_split(photos: Path, cache: Path, workers: int, image_size: int) -> dict:
    from catdog_lab.data.split import make_split

    t0 = time.perf_counter()
    result = make_split(photos, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=0, image_size=image_size,
                        max_pixels=40_000_000, cache_dir=cache, workers=workers)
    seconds = time.perf_counter() - t0
    images = sum(result["report"]["inspected"].values())
    return {"workers": workers, "images": images, "seconds": round(seconds, 2),
            "images_per_second": round(images / seconds, 1)} | _peak_mb()


def run_epoch(cache: Path, steps: int | None, batch_size: int) -> dict:
    """One epoch of the book's convnet (RMSprop, BCE) over the memory-mapped train split, as training does."""
    import torch
    import torch.nn.functional as F

    from catdog_lab.data.datamodule import TensorDataModule
    from catdog_lab.models.components.convnet import BookConvNet

    torch.manual_seed(0)
    data = TensorDataModule(cache, batch_size, "images", seed=0, steps_per_epoch=steps)
    data.setup()
    net = BookConvNet(int(data.datasets["train"].shape[-1])).to(memory_format=torch.channels_last)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)
    t0, seen = time.perf_counter(), 0
    for x, y in data.train_dataloader():
        loss = F.binary_cross_entropy_with_logits(net(x.float().contiguous(memory_format=torch.channels_last)),
                                                  y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return {"train_images": seen, "seconds": round(time.perf_counter() - t0, 2)} | _peak_mb()


def run_pass(cache: Path, batch_size: int) -> dict:
    """The data alone: one shuffled pass over the train split through `MappedImages`, resident memory
    before and at its peak, with the pages handed back every 8 batches and never (what a plain memory
    map does)."""
    from catdog_lab.data.cache import MappedImages
    from catdog_lab.data.datamodule import load_cached_split

    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    cached, out = load_cached_split(cache, "train"), {}
    for name, release in (("released", 8), ("kept", 10**12)):
        data = MappedImages(cached["images_path"], cached["labels"], release_every=release)
        order = np.random.default_rng(0).permutation(len(data))
        before = peak = rss_mb()
        for start in range(0, len(data), batch_size):
            data.__getitems__(order[start:start + batch_size].tolist())
            peak = max(peak, rss_mb())
        out[name] = {"rss_before_mb": round(before, 1), "rss_peak_mb": round(peak, 1),
                     "growth_mb": round(peak - before, 1)}
        del data
    return out


def _in_subprocess(kind: str, **kwargs) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import split_bench as b; "
            f"print('RESULT ' + json.dumps(b.{kind}(**{{k: (b.Path(v) if k in ('photos', 'cache') else v) "
            f"for k, v in json.loads(sys.argv[1]).items()}})))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps({k: str(v) if isinstance(v, Path) else v
                                                                  for k, v in kwargs.items()})],
                         capture_output=True, text=True, check=True)
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=25_000, help="photos to generate (half per class)")
    p.add_argument("--photos", type=Path, default=Path("/tmp/catdog-bench/photos"), help="where they are kept")
    p.add_argument("--cache", type=Path, default=Path("/tmp/catdog-bench/cache"), help="the split's cache folder")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="decoding processes to time")
    p.add_argument("--image-size", type=int, default=150)
    p.add_argument("--epoch-steps", type=int, default=None,
                   help="batches of the training epoch (default: one whole pass over the train split)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--parts", nargs="+", default=["split", "epoch", "pass"], choices=["split", "epoch", "pass"],
                   help="what to measure (epoch and pass need a cache made by split, here or before)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/split_bench.json"))
    args = p.parse_args()

    t0 = time.perf_counter()
    photos = generate(args.photos / str(args.images), args.images)
    print(f"{args.images} photos in {photos} ({time.perf_counter() - t0:.0f} s to generate or find)", flush=True)
    results = {"images": args.images, "cpu_cores": os.cpu_count(), "split": []}
    for workers in args.workers if "split" in args.parts else []:
        row = _in_subprocess("run_split", photos=photos, cache=args.cache, workers=workers,
                             image_size=args.image_size)
        results["split"].append(row)
        print(f"split, {workers} worker(s): {row}", flush=True)
    for row in results["split"]:
        row["speedup"] = round(row["images_per_second"] / results["split"][0]["images_per_second"], 2)
    cache_bytes = sum(f.stat().st_size for f in args.cache.glob("*") if f.is_file())
    results["cache_mb"] = round(cache_bytes / 2**20, 1)
    if "epoch" in args.parts:
        results["epoch"] = _in_subprocess("run_epoch", cache=args.cache, steps=args.epoch_steps,
                                          batch_size=args.batch_size)
        results["epoch"]["peak_over_cache"] = round(results["epoch"]["peak_rss_mb"] / results["cache_mb"], 3)
    if "pass" in args.parts:
        results["pass"] = _in_subprocess("run_pass", cache=args.cache, batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print(f"\n{'what':34s} {'value':>12s}")
    for row in results["split"]:
        print(f"{'split img/s, ' + str(row['workers']) + ' worker(s)':34s} {row['images_per_second']:12.1f}"
              f"  (x{row['speedup']}, {row['seconds']} s)")
        print(f"{'  peak RSS main / workers (MB)':34s} {row['peak_rss_mb']:12.1f}  / {row['peak_rss_workers_mb']}")
    print(f"{'cache on disk (MB)':34s} {results['cache_mb']:12.1f}")
    if "epoch" in results:
        epoch = results["epoch"]
        print(f"{'training epoch peak RSS (MB)':34s} {epoch['peak_rss_mb']:12.1f}  ({epoch['peak_over_cache']:.2f} x "
              f"cache, {epoch['train_images']} images in {epoch['seconds']} s)")
    for name, row in results.get("pass", {}).items():
        print(f"{'data pass, pages ' + name + ': RSS growth (MB)':34s} {row['growth_mb']:12.1f}  "
              f"({row['rss_before_mb']} -> {row['rss_peak_mb']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
