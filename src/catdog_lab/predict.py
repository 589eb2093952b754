"""catdog-predict: cat or dog, with the probability, from any trained stage model.

    catdog-predict photo.jpg other.jpg                 # models/finetune.pt
    catdog-predict --stage scratch photo.jpg
    catdog-predict --model path/to/model.pt --gradcam --out overlays/ photo.jpg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from catdog_lab import CLASSES
from catdog_lab.data.images import open_rgb
from catdog_lab.data.split import resize_to_tensor
from catdog_lab.entry import exit_on_user_error
from catdog_lab.models.factory import load_model

MAX_PIXELS = 40_000_000


def predict_files(model_path: Path, files: list[Path], gradcam: bool = False, out: Path | None = None,
                  alpha: float = 0.4) -> tuple[list[dict], list[str]]:
    net, bundle = load_model(model_path)
    size = int(bundle["arch"]["image_size"])
    results, errors = [], []
    for path in files:
        if not path.is_file():
            errors.append(f"{path}: no such file")
            continue
        image, note = open_rgb(path, MAX_PIXELS)
        if image is None:
            errors.append(f"{path}: {note}")
            continue
        x = resize_to_tensor(image, size).unsqueeze(0)
        with torch.inference_mode():
            p_dog = float(torch.sigmoid(net(x.float()))[0])
        label = CLASSES[int(p_dog > 0.5)]
        result = {"file": str(path), "label": label, "probability": p_dog if label == "dog" else 1 - p_dog,
                  "p_dog": p_dog}
        if gradcam:
            result["gradcam"] = str(_save_gradcam(net, x, int(p_dog > 0.5), path, out, alpha))
        results.append(result)
    return results, errors


def _save_gradcam(net, x, target: int, path: Path, out: Path | None, alpha: float) -> Path:
    import matplotlib.pyplot as plt
    from catdog_lab.viz.attributions import gradcam
    from catdog_lab.viz.figures import overlay

    if not hasattr(net, "layer_index"):
        layer = [m for m in net.features if isinstance(m, torch.nn.ReLU)][-1]      # last conv block of the convnet
    else:
        layer = net.features[net.layer_index["block5_conv3"]]
    cam = gradcam(net, layer, x, target)[0]
    dest = (out or path.parent) / f"{path.stem}_gradcam_{CLASSES[target]}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(dest, overlay(x[0], cam, alpha))
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="catdog-predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stage", default="finetune", help="use models/<stage>.pt (default: finetune)")
    group.add_argument("--model", type=Path, help="a model file written by a training stage")
    parser.add_argument("--gradcam", action="store_true", help="save a Grad-CAM overlay of the predicted class")
    parser.add_argument("--out", type=Path, help="folder for the overlays (default: next to each image)")
    args = parser.parse_args(argv)
    model = args.model or Path("models") / f"{args.stage}.pt"
    results, errors = exit_on_user_error(predict_files, model, args.images, args.gradcam, args.out)
    for r in results:
        extra = f"  (Grad-CAM: {r['gradcam']})" if "gradcam" in r else ""
        print(f"{r['file']}: {r['label']} ({100 * r['probability']:.1f}%){extra}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
