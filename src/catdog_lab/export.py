"""catdog-export: a stage model as one file that takes RGB uint8 pixels and returns every class's
probability, for runtimes without this package (onnxruntime, TorchScript in C++).

    catdog-export --format onnx                          # models/finetune.pt -> models/finetune.onnx
    catdog-export --stage scratch --format torchscript   # -> models/scratch.torchscript.pt
    catdog-export --model models:/catdog-finetune@champion --format onnx --out champion.onnx

Input `image`: uint8, N x 3 x S x S, RGB, S = the model's image size (resize the photo to S x S first,
bilinear, as `catdog-predict` does); N is free. Outputs `probabilities` (N x C, rows sum to 1, columns in
the model's class order: cat, dog for the book's) and `logit` (N for two classes, the book's single logit;
N x C for more). The class names travel in the file: ONNX metadata `classes`, TorchScript extra file
`classes.json` (JSON lists). The preprocessing (channel order, scaling, mean/std of the weights) is inside
the graph. After writing, the file is run on random pixels and compared with the PyTorch model; the largest
logit difference is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from catdog_lab.errors import DataError, exit_on_user_error
from catdog_lab.models.factory import load_model
from catdog_lab.models.outputs import probabilities

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 18


class PixelsToProbability(nn.Module):
    """uint8 RGB N x 3 x S x S -> (probabilities N x C, logit N or N x C)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit = self.net(image.float())
        return probabilities(logit), logit


def export_onnx(net: nn.Module, size: int, dest: Path, classes=("cat", "dog")) -> Path:
    wrapper = PixelsToProbability(net)
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                    output_names=["probabilities", "logit"],
                                    dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}},
                                    verbose=False)
    # weights inside the one file (no .data sidecar): the VGG16 model is ~60 MB, under protobuf's 2 GB limit
    program.save(str(tmp), external_data=False)
    import onnx
    model = onnx.load(str(tmp))
    onnx.helper.set_model_props(model, {"classes": json.dumps(list(classes))})
    onnx.save(model, str(tmp))
    tmp.replace(dest)
    return dest


def export_torchscript(net: nn.Module, size: int, dest: Path, classes=("cat", "dog")) -> Path:
    wrapper = PixelsToProbability(net)
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    # torch.jit is deprecated in favour of torch.export, but TorchScript files still load in C++ (libtorch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    traced.save(str(tmp), _extra_files={"classes.json": json.dumps(list(classes))})
    tmp.replace(dest)
    return dest


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_exported(path: Path, images: torch.Tensor, fmt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities N x C, logit) from an exported file on uint8 N x 3 x S x S images."""
    fmt = fmt or ("onnx" if str(path).endswith(".onnx") else "torchscript")
    if fmt == "onnx":
        probs, logit = onnx_session(path).run(None, {"image": images.numpy()})
        return torch.from_numpy(probs), torch.from_numpy(logit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    with torch.inference_mode():
        return module(images)


def exported_classes(path: Path) -> list[str]:
    """The class names an exported file carries, in its probability columns' order."""
    if str(path).endswith(".onnx"):
        meta = onnx_session(path).get_modelmeta().custom_metadata_map
        return json.loads(meta["classes"])
    files = {"classes.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["classes.json"])


def max_logit_difference(net: nn.Module, path: Path, images: torch.Tensor) -> float:
    with torch.inference_mode():
        expected = net(images.float())
    _, logit = run_exported(path, images)
    return float((logit.reshape(expected.shape) - expected).abs().max())


def export(model: str | Path, fmt: str, out: Path | None = None, tracking_uri: str | None = None) -> dict:
    from catdog_lab.predict import resolve_model

    if fmt not in FORMATS:
        raise DataError(f"--format: choose one of {', '.join(FORMATS)}, got {fmt!r}")
    model_file = resolve_model(model, tracking_uri)
    net, bundle = load_model(model_file)
    size = int(bundle["arch"]["image_size"])
    stage = bundle.get("stage", Path(model_file).stem)
    dest = Path(out) if out else Path("models") / f"{stage}{FORMATS[fmt]}"
    t0 = time.perf_counter()
    classes = bundle["classes"]
    (export_onnx if fmt == "onnx" else export_torchscript)(net, size, dest, classes)
    seconds = time.perf_counter() - t0
    check = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=check)
    diff = max_logit_difference(net, dest, images)
    return {"path": dest, "format": fmt, "image_size": size, "seconds": seconds, "max_logit_diff": diff,
            "classes": list(classes)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="catdog-export", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stage", default="finetune", help="export models/<stage>.pt (default: finetune)")
    group.add_argument("--model", help="a model file written by a training stage, or models:/<name>@<alias>")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    parser.add_argument("--out", type=Path, help="output file (default: models/<stage>.onnx or .torchscript.pt)")
    parser.add_argument("--tracking-uri", help="MLflow store for models:/ URIs")
    args = parser.parse_args(argv)
    model = args.model or Path("models") / f"{args.stage}.pt"
    info = exit_on_user_error(export, model, args.format, args.out, args.tracking_uri)
    print(f"wrote {info['path']} ({info['format']}, input uint8 N x 3 x {info['image_size']} x {info['image_size']} "
          f"RGB, outputs probabilities of {', '.join(info['classes'])} and logit) in {info['seconds']:.1f}s; "
          f"max |logit difference| vs PyTorch on 4 random "
          f"images: {info['max_logit_diff']:.2e}")
    if not info["max_logit_diff"] <= 1e-4:
        print(f"error: {info['path']}: exported logits differ from PyTorch's by {info['max_logit_diff']:.2e} "
              f"(> 1e-4)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
