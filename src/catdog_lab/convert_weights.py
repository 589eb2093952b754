"""`catdog-convert-weights`: Keras' ImageNet VGG16 weights (the ones the book used) -> this project's
weights file (`backbone.weights=<file>`).

Input: `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`, what `keras.applications.VGG16(
include_top=False)` downloads (into ~/.keras/models/). Keras' HDF5 weights layout: the root (or
`model_weights/` in a whole-model save) lists its layers in the `layer_names` attribute; each layer
group lists its tensors in `weight_names`, named `block1_conv1_W_1:0` / `block1_conv1_b_1:0` in the
old files and `block1_conv1/kernel:0` / `bias:0` in newer ones. Kernel and bias are told apart by
shape, so both work.

Output: the dict `models/components/backbones.py` loads (format KERAS_VGG16_FORMAT): torchvision's
`features.N.weight/bias` keys, and the Caffe preprocessing these weights were trained with (BGR,
0-255, ImageNet mean subtracted, no scaling), which the model then applies by itself.

Keras kernels are HWIO (3, 3, in, out); PyTorch's are OIHW (out, in, 3, 3): transpose(3, 2, 0, 1).
Both frameworks compute cross-correlation, so no kernel flip. The input channels stay in the
file's BGR order, because the model's Preprocess flips RGB photos to BGR before the first conv.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from catdog_lab.errors import WeightsError
from catdog_lab.models.components.backbones import KERAS_VGG16_FORMAT, _vgg16_names

KERAS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
DEFAULT_OUTPUT = Path("~/.cache/catdog-lab/vgg16_keras_imagenet_features.pt")
CAFFE_BGR = {"mode": "caffe", "channel_order": "BGR", "input_range": [0, 255],
             "mean": [103.939, 116.779, 123.68], "std": [1, 1, 1]}
# VGG16's 13 convs: (Keras name, in channels, out channels), all 3x3
VGG16_CONVS = [(f"block{b}_conv{i}", cin if i == 1 else cout, cout)
               for b, (cin, cout, n) in enumerate(((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3),
                                                   (512, 512, 3)), start=1)
               for i in range(1, n + 1)]


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _layer_tensors(group) -> list[tuple[str, np.ndarray]]:
    """(name, array) of one Keras layer group, in `weight_names` order (or every dataset below it)."""
    import h5py

    names = [_text(n) for n in group.attrs.get("weight_names", [])]
    if not names:
        names = []
        group.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return [(n, np.asarray(group[n][()])) for n in names]


def read_keras_vgg16(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{Keras conv name: (kernel HWIO, bias)} for VGG16's 13 convs, every name and shape checked."""
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: file not found (Keras saves it as ~/.keras/models/{KERAS_FILE})")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"{path}: not an HDF5 file ({str(exc).splitlines()[0]})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f     # a whole-model save nests the weights
        layer_names = [_text(n) for n in root.attrs.get("layer_names", list(root.keys()))]
        out = {}
        for name, cin, cout in VGG16_CONVS:
            if name not in layer_names or name not in root:
                convs = [n for n in layer_names if "conv" in n]
                raise WeightsError(f"{path}: no layer {name} (its conv layers: {', '.join(convs[:6]) or 'none'}"
                                   f"{' ...' if len(convs) > 6 else ''}); is it Keras' VGG16 weights file?")
            tensors = _layer_tensors(root[name])
            kernels = [(n, a) for n, a in tensors if a.ndim == 4]
            biases = [(n, a) for n, a in tensors if a.ndim == 1]
            if len(tensors) != 2 or len(kernels) != 1 or len(biases) != 1:
                shapes = ", ".join(f"{n} {tuple(a.shape)}" for n, a in tensors) or "nothing"
                raise WeightsError(f"{path}: layer {name} should hold one 4-D kernel and one bias, holds {shapes}")
            (kname, kernel), (bname, bias) = kernels[0], biases[0]
            if kernel.shape != (3, 3, cin, cout):
                hint = (" (channels-first: this is the Theano 'th_dim_ordering' file; use the tf_dim_ordering one)"
                        if kernel.shape == (cout, cin, 3, 3) else "")
                raise WeightsError(f"{path}: {name} kernel {kname} has shape {tuple(kernel.shape)}, expected "
                                   f"{(3, 3, cin, cout)} (height, width, in, out){hint}")
            if bias.shape != (cout,):
                raise WeightsError(f"{path}: {name} bias {bname} has shape {tuple(bias.shape)}, expected ({cout},)")
            for label, array in (("kernel", kernel), ("bias", bias)):
                if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                    raise WeightsError(f"{path}: {name} {label} is not finite floating point ({array.dtype})")
            out[name] = (kernel, bias)
    return out


def to_state_dict(layers: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Keras HWIO kernels -> torchvision's `features.N.weight` (OIHW) and `features.N.bias`."""
    _, convs = _vgg16_names()
    state = {}
    for name, (kernel, bias) in layers.items():
        index = convs[name]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(
            kernel.astype(np.float32).transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(bias.astype(np.float32).copy())
    return state


def content_md5(state: dict[str, torch.Tensor]) -> str:
    """md5 of every tensor's bytes in key order: the same weights give the same digest, whatever the file."""
    digest = hashlib.md5()
    for key in state:
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def convert(h5_path: str | Path, output: str | Path) -> dict:
    from catdog_lab.io import torch_save
    from catdog_lab.models.components.backbones import build_vgg16

    h5_path, output = Path(h5_path).expanduser(), Path(output).expanduser()
    state = to_state_dict(read_keras_vgg16(h5_path))
    sha = hashlib.sha256(h5_path.read_bytes()).hexdigest()
    torch_save({"format": KERAS_VGG16_FORMAT, "state_dict": state, "preprocessing": dict(CAFFE_BGR),
                "source": f"Keras ImageNet VGG16 conv base, converted from {h5_path.name} (sha256 {sha}) by "
                          f"catdog-convert-weights: kernels HWIO -> OIHW, Caffe BGR preprocessing"}, output)
    build_vgg16(str(output))          # the loader the stages use accepts it (raises WeightsError otherwise)
    return {"output": output, "tensors": len(state), "parameters": sum(t.numel() for t in state.values()),
            "md5": content_md5(state)}


def main(argv: list[str] | None = None) -> None:
    from catdog_lab.errors import exit_on_user_error

    p = argparse.ArgumentParser(prog="catdog-convert-weights", description=__doc__.split("\n\n")[0])
    p.add_argument("h5", type=Path, help=f"Keras' {KERAS_FILE}")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                   help="weights file to write (default: %(default)s)")
    args = p.parse_args(argv)
    info = exit_on_user_error(convert, args.h5, args.output)
    print(f"wrote {info['output']}: {info['tensors']} tensors, {info['parameters']:,} parameters, "
          f"content md5 {info['md5']}\nuse it with backbone.weights={info['output']}")


if __name__ == "__main__":
    sys.exit(main())
