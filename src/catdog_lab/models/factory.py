"""Build a stage's network from its architecture record (`settings.model_arch`), and save/load model files.

A model file (`models/<stage>.pt`) holds everything needed to rebuild the net without the
original weights file: {"stage", "arch": {...}, "classes": [...], "state_dict"}. Loaded with weights_only.
`classes` (label order) sets the output width (models/outputs.py); files without it are the book's cat/dog.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from catdog_lab import BOOK_CLASSES
from catdog_lab.errors import ConfigError, DataError
from catdog_lab.io import read_torch_file, torch_save
from catdog_lab.models.components.backbones import Backbone, BackboneSpec, build_backbone
from catdog_lab.models.components.convnet import BOOK1, BookConvNet
from catdog_lab.models.components.heads import DenseHead
from catdog_lab.models.components.init import keras_init_
from catdog_lab.models.components.transfer import TransferNet
from catdog_lab.models.outputs import n_outputs


def build_from_arch(arch: dict, load_weights: bool = True, init: str = "torch", outputs: int = 1) -> nn.Module:
    """`init="keras"`: Glorot-uniform kernels and zero biases for every layer trained from scratch (the
    convnet, the dense head), never for pretrained conv layers. `outputs`: `n_outputs(len(classes))`."""
    kind = arch["kind"]
    if kind == "convnet":
        # model files written before the 2nd-edition net existed carry no filters: they are the 1st edition's
        net = BookConvNet(arch["image_size"], arch["dropout"], arch.get("filters", BOOK1["filters"]),
                          arch.get("pool_last", True), arch.get("hidden", BOOK1["hidden"]), outputs)
        return keras_init_(net) if init == "keras" else net
    if kind in ("head", "transfer"):
        # the arch record's backbone spec; files from before backbones came from config hold only "vgg16"
        spec = BackboneSpec.from_record(arch.get("backbone_spec"), arch["backbone"],
                                        arch["weights"] if load_weights else "none")
        backbone = build_backbone(spec)
        net = TransferNet(backbone, arch["image_size"], arch["hidden"], arch["dropout"], arch["trainable"],
                          arch.get("activation", "relu"), outputs)
        if init == "keras":
            keras_init_(net.head)
        return net
    raise ConfigError(f"model: unknown model kind {kind!r}")


def build_head(in_features: int, hidden: int, dropout: float, activation: str, init: str = "torch",
               outputs: int = 1) -> DenseHead:
    """The dense head trained on cached conv-base features (the `head` model)."""
    head = DenseHead(in_features, hidden, dropout, activation, outputs)
    return keras_init_(head) if init == "keras" else head


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_model(path: str | Path, stage: str, arch: dict, net: nn.Module, last_state: dict | None = None,
               classes=BOOK_CLASSES, class_counts: dict | None = None) -> None:
    """`net` is the stage's selected model. `last_state`, when given, is the last epoch's weights where they
    differ from it: a later stage may start from them (the books' fine-tuning continues the last epoch).
    `classes`: label i's name; `class_counts`: {split: {class: images}} it was trained and tested on."""
    preprocess = getattr(net, "preprocess", None)
    bundle = {"stage": stage, "arch": arch, "classes": list(classes), "class_counts": class_counts or {},
              "preprocessing": getattr(preprocess, "spec", None),
              "state_dict": _cpu_state(net.state_dict())}
    if last_state is not None:
        bundle["last_state_dict"] = _cpu_state(last_state)
    torch_save(bundle, path)


def load_model(path: str | Path, weights: str = "selected") -> tuple[nn.Module, dict]:
    """Rebuild a saved stage model (eval mode). The state dict already holds the pretrained weights.
    `weights="last"`: the last epoch's weights where the file keeps them apart from the selected ones.
    A file that is not one (corrupt, a folder, a bare state dict, code in its pickle) is a one-line DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: train that stage first (dvc repro)")
    bundle = read_torch_file(path, "model file", DataError)
    if not isinstance(bundle, dict) or not {"arch", "state_dict"} <= bundle.keys():
        raise DataError(f"model file: {path} is not a stage model (models/<stage>.pt, with its arch and "
                        f"state_dict): a bare state dict or another program's checkpoint cannot be rebuilt")
    bundle.setdefault("classes", list(BOOK_CLASSES))       # written before other classes existed
    net = build_from_arch(dict(bundle["arch"]), load_weights=False, outputs=n_outputs(len(bundle["classes"])))
    if bundle.get("preprocessing"):
        from catdog_lab.models.components.preprocess import Preprocess
        net.preprocess = Preprocess(bundle["preprocessing"])   # spec (BGR etc.) is not a buffer: restore it
    try:
        net.load_state_dict(bundle["last_state_dict"] if weights == "last" and "last_state_dict" in bundle
                            else bundle["state_dict"])
    except RuntimeError as exc:       # a hand-edited file: its weights do not fit its own arch or classes
        raise DataError(f"model file: {path}: its weights do not fit its arch and {len(bundle['classes'])} "
                        f"classes ({str(exc).splitlines()[-1].strip()[:160]})") from None
    return net.eval(), bundle


def transfer_from_head(head: DenseHead, backbone: Backbone, image_size: int, hidden: int, dropout: float,
                       activation: str, outputs: int = 1) -> TransferNet:
    """Wrap a head trained on cached features into the full image -> logit model, for prediction."""
    net = TransferNet(backbone, image_size, hidden, dropout, [], activation, outputs)
    net.head.load_state_dict(head.state_dict())
    return net
