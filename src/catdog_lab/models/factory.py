"""Build a stage's network from the config, and save/load self-contained model files.

A model file (`models/<stage>.pt`) holds everything needed to rebuild the net without the
original weights file: {"stage", "kind", "arch": {...}, "state_dict"}. Loaded with weights_only.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from catdog_lab.errors import ConfigError
from catdog_lab.io import torch_load, torch_save
from catdog_lab.models.components.backbones import BACKBONES, build_backbone
from catdog_lab.models.components.convnet import BookConvNet
from catdog_lab.models.components.heads import DenseHead
from catdog_lab.models.components.transfer import TransferNet


def arch_from_config(cfg, stage: str) -> dict:
    s = cfg[stage]
    arch = {"kind": s.model, "image_size": int(cfg.data.image_size), "dropout": float(s.dropout)}
    if s.model in ("head", "transfer"):
        arch |= {"backbone": cfg.backbone.name, "weights": str(cfg.backbone.weights), "hidden": int(s.hidden),
                 "trainable": list(s.get("trainable", []) or [])}
    return arch


def build_from_arch(arch: dict, load_weights: bool = True) -> nn.Module:
    kind = arch["kind"]
    if kind == "convnet":
        return BookConvNet(arch["image_size"], arch["dropout"])
    if kind in ("head", "transfer"):
        if arch["backbone"] not in BACKBONES:
            raise ConfigError(f"backbone.name: unknown backbone {arch['backbone']!r}")
        backbone = BACKBONES[arch["backbone"]](arch["weights"] if load_weights else "none")
        return TransferNet(backbone, arch["image_size"], arch["hidden"], arch["dropout"], arch["trainable"])
    raise ConfigError(f"model: unknown model kind {kind!r}")


def build_head(cfg, stage: str, in_features: int) -> DenseHead:
    s = cfg[stage]
    return DenseHead(in_features, int(s.hidden), float(s.dropout))


def save_model(path: str | Path, stage: str, arch: dict, net: nn.Module) -> None:
    preprocess = getattr(net, "preprocess", None)
    torch_save({"stage": stage, "arch": arch, "preprocessing": getattr(preprocess, "spec", None),
                "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}}, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a saved stage model (eval mode). The state dict already holds the pretrained weights."""
    from catdog_lab.errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: train that stage first (dvc repro)")
    bundle = torch_load(path)
    net = build_from_arch(dict(bundle["arch"]), load_weights=False)
    if bundle.get("preprocessing"):
        from catdog_lab.models.components.preprocess import Preprocess
        net.preprocess = Preprocess(bundle["preprocessing"])   # spec (BGR etc.) is not a buffer: restore it
    net.load_state_dict(bundle["state_dict"])
    return net.eval(), bundle


def transfer_from_head(cfg, stage: str, head: DenseHead) -> TransferNet:
    """Wrap a head trained on cached features into the full image -> logit model, for prediction."""
    backbone = build_backbone(cfg.backbone)
    net = TransferNet(backbone, int(cfg.data.image_size), int(cfg[stage].hidden), float(cfg[stage].dropout), [])
    net.head.load_state_dict(head.state_dict())
    return net
