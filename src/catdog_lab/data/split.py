"""The split stage: pick train/validation/test photos per class, check each one, decode it once.

Outputs (all written atomically):
  <paths.split>/manifest.csv   file, class, split, sha256   (file relative to the source folder)
  <paths.split>/skipped.csv    file, class, reason          (unusable files, never a crash)
  <paths.split>/report.json    counts, conversions, source
  <paths.cache>/<split>.pt     {"images": uint8 N x 3 x S x S, "labels": int64 N, "files": [...]}
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from catdog_lab import CLASSES
from catdog_lab.data.images import Candidate, find_candidates, label_index, open_rgb
from catdog_lab.data.sources import resolve_source
from catdog_lab.errors import DataError
from catdog_lab.io import torch_save, write_csv, write_json

SPLITS = ("train", "validation", "test")


def split_and_cache(cfg) -> dict:
    """Run the whole split stage from a composed config; returns the report dict."""
    root = resolve_source(cfg.data.source)
    counts = {s: int(cfg.data.split[s]) for s in SPLITS}
    result = make_split(root, counts, seed=int(cfg.data.split.seed), image_size=int(cfg.data.image_size),
                        max_pixels=int(cfg.data.max_image_pixels))
    split_dir, cache_dir = Path(cfg.paths.split), Path(cfg.paths.cache)
    write_csv(split_dir / "manifest.csv", result["manifest"], ["file", "class", "split", "sha256"])
    write_csv(split_dir / "skipped.csv", result["skipped"], ["file", "class", "reason"])
    for split in SPLITS:
        torch_save(result["tensors"][split], cache_dir / f"{split}.pt")
    report = result["report"] | {"source": str(root)}
    write_json(split_dir / "report.json", report)
    return report


def make_split(root: Path, counts: dict[str, int], seed: int, image_size: int, max_pixels: int) -> dict:
    candidates = find_candidates(root)
    if not candidates:
        raise DataError(f"no cat/dog images found under {root} (expected cat.<id>.jpg files or Cat/ Dog/ folders)")
    need = sum(counts.values())
    by_class: dict[str, list[Candidate]] = {c: [] for c in CLASSES}
    for cand in candidates:
        by_class[cand.label].append(cand)

    manifest, skipped, converted = [], [], []
    tensors = {s: {"images": [], "labels": [], "files": []} for s in SPLITS}
    inspected = Counter()
    progress = tqdm(total=need * len(CLASSES), desc="split: check + decode", unit="img", mininterval=1.0)
    for label in CLASSES:
        pool = sorted(by_class[label], key=lambda c: c.key)
        random.Random(f"{seed}:{label}").shuffle(pool)       # per-class stream: stable for a seed
        usable = []
        for cand in pool:
            if len(usable) == need:
                break
            inspected[label] += 1
            image, note = open_rgb(cand.path, max_pixels)
            if image is None:
                skipped.append({"file": cand.rel, "class": label, "reason": note})
                continue
            if note:
                converted.append({"file": cand.rel, "class": label, "note": note})
            usable.append((cand, resize_to_tensor(image, image_size)))
            progress.update(1)
        if len(usable) < need:
            progress.close()
            raise DataError(
                f"class {label!r}: only {len(usable)} usable images under {root} "
                f"({len(pool)} found, {sum(1 for s in skipped if s['class'] == label)} unusable), "
                f"but data.split asks for {need} ({counts['train']}+{counts['validation']}+{counts['test']})"
            )
        start = 0
        for split in SPLITS:
            for cand, tensor in usable[start:start + counts[split]]:
                manifest.append({"file": cand.rel, "class": label, "split": split, "sha256": _sha256(cand.path)})
                tensors[split]["images"].append(tensor)
                tensors[split]["labels"].append(label_index(label))
                tensors[split]["files"].append(cand.rel)
            start += counts[split]
    progress.close()

    packed = {}
    for split in SPLITS:
        t = tensors[split]
        packed[split] = {"images": torch.stack(t["images"]), "labels": torch.tensor(t["labels"], dtype=torch.long),
                         "files": t["files"]}
    report = {
        "counts": {s: {c: sum(1 for m in manifest if m["split"] == s and m["class"] == c) for c in CLASSES}
                   for s in SPLITS},
        "candidates": {c: len(by_class[c]) for c in CLASSES},
        "inspected": dict(inspected),
        "skipped": len(skipped),
        "skipped_reasons": dict(Counter(s["reason"].split(":")[0] for s in skipped)),
        "converted": converted,
        "seed": seed,
        "image_size": image_size,
    }
    print(f"[split] {len(manifest)} images in the split, {len(skipped)} skipped, {len(converted)} converted")
    return {"manifest": manifest, "skipped": skipped, "report": report, "tensors": packed}


def resize_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    resized = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_hash(split_dir: Path) -> str | None:
    path = Path(split_dir) / "manifest.csv"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else None
