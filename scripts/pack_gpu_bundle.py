"""Pack what a GPU run of the whole matrix needs beside the code into one folder under 64 MiB: the split's
photos pre-resized to each profile's image size, and the VGG16 conv base in float16.

    python scripts/pack_gpu_bundle.py --out bundle/ --weights ~/.cache/catdog-lab/vgg16_keras_imagenet_features.pt \\
        data.source.path=/data/dogs-vs-cats-4000

Photos: the split stage runs on the source at every size in --sizes, and each image of its decoded cache
(exactly the pixels training would see) is written as a JPEG of that size to <out>/photos-<size>/, under a
`cat.<id>.jpg` / `dog.<id>.jpg` name. The split stage on the GPU machine decodes them again: at the packed
size nothing is resized, so the only change is the JPEG round trip; a size in --derive (default 150, the
`book` profile) is made by that split from the smallest larger packed size (default 180, `book2`). This
script runs those splits here and prints their pixel error against the source's own cache. Why not both
sizes: the 4,000 photos decoded are 270 MB at 150 px and 389 MB at 180 px; as JPEGs (quality 90, 4:4:4) they
measured 35.1 and 47.4 MiB, and the float16 VGG16 takes 28.1 MiB of the 64, which leaves about 35 MiB for
photos. One size at quality 85, 4:2:0 measured 32.5 MiB (60.9 MiB with the weights).

Weights: every tensor of the conv base cast to float16 (half the bytes). A load casts them back into the
float32 parameters, so training computes as usual; the values are rounded to 11 significant bits, so the
weights' content md5 differs from the float32 file's (both printed), and the stages record
`weights_dtype: float16` in their metrics.

The photo set differs from the original (its manifest hash, sha256 per file, differs). The split assignment
(which photo is train, validation or test) is the source's when the split uses every photo of the pool (the
4,000-photo set with 1000/500/500 per class); the script checks it and says so.

Overrides go last, after `--` when the option before them takes several values (--sizes, --derive).

<out>/bundle.json records sizes, quality, counts, pixel errors, the weights' md5s and the byte total, which
is also printed; the script fails if the folder is over --limit-mib.
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from catdog_lab import SPLITS
from catdog_lab.config import compose
from catdog_lab.convert_weights import content_md5
from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.errors import exit_on_user_error
from catdog_lab.io import torch_save, write_json
from catdog_lab.models.components.backbones import KERAS_VGG16_FORMAT, build_vgg16, load_weights_file
from catdog_lab.stages.split import split

WEIGHTS_FILE = "vgg16_features_fp16.pt"
LIMIT_MIB = 64              # what travels to the GPU machine beside the code
FLAT_NAME = re.compile(r"^(cat|dog)\.\d+\.jpg$")
SUBSAMPLING = {"4:4:4": 0, "4:2:0": 2}      # PIL's codes: full chroma, or chroma halved both ways
# The defaults fit the 4,000 photos and VGG16 in 64 MiB (see the module docstring for the measured sizes)
DEFAULT_SIZES, DEFAULT_DERIVED, DEFAULT_QUALITY, DEFAULT_SUBSAMPLING = (180,), (150,), 85, "4:2:0"


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


def source_photos(overrides: list[str], size: int, work: Path) -> tuple[Path, dict]:
    """The split stage at `size` on the source: (its manifest, file -> (image, label, split))."""
    cfg = _split_config(Path(compose(overrides).data.source.path), size, work / f"source-{size}", overrides)
    split(cfg)
    return Path(cfg.paths.split) / "manifest.csv", _read_cache(Path(cfg.paths.cache))


def write_jpegs(source: dict, folder: Path, quality: int, subsampling: str) -> dict[str, str]:
    """Every decoded image as a JPEG in `folder`; returns bundle name -> source file."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names, taken = {}, set()
    for file, (image, label, _) in source.items():
        name = bundle_name(file, label, taken)
        taken.add(name)
        names[name] = file
        buffer = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=quality,
                                                       subsampling=SUBSAMPLING[subsampling])
        (folder / name).write_bytes(buffer.getvalue())
    return names


def check_photos(folder: Path, size: int, source: dict, names: dict[str, str], overrides: list[str],
                 work: Path) -> dict:
    """The split stage at `size` on the bundle's photos, as the GPU machine will run it, against the source's
    cache at that size: pixel error (JPEG round trip, and the resize when `folder` holds larger photos) and
    whether every photo lands in the same split."""
    cfg = _split_config(folder, size, work / f"bundle-{size}", overrides)
    split(cfg)
    packed = _read_cache(Path(cfg.paths.cache))
    errors = [np.abs(image.astype(np.int16) - source[names[name]][0].astype(np.int16)) for name, (image, _, _)
              in packed.items()]
    return {"size": size, "from": folder.name, "images": len(packed),
            "mean_abs_pixel_error": round(float(np.mean([e.mean() for e in errors])), 3),
            "max_abs_pixel_error": int(max(int(e.max()) for e in errors)),
            "same_split_as_source": len(packed) == len(source) and all(
                source[names[name]][2] == where for name, (_, _, where) in packed.items())}


def packed_folder(bundle: Path, size: int) -> Path | None:
    """The bundle's photos for `size`: packed at that size, else the smallest packed size above it (the split
    stage resizes them down); None when there is neither."""
    packed = sorted(int(p.name.split("-")[1]) for p in Path(bundle).glob("photos-*") if p.name.split("-")[1].isdigit())
    fits = [s for s in packed if s >= size]
    return photos_dir(bundle, fits[0]) if fits else None


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


def pack(out: Path, sizes: list[int], quality: int, weights: Path, overrides: list[str], subsampling: str = "4:2:0",
         derived: list[int] = ()) -> dict:
    """Photos at every size in `sizes`; each size in `derived` is checked as the split will make it from the
    smallest packed size above it (nothing more is written for it)."""
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    with tempfile.TemporaryDirectory(prefix="catdog-pack-") as work:
        work, names = Path(work), {}
        for size in sorted(set(sizes)):
            manifest, source = source_photos(overrides, size, work)
            shutil.copy(manifest, out / f"source_manifest-{size}.csv")      # what was packed, for the record
            names = write_jpegs(source, photos_dir(out, size), quality, subsampling)
            photos.append({**check_photos(photos_dir(out, size), size, source, names, overrides, work),
                           "bytes": folder_bytes(photos_dir(out, size))})
        for size in sorted(set(derived) - set(sizes)):
            folder = packed_folder(out, size)
            if folder is None:
                raise SystemExit(f"error: no packed size covers {size} px: add --sizes {size} or a larger one")
            _, source = source_photos(overrides, size, work)
            photos.append(check_photos(folder, size, source, names, overrides, work))
    info = {"photos": photos, "jpeg_quality": quality, "jpeg_subsampling": subsampling,
            "weights": pack_weights(weights, out)}
    write_json(out / "bundle.json", info)
    info["total_bytes"] = folder_bytes(out)
    write_json(out / "bundle.json", info)   # the total counts bundle.json's first version: a few bytes off at most
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    p.add_argument("--weights", type=Path, required=True, help="the VGG16 weights file (float32) to halve")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   help="image sizes to pack (default: %(default)s)")
    p.add_argument("--derive", type=int, nargs="*", default=list(DEFAULT_DERIVED),
                   help="sizes the split makes from a larger packed size, checked here (default: %(default)s)")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality (default %(default)s)")
    p.add_argument("--subsampling", default=DEFAULT_SUBSAMPLING, choices=SUBSAMPLING,
                   help="JPEG chroma subsampling (default %(default)s)")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="fail above this size (default %(default)s)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the split: data.source.path=... data.split.*")
    args = p.parse_args(argv)
    if not 1 <= args.quality <= 95:
        p.error(f"--quality must be in 1..95 (PIL's useful range), got {args.quality}")
    info = exit_on_user_error(pack, args.out.resolve(), args.sizes, args.quality, args.weights.expanduser(),
                              args.overrides, args.subsampling, args.derive)
    for row in info["photos"]:
        made = (f"{row['images']} JPEGs ({args.subsampling}, quality {args.quality}), {row['bytes'] / 2**20:.1f} MiB"
                if "bytes" in row else f"made by the split from {row['from']}")
        same = "the source's" if row["same_split_as_source"] else "DIFFERS from the source"
        print(f"photos {row['size']} px: {made}; pixel error against the source's cache: mean "
              f"{row['mean_abs_pixel_error']}, max {row['max_abs_pixel_error']} (of 255); split assignment {same}")
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
