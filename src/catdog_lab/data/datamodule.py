"""In-memory DataModules over the decoded cache: no JPEG is decoded during training."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from catdog_lab.errors import DataError
from catdog_lab.io import torch_load

SPLITS = ("train", "validation", "test")


def load_cached_split(directory: Path, split: str) -> dict:
    path = Path(directory) / f"{split}.pt"
    if not path.exists():
        raise DataError(f"{path} not found: run the split stage first (dvc repro split)")
    try:
        return torch_load(path)
    except Exception as exc:  # truncated or foreign file
        raise DataError(f"{path}: unreadable cache ({type(exc).__name__}); delete it and rerun its stage") from None


class TensorDataModule(pl.LightningDataModule):
    """Serves `{split}.pt` files holding `inputs_key` (images uint8 or features float) and labels."""

    def __init__(self, directory: str | Path, batch_size: int, inputs_key: str = "images", seed: int = 0,
                 num_workers: int = 0, eval_batch_size: int | None = None):
        super().__init__()
        self.directory, self.inputs_key = Path(directory), inputs_key
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or max(batch_size, 64)
        self.seed, self.num_workers = seed, num_workers
        self.datasets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                data = load_cached_split(self.directory, split)
                self.datasets[split] = TensorDataset(data[self.inputs_key], data["labels"])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.datasets[split], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle, generator=generator, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)
