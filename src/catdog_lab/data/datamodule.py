"""DataModules over the decoded cache (memory-mapped images, or cached features): no JPEG is decoded
during training."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from catdog_lab import BOOK_CLASSES, SPLITS
from catdog_lab.data.cache import MappedImages, open_images
from catdog_lab.data.sampler import StreamBatchSampler
from catdog_lab.data.split import SPLIT_AGAIN
from catdog_lab.errors import DataError
from catdog_lab.io import torch_load


def load_cached_split(directory: Path, split: str) -> dict:
    """A split's cache as a dict. Decoded images (split stage) come memory-mapped from their .npy file:
    `images` is a tensor over the map (read on use), `images_path` the file for `MappedImages`."""
    path = Path(directory) / f"{split}.pt"
    if not path.exists():
        raise DataError(f"{path} not found: run the split stage first (dvc repro split)")
    try:
        data = torch_load(path)
        if "images_file" in data:
            data["images_path"] = Path(directory) / data["images_file"]
            data["images"] = open_images(data["images_path"])
    except Exception as exc:  # truncated or foreign file
        raise DataError(f"{path}: unreadable cache ({type(exc).__name__}); delete it and rerun its stage") from None
    return data


def split_classes(directory: Path, image_size: int | None = None) -> tuple[str, ...]:
    """The class names of the split cached in `directory`, in label order (a cache written before other
    classes existed holds the book's cat/dog), once its three files are known to be of one split and,
    given `image_size` (data.image_size), of images that size."""
    metas = {split: load_cached_split(directory, split) for split in SPLITS}   # images mapped, not read
    ids = {split: meta.get("split_id") for split, meta in metas.items()}
    classes = {split: tuple(meta.get("classes", BOOK_CLASSES)) for split, meta in metas.items()}
    if len(set(ids.values())) > 1 or len(set(classes.values())) > 1:
        # a split interrupted between its files: training on them could test on photos it trained on
        raise DataError(f"{directory}: train.pt, validation.pt and test.pt are of different splits (one was "
                        f"interrupted while writing; classes " + "; ".join(f"{split} {','.join(names)}" for split,
                        names in classes.items()) + "): rerun the split stage")
    if image_size is not None:
        side = metas["test"]["images"].shape[-1]
        if side != image_size:   # the model would be built for one size and fed another: a shape error deep in torch
            raise DataError(f"data.image_size: {image_size}, but the split cached in {directory} holds {side}-pixel "
                            f"images: {SPLIT_AGAIN}, or set data.image_size={side}")
    return classes["test"]


class ResidentTensors(Dataset):
    """(inputs, labels) held whole on one device (the decoded uint8 images of a split, or its features):
    a batch is one index into the tensors where they live, so a GPU run copies nothing per step. Serves
    the very batches `MappedImages` or a `TensorDataset` would (same indices, same values)."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device):
        self.inputs, self.labels, self.device = inputs.to(device), labels.to(device), device

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:     # as TensorDataset's
        return self.inputs, self.labels

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.device)
        return self.inputs[index], self.labels[index]          # already a batch: see `_as_batch`

    def __getitem__(self, index: int):
        return self.inputs[index], self.labels[index]


def _as_batch(batch):
    """collate_fn for `ResidentTensors`: its `__getitems__` already returns the stacked batch."""
    return batch


class TensorDataModule(pl.LightningDataModule):
    """Serves `{split}.pt` files holding `inputs_key` (images uint8 or features float) and labels.

    `steps_per_epoch` / `validation_steps`: None = one pass over the split; a number = that many batches
    from an endless reshuffled stream, as Keras' `fit_generator` does (see data/sampler.py). The test split
    is always one pass, in order.

    Several devices: only the training batches are split between ranks. Every rank validates (and tests)
    the whole set (train.py turns Lightning's DistributedSampler off), so a metric reduced over ranks is
    the full-set figure, without the duplicates a padded DistributedSampler would add.

    `device`: None keeps the images memory-mapped on the host (bounded memory, any set size); a device
    holds every split whole on it from `setup` on (`compute.resident_data`: a GPU run of the 4,000 photos
    needs 270 MB at 150 px), with the same batches.
    """

    def __init__(self, directory: str | Path, batch_size: int, inputs_key: str = "images", seed: int = 0,
                 num_workers: int = 0, eval_batch_size: int | None = None, steps_per_epoch: int | None = None,
                 validation_steps: int | None = None, eval_inputs: dict[str, torch.Tensor] | None = None,
                 shuffle_buffer: int | None = None, device: torch.device | str | None = None):
        super().__init__()
        # {split: tensor}: inputs that replace the cached images of the validation/test split (the frozen
        # layers' outputs of a transfer net, models/features.py::frozen_outputs), labels from the cache
        self.eval_inputs = eval_inputs or {}
        self.directory, self.inputs_key = Path(directory), inputs_key
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or max(batch_size, 64)
        self.seed, self.num_workers = seed, num_workers
        self.steps_per_epoch, self.validation_steps = steps_per_epoch, validation_steps
        self.shuffle_buffer = shuffle_buffer        # training order only (see data/sampler.py)
        self.device = torch.device(device) if device is not None else None
        self.datasets: dict[str, TensorDataset | MappedImages | ResidentTensors] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                data = load_cached_split(self.directory, split)
                inputs = self.eval_inputs.get(split)
                if self.device is not None:        # read once from the map (or given), then never again
                    inputs = data[self.inputs_key] if inputs is None else inputs
                    self.datasets[split] = ResidentTensors(inputs, data["labels"], self._device())
                elif inputs is not None:
                    self.datasets[split] = TensorDataset(inputs, data["labels"])
                elif self.inputs_key == "images" and "images_path" in data:     # bounded memory, any set size
                    self.datasets[split] = MappedImages(data["images_path"], data["labels"])
                else:
                    self.datasets[split] = TensorDataset(data[self.inputs_key], data["labels"])

    def _device(self) -> torch.device:
        """The given device, or this rank's own when a trainer runs several (cuda:0, cuda:1, ...)."""
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None and self.device.type != "cpu" else self.device

    def _loader(self, split: str, batch_sampler: StreamBatchSampler | None = None) -> DataLoader:
        batching = {"batch_sampler": batch_sampler} if batch_sampler else {"batch_size": self.eval_batch_size}
        if self.device is not None:     # no workers, no pinning: the batch is on its device already
            return DataLoader(self.datasets[split], **batching, collate_fn=_as_batch)
        return DataLoader(self.datasets[split], **batching, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def _ranks(self) -> dict:
        trainer = getattr(self, "trainer", None)
        return {"rank": trainer.global_rank, "world_size": trainer.world_size} if trainer else {}

    def train_dataloader(self):
        # several devices: each rank draws every N-th batch of the one stream (data/sampler.py)
        return self._loader("train", StreamBatchSampler(len(self.datasets["train"]), self.batch_size,
                                                        self.steps_per_epoch, shuffle=True, seed=self.seed,
                                                        shuffle_buffer=self.shuffle_buffer, **self._ranks()))

    def val_dataloader(self):
        if self.validation_steps is None:
            return self._loader("validation")
        # Keras' validation iterator shuffles too (flow_from_directory's default) and carries on across epochs
        return self._loader("validation", StreamBatchSampler(len(self.datasets["validation"]), self.batch_size,
                                                             self.validation_steps, shuffle=True, seed=self.seed + 1))

    def test_dataloader(self):
        return self._loader("test")
