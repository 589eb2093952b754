"""The book's ImageDataGenerator as one batched, per-image random affine warp.

Why not torchvision.transforms.v2 on batches: a v2 transform draws ONE set of random parameters
per call, so applied to a batch every image gets the same rotation/shift/flip; and v2's affine
has no "nearest" fill. Here each image gets its own parameters and the warp is one
`grid_sample` with `padding_mode="border"` (= Keras' fill_mode="nearest"), on whatever device
the batch is on. The transforms v2 `RandomAffine` semantics (degrees, translate, scale, shear)
are kept.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn


class BatchAugment(nn.Module):
    def __init__(self, rotation_degrees=40.0, width_shift=0.2, height_shift=0.2, shear_degrees=0.2,
                 zoom=0.2, horizontal_flip=True, fill="nearest"):
        super().__init__()
        self.rotation, self.shear = float(rotation_degrees), float(shear_degrees)
        self.width_shift, self.height_shift, self.zoom = float(width_shift), float(height_shift), float(zoom)
        self.horizontal_flip, self.fill = bool(horizontal_flip), fill

    @classmethod
    def from_config(cls, cfg) -> "BatchAugment":
        return cls(**{k: cfg[k] for k in ("rotation_degrees", "width_shift", "height_shift", "shear_degrees",
                                           "zoom", "horizontal_flip", "fill")})

    def sample_matrices(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """n x 2 x 3 affine matrices in normalised [-1, 1] coordinates (output -> input sampling)."""
        def uniform(low, high):
            return torch.rand(n, generator=generator) * (high - low) + low

        angle = torch.deg2rad(uniform(-self.rotation, self.rotation))
        shear = torch.deg2rad(uniform(-self.shear, self.shear))
        scale = uniform(1 - self.zoom, 1 + self.zoom)
        tx = uniform(-self.width_shift, self.width_shift) * 2     # fraction of width -> [-1,1] units
        ty = uniform(-self.height_shift, self.height_shift) * 2
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.horizontal_flip \
            else torch.ones(n)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation @ shear (x-shear) @ flip, divided by zoom (sampling a zoomed-in image)
        a = (cos * flip) / scale
        b = (-sin + cos * torch.tan(shear)) / scale
        c = (sin * flip) / scale
        d = (cos + sin * torch.tan(shear)) / scale
        theta = torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)
        return theta.to(device)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images: float N x C x H x W (any value range). Returns the same shape, warped per image."""
        theta = self.sample_matrices(images.shape[0], generator, images.device).to(images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        padding = "border" if self.fill == "nearest" else "zeros"
        return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


