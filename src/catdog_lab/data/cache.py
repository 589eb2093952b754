"""The decoded-image cache on disk, written as a stream and read memory-mapped.

`<cache>/<split>.images.npy` holds uint8 N x 3 x S x S in NumPy's .npy format, written record by record
(never held whole in memory: the full Kaggle set is 25,000 x 67.5 KB = 1.7 GB at 150 px), and
`<cache>/<split>.pt` the small part: labels, file names and the name of the .npy file.

Training reads the images through `MappedImages`: a read-only memory map whose pages are handed back
to the kernel every few batches (`madvise(MADV_DONTNEED)`), so a process touching the whole set every
epoch keeps a resident size of a few batches rather than growing to the size of the cache. The pages
stay in the kernel's page cache: the next epoch reads from memory, not from the disk.
"""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from catdog_lab.io import atomic_path


class ImageWriter:
    """Append uint8 3 x S x S images to a .npy file whose length is known up front; atomic on close
    (`abort` drops the partial file)."""

    def __init__(self, path: str | Path, count: int, image_size: int):
        self.path, self.shape, self.written = Path(path), (count, 3, image_size, image_size), 0
        self.record = 3 * image_size * image_size           # bytes per image
        self._atomic = atomic_path(self.path)
        self._file = open(self._atomic.__enter__(), "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": "|u1", "fortran_order": False,
                                                          "shape": self.shape})

    def append_raw(self, data: bytes) -> None:
        """Several whole images at once (the bytes of n records back to back)."""
        if not data or len(data) % self.record:
            raise ValueError(f"{self.path}: {len(data)} bytes are not whole images of shape {self.shape[1:]}")
        self._file.write(data)
        self.written += len(data) // self.record

    def close(self) -> None:
        self._file.close()
        if self.written != self.shape[0]:
            self._atomic.__exit__(ValueError, None, None)
            raise ValueError(f"{self.path}: {self.written} images written, {self.shape[0]} announced")
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        self._file.close()
        self._atomic.__exit__(RuntimeError, None, None)


def _header(path: Path) -> tuple[tuple[int, ...], int]:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        if dtype != np.uint8 or fortran:
            raise ValueError(f"{path}: expected a C-ordered uint8 array, got {dtype} fortran={fortran}")
        return shape, handle.tell()


def open_images(path: str | Path) -> torch.Tensor:
    """The whole array as a tensor over a copy-on-write memory map (nothing read until used)."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))


class MappedImages(Dataset):
    """(image uint8 3 x S x S, label) pairs read from a memory-mapped .npy, with a bounded resident size.

    `__getitems__` serves a whole batch with one fancy-index copy (DataLoader uses it when present); every
    `release_every` batches the mapping's pages are released. Safe to send to DataLoader workers: each
    process maps the file on first use.
    """

    def __init__(self, path: str | Path, labels: torch.Tensor, release_every: int = 8):
        self.path, self.labels, self.release_every = Path(path), labels, release_every
        self.shape, self.offset = _header(self.path)
        if self.shape[0] != len(labels):
            raise ValueError(f"{self.path}: {self.shape[0]} images but {len(labels)} labels")
        self._map, self._array, self._batches = None, None, 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_map", "_array")} | {"_map": None,
                                                                                          "_array": None}

    def _images(self) -> np.ndarray:
        if self._array is None:
            with open(self.path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._array = np.frombuffer(self._map, dtype=np.uint8, offset=self.offset).reshape(self.shape)
        return self._array

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batch = torch.from_numpy(self._images()[np.asarray(indices)])          # one copy out of the map
        self._batches += 1
        if self._batches % self.release_every == 0 and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)                               # keep RSS to a few batches
        return [(batch[i], self.labels[index]) for i, index in enumerate(indices)]

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]


def cache_files(directory: str | Path, split: str) -> tuple[Path, Path]:
    directory = Path(directory)
    return directory / f"{split}.pt", directory / f"{split}.images.npy"

