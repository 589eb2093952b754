"""Shared figure helpers: grids of channels, heatmap overlays, atomic PNG saving, the figure index."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from catdog_lab.io import atomic_path, write_json, write_text
from catdog_lab.plots import plt


@dataclass
class FigureIndex:
    """The figures a visualize run wrote, with titles and captions (reports/figures/index.json)."""
    directory: Path
    entries: list[dict] = field(default_factory=list)

    def save(self, fig, name: str, title: str, caption: str = "", dpi: int = 80) -> Path:
        path = self.directory / name
        if fig.get_layout_engine() is None:
            # keep room for a suptitle, which tight_layout alone lets overlap the first row's titles
            top = 1 - 0.35 / fig.get_figheight() if fig._suptitle is not None else 1
            with warnings.catch_warnings():
                # axes placed by hand (colour bars) keep their place: savefig's bbox_inches="tight" trims them
                warnings.filterwarnings("ignore", message="This figure includes Axes that are not compatible")
                fig.tight_layout(rect=(0, 0, 1, top))
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.entries = [entry for entry in self.entries if entry["file"] != name] + [
            {"file": name, "title": title, "caption": caption}]
        return path

    def write(self) -> None:
        write_json(self.directory / "index.json", self.entries)
        lines = ["# Figures", ""] + [f"- **{entry['title']}** (`{entry['file']}`): {entry['caption']}"
                                     for entry in self.entries]
        write_text(self.directory / "index.md", "\n".join(lines) + "\n")


def to_image(x: torch.Tensor) -> np.ndarray:
    """RGB 0-255 tensor 3 x H x W -> H x W x 3 float in [0, 1] for imshow."""
    return (x.detach().float().clamp(0, 255) / 255).permute(1, 2, 0).cpu().numpy()


def normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max to [0, 1] (per tensor)."""
    x = x.detach().float()
    return (x - x.min()) / (x.max() - x.min() + eps)


def display_channel(channel: torch.Tensor) -> np.ndarray:
    """The book's per-channel display normalisation: standardise, x64 + 128, clip to 0-255."""
    channel = channel.detach().float()
    # numpy's std (no Bessel correction), as the book's code computes it; it also stays 0, not NaN, for a
    # 1 x 1 map (the last pooling of a small input)
    channel = (channel - channel.mean()) / (channel.std(correction=0) + 1e-5) * 64 + 128
    return channel.clamp(0, 255).cpu().numpy() / 255


def channel_grid(maps: torch.Tensor, per_row: int = 16, gap: int = 1) -> np.ndarray:
    """C x H x W -> one 2-D mosaic, `per_row` channels a row, each normalised for display."""
    c, h, w = maps.shape
    rows = (c + per_row - 1) // per_row
    grid = np.ones((rows * (h + gap) - gap, min(c, per_row) * (w + gap) - gap))
    for i in range(c):
        row, col = divmod(i, per_row)
        grid[row * (h + gap):row * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = display_channel(maps[i])
    return grid


def image_grid(images: torch.Tensor, per_row: int = 8, gap: int = 2) -> np.ndarray:
    """N x 3 x H x W RGB 0-255 -> one H x W x 3 mosaic (white gaps)."""
    n, _, h, w = images.shape
    rows = (n + per_row - 1) // per_row
    grid = np.ones((rows * (h + gap) - gap, min(n, per_row) * (w + gap) - gap, 3))
    for i in range(n):
        row, col = divmod(i, per_row)
        grid[row * (h + gap):row * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = to_image(images[i])
    return grid


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.4) -> np.ndarray:
    """The book's Grad-CAM display: jet-coloured heatmap blended over the photo with `alpha`."""
    rgb = to_image(image)
    colored = plt.get_cmap("jet")(normalise(heat).cpu().numpy())[..., :3]
    return np.clip(colored * alpha + rgb * (1 - alpha), 0, 1)
