"""Pack what a GPU run of the whole matrix needs beside the code into one folder under 64 MiB: the split's
photos pre-resized to each profile's image size, and the VGG16 conv base in float16.

    python scripts/pack_gpu_bundle.py --out bundle/ --weights ~/.cache/catdog-lab/vgg16_keras_imagenet_features.pt \\
        data.source.path=/data/dogs-vs-cats-4000

Photos: the split stage runs on the source at every size in --sizes (150: `book`, 180: `book2`), and each
image of its decoded cache (exactly the pixels training would see) is written as a JPEG of that size to
<out>/photos-<size>/, under a `cat.<id>.jpg` / `dog.<id>.jpg` name. The split stage on the GPU machine decodes
them once more; an image already at the target size is not resized again, so the only change is the JPEG
round trip, whose mean and largest pixel error this script measures by running that split here. The 4,000
photos of the book's pool are 181 MB as Kaggle's JPEGs and 270 MB decoded at 150 px, hence the re-encoding.

Weights: every tensor of the conv base cast to float16 (half the bytes). A load casts them back into the
float32 parameters, so training computes as usual; the values are rounded to 11 significant bits, so the
weights' content md5 differs from the float32 file's (both printed), and the stages record
`weights_dtype: float16` in their metrics.

The photo set differs from the original (its manifest hash, sha256 per file, differs), so the runs on it
land in a ledger folder of their own. The split assignment (which photo is train, validation or test) is the
source's when the split uses every photo of the pool (the 4,000-photo set with 1000/500/500 per class); the
script checks it and says so.

<out>/bundle.json records sizes, quality, counts, pixel errors, the weights' md5s and the byte total, which
is also printed; the script fails if the folder is over --limit-mib.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catdog_lab import SPLITS
from catdog_lab.config import compose
from catdog_lab.convert_weights import content_md5
from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.entry import exit_on_user_error
from catdog_lab.io import torch_save, write_json
from catdog_lab.models.components.backbones import KERAS_VGG16_FORMAT, build_vgg16, load_weights_file
from catdog_lab.stages.split import split

WEIGHTS_FILE = "vgg16_features_fp16.pt"
LIMIT_MIB = 64              # what travels to the GPU machine beside the code
FLAT_NAME = re.compile(r"^(cat|dog)\.\d+\.jpg$")


def photos_dir(bundle: Path, size: int) -> Path:
    """Where the bundle keeps the photos of one image size (the matrix command reads it from here)."""
    return Path(bundle) / f"photos-{size}"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _split_config(source: Path, size: int, work: Path, overrides: list[str]):
    return compose([*overrides, f"data.source.path={source}", f"data.image_size={size}", "tracking.enabled=false",
                    f"paths.split={work}/split", f"paths.cache={work}/cache"])


def _read_cache(cache: Path) -> dict[str, tuple[np.ndarray, int, str]]:
    """file -> (uint8 3 x S x S image, label, split) over every split of a decoded cache."""
    out = {}
    for name in SPLITS:
        data = load_cached_split(cache, name)
        images = data["images"].numpy()
        for i, (file, label) in enumerate(zip(data["files"], data["labels"].tolist())):
            out[file] = (images[i], label, name)
    return out


def bundle_name(file: str, label: int, taken: set[str]) -> str:
    """The photo's own name when it is already `cat.<id>.jpg` (the split then sorts and shuffles the same
    names: the same assignment), else `<class>.<n>.jpg` with the next free number."""
    base = Path(file).name
    if FLAT_NAME.match(base) and base not in taken:
        return base
    cls, n = ("cat", "dog")[label], len(taken)
    while f"{cls}.{n}.jpg" in taken:
        n += 1
    return f"{cls}.{n}.jpg"


def pack_photos(overrides: list[str], out: Path, size: int, quality: int, work: Path) -> dict:
    """The split at `size` on the source, its cache written as JPEGs, then the split again on them: the
    round trip's pixel error and whether the assignment is the source's."""
    cfg = _split_config(Path(compose(overrides).data.source.path), size, work / f"source-{size}", overrides)
    split(cfg)
    source = _read_cache(Path(cfg.paths.cache))
    folder = photos_dir(out, size)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names, taken = {}, set()
    for file, (image, label, _) in source.items():
        name = bundle_name(file, label, taken)
        taken.add(name)
        names[name] = file
        buffer = io.BytesIO()       # 4:4:4: no chroma halving, which costs more than it saves at 150 px
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=quality, subsampling=0)
        (folder / name).write_bytes(buffer.getvalue())
    check = _split_config(folder, size, work / f"bundle-{size}", overrides)
    split(check)
    packed = _read_cache(Path(check.paths.cache))
    errors = [np.abs(image.astype(np.int16) - source[names[name]][0].astype(np.int16)) for name, (image, _, _)
              in packed.items()]
    same_split = all(source[names[name]][2] == where for name, (_, _, where) in packed.items())
    return {"size": size, "images": len(names), "bytes": folder_bytes(folder),
            "mean_abs_pixel_error": round(float(np.mean([e.mean() for e in errors])), 3),
            "max_abs_pixel_error": int(max(int(e.max()) for e in errors)), "same_split_as_source": same_split,
            "source_manifest": str(Path(cfg.paths.split) / "manifest.csv")}


def pack_weights(weights: Path, out: Path) -> dict:
    """The conv base's tensors in float16, in the weights file's own format (preprocessing kept)."""
    state, spec = load_weights_file(weights)
    state = {k: v for k, v in state.items() if k.startswith("features.")}       # no classifier: not used
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    target = out / WEIGHTS_FILE
    torch_save({"format": KERAS_VGG16_FORMAT, "state_dict": half, "preprocessing": dict(spec),
                "source": f"float16 copy of {weights.name} (content md5 {content_md5(state)}) made by "
                          f"scripts/pack_gpu_bundle.py"}, target)
    build_vgg16(str(target))            # the stages' loader takes it (raises WeightsError otherwise)
    return {"file": WEIGHTS_FILE, "bytes": target.stat().st_size, "md5_float32": content_md5(state),
            "md5_float16": content_md5(half), "dtype": "float16"}


def pack(out: Path, sizes: list[int], quality: int, weights: Path, overrides: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="catdog-pack-") as work:
        photos = [pack_photos(overrides, out, size, quality, Path(work)) for size in sizes]
        for row in photos:                  # the manifest it came from, for the record (small)
            shutil.copy(row.pop("source_manifest"), out / f"source_manifest-{row['size']}.csv")
    info = {"photos": photos, "jpeg_quality": quality, "weights": pack_weights(weights, out)}
    write_json(out / "bundle.json", info)
    info["total_bytes"] = folder_bytes(out)
    write_json(out / "bundle.json", info)   # the total counts bundle.json's first version: a few bytes off at most
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    p.add_argument("--weights", type=Path, required=True, help="the VGG16 weights file (float32) to halve")
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 180],
                   help="image sizes to pack (default: 150 for `book`, 180 for `book2`)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the packed photos (default %(default)s)")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="fail above this size (default %(default)s)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the split: data.source.path=... data.split.*")
    args = p.parse_args(argv)
    if not 1 <= args.quality <= 95:
        p.error(f"--quality must be in 1..95 (PIL's useful range), got {args.quality}")
    info = exit_on_user_error(pack, args.out.resolve(), args.sizes, args.quality, args.weights.expanduser(),
                              args.overrides)
    for row in info["photos"]:
        print(f"photos {row['size']} px: {row['images']} JPEGs (quality {args.quality}), {row['bytes'] / 2**20:.1f} MiB, "
              f"pixel error mean {row['mean_abs_pixel_error']} max {row['max_abs_pixel_error']} (of 255), "
              f"split assignment {'the source' + chr(39) + 's' if row['same_split_as_source'] else 'DIFFERS from the source'}")
    w = info["weights"]
    print(f"weights {w['file']}: float16, {w['bytes'] / 2**20:.1f} MiB, content md5 {w['md5_float16']} "
          f"(float32 source {w['md5_float32']})")
    total = info["total_bytes"] / 2**20
    print(f"bundle {args.out}: {info['total_bytes']:,} bytes = {total:.1f} MiB (limit {args.limit_mib:g} MiB)")
    if total > args.limit_mib:
        print(f"error: the bundle is {total:.1f} MiB, over {args.limit_mib:g} MiB: lower --quality or pack fewer "
              f"--sizes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
