"""What the 2nd edition's successive resamplings do to the pictures (docs/reproducing-the-book.md, section 7).
Not a test, and not an accuracy: the images' side of the difference, measured on real photos.

    python benchmarks/resampling.py --cache data/cache [--split validation] [--images 1000]

For the same random draws of `profile=book2`'s augmentation (flip, rotation +-36 degrees, zoom +-20%,
bilinear, reflect), it warps each photo once through the composed matrix (`resampling: combined`, ours) and
once per layer (`successive`, the notebook's RandomRotation then RandomZoom), and prints the mean absolute
difference between the two (0-255 grey levels) and how much fine detail each keeps: the variance of the
image's Laplacian, relative to the unwarped photo's.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from catdog_lab.config import compose
from catdog_lab.data.augment import BatchAugment
from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.schema import Augmentation, check

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def detail(images: torch.Tensor) -> float:
    """Variance of the Laplacian of the grey image, inside a 20% margin (no fill pixels counted)."""
    grey = images.mean(1, keepdim=True)
    lap = F.conv2d(grey, LAPLACIAN)
    h, w = lap.shape[-2:]
    return float(lap[..., h // 5: h - h // 5, w // 5: w - w // 5].var())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="the split stage's image cache (paths.cache)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_cached_split(args.cache, args.split)["images"][: args.images].float()
    settings = check(compose(["profile=book2"]), "augmentation", Augmentation)
    combined = BatchAugment.from_config(settings.model_copy(update={"resampling": "combined"}))
    successive = BatchAugment.from_config(settings.model_copy(update={"resampling": "successive"}))
    diffs, once, twice = [], [], []
    generator = torch.Generator().manual_seed(args.seed)
    for start in range(0, len(images), 100):
        batch = images[start:start + 100]
        params = combined.sample_params(len(batch), generator)
        a, b = combined.warp(batch, params), successive.warp(batch, params)
        diffs.append((a - b).abs().mean().item() * len(batch))
        once.append(detail(a) / detail(batch))
        twice.append(detail(b) / detail(batch))
    n = len(images)
    print(f"{n} {args.split} photos at {images.shape[-1]} px, profile=book2's augmentation, seed {args.seed}")
    print(f"mean |combined - successive|: {sum(diffs) / n:.2f} grey levels (0-255)")
    print(f"fine detail kept (Laplacian variance / the photo's): combined {sum(once) / len(once):.3f}, "
          f"successive {sum(twice) / len(twice):.3f}")


if __name__ == "__main__":
    main()
