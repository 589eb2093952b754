"""Learnable toy photos for tests and plumbing checks (no Kaggle photos needed)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from catdog_lab import BOOK_CLASSES


def toy_photo(label: str, index: int, width: int, height: int, classes=BOOK_CLASSES) -> Image.Image:
    """Class k of N: one colour channel raised (k mod 3) and a bright horizontal band (the k-th of N), seeded
    by (index, k). With the book's classes: cats reddish with a bright top half, dogs bluish with a bright
    bottom half (the photos every test and tiny_repro.py were written against)."""
    k, n = classes.index(label), len(classes)
    rng = np.random.default_rng(index * n + k)
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    img[..., (0, 2, 1)[k % 3]] += 120
    rows = slice(k * height // n, (k + 1) * height // n)
    img[rows] = np.clip(img[rows].astype(int) + 60, 0, 255).astype(np.uint8)
    return Image.fromarray(img)
