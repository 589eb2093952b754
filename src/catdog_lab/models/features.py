"""The frozen conv base run once over every split, its outputs cached (the book's fast feature extraction).

A helper of the stages, not a stage: the `features` training stage trains its head on these files, and
`visualize` takes `device_for` from here. It takes typed values; the stage layer reads the config.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from catdog_lab import SPLITS
from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.io import torch_load, torch_save
from catdog_lab.models.components.backbones import Backbone
from catdog_lab.progress import progress


def device_for(accelerator: str) -> torch.device:
    """The device a stage's own (non-Lightning) loops run on, from `trainer.accelerator`."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def module_outputs(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                   channels_last: bool = True, bf16: bool = False, desc: str = "features") -> torch.Tensor:
    """images: uint8 N x 3 x H x W (RGB 0-255) -> `model`'s float32 outputs, in batches, in eval mode."""
    # each submodule's train/eval mode is put back afterwards: the model may be part of a net about to
    # train (a transfer net's frozen layers), and Lightning keeps the modes it finds
    modes = {module: module.training for module in model.modules()}
    # moved outside inference mode: a module converted inside it would hold inference tensors, which a
    # later load_state_dict (a stage restoring its best checkpoint) may not write into
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    outputs = []
    with torch.inference_mode():
        for start in progress(range(0, len(images), batch_size), desc=desc, unit="batch"):
            x = images[start:start + batch_size].to(device, non_blocking=True).float()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs.append(model(x).float().cpu())
    for module, training in modes.items():
        module.train(training)
    return torch.cat(outputs)


def conv_base_outputs(backbone: Backbone, images: torch.Tensor, batch_size: int, device: torch.device,
                      channels_last: bool = True, desc: str = "features") -> torch.Tensor:
    """images: uint8 N x 3 x H x W (RGB 0-255) -> float32 N x C x h x w, in batches (bf16 on a GPU)."""
    return module_outputs(torch.nn.Sequential(backbone.preprocess, backbone.features), images, batch_size, device,
                          channels_last, bf16=device.type == "cuda", desc=desc)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's tensors (names, dtypes, shapes, bytes): what its outputs depend on."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def frozen_outputs(net: torch.nn.Module, cache_dir: Path, splits: tuple[str, ...], batch_size: int,
                   device: torch.device, channels_last: bool = True, bf16: bool = False,
                   store: Path | None = None) -> dict[str, torch.Tensor]:
    """The frozen part of a transfer net (`net.frozen_part()`: preprocessing and every layer before the
    first trainable one) run once over the unaugmented `splits` of the image cache: {split: outputs}.

    Validation and test images are never augmented and the frozen part never changes during a stage, so
    each epoch's validation need only run the trainable layers and the head on these (`forward_from_frozen`):
    the same logits, without a pass of the frozen conv layers per image per epoch. Kept in `store` (the
    stage's checkpoint folder) under a key of the frozen weights, the images and the precision, so that a
    resumed run does not recompute them (labels come from the cache, as always)."""
    model = net.frozen_part()
    key = {"frozen": weights_digest(model), "bf16": bf16}
    result = {}
    for split in splits:
        data = load_cached_split(cache_dir, split)
        images = data["images"]
        split_key = key | {"images": hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest(),
                           "shape": list(images.shape)}
        path = store / f"frozen_{split}.pt" if store else None
        if path is not None and path.exists():
            try:
                saved = torch_load(path)
                if saved.get("key") == split_key:
                    result[split] = saved["outputs"]
                    continue
            except Exception:
                pass                          # unreadable: recompute
        result[split] = module_outputs(model, images, batch_size, device, channels_last, bf16,
                                       desc=f"frozen layers: {split}")
        if path is not None:
            torch_save({"outputs": result[split], "key": split_key}, path)
    model.to("cpu")
    return result


def _current(folder: Path, key: dict) -> bool:
    if not all((folder / f"{split}.pt").exists() for split in SPLITS):
        return False
    try:
        return all(torch_load(folder / f"{split}.pt").get("key") == key for split in SPLITS)
    except Exception:
        return False                          # unreadable: recompute


@dataclass(frozen=True)
class Features:
    folder: Path                              # holds <split>.pt: features, labels, files, key
    images_per_second: float | None = None    # the conv base's speed; None when cached features were reused


def extract_features(out_dir: Path, cache_dir: Path, key: dict, backbone: Callable[[], Backbone], batch_size: int,
                     device: torch.device, channels_last: bool = True, reuse_dirs: tuple[Path, ...] = (),
                     writer: bool = True, wait_s: float = 24 * 3600) -> Features:
    """Write <out_dir>/<split>.pt from the image cache in `cache_dir`; reuse features whose `key` (weights,
    data, size) is unchanged, in `reuse_dirs` (a Hydra CLI job reads its upstream's features, read-only, so
    a sweep over `features.*` need not run the conv base once per job) or in `out_dir`.
    `backbone` builds the conv base, only when it must run.

    writer=False (ranks other than 0 of a multi-device run): never run the conv base; wait until rank 0's
    features are current, then read them. A file wait, not a process-group barrier: Lightning creates
    the process group only inside `fit`, and its launcher starts ranks 1..N-1 only when rank 0 reaches
    `fit`, i.e. after rank 0 wrote the features (then the wait is nil); ranks started together (torchrun,
    SLURM tasks) do wait.
    """
    deadline = time.monotonic() + wait_s
    while True:
        for folder in dict.fromkeys([*reuse_dirs, out_dir]):
            if _current(folder, key):
                print(f"[features] cached conv-base features in {folder} are current")
                return Features(folder)
        if writer:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"features: rank 0 wrote no current features into {out_dir} in {wait_s:.0f}s")
        time.sleep(2.0)
    base = backbone()
    start, count = time.perf_counter(), 0
    for split in SPLITS:
        data = load_cached_split(cache_dir, split)
        outputs = conv_base_outputs(base, data["images"], batch_size, device, channels_last,
                                    desc=f"conv base: {split}")
        count += len(outputs)
        torch_save({"features": outputs, "labels": data["labels"], "files": data["files"], "key": key},
                   out_dir / f"{split}.pt")
    seconds = time.perf_counter() - start
    print(f"[features] {count} images through the conv base in {seconds:.1f}s ({count / seconds:.1f} img/s)")
    return Features(out_dir, count / seconds)
