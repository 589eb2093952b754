"""Intermediate activations of the from-scratch convnet for one image, via Captum's LayerActivation."""
from __future__ import annotations

import torch
from captum.attr import LayerActivation

from catdog_lab.plots import plt
from catdog_lab.viz.attributions import on_net_device
from catdog_lab.viz.figures import FigureIndex, channel_grid, to_image


def layer_activations(net, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """{keras-style layer name: C x H x W activation} for every conv and pool layer of a BookConvNet."""
    layers = net.named_feature_layers()
    x, _ = on_net_device(net, image.unsqueeze(0))
    acts = LayerActivation(net, list(layers.values())).attribute(x)
    return {name: activation[0].detach().cpu() for name, activation in zip(layers, acts)}


def plot_activations(net, image: torch.Tensor, stage: str, index: FigureIndex, per_row: int = 16) -> list[str]:
    written = []
    for i, (name, maps) in enumerate(layer_activations(net, image).items(), start=1):
        grid = channel_grid(maps, per_row)
        fig = plt.figure(figsize=(min(16, grid.shape[1] / 18 + 2), grid.shape[0] / 18 + 1.2))
        ax = fig.add_axes([0, 0, 1, 0.92])
        ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.axis("off")
        fig.suptitle(f"{stage}: {name} {tuple(maps.shape)} ({maps.shape[0]} channels, {per_row} per row)", fontsize=10)
        file = f"activations_{stage}_{i:02d}_{name}.png"
        index.save(fig, file, f"Activations of {stage} at {name}",
                   f"Every channel of {name} for one test image, each normalised for display (Captum LayerActivation).")
        written.append(file)
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(to_image(image))
    ax.axis("off")
    index.save(fig, f"activations_{stage}_00_input.png", f"Input of the activation figures ({stage})",
               "The test image whose activations the following figures show.")
    return written
