"""Pretrained conv bases described by config (conf/backbone/<name>.yaml), behind one small adapter.

A `Backbone` is: the conv stack as an nn.Sequential of blocks (takes preprocessed input; sliceable, so a
frozen prefix can run apart from the trainable rest), the `Preprocess` its weights expect, and named
layers mapped to indices in that Sequential (Keras-style block5_conv3 for the book's VGG16, the
torchvision module path such as `layer4` for the others), for freezing, Grad-CAM and filter patterns.

A `BackboneSpec` is what conf/backbone/<name>.yaml says: the builder (`vgg16_book`, `torchvision`:
`torchvision.models.get_model(arch)`, or `<module>:<function>` returning an nn.Module), the blocks of
that model which make the conv base, the ImageNet weights enum, the weights to load, the preprocessing,
the blocks `finetune` unfreezes and the layers `visualize` shows. Model files keep it in their arch
record (`BackboneSpec.record()`), so a model rebuilds without the config.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from catdog_lab.errors import ConfigError, WeightsError
from catdog_lab.io import read_torch_file
from catdog_lab.models.components.preprocess import TORCHVISION_IMAGENET, Preprocess

KERAS_VGG16_FORMAT = "torchvision-vgg16-features/v1"


@dataclass
class Backbone:
    name: str
    features: nn.Sequential
    preprocess: Preprocess
    layers: dict[str, int] = field(default_factory=dict)   # layer name -> index of its output module
    blocks: dict[str, int] = field(default_factory=dict)   # trainable unit's name -> index of its module
    gradcam_layer: str | None = None                       # the layer Grad-CAM explains by default

    def output_shape(self, image_size: int) -> tuple[int, int, int]:
        """(channels, height, width) of the conv base's output for a square input: computed, not declared."""
        return output_shape(self.features, image_size)

    def output_side(self, image_size: int) -> int:
        return self.output_shape(image_size)[-1]


def output_shape(module: nn.Module, image_size: int) -> tuple[int, int, int]:
    """C x H x W of `module`'s output for one 3 x image_size x image_size input, run in eval mode (a
    BatchNorm in training mode would update its running statistics from the probe) and restored."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            param = next(module.parameters(), None)
            probe = torch.zeros(1, 3, image_size, image_size, device=param.device if param is not None else "cpu")
            shape = tuple(module(probe).shape[1:])
    finally:
        for m, mode in modes.items():
            m.training = mode
    if len(shape) != 3:
        raise ConfigError(f"backbone.blocks: the conv base must output a C x H x W feature map, got shape {shape}")
    return shape


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


def load_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a weights file safely: (state_dict, its preprocessing spec, None for a plain state dict that
    brings none). Never unpickles code."""
    path = Path(path).expanduser()
    obj = read_torch_file(path, "backbone.weights", WeightsError)
    if isinstance(obj, dict) and "format" in obj:
        if obj["format"] != KERAS_VGG16_FORMAT:
            raise WeightsError(f"backbone.weights: {path} has unknown format {obj['format']!r}")
        if not isinstance(obj.get("state_dict"), dict) or not isinstance(obj.get("preprocessing"), dict):
            raise WeightsError(f"backbone.weights: {path} lacks its state_dict or preprocessing entry")
        return obj["state_dict"], obj["preprocessing"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None                                # a plain torchvision state dict
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
        state, file_spec = load_weights_file(weights)
        spec = file_spec or spec
    if state is not None:
        feature_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        load_conv_base(features, feature_state, weights, "VGG16", prefix="features.")
    layers, convs = _vgg16_names()
    return Backbone("vgg16", features, Preprocess(spec), layers, convs)


def load_conv_base(module: nn.Module, state: dict, weights: str, name: str, kept: tuple[str, ...] = ("",),
                   prefix: str = "") -> None:
    """Load `state` into `module` (extra tensors, e.g. a classifier, ignored), or say in one line why the file
    does not fit: wrong shapes, or conv-base tensors (keys starting with one of `kept`) that it lacks."""
    try:
        missing, _ = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise WeightsError(f"backbone.weights: {weights}: tensor shapes do not fit {name} "
                           f"({lines[1].strip() if len(lines) > 1 else exc})") from None
    missing = [k for k in missing if k.startswith(kept)]
    if missing:
        raise WeightsError(f"backbone.weights: {weights} lacks {len(missing)} {name} conv-base tensors "
                           f"(e.g. {prefix}{missing[0]})")


# ------------------------------------------------------------------------------------- backbones by config
BUILDERS = ("vgg16_book", "torchvision")          # or "<module>:<function>" (a function returning an nn.Module)
PREPROCESSING_KEYS = ("channel_order", "input_range", "mean", "std")


@dataclass(frozen=True)
class BackboneSpec:
    """conf/backbone/<name>.yaml, checked (every error names its `backbone.*` key). See conf/backbone/."""
    name: str
    title: str
    builder: str
    weights: str = "none"
    arch: str | None = None                    # torchvision.models.get_model name (builder torchvision)
    imagenet: str | None = None                # torchvision weights enum, e.g. ResNet50_Weights.IMAGENET1K_V2
    preprocessing: str | dict = "weights"      # weights: the weights' own | a spec dict (Preprocess)
    blocks: tuple[str, ...] = ()               # module paths in the built model, in order: the conv base
    trainable: tuple[str, ...] = ()            # blocks `finetune` unfreezes by default
    gradcam_layer: str | None = None
    filter_layers: tuple[str, ...] = ()        # visualize: filter patterns of the pretrained base
    finetuned_filter_layers: tuple[str, ...] = ()   # ... and of the fine-tuned model

    @classmethod
    def from_config(cls, section) -> BackboneSpec:
        """From the `backbone` config section (a DictConfig or dict); extra keys (feature_batch_size,
        visualize) belong to the stages and are ignored here."""
        from omegaconf import DictConfig, OmegaConf

        data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
        for key in ("name", "builder"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"backbone.{key}: missing or empty")
        if not re.fullmatch(r"[\w.-]+", data["name"]):       # it goes into file names (figures, filters)
            raise ConfigError(f"backbone.name: letters, digits, _ . - only (it names files), got {data['name']!r}")
        weights = data.get("weights")
        if weights is None or str(weights) == "":
            raise ConfigError("backbone.weights: empty; use imagenet, none or a file path")
        for key in ("blocks", "trainable", "filter_layers", "finetuned_filter_layers"):
            value = data.get(key) or []
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"backbone.{key}: must be a list of layer names, got {value!r}")
        preprocessing = data.get("preprocessing") or "weights"
        if isinstance(preprocessing, dict):
            missing = [k for k in PREPROCESSING_KEYS if k not in preprocessing]
            if missing or preprocessing.get("channel_order") not in ("RGB", "BGR"):
                raise ConfigError(f"backbone.preprocessing: a spec needs {', '.join(PREPROCESSING_KEYS)} "
                                  f"(channel_order RGB or BGR); got {preprocessing!r}")
        elif preprocessing != "weights":
            raise ConfigError(f"backbone.preprocessing: must be weights or a spec dict, got {preprocessing!r}")
        spec = cls(name=data["name"], title=str(data.get("title") or data["name"]), builder=data["builder"],
                   weights=str(weights), arch=data.get("arch"), imagenet=data.get("imagenet"),
                   preprocessing=preprocessing, blocks=tuple(data.get("blocks") or ()),
                   trainable=tuple(data.get("trainable") or ()), gradcam_layer=data.get("gradcam_layer"),
                   filter_layers=tuple(data.get("filter_layers") or ()),
                   finetuned_filter_layers=tuple(data.get("finetuned_filter_layers") or ()))
        backbone_builder(spec.builder)
        if spec.builder == "torchvision":
            _torchvision_arch(spec)
        _imagenet_weights(spec)
        if spec.builder != "vgg16_book" and not spec.blocks:
            raise ConfigError("backbone.blocks: empty; list the modules of the built model that make the conv base")
        spec.check_layers("backbone.trainable", spec.trainable, trainable=True)
        spec.check_layers("backbone.gradcam_layer", [spec.gradcam_layer] if spec.gradcam_layer else [])
        spec.check_layers("backbone.filter_layers", spec.filter_layers)
        spec.check_layers("backbone.finetuned_filter_layers", spec.finetuned_filter_layers)
        return spec

    def layer_names(self, trainable: bool = False) -> list[str]:
        """The names `trainable` (blocks with weights) or Grad-CAM and filter patterns (any layer) may use."""
        if self.builder == "vgg16_book":
            layers, convs = _vgg16_names()
            return list(convs if trainable else layers)
        return list(self.blocks)

    def check_layers(self, key: str, names, trainable: bool = False) -> None:
        """A one-line ConfigError naming `key` when a name is not a layer of this backbone."""
        known = self.layer_names(trainable)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{key}: {unknown[0]!r} is not a {'trainable block' if trainable else 'layer'} of "
                              f"backbone {self.name}; choose from {', '.join(known)}")

    def record(self) -> dict:
        """What a model file keeps to rebuild this backbone without the config (its weights are in the file)."""
        out = asdict(self)
        out.pop("weights")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_record(cls, record: dict | None, name: str, weights: str = "none") -> BackboneSpec:
        """The spec a model file's arch record keeps; files written before backbones came from config
        record only the name of the one backbone there was, the book's VGG16."""
        if record is None:
            if name != "vgg16":
                raise ConfigError(f"backbone: a model file without a backbone record names {name!r}, not vgg16")
            record = {"name": "vgg16", "title": "VGG16", "builder": "vgg16_book"}
        return cls.from_config({**record, "weights": weights})


def backbone_builder(builder: str):
    """The function behind `backbone.builder`: the one place an unknown builder is rejected."""
    if builder == "vgg16_book":
        return lambda spec, progress=True: build_vgg16(spec.weights, progress)
    if builder == "torchvision":
        return build_configured
    if isinstance(builder, str) and re.fullmatch(r"[\w.]+:\w+", builder):
        module, function = builder.split(":")
        try:
            make = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"backbone.builder: cannot import {builder} ({type(exc).__name__}: {exc})") from None
        return lambda spec, progress=True: build_configured(spec, progress, make=make)
    raise ConfigError(f"backbone.builder: unknown builder {builder!r}; choose {', '.join(BUILDERS)} "
                      f"or <module>:<function>")


def build_backbone(spec: BackboneSpec, progress: bool = True) -> Backbone:
    backbone = backbone_builder(spec.builder)(spec, progress)
    backbone.name, backbone.gradcam_layer = spec.name, spec.gradcam_layer
    return backbone


def _torchvision_arch(spec: BackboneSpec) -> str:
    import torchvision

    if spec.arch not in torchvision.models.list_models():
        raise ConfigError(f"backbone.arch: {spec.arch!r} is not a torchvision.models model "
                          f"(see torchvision.models.list_models())")
    return spec.arch


def _imagenet_weights(spec: BackboneSpec):
    """The torchvision weights enum named by `backbone.imagenet` (None when it names none)."""
    import torchvision

    if not spec.imagenet:
        return None
    try:
        return torchvision.models.get_weight(spec.imagenet)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"backbone.imagenet: {spec.imagenet!r} is not a torchvision weights enum "
                          f"(e.g. ResNet50_Weights.IMAGENET1K_V2)") from None


def _preprocessing(spec: BackboneSpec, file_spec: dict | None) -> dict:
    """The spec of the config, else the weights file's own, else the weights enum's transforms (its mean
    and std: the stages feed fixed-size images, so the enum's resize and crop do not apply)."""
    if isinstance(spec.preprocessing, dict):
        return {"mode": "config", **spec.preprocessing}
    if file_spec is not None:
        return file_spec
    enum = _imagenet_weights(spec)
    if enum is None:
        return dict(TORCHVISION_IMAGENET)
    transforms = enum.transforms()
    return {"mode": "torch", "channel_order": "RGB", "input_range": [0, 1],
            "mean": [float(v) for v in transforms.mean], "std": [float(v) for v in transforms.std]}


def _submodule(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"backbone.blocks: the built model has no module {path!r}") from None


def build_configured(spec: BackboneSpec, progress: bool = True, make=None) -> Backbone:
    """A torchvision model (or `make()`'s), cut into the conv base of `spec.blocks`, weights loaded."""
    import torchvision

    model = make() if make is not None else torchvision.models.get_model(_torchvision_arch(spec), weights=None)
    blocks = [_submodule(model, path) for path in spec.blocks]     # a wrong path fails before any download
    state, file_spec = None, None
    if spec.weights == "imagenet":
        enum = _imagenet_weights(spec)
        if enum is None:
            raise ConfigError(f"backbone.imagenet: {spec.name} names no ImageNet weights; set backbone.weights "
                              f"to none or a file")
        try:
            state = enum.get_state_dict(progress=progress)
        except Exception as exc:
            raise WeightsError(f"backbone.weights=imagenet: torchvision could not download {spec.imagenet} "
                               f"({type(exc).__name__}); offline? set backbone.weights to a local file") from None
    elif spec.weights != "none":
        state, file_spec = load_weights_file(spec.weights)
    if state is not None:
        load_conv_base(model, state, spec.weights, spec.name, kept=tuple(f"{path}." for path in spec.blocks))
    for module in model.modules():                  # Captum hooks break on in-place activations
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    features = nn.Sequential(*blocks)
    layers = {path: i for i, path in enumerate(spec.blocks)}
    return Backbone(spec.name, features, Preprocess(_preprocessing(spec, file_spec)), layers, dict(layers))
