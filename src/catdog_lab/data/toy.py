"""Learnable toy photos for tests and plumbing checks (no Kaggle photos needed)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def toy_photo(label: str, index: int, width: int, height: int) -> Image.Image:
    """Cats are reddish with a bright top half, dogs bluish with a bright bottom half; seeded by (label, index)."""
    rng = np.random.default_rng(index * 2 + (label == "dog"))
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    img[..., 0 if label == "cat" else 2] += 120
    rows = slice(0, height // 2) if label == "cat" else slice(height // 2, height)
    img[rows] = np.clip(img[rows].astype(int) + 60, 0, 255).astype(np.uint8)
    return Image.fromarray(img)
