"""The book's augmentation as one batched, per-image random affine warp.

Two Keras APIs, one warp:
- 1st edition, Keras 2.0.8 `ImageDataGenerator`: rotation (degrees), width/height shift (fractions),
  `shear_range` in RADIANS (0.2 rad = 11.5 degrees; Keras switched to degrees only in 2.1.x), `zoom_range`
  drawn independently for x and y in [1 - z, 1 + z], then a horizontal flip; resampled
  nearest-neighbour (`order=0`) with `fill_mode='nearest'` (edge pixels repeated).
- 2nd edition, preprocessing layers: `RandomFlip("horizontal")`, `RandomRotation(0.1)` (a fraction of a
  full turn: +-36 degrees), `RandomZoom(0.2)` (one factor for both axes), bilinear, `fill_mode='reflect'`.

Keras' matrices map OUTPUT pixel coordinates to INPUT ones, with zoom multiplying them (zoom 1.2 samples
a larger area: the picture shrinks). The same convention is used here, composed as Keras composes it
(rotation @ shift @ shear @ zoom, flip applied to the result), in pixel units about the image centre, then
converted to the normalised coordinates of `affine_grid`. Keras 2.0.8 rotates about (w/2 + 0.5, h/2 + 0.5),
one pixel off the true centre; we use the true centre (an offset far below the +-20% shifts).

`resampling`: combined (one warp through the composed matrix: ImageDataGenerator's single
`affine_transform`) | successive (one warp per factor, as the 2nd edition's layers each resample their
input: RandomRotation's output, interpolated and filled, is what RandomZoom interpolates again). Identity
factors (a range of 0) are skipped, so with one active factor both give the same image.

Why not torchvision.transforms.v2 on batches: a v2 transform draws ONE set of random parameters per call,
so every image of a batch would get the same warp; here each image gets its own, in one `grid_sample`, on
whatever device the batch is on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from catdog_lab.schema import Augmentation

FILLS = {"nearest": "border", "reflect": "reflection", "zeros": "zeros"}    # Keras fill_mode -> grid_sample
INTERPOLATIONS = ("nearest", "bilinear")
RESAMPLINGS = ("combined", "successive")
PARAMS = ("angle", "tx", "ty", "shear", "zx", "zy", "flip")


class BatchAugment(nn.Module):
    def __init__(self, rotation_degrees: float = 40.0, width_shift: float = 0.2, height_shift: float = 0.2,
                 shear_radians: float = 0.2, zoom: float = 0.2, zoom_independent: bool = True,
                 horizontal_flip: bool = True, fill: str = "nearest", interpolation: str = "nearest",
                 resampling: str = "combined"):
        super().__init__()
        if fill not in FILLS:
            raise ValueError(f"augmentation.fill: must be one of {', '.join(FILLS)}, got {fill!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"augmentation.interpolation: must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {interpolation!r}")
        self.rotation, self.shear = float(rotation_degrees), float(shear_radians)
        self.width_shift, self.height_shift, self.zoom = float(width_shift), float(height_shift), float(zoom)
        self.zoom_independent, self.horizontal_flip = bool(zoom_independent), bool(horizontal_flip)
        if resampling not in RESAMPLINGS:
            raise ValueError(f"augmentation.resampling: must be one of {', '.join(RESAMPLINGS)}, got {resampling!r}")
        self.fill, self.interpolation, self.resampling = fill, interpolation, resampling

    @classmethod
    def from_config(cls, settings: "Augmentation") -> "BatchAugment":
        """From `augmentation.*`, checked (schema.Augmentation)."""
        keys = ("rotation_degrees", "width_shift", "height_shift", "shear_radians", "zoom", "zoom_independent",
                "horizontal_flip", "fill", "interpolation", "resampling")
        return cls(**{k: getattr(settings, k) for k in keys})

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One random draw per image: angle (radians), tx/ty (fractions of width/height), shear (radians),
        zx/zy (zoom factors), flip (bool)."""
        def uniform(bound):
            return (torch.rand(n, generator=generator) * 2 - 1) * bound

        zx = 1 + uniform(self.zoom)
        zy = 1 + uniform(self.zoom) if self.zoom_independent else zx
        flip = torch.rand(n, generator=generator) < 0.5 if self.horizontal_flip else torch.zeros(n, dtype=torch.bool)
        return {"angle": torch.deg2rad(uniform(self.rotation)), "tx": uniform(self.width_shift),
                "ty": uniform(self.height_shift), "shear": uniform(self.shear), "zx": zx, "zy": zy, "flip": flip}

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images: float N x C x H x W (any value range). Returns the same shape, warped per image."""
        return self.warp(images, self.sample_params(images.shape[0], generator))

    def warp(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply given parameters (see `sample_params`): deterministic, so tests can check it by hand."""
        h, w = images.shape[-2:]
        if self.resampling == "combined":
            return self._resample(images, affine_matrices(params, h, w))
        factors = affine_factors(params, h, w)
        active = {"rotation": self.rotation > 0, "shift": self.width_shift > 0 or self.height_shift > 0,
                  "shear": self.shear > 0, "zoom": self.zoom > 0, "flip": self.horizontal_flip}
        # a layer applied after another samples that one's output: the product order is the layers' order
        for name, pixels in factors.items():
            if active[name]:
                images = self._resample(images, to_theta(pixels, h, w))
        return images

    def _resample(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode=self.interpolation, padding_mode=FILLS[self.fill],
                             align_corners=False)


def affine_matrices(params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """N x 2 x 3 output -> input matrices in `affine_grid`'s normalised (x, y) coordinates.

    Built in pixel units about the centre, in (x = column, y = row) order, as Keras 2.0.8 builds its
    (row, column) matrices: rotation @ shift @ shear @ zoom, with the flip of the output applied last.
    """
    factors = affine_factors(params, height, width)
    pixels = factors["rotation"] @ factors["shift"] @ factors["shear"] @ factors["zoom"] @ factors["flip"]
    return to_theta(pixels, height, width)


def affine_factors(params: dict[str, torch.Tensor], height: int, width: int) -> dict[str, torch.Tensor]:
    """The factors of `affine_matrices`, N x 3 x 3 each in centred pixel units, in product order."""
    angle, shear = params["angle"].double(), params["shear"].double()
    n = angle.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    zeros, ones = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)

    def mat(a, b, c, d, e, f):
        return torch.stack([torch.stack([a, b, c], 1), torch.stack([d, e, f], 1),
                            torch.stack([zeros, zeros, ones], 1)], 1)

    # Keras (row, col): rotation [[cos, -sin], [sin, cos]] -> in (x, y) order the transpose
    rotation = mat(cos, sin, zeros, -sin, cos, zeros)
    # tx: a fraction of the width (columns), ty: of the height (rows); Keras names them the other way round
    shift = mat(ones, zeros, params["tx"].double() * width, zeros, ones, params["ty"].double() * height)
    # Keras (row, col) shear [[1, -sin s], [0, cos s]]: row' = row - sin(s) col, col' = cos(s) col
    shear_m = mat(torch.cos(shear), zeros, zeros, -torch.sin(shear), ones, zeros)
    zoom = mat(params["zy"].double(), zeros, zeros, zeros, params["zx"].double(), zeros)  # Keras zx: rows
    flip = torch.where(params["flip"].bool(), -1.0, 1.0).double()
    flip_m = mat(flip, zeros, zeros, zeros, ones, zeros)
    return {"rotation": rotation, "shift": shift, "shear": shear_m, "zoom": zoom, "flip": flip_m}


def to_theta(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x 3 x 3 centred-pixel matrices -> N x 2 x 3 in `affine_grid`'s normalised coordinates."""
    # normalised -> centred pixels is diag(w/2, h/2); theta = S^-1 M S
    scale = torch.tensor([width / 2, height / 2, 1.0], dtype=torch.float64)
    theta = pixels * scale.view(1, 1, 3) / scale.view(1, 3, 1)
    return theta[:, :2, :].float()

