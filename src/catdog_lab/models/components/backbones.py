"""Pretrained conv bases behind one small adapter, so a new backbone is a config file + a builder.

A `Backbone` is: the conv stack (takes preprocessed input), the `Preprocess` its weights expect,
and Keras-style layer names (block5_conv3 ...) mapped to modules, for freezing and for Captum.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from catdog_lab.errors import ConfigError, WeightsError
from catdog_lab.models.components.preprocess import TORCHVISION_IMAGENET, Preprocess

KERAS_VGG16_FORMAT = "torchvision-vgg16-features/v1"


@dataclass
class Backbone:
    name: str
    features: nn.Sequential
    preprocess: Preprocess
    layers: dict[str, int] = field(default_factory=dict)   # Keras name -> index of its output module
    convs: dict[str, int] = field(default_factory=dict)    # Keras conv name -> index of the Conv2d
    out_channels: int = 512

    def output_side(self, image_size: int) -> int:
        with torch.no_grad():
            return int(self.features(torch.zeros(1, 3, image_size, image_size)).shape[-1])


def _vgg16_names() -> tuple[dict[str, int], dict[str, int]]:
    """torchvision vgg16().features indices -> Keras names (block1_conv1 = ReLU output, as in Keras)."""
    layers, convs, index = {}, {}, 0
    for block, n_convs in enumerate((2, 2, 3, 3, 3), start=1):
        for conv in range(1, n_convs + 1):
            convs[f"block{block}_conv{conv}"] = index
            layers[f"block{block}_conv{conv}"] = index + 1      # Keras' conv layer output includes its ReLU
            index += 2
        layers[f"block{block}_pool"] = index
        index += 1
    return layers, convs


def load_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a weights file safely: (state_dict, preprocessing spec). Never unpickles code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"backbone.weights: file {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(exc))
        if found:   # a pickle that would import or call code: refused, never run
            raise WeightsError(f"backbone.weights: {path} refused by torch.load(weights_only=True): it holds "
                               f"objects other than tensors ({found.group(0).strip()})") from None
        raise WeightsError(f"backbone.weights: {path} is not a readable PyTorch file (corrupt or not a "
                           f"checkpoint)") from None
    except Exception as exc:
        raise WeightsError(f"backbone.weights: {path} is not a readable PyTorch file ({type(exc).__name__})") from None
    if isinstance(obj, dict) and "format" in obj:
        if obj["format"] != KERAS_VGG16_FORMAT:
            raise WeightsError(f"backbone.weights: {path} has unknown format {obj['format']!r}")
        if not isinstance(obj.get("state_dict"), dict) or not isinstance(obj.get("preprocessing"), dict):
            raise WeightsError(f"backbone.weights: {path} lacks its state_dict or preprocessing entry")
        return obj["state_dict"], obj["preprocessing"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, dict(TORCHVISION_IMAGENET)          # a plain torchvision state dict
    raise WeightsError(f"backbone.weights: {path} is neither a state dict nor a {KERAS_VGG16_FORMAT} file")


def weights_dtype(weights: str) -> str | None:
    """The dtype a weights setting stores its conv tensors in ("float32"; "float16" for a half-precision
    copy such as scripts/pack_gpu_bundle.py writes), None for random weights. The model computes in its
    own precision whatever the file's (a load casts into the float32 parameters), so this records where
    the numbers came from, not how they were used."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "float32"                                # torchvision's published weights
    state, _ = load_weights_file(weights)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()})
    return "+".join(dtypes) or None


def build_vgg16(weights: str = "none", progress: bool = True) -> Backbone:
    import torchvision

    model = torchvision.models.vgg16(weights=None)
    features = model.features
    for i, module in enumerate(features):               # Captum hooks break on in-place ReLU
        if isinstance(module, nn.ReLU):
            features[i] = nn.ReLU(inplace=False)
    spec = dict(TORCHVISION_IMAGENET)
    if weights == "imagenet":
        try:
            state = torchvision.models.VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=progress)
        except Exception as exc:
            raise WeightsError(
                f"backbone.weights=imagenet: torchvision could not download VGG16 weights ({type(exc).__name__}); "
                f"offline? set backbone.weights to a local file (see README, 'Offline')") from None
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    elif weights == "none":
        state = None
    else:
        state, spec = load_weights_file(weights)
    if state is not None:
        feature_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:
            missing, unexpected = features.load_state_dict(feature_state, strict=False)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            raise WeightsError(f"backbone.weights: {weights}: tensor shapes do not fit VGG16 "
                               f"({lines[1].strip() if len(lines) > 1 else exc})") from None
        if missing:
            raise WeightsError(f"backbone.weights: {weights} lacks {len(missing)} VGG16 conv tensors "
                               f"(e.g. features.{missing[0]})")
    layers, convs = _vgg16_names()
    return Backbone("vgg16", features, Preprocess(spec), layers, convs, out_channels=512)


BACKBONES = {"vgg16": build_vgg16}


def backbone_builder(name: str):
    """The builder of backbone `name`: the one place an unknown `backbone.name` is rejected."""
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def build_backbone(name: str, weights: str) -> Backbone:
    return backbone_builder(name)(str(weights))
