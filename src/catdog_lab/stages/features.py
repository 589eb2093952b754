"""Run the frozen conv base once over every split and cache its outputs (the book's fast method)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from catdog_lab.config import params_hash, read_path
from catdog_lab.data.datamodule import SPLITS, load_cached_split
from catdog_lab.data.split import manifest_hash
from catdog_lab.io import torch_load, torch_save
from catdog_lab.models.components.backbones import Backbone, build_backbone


def device_for(cfg) -> torch.device:
    wanted = str(cfg.trainer.accelerator)
    if wanted in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@torch.inference_mode()
def conv_base_outputs(backbone: Backbone, images: torch.Tensor, batch_size: int, device: torch.device,
                      channels_last: bool = True, desc: str = "features") -> torch.Tensor:
    """images: uint8 N x 3 x H x W (RGB 0-255) -> float32 N x C x h x w, in batches."""
    model = torch.nn.Sequential(backbone.preprocess, backbone.features).eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    outputs = []
    use_bf16 = device.type == "cuda"
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", mininterval=1.0):
        x = images[start:start + batch_size].to(device, non_blocking=True).float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs.append(model(x).float().cpu())
    return torch.cat(outputs)


def _current(folder: Path, key: dict) -> bool:
    if not all((folder / f"{s}.pt").exists() for s in SPLITS):
        return False
    try:
        return all(torch_load(folder / f"{s}.pt").get("key") == key for s in SPLITS)
    except Exception:
        return False                          # unreadable: recompute


def extract_features(cfg, writer: bool = True, wait_s: float = 24 * 3600) -> dict:
    """Write <paths.features>/<split>.pt; reuse them when weights, size and data are unchanged.

    Returns the folder the features are in ("dir"): a Hydra CLI job reuses current features of its
    upstream (the workspace or `upstream=<dir>`) read-only, and a sweep over `features.*` need not run
    the conv base once per job.

    writer=False (ranks other than 0 of a multi-device run): never run the conv base; wait until rank 0's
    features are current, then read them. A file wait, not a process-group barrier: Lightning creates
    the process group only inside `fit`, and its launcher starts ranks 1..N-1 only when rank 0 reaches
    `fit`, i.e. after rank 0 wrote the features (then the wait is nil); ranks started together (torchrun,
    SLURM tasks) do wait.
    """
    out_dir = Path(cfg.paths.features)
    key = {"backbone": params_hash(cfg, ["backbone"]), "manifest": manifest_hash(read_path(cfg, "split")),
           "image_size": int(cfg.data.image_size)}
    deadline = time.monotonic() + wait_s
    while True:
        for folder in dict.fromkeys([read_path(cfg, "features"), out_dir]):
            if _current(folder, key):
                print(f"[features] cached conv-base features in {folder} are current")
                return {"images_per_second": None, "reused": True, "dir": folder}
        if writer:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"features: rank 0 wrote no current features into {out_dir} in {wait_s:.0f}s")
        time.sleep(2.0)
    backbone = build_backbone(cfg.backbone)
    device = device_for(cfg)
    t0, count = time.perf_counter(), 0
    for split in SPLITS:
        data = load_cached_split(read_path(cfg, "cache"), split)
        feats = conv_base_outputs(backbone, data["images"], int(cfg.backbone.feature_batch_size), device,
                                  bool(cfg.trainer.channels_last), desc=f"conv base: {split}")
        count += len(feats)
        torch_save({"features": feats, "labels": data["labels"], "files": data["files"], "key": key},
                   out_dir / f"{split}.pt")
    seconds = time.perf_counter() - t0
    print(f"[features] {count} images through the conv base in {seconds:.1f}s ({count / seconds:.1f} img/s)")
    return {"images_per_second": count / seconds, "extract_seconds": seconds, "reused": False, "dir": out_dir}
