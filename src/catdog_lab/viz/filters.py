"""Filter patterns by gradient ascent (the book's 5.4.2), in plain PyTorch: Captum has no released
feature-visualisation module.

For each of a layer's first N filters, find the input that maximises the filter's mean activation:
start from seeded grey noise, step along the gradient normalised by its RMS, in the weights'
preprocessing space. All N filters are optimised together as one batch, and the network is cut
right after the target layer. Optional regularisers: jitter, blur, L2 towards grey, and
multi-scale octaves (optimise small, upscale, continue).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from catdog_lab.models.components.preprocess import Preprocess
from catdog_lab.progress import progress as progress_bar


def filter_patterns(features: nn.Sequential, layer_index: int, preprocess: Preprocess, filters: list[int],
                    size: int = 96, iterations: int = 30, step: float = 0.04, jitter: int = 0, blur_every: int = 0,
                    blur_sigma: float = 0.5, l2: float = 0.0, octaves: int = 1, octave_scale: float = 1.4,
                    seed: int = 0, progress: str | None = None) -> torch.Tensor:
    """Returns len(filters) x 3 x size x size RGB 0-255 images, one pattern per filter.

    `layer_index` is the index in `features` of the module whose output is maximised (for VGG the
    ReLU after the conv, as Keras' layer outputs include the activation).
    """
    trunk = features[:layer_index + 1].eval()
    for param in trunk.parameters():
        param.requires_grad_(False)
    device = next(trunk.parameters()).device
    generator = torch.Generator().manual_seed(seed)          # CPU generator: the same noise on any device
    n_filters = len(filters)
    start = max(8, int(round(size / octave_scale ** (octaves - 1))))
    grey = 128 + 20 * (torch.rand(n_filters, 3, start, start, generator=generator) - 0.5)     # seeded grey noise
    x = preprocess(grey.to(device)).detach()
    # step in preprocessing units: `step` of the 0-255 range, mapped through the weights' scale and std
    step_size = step * 255 * preprocess.scale / float(preprocess.std.mean())
    grey_pre = preprocess(torch.full((1, 3, 1, 1), 128.0, device=device))
    idx = torch.tensor(filters, device=device)
    blur_size = 2 * math.ceil(2 * blur_sigma) + 1                 # the kernel reaches 2 sigma on each side
    bar = progress_bar(total=iterations * octaves, desc=progress or "", unit="step", disable=progress is None)
    for octave in range(octaves):
        if octave > 0:
            side = size if octave == octaves - 1 else int(round(x.shape[-1] * octave_scale))
            x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False).detach()
        for i in range(iterations):
            if jitter:
                dx, dy = (int(shift) for shift in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
                x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            x.requires_grad_(True)
            act = trunk(x)
            border = 2 if act.shape[-1] > 8 else 0               # the book ignores border artefacts
            inner = act[:, :, border:act.shape[-2] - border, border:act.shape[-1] - border]
            score = inner[torch.arange(n_filters, device=device), idx].mean(dim=(1, 2)).sum()
            if l2:
                score = score - l2 * ((x - grey_pre) ** 2).mean(dim=(1, 2, 3)).sum()
            grad, = torch.autograd.grad(score, x)
            rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-8
            x = (x + step_size * grad / rms).detach()
            if jitter:
                x = torch.roll(x, shifts=(-dx, -dy), dims=(2, 3))
            if blur_every and (i + 1) % blur_every == 0:
                x = gaussian_blur(x, [blur_size, blur_size], [blur_sigma])       # reflect-padded
            bar.update(1)
    bar.close()
    with torch.no_grad():
        out = preprocess.inverse(x)
        # the book's deprocess: centre, scale to a std of 0.15 of the range, shift to 0.5, clip
        out = out - out.mean(dim=(1, 2, 3), keepdim=True)
        out = out / (out.std(dim=(1, 2, 3), keepdim=True) + 1e-5) * 0.15 * 255 + 128
        return out.clamp(0, 255).cpu()
