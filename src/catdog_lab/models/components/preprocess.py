"""Input preprocessing as a module, owned by the model (and, for pretrained nets, by the weights).

Every network in this project takes raw pixels: float or uint8, RGB, 0-255, N x 3 x H x W.
The first module maps them to what the weights were trained on, so data pipelines, Captum and
the visualisations never have to know which weights are loaded.
"""
from __future__ import annotations

import torch
from torch import nn

TORCHVISION_IMAGENET = {"mode": "torch", "channel_order": "RGB", "input_range": [0, 1],
                        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class Preprocess(nn.Module):
    """RGB 0-255 -> (channel order, range, mean, std) described by a preprocessing spec dict.

    spec keys: channel_order "RGB"|"BGR", input_range [0, 1] or [0, 255], mean, std (per channel,
    in the weights' channel order and range). Example: Caffe VGG16 = BGR, 0-255, mean-subtracted.
    """

    def __init__(self, spec: dict | None = None):
        super().__init__()
        spec = dict(spec or {"channel_order": "RGB", "input_range": [0, 1], "mean": [0, 0, 0], "std": [1, 1, 1]})
        if spec.get("channel_order", "RGB") not in ("RGB", "BGR"):
            raise ValueError(f"preprocessing.channel_order must be RGB or BGR, got {spec.get('channel_order')!r}")
        self.spec = spec
        self.bgr = spec.get("channel_order", "RGB") == "BGR"
        self.scale = float(spec.get("input_range", [0, 1])[1]) / 255.0
        self.register_buffer("mean", torch.tensor(spec.get("mean", [0, 0, 0]), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.get("std", [1, 1, 1]), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Back to RGB 0-255 (for showing inputs optimised in the weights' space)."""
        x = (x * self.std + self.mean) / self.scale
        return x.flip(1) if self.bgr else x

    def extra_repr(self) -> str:
        return f"{self.spec}"


def rescale_01() -> Preprocess:
    """The book's `rescale=1./255` for the from-scratch convnet."""
    return Preprocess({"channel_order": "RGB", "input_range": [0, 1], "mean": [0, 0, 0], "std": [1, 1, 1]})
