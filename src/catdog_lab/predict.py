"""catdog-predict: cat or dog, with the probability, for files, folders and globs, in batches.

    catdog-predict photo.jpg other.jpg                 # models/finetune.pt
    catdog-predict --stage scratch photos/ 'more/**/*.jpg' --format csv > predictions.csv
    catdog-predict --model models:/catdog-finetune@champion photos/      # from the MLflow registry
    catdog-predict --model path/to/model.pt --gradcam --out overlays/ photo.jpg

Exit code: 0 when every image was classified, 1 when any file failed (each one is reported and the
others are still classified), 2 for a usage error (no model, bad option).
"""
from __future__ import annotations

import argparse
import csv
import functools
import glob
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from catdog_lab import CLASSES
from catdog_lab.data.images import IMAGE_SUFFIXES, open_rgb
from catdog_lab.data.split import resize_to_tensor
from catdog_lab.errors import UserError, exit_on_user_error
from catdog_lab.models.factory import load_model

# on a CPU, small batches in channels_last run fastest (the book's convnet, 1 thread: 100 img/s at batch 8,
# 60 at batch 32, 35-44 in the default layout; VGG16: flat over batch size, +15% from channels_last)
BATCH_SIZE = 8
FORMATS = ("table", "json", "csv")
FIELDS = ("file", "label", "probability", "p_dog", "error")


@functools.cache
def config_defaults():
    """conf/ composed: the decoding limit (data.max_image_pixels) and the Grad-CAM settings (visualize.*)
    are the pipeline's, not copies. Composed on first use only: an option given on the command line
    spares it."""
    from catdog_lab.config import compose
    return compose()


def expand_inputs(items: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files as given; folders recursively (image suffixes only, sorted); glob patterns (`**` recurses).
    Returns (files, errors) where an item that matches nothing is an error."""
    files, errors = [], []
    for item in map(str, items):
        if Path(item).is_dir():
            found = [path for path in sorted(Path(item).rglob("*"))
                     if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
            files += found
            if not found:
                errors.append(f"{item}: no images in this folder")
        elif glob.has_magic(item) and not Path(item).exists():
            matches = [Path(match) for match in sorted(glob.glob(item, recursive=True))]
            if not matches:
                errors.append(f"{item}: no file matches")
            for match in matches:
                inside, _ = expand_inputs([match]) if match.is_dir() else ([match], [])
                files += inside
        else:
            files.append(Path(item))        # a missing file is reported per file, with the others classified
    return files, errors


class Predictor:
    """Batched inference for one stage model: decoding runs in a thread pool (PIL releases the GIL) while
    the network runs the previous batch, so a folder costs about max(decode, forward), not their sum."""

    def __init__(self, net: torch.nn.Module, image_size: int, batch_size: int = BATCH_SIZE,
                 workers: int | None = None, max_pixels: int | None = None, min_side: int | None = None,
                 max_aspect: float | None = None):
        """max_pixels: larger images are skipped as possible decompression bombs; min_side, max_aspect: smaller
        or more elongated ones are refused (None: data.max_image_pixels, data.min_image_side,
        data.max_aspect_ratio)."""
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.size, self.batch_size = int(image_size), int(batch_size)
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.max_pixels = int(config_defaults().data.max_image_pixels if max_pixels is None else max_pixels)
        self.min_side = int(config_defaults().data.min_image_side if min_side is None else min_side)
        self.max_aspect = float(config_defaults().data.max_aspect_ratio if max_aspect is None else max_aspect)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "Predictor":
        net, bundle = load_model(path)
        return cls(net, int(bundle["arch"]["image_size"]), **kwargs)

    def decode(self, source: Path | bytes) -> torch.Tensor | str:
        """uint8 3 x S x S, decoded the way the split stage decodes the training photos, or the reason not."""
        if isinstance(source, Path) and not source.is_file():
            return "no such file"
        image, note = open_rgb(source, self.max_pixels, self.min_side, self.max_aspect)
        return note if image is None else resize_to_tensor(image, self.size)

    def p_dog(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(self.net(batch.float().contiguous(memory_format=torch.channels_last))).flatten()

    def predict(self, sources: Sequence[Path | bytes], keep_tensors: bool = False) -> Iterator[dict]:
        """One result per source, in order: {"label", "probability", "p_dog", "error"} (+ "tensor")."""
        chunks = [sources[i:i + self.batch_size] for i in range(0, len(sources), self.batch_size)]
        with ThreadPoolExecutor(self.workers) as pool:
            pending = [pool.submit(self.decode, source) for source in chunks[0]] if chunks else []
            for i in range(len(chunks)):
                decoded = [future.result() for future in pending]
                # queue the next batch's decoding before this batch's forward pass
                pending = ([pool.submit(self.decode, source) for source in chunks[i + 1]] if i + 1 < len(chunks)
                           else [])
                good = [item for item in decoded if isinstance(item, torch.Tensor)]
                probs = iter(self.p_dog(torch.stack(good)).tolist()) if good else iter(())
                for item in decoded:
                    if not isinstance(item, torch.Tensor):
                        yield {"label": None, "probability": None, "p_dog": None, "error": item}
                        continue
                    p_dog = next(probs)
                    label = CLASSES[int(p_dog > 0.5)]
                    result = {"label": label, "probability": p_dog if label == "dog" else 1 - p_dog, "p_dog": p_dog,
                              "error": None}
                    yield result | ({"tensor": item} if keep_tensors else {})


def resolve_model(spec: str | Path, tracking_uri: str | None = None) -> Path:
    """A model file, or `models:/<name>@<alias>` / `models:/<name>/<version>` from the MLflow registry."""
    if str(spec).startswith("models:/"):
        from catdog_lab.model_registry import registry_model_file
        return registry_model_file(str(spec), tracking_uri)
    return Path(spec)


def predict_files(model_path: Path | str, files: list[Path], gradcam: bool = False, out: Path | None = None,
                  alpha: float | None = None, batch_size: int = BATCH_SIZE, tracking_uri: str | None = None,
                  max_pixels: int | None = None, gradcam_layer: str | None = None) -> tuple[list[dict], list[str]]:
    """alpha, max_pixels, gradcam_layer: None takes visualize.gradcam_alpha, data.max_image_pixels,
    visualize.gradcam_layer from conf/."""
    predictor = Predictor.from_file(resolve_model(model_path, tracking_uri), batch_size=batch_size,
                                    max_pixels=max_pixels)
    if gradcam:
        layer = _gradcam_layer(predictor.net, gradcam_layer)
        alpha = float(config_defaults().visualize.gradcam_alpha if alpha is None else alpha)
    results, errors = [], []
    for path, result in zip(files, predictor.predict(list(files), keep_tensors=gradcam)):
        result = {"file": str(path)} | result
        if result["error"]:
            errors.append(f"{path}: {result['error']}")
        elif gradcam:
            image = result.pop("tensor").unsqueeze(0)
            target = int(result["p_dog"] > 0.5)
            result["gradcam"] = str(_save_gradcam(predictor.net, layer, image, target, path, out, alpha))
        results.append(result)
    return results, errors


def _gradcam_layer(net, name: str | None) -> torch.nn.Module:
    """The layer Grad-CAM explains: `name` (None: the one the model file's backbone record names, else
    visualize.gradcam_layer) in a backbone-based model; the from-scratch convnet has no named layers and
    uses its last conv block."""
    if not hasattr(net, "layer_index"):
        return [module for module in net.features if isinstance(module, torch.nn.ReLU)][-1]
    if name is None:
        name = getattr(net, "gradcam_layer", None) or config_defaults().visualize.gradcam_layer
    name = str(name)
    if name not in net.layer_index:
        raise UserError(f"--gradcam-layer: {name!r} is not a layer of this model; "
                        f"choose one of {', '.join(net.layer_index)}")
    return net.features[net.layer_index[name]]


def _save_gradcam(net, layer, image, target: int, path: Path, out: Path | None, alpha: float) -> Path:
    from catdog_lab.plots import plt
    from catdog_lab.viz.attributions import gradcam
    from catdog_lab.viz.figures import overlay

    cam = gradcam(net, layer, image, target)[0]
    dest = (out or path.parent) / f"{path.stem}_gradcam_{CLASSES[target]}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(dest, overlay(image[0], cam, alpha))
    return dest


def render(results: list[dict], fmt: str) -> str:
    """table: the classified files (failures go to stderr); json / csv: every file, `error` empty when fine."""
    if fmt == "json":
        return json.dumps([{key: result.get(key) for key in FIELDS + (("gradcam",) if "gradcam" in result else ())}
                           for result in results], indent=2)
    if fmt == "csv":
        import io
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[*FIELDS, "gradcam"], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for result in results:
            writer.writerow({key: ("" if result.get(key) is None else
                                   (f"{result[key]:.6f}" if isinstance(result[key], float) else result[key]))
                             for key in (*FIELDS, "gradcam")})
        return buf.getvalue().rstrip("\n")
    ok = [result for result in results if not result["error"]]
    width = max([len("file")] + [len(result["file"]) for result in ok])
    lines = [f"{'file':<{width}}  label  probability  p(dog)"]
    for result in ok:
        extra = f"  Grad-CAM: {result['gradcam']}" if "gradcam" in result else ""
        lines.append(f"{result['file']:<{width}}  {result['label']:<5}  {100 * result['probability']:10.1f}%  "
                     f"{result['p_dog']:.4f}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="catdog-predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stage", default="finetune", help="use models/<stage>.pt (default: finetune)")
    group.add_argument("--model", help="a model file written by a training stage, or models:/<name>@<alias>")
    parser.add_argument("--tracking-uri", help="MLflow store for models:/ URIs "
                        "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output on stdout (default: table)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--max-pixels", type=int, help="skip larger images as possible decompression bombs "
                        "(default: data.max_image_pixels in conf/)")
    parser.add_argument("--gradcam", action="store_true", help="save a Grad-CAM overlay of the predicted class")
    parser.add_argument("--gradcam-layer", help="the layer of a backbone-based model that Grad-CAM explains (default: "
                        "its backbone's gradcam_layer); the from-scratch convnet uses its last conv block")
    parser.add_argument("--out", type=Path, help="folder for the overlays (default: next to each image)")
    args = parser.parse_args(argv)
    for option, value in (("--batch-size", args.batch_size), ("--max-pixels", args.max_pixels)):
        if value is not None and value < 1:
            parser.error(f"{option}: must be a positive integer, got {value}")
    model = args.model or Path("models") / f"{args.stage}.pt"
    files, input_errors = expand_inputs(args.images)
    results, errors = exit_on_user_error(predict_files, model, files, args.gradcam, args.out,
                                         batch_size=args.batch_size, tracking_uri=args.tracking_uri,
                                         max_pixels=args.max_pixels, gradcam_layer=args.gradcam_layer)
    if results:
        print(render(results, args.format))
    for error in input_errors + errors:
        print(f"error: {error}", file=sys.stderr)
    if input_errors or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
