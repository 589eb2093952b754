"""What one layer does to a photo: convolution with random kernels, ReLU, max pooling, a tiny LeNet."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from catdog_lab.plots import plt
from catdog_lab.viz.figures import FigureIndex, normalise, to_image


def _as_rgb(maps: torch.Tensor):
    """1 or 3 channels -> something imshow shows (3 filters as the R, G, B channels)."""
    maps = normalise(maps)
    return maps[0].cpu().numpy() if maps.shape[0] == 1 else maps.permute(1, 2, 0).cpu().numpy()


def primer_panels(image: torch.Tensor, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """[(title with operation and output shape, 1- or 3-channel map)] for one RGB 0-255 image."""
    generator = torch.Generator().manual_seed(seed)
    x = image.float().unsqueeze(0) / 255
    panels = [(f"input photo {tuple(image.shape)}", image.float() / 255)]

    def conv(inp, out_ch, k):
        weight = torch.randn(out_ch, inp.shape[1], k, k, generator=generator) / (k * (inp.shape[1] ** 0.5))
        return F.conv2d(inp, weight)

    c3 = conv(x, 3, 3)
    panels.append((f"conv 3 random 3x3 kernels -> {tuple(c3.shape[1:])}", c3[0]))
    for k in (10, 15):
        ck = conv(x, 3, k)
        panels.append((f"conv 3 random {k}x{k} kernels -> {tuple(ck.shape[1:])}", ck[0]))
    relu = F.relu(c3)
    panels.append((f"ReLU(conv 3x3) -> {tuple(relu.shape[1:])}", relu[0]))
    for k in (2, 5):
        pooled = F.max_pool2d(relu, k)
        panels.append((f"max pool {k}x{k} -> {tuple(pooled.shape[1:])}", pooled[0]))
    for n_filters in (1, 3):                           # LeNet-style: (conv 5x5, ReLU, pool 2x2) x 2
        lenet = F.max_pool2d(F.relu(conv(x, n_filters, 5)), 2)
        lenet = F.max_pool2d(F.relu(conv(lenet, n_filters, 5)), 2)
        panels.append((f"LeNet-style 2x(conv5x5,ReLU,pool2), {n_filters} filter{'s' if n_filters > 1 else ''} -> "
                       f"{tuple(lenet.shape[1:])}", lenet[0]))
    return panels


def plot_primer(image: torch.Tensor, index: FigureIndex, seed: int = 0, label: str = "cat") -> None:
    """`label`: the photo's class name (the book's data: a cat), in the title, caption and file name."""
    panels = primer_panels(image, seed)
    cols = 5
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.2 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, maps) in zip(axes.flat, panels):
        ax.imshow(to_image(maps * 255) if title.startswith("input") else _as_rgb(maps),
                  cmap="gray" if maps.shape[0] == 1 else None)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"Primer: what convolution, ReLU and pooling do to a {label} photo (random kernels)")
    name = re.sub(r"[^\w\-.]", "_", label)        # a class folder's name, safe in a file name
    index.save(fig, f"primer_conv_relu_pool_on_a_{name}.png", "Primer: convolution, ReLU, pooling",
               f"A test-split {label} photo convolved with random kernels (3 filters shown as RGB), after ReLU, "
               "after max pooling, and through a small LeNet-style stack; each panel gives its operation and output "
               "shape.")
