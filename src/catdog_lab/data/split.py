"""The split stage: pick train/validation/test photos per class, check each one, decode it once.

Outputs (all written atomically):
  <paths.split>/manifest.csv       file, class, split, sha256   (file relative to the source folder)
  <paths.split>/skipped.csv        file, class, reason          (unusable files, photos under two classes)
  <paths.split>/report.json        classes, counts per class and split, what was left out and why, source
  <paths.cache>/<split>.images.npy uint8 N x 3 x S x S, streamed to disk (see data/cache.py)
  <paths.cache>/<split>.pt         {"labels": int64 N, "classes": [...], "files": [...],
                                    "images_file": "<split>.images.npy"}

`data.split.<split>` is a count per class (1000) or a fraction of each class's usable photos (0.8);
`data.split.fractions` ([train, validation, test]) switches to fractions without editing the counts.
Label i is `classes[i]`: the kaggle layout's (cat, dog), or the class folders' (data/discover.py).
Photos are decoded by `data.workers` processes; the result does not depend on how many.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catdog_lab import SPLITS
from catdog_lab.data.cache import ImageWriter, cache_files
from catdog_lab.data.discover import Candidate, discover, stream_name
from catdog_lab.data.images import open_rgb
from catdog_lab.data.sources import sha256_file
from catdog_lab.errors import DataError
from catdog_lab.io import torch_save, write_csv, write_json
from catdog_lab.progress import progress


def write_split(split_dir: Path, result: dict, source: Path) -> dict:
    """<split_dir>/manifest.csv, skipped.csv and report.json from `make_split`'s result; returns the report."""
    write_csv(split_dir / "manifest.csv", result["manifest"], ["file", "class", "split", "sha256"])
    write_csv(split_dir / "skipped.csv", result["skipped"], ["file", "class", "reason"])
    report = result["report"] | {"source": str(source)}
    write_json(split_dir / "report.json", report)
    return report


def resolve_workers(value) -> int:
    """`data.workers`: a positive number of decoding processes, or "auto" (one per CPU core)."""
    return (os.cpu_count() or 1) if value == "auto" else int(value)


def _decode(job: tuple[Path, tuple, int]) -> tuple[bytes | None, str, str]:
    """Worker: (pixels as bytes or None, note or skip reason, sha256 of the file). `limits`: open_rgb's
    (max_pixels, min_side, max_aspect)."""
    path, limits, image_size = job
    image, note = open_rgb(path, *limits)
    # NumPy, not torch: torch's OpenMP threads in every worker would oversubscribe the cores
    pixels = resize_to_array(image, image_size).tobytes() if image is not None else None
    return pixels, note, sha256_file(path)


def _decoded(cands: list[Candidate], limits: tuple, image_size: int, pool: ProcessPoolExecutor | None):
    """(candidate, pixels, note, sha) in the candidates' order, decoded inline or by the pool."""
    jobs = ((cand.path, limits, image_size) for cand in cands)
    results = pool.map(_decode, jobs, chunksize=32) if pool else map(_decode, jobs)
    yield from zip(cands, results)


# what a training stage's one-line errors advise when the cached split was made with other settings
SPLIT_AGAIN = ("split again with these settings (dvc repro split; on the CLI, catdog stage=split and "
               "upstream=<its folder>)")


def split_counts(split) -> dict:
    """{train, validation, test}: data.split's counts per class, or `data.split.fractions` when set
    (`split`: the checked section, schema.Split)."""
    if split.fractions is not None:
        return {name: float(value) for name, value in zip(SPLITS, split.fractions)}
    return {name: getattr(split, name) for name in SPLITS}


def class_counts(counts: dict, usable: int | None) -> dict[str, int]:
    """Counts per split for one class: the given counts, or fractions of `usable` photos, rounded down, with
    what the rounding leaves going to train when the fractions add up to 1 (30 photos at 0.5/0.25/0.25:
    16/7/7, not 15/7/7 and one photo in no split)."""
    if all(isinstance(count, int) and not isinstance(count, bool) for count in counts.values()):
        return dict(counts)
    shares = {split: math.floor(float(counts[split]) * usable) for split in SPLITS}
    if abs(sum(float(counts[split]) for split in SPLITS) - 1) < 1e-9:
        shares["train"] = usable - shares["validation"] - shares["test"]
    return shares


SPLIT_ORDERS = ("shuffle", "index")


def _settings(asked: dict, seed, order) -> dict[str, object]:
    """data.split as the keys a user sets: train/validation/test counts (or fractions), seed, order;
    fractions rounded, so that 0.7 read back from JSON equals the config's 0.7."""
    if any(isinstance(value, float) for value in asked.values()):
        return {"fractions": [round(float(asked[name]), 9) for name in SPLITS], "seed": seed, "order": order}
    return {name: asked[name] for name in SPLITS} | {"seed": seed, "order": order}


def check_split_settings(split_dir: Path, split) -> None:
    """Refuse to train on a split made with other `data.split` settings than the job's (`split`: the checked
    section): the run would record counts and a seed that are not the ones its photos were split with
    (`catdog stage=scratch data.split.train=500` on a split of 1000). A report written before it recorded
    its settings is not checked."""
    path = Path(split_dir) / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    if "asked" not in report:
        return
    made = _settings(report["asked"], report.get("seed"), report.get("order"))
    here = _settings(split_counts(split), split.seed, split.order)
    differ = [key for key in dict.fromkeys([*here, *made]) if made.get(key) != here.get(key)]
    if not differ:
        return
    fix = [f"data.split.{key}={made[key]}".replace(" ", "") for key in differ if key in made]
    if "fractions" in here and "fractions" not in made:
        fix.append("data.split.fractions=null")
    raise DataError(", ".join(f"data.split.{key}: {here[key]}" for key in differ if key in here)
                    + f", but the split in {split_dir} was made with "
                    + ", ".join(f"{key}={made[key]}" for key in differ if key in made)
                    + f": {SPLIT_AGAIN}, or set " + " ".join(fix))


def _shortfall(label: str, have: str, root: Path, need: int, counts: dict, detail: str = "") -> str:
    return (f"class {label!r}: only {have} under {root}{detail}, but data.split asks for {need} "
            f"({counts['train']}+{counts['validation']}+{counts['test']}); to split each class by fractions "
            f"instead: data.split.fractions=[0.7,0.15,0.15]")


def make_split(root: Path, counts: dict, seed: int, image_size: int, max_pixels: int, cache_dir: Path,
               workers: int = 1, layout: str = "kaggle", classes=None, min_side: int = 1,
               max_aspect: float = math.inf, order: str = "shuffle") -> dict:
    """min_side, max_aspect: data.min_image_side and data.max_aspect_ratio (the defaults check neither);
    images outside them are skipped and listed, like unreadable ones.
    `order`: shuffle (each class's photos in a seeded random order) | index (sorted by file id, as the
    book's copy loop: the lowest ids train, the next validate, the next test)."""
    if order not in SPLIT_ORDERS:
        raise DataError(f"data.split.order: must be one of {', '.join(SPLIT_ORDERS)}, got {order!r}")
    found = discover(root, layout, classes)
    names, candidates = found.classes, found.candidates      # this split's classes, in label order
    by_class: dict[str, list[Candidate]] = {label: [] for label in names}
    for cand in candidates:
        by_class[cand.label].append(cand)
    as_fractions = not all(isinstance(count, int) and not isinstance(count, bool) for count in counts.values())
    need = None if as_fractions else sum(counts.values())     # fractions: every photo of the class is checked

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    skipped, converted, inspected = [], [], Counter()
    usable: dict[str, list[tuple[Candidate, str]]] = {}
    if need is not None:     # a class with too few files fails now, not after decoding all the others
        for label in names:
            if len(by_class[label]) < need:
                raise DataError(_shortfall(label, f"{len(by_class[label])} images", root, need, counts))
    total = need * len(names) if need else len(candidates)
    bar = progress(total=total, desc=f"split: check + decode ({workers} worker{'s' * (workers > 1)})", unit="img")
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for position, label in enumerate(names):
            ordered = sorted(by_class[label], key=lambda cand: cand.key)
            if order == "shuffle":
                # per-class stream: stable for a seed (named by the class's position, see stream_name)
                random.Random(f"{seed}:{stream_name(position, len(names))}").shuffle(ordered)
            usable[label] = []
            # decoded pixels go straight to a per-class scratch file: memory stays bounded
            with open(cache_dir / f".{names.index(label)}.pixels.tmp", "wb") as scratch:
                limits = (max_pixels, min_side, max_aspect)
                for cand, (pixels, note, sha) in _decoded(ordered, limits, image_size, pool):
                    if need is not None and len(usable[label]) == need:
                        break
                    inspected[label] += 1
                    if pixels is None:
                        skipped.append({"file": cand.rel, "class": label, "reason": note})
                        continue
                    if note:
                        converted.append({"file": cand.rel, "class": label, "note": note})
                    scratch.write(pixels)
                    usable[label].append((cand, sha))
                    bar.update(1)
            if need is not None and len(usable[label]) < need:
                unusable = sum(1 for row in skipped if row["class"] == label)
                raise DataError(_shortfall(label, f"{len(usable[label])} usable images", root, need, counts,
                                           f" ({len(ordered)} found, {unusable} unusable)"))
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)

    per_class = {label: class_counts(counts, len(usable[label])) for label in names}
    # fractions adding up to less than 1 leave photos out on purpose: say how many, so none goes unnoticed
    unused = {label: len(usable[label]) - sum(per_class[label].values()) for label in names} if as_fractions else {}
    for label in names:
        if min(per_class[label].values()) < 1:
            # only fractions get here (counts stop earlier, in _shortfall): the smallest needs 1/f photos
            need = math.ceil(1 / min(float(counts[split]) for split in SPLITS) - 1e-9)
            asked = ",".join(f"{float(counts[split]):g}" for split in SPLITS)
            raise DataError(f"class {label!r}: {len(usable[label])} usable image(s) leave a split empty at "
                            f"data.split.fractions=[{asked}]: every split needs one, so at least {need} photos "
                            "of each class")
    skipped += [{"file": file, "class": "/".join(row["classes"]), "reason": "same photo under classes "
                 + ", ".join(row["classes"])} for row in found.conflicts for file in row["files"]]
    skipped += found.damaged
    manifest = _write_cache(cache_dir, usable, per_class, image_size, names)
    report = {
        **found.report(),
        "counts": {split: {label: per_class[label][split] for label in names} for split in SPLITS},
        "candidates": {label: len(by_class[label]) for label in names},
        "inspected": dict(inspected),
        "skipped": len(skipped),
        "skipped_reasons": dict(Counter(row["reason"].split(":")[0] for row in skipped)),
        "converted": converted,
        "unused_by_fractions": {label: n for label, n in unused.items() if n},
        "seed": seed,
        "order": order,
        "asked": dict(counts),      # data.split as counts or fractions per class: `check_split_settings`
        "image_size": image_size,
    }
    print(f"[split] {len(manifest)} images in the split, {len(skipped)} skipped, {len(converted)} converted")
    print(f"[split] {len(names)} classes: " + ", ".join(
        f"{label} {'/'.join(str(per_class[label][split]) for split in SPLITS)}" for label in names)
        + " (train/validation/test)")
    left_out = found.left_out_line()
    if left_out:
        print(f"[split] {left_out}")
    if any(unused.values()):
        print(f"[split] data.split.fractions add up to {sum(float(counts[s]) for s in SPLITS):g}: "
              f"{sum(unused.values())} usable photo(s) in no split (" + ", ".join(
                  f"{label} {n}" for label, n in unused.items() if n) + ")")
    return {"manifest": manifest, "skipped": skipped, "report": report}


def _write_cache(cache_dir: Path, usable: dict, per_class: dict, image_size: int, names) -> list[dict]:
    """Copy each class's scratch file into the per-split .npy files (a partial file never stays)."""
    record = 3 * image_size * image_size
    manifest, starts = [], {label: 0 for label in names}
    # the three files' common id (the photos, in order, and the counts): a split killed between writing
    # train.pt and test.pt leaves files of two splits, which `split_classes` then refuses to train on
    split_id = hashlib.sha256(json.dumps([[label, per_class[label], [sha for _, sha in usable[label]]]
                                          for label in names]).encode()).hexdigest()[:16]
    try:
        for split in SPLITS:
            meta_path, images_path = cache_files(cache_dir, split)
            writer = ImageWriter(images_path, sum(per_class[label][split] for label in names), image_size)
            labels, files = [], []
            try:
                for label in names:
                    first, count = starts[label], per_class[label][split]
                    _copy_records(cache_dir / f".{names.index(label)}.pixels.tmp", first * record, count * record,
                                  writer)
                    for cand, sha in usable[label][first:first + count]:
                        manifest.append({"file": cand.rel, "class": label, "split": split, "sha256": sha})
                        labels.append(names.index(label))
                        files.append(cand.rel)
                    starts[label] += count
            except BaseException:
                writer.abort()
                raise
            writer.close()
            torch_save({"labels": torch.tensor(labels, dtype=torch.long), "classes": list(names), "files": files,
                        "images_file": images_path.name, "split_id": split_id}, meta_path)
    finally:
        for label in names:
            (cache_dir / f".{names.index(label)}.pixels.tmp").unlink(missing_ok=True)
    return manifest


def _copy_records(scratch_path: Path, offset: int, size: int, writer: ImageWriter) -> None:
    """A class's share of a split is contiguous in its scratch file: copy it in large blocks."""
    block = (1 << 24) // writer.record * writer.record
    with open(scratch_path, "rb") as scratch:
        scratch.seek(offset)
        while size:
            data = scratch.read(min(size, block))
            writer.append_raw(data)
            size -= len(data)


def resize_to_array(image: Image.Image, size: int) -> np.ndarray:
    """uint8 3 x size x size, C-contiguous (NumPy only: decoding workers need no torch threads)."""
    resized = image.resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


def resize_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    return torch.from_numpy(resize_to_array(image, size))


def manifest_hash(split_dir: Path) -> str | None:
    path = Path(split_dir) / "manifest.csv"
    return sha256_file(path)[:12] if path.exists() else None
