"""catdog-predict: the top class and every class's probability, for files, folders and globs, in batches.

    catdog-predict photo.jpg other.jpg                 # models/finetune.pt
    catdog-predict --stage scratch photos/ 'more/**/*.jpg' --format csv > predictions.csv
    catdog-predict --model models:/catdog-finetune@champion photos/      # from the MLflow registry
    catdog-predict --model path/to/model.pt --gradcam --out overlays/ photo.jpg
    catdog-predict --evaluate labelled/ --out eval/    # a folder of class folders: accuracy, recall, mistakes

The classes are the model file's (cat, dog for the book's data): each result has `label`, its
`probability`, and `p_<class>` for every class.

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

from catdog_lab import BOOK_CLASSES
from catdog_lab.data.images import IMAGE_SUFFIXES, open_rgb
from catdog_lab.data.split import resize_to_tensor
from catdog_lab.errors import UserError, exit_on_user_error
from catdog_lab.models.factory import load_model
from catdog_lab.models.outputs import probabilities

# on a CPU, small batches in channels_last run fastest (the book's convnet, 1 thread: 100 img/s at batch 8,
# 60 at batch 32, 35-44 in the default layout; VGG16: flat over batch size, +15% from channels_last)
BATCH_SIZE = 8
FORMATS = ("table", "json", "csv")


def fields(classes) -> tuple[str, ...]:
    """The columns of a result: file, label, probability (of the label), p_<class> per class, error."""
    return ("file", "label", "probability", *probability_columns(classes), "error")


def probability_columns(classes) -> list[str]:
    return [f"p_{name}" for name in classes]


@functools.cache
def config_defaults():
    """conf/ composed: the decoding limit (data.max_image_pixels) and the Grad-CAM settings (visualize.*)
    are the pipeline's, not copies. Composed on first use only: an option given on the command line
    spares it."""
    from catdog_lab.config import compose
    return compose()


def expand_inputs(items: Iterable[str | Path], skipped: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Files as given; folders recursively (image suffixes only, sorted); glob patterns (`**` recurses).
    Returns (files, errors) where an item that matches nothing is an error. `skipped`, when given, gets a
    line per folder whose other files were left out (hidden ones, like .DS_Store, are not counted), so a
    photo saved as .tif or .heic is not passed over without a word."""
    files, errors = [], []
    for item in map(str, items):
        if Path(item).is_dir():
            inside = [path for path in sorted(Path(item).rglob("*")) if path.is_file()]
            found = [path for path in inside if path.suffix.lower() in IMAGE_SUFFIXES]
            files += found
            if not found:
                errors.append(f"{item}: no images in this folder")
            others = [path for path in inside if path.suffix.lower() not in IMAGE_SUFFIXES
                      and not path.name.startswith(".")]
            if others and skipped is not None:
                kinds = sorted({path.suffix.lower() or "no suffix" for path in others})
                skipped.append(f"{item}: {len(others)} file{'s' * (len(others) > 1)} skipped, not images by "
                               f"{'their' if len(others) > 1 else 'its'} suffix ({', '.join(kinds)}); "
                               f"read: {', '.join(sorted(IMAGE_SUFFIXES))}")
        elif glob.has_magic(item) and not Path(item).exists():
            matches = [Path(match) for match in sorted(glob.glob(item, recursive=True))]
            if not matches:
                errors.append(f"{item}: no file matches")
            for match in matches:
                inside, _ = expand_inputs([match], skipped) if match.is_dir() else ([match], [])
                files += inside
        else:
            files.append(Path(item))        # a missing file is reported per file, with the others classified
    return files, errors


class Predictor:
    """Batched inference for one stage model: decoding runs in a thread pool (PIL releases the GIL) while
    the network runs the previous batch, so a folder costs about max(decode, forward), not their sum."""

    def __init__(self, net: torch.nn.Module, image_size: int, batch_size: int = BATCH_SIZE,
                 workers: int | None = None, max_pixels: int | None = None, min_side: int | None = None,
                 max_aspect: float | None = None, classes=BOOK_CLASSES):
        """max_pixels: larger images are skipped as possible decompression bombs; min_side, max_aspect: smaller
        or more elongated ones are refused (None: data.max_image_pixels, data.min_image_side,
        data.max_aspect_ratio). classes: label i's name (the model file's `classes`)."""
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.classes = tuple(classes)
        self.size, self.batch_size = int(image_size), int(batch_size)
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.max_pixels = int(config_defaults().data.max_image_pixels if max_pixels is None else max_pixels)
        self.min_side = int(config_defaults().data.min_image_side if min_side is None else min_side)
        self.max_aspect = float(config_defaults().data.max_aspect_ratio if max_aspect is None else max_aspect)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "Predictor":
        net, bundle = load_model(path)
        return cls(net, int(bundle["arch"]["image_size"]), classes=bundle["classes"], **kwargs)

    def decode(self, source: Path | bytes) -> torch.Tensor | str:
        """uint8 3 x S x S, decoded the way the split stage decodes the training photos, or the reason not."""
        if isinstance(source, Path) and not source.is_file():
            return "no such file"
        image, note = open_rgb(source, self.max_pixels, self.min_side, self.max_aspect)
        return note if image is None else resize_to_tensor(image, self.size)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """N x C: every class's probability (rows sum to 1)."""
        with torch.inference_mode():
            return probabilities(self.net(batch.float().contiguous(memory_format=torch.channels_last)))

    def empty_result(self, error: str) -> dict:
        return {"label": None, "probability": None, **dict.fromkeys(probability_columns(self.classes)),
                "error": error}

    def predict(self, sources: Sequence[Path | bytes], keep_tensors: bool = False) -> Iterator[dict]:
        """One result per source, in order: {"label", "probability", "p_<class>" for each class, "error",
        "index": the label's index} (+ "tensor")."""
        chunks = [sources[i:i + self.batch_size] for i in range(0, len(sources), self.batch_size)]
        with ThreadPoolExecutor(self.workers) as pool:
            pending = [pool.submit(self.decode, source) for source in chunks[0]] if chunks else []
            for i in range(len(chunks)):
                decoded = [future.result() for future in pending]
                # queue the next batch's decoding before this batch's forward pass
                pending = ([pool.submit(self.decode, source) for source in chunks[i + 1]] if i + 1 < len(chunks)
                           else [])
                good = [item for item in decoded if isinstance(item, torch.Tensor)]
                probs = iter(self.probabilities(torch.stack(good)).tolist()) if good else iter(())
                for item in decoded:
                    if not isinstance(item, torch.Tensor):
                        yield self.empty_result(item)
                        continue
                    row = next(probs)
                    # two classes: the book's p > 0.5 (p = p(second class)); ties go to the first class
                    top = max(range(len(row)), key=lambda i: (row[i], -i)) if len(row) > 2 else int(row[1] > 0.5)
                    result = {"label": self.classes[top], "probability": row[top],
                              **dict(zip(probability_columns(self.classes), row)), "error": None, "index": top}
                    yield result | ({"tensor": item} if keep_tensors else {})


def resolve_model(spec: str | Path, tracking_uri: str | None = None) -> Path:
    """A model file, or `models:/<name>@<alias>` / `models:/<name>/<version>` from the MLflow registry."""
    if str(spec).startswith("models:/"):
        from catdog_lab.model_registry import registry_model_file
        return registry_model_file(str(spec), tracking_uri)
    return Path(spec)


def predict_files(model_path: Path | str, files: list[Path], gradcam: bool = False, out: Path | None = None,
                  alpha: float | None = None, batch_size: int = BATCH_SIZE, tracking_uri: str | None = None,
                  max_pixels: int | None = None, gradcam_layer: str | None = None
                  ) -> tuple[list[dict], list[str], tuple[str, ...]]:
    """(results, errors, the model's classes). alpha, max_pixels, gradcam_layer: None takes
    visualize.gradcam_alpha, data.max_image_pixels, visualize.gradcam_layer from conf/."""
    predictor = Predictor.from_file(resolve_model(model_path, tracking_uri), batch_size=batch_size,
                                    max_pixels=max_pixels)
    if gradcam:
        layer = _gradcam_layer(predictor.net, gradcam_layer)
        alpha = float(config_defaults().visualize.gradcam_alpha if alpha is None else alpha)
    results, errors, written = [], [], set()
    for path, result in zip(files, predictor.predict(list(files), keep_tensors=gradcam)):
        result = {"file": str(path)} | result
        if result["error"]:
            errors.append(f"{path}: {result['error']}")
        elif gradcam:
            image = result.pop("tensor").unsqueeze(0)
            dest = _overlay_path(path, out, predictor.classes[result["index"]], written)
            _save_gradcam(predictor.net, layer, image, result["index"], dest, alpha)
            result["gradcam"] = str(dest)
        results.append(result)
    return results, errors, predictor.classes


def _overlay_path(photo: Path, out: Path | None, label: str, written: set) -> Path:
    """<stem>_gradcam_<label>.png in `out` (or beside the photo); two photos of one name from two folders
    (cats/0.jpg, dogs/0.jpg) into one `out` get -2, -3, ... rather than one overlay over the other."""
    folder, base = out or photo.parent, f"{photo.stem}_gradcam_{label}"
    dest, n = folder / f"{base}.png", 1
    while dest in written:
        n += 1
        dest = folder / f"{base}-{n}.png"
    written.add(dest)
    return dest


def evaluate_folder(model_path: Path | str, folder: Path, out: Path, batch_size: int = BATCH_SIZE,
                    tracking_uri: str | None = None, max_pixels: int | None = None, worst: int = 16) -> dict:
    """Score a model on a labelled folder of class folders (any source; folder names = the model's class
    names): accuracy, each class's recall, the confusion matrix, and a contact sheet of the most confident
    mistakes. Writes <out>/evaluation.json, <out>/confusion.png, <out>/worst_mistakes.png."""
    from catdog_lab.data.discover import discover
    from catdog_lab.io import write_json
    from catdog_lab.models.outputs import class_metrics, confusion_matrix
    from catdog_lab.plots import plot_confusion

    if not Path(folder).is_dir():       # a data error, not a usage one: one line, no usage text
        raise UserError(f"--evaluate: {folder} is not a folder")
    predictor = Predictor.from_file(resolve_model(model_path, tracking_uri), batch_size=batch_size,
                                    max_pixels=max_pixels)
    classes = predictor.classes
    found = discover(Path(folder), "folders", min_classes=1, known=tuple(classes))
    unknown = [name for name in found.classes if name not in classes]
    if len(unknown) == len(found.classes):
        raise UserError(f"--evaluate {folder}: none of its folders ({', '.join(found.classes)}) is a class of the "
                        f"model ({', '.join(classes)})")
    cands = [cand for cand in found.candidates if cand.label in classes]
    results = list(predictor.predict([cand.path for cand in cands], keep_tensors=True))
    scored = [(cand, result) for cand, result in zip(cands, results) if not result["error"]]
    if not scored:      # an accuracy of 0.0% over no image would be a fact about nothing
        first = next((f"; {cand.rel}: {result['error']}" for cand, result in zip(cands, results)), "")
        raise UserError(f"--evaluate {folder}: none of its {len(cands)} image(s) of the model's classes could be "
                        f"read{first}")
    labels = torch.tensor([classes.index(cand.label) for cand, _ in scored], dtype=torch.long)
    guesses = torch.tensor([result["index"] for _, result in scored], dtype=torch.long)
    figures = class_metrics(confusion_matrix(labels, guesses, len(classes)), classes)
    per_class = figures["per_class"]     # a class of the model with no image here has no recall (not 0%)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(figures["confusion"], classes, out / "confusion.png", f"{Path(folder).name}")
    wrong = sorted(((cand, result) for cand, result in scored if result["label"] != cand.label),
                   key=lambda pair: -pair[1]["probability"])
    _contact_sheet(wrong[:worst], out / "worst_mistakes.png")
    summary = {
        "folder": str(folder), "model": str(model_path), "classes": list(classes), "images": len(scored),
        "accuracy": figures["acc"], "macro_f1": figures["macro_f1"],
        "recall": {name: per_class[name]["recall"] if per_class[name]["images"] else None for name in classes},
        "images_per_class": {name: per_class[name]["images"] for name in classes},
        "confusion": figures["confusion"], "mistakes": len(wrong),
        "worst_mistakes": [{"file": cand.rel, "true": cand.label, "predicted": result["label"],
                            "probability": round(result["probability"], 6)} for cand, result in wrong[:worst]],
        "unreadable": [{"file": cand.rel, "error": result["error"]} for cand, result in zip(cands, results)
                       if result["error"]],
        "left_out": {"not_model_classes": unknown, **{k: v for k, v in found.report().items()
                                                      if k in ("not_classes", "outside_class_folders", "not_images",
                                                               "links_not_followed")}},
        "figures": {"confusion": str(out / "confusion.png"), "worst_mistakes": str(out / "worst_mistakes.png")},
    }
    write_json(out / "evaluation.json", summary)
    return summary


def _contact_sheet(pairs: list, path: Path) -> None:
    """The most confident mistakes, each titled with its file, true class and what the model said."""
    from catdog_lab.io import atomic_path
    from catdog_lab.plots import plt

    cols = 4
    rows = max(1, -(-len(pairs) // cols))
    # constrained layout keeps each row's two-line titles clear of the images above (tight_layout did not)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (cand, result) in zip(axes.flat, pairs):
        ax.imshow(result["tensor"].permute(1, 2, 0).numpy())
        ax.set_title(f"{Path(cand.rel).name}\ntrue {cand.label}, said {result['label']} "
                     f"({100 * result['probability']:.0f}%)", fontsize=8)
    if not pairs:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _share(value: float | None, form: str, absent: str = "") -> str:
    """A recall as `form` shows it, or `absent` for a class with no image in the folder."""
    return absent if value is None else form.format(value)


def render_evaluation(summary: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(summary, indent=2)
    classes = summary["classes"]
    if fmt == "csv":
        lines = ["class,images,recall," + ",".join(f"predicted_{name}" for name in classes)]
        lines += [f"{name},{summary['images_per_class'][name]},{_share(summary['recall'][name], '{:.6f}')},"
                  + ",".join(map(str, row)) for name, row in zip(classes, summary["confusion"])]
        return "\n".join(lines)
    corner = "true \\ predicted"
    width = max(len(corner), *map(len, classes))
    lines = [f"{summary['folder']}: {summary['images']} images, accuracy {100 * summary['accuracy']:.1f}%, "
             f"macro-F1 {summary['macro_f1']:.3f}, {summary['mistakes']} mistakes",
             "", f"{'class':<{width}}  images  recall"]
    lines += [f"{name:<{width}}  {summary['images_per_class'][name]:>6}  "
              f"{_share(summary['recall'][name], '{:6.1%}', '     -')}" for name in classes]
    lines += ["", f"{corner:<{width}}  " + "  ".join(f"{name:>{max(5, len(name))}}" for name in classes)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{count:>{max(5, len(other))}}" for count, other in zip(row, classes))
              for name, row in zip(classes, summary["confusion"])]
    left = summary["left_out"]
    if left["not_model_classes"] or summary["unreadable"]:
        lines += ["", f"left out: folders not classes of the model: {', '.join(left['not_model_classes']) or 'none'}; "
                      f"unreadable files: {len(summary['unreadable'])} (evaluation.json)"]
    lines += ["", f"figures: {summary['figures']['confusion']}, {summary['figures']['worst_mistakes']}"]
    return "\n".join(lines)


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


def _save_gradcam(net, layer, image, target: int, dest: Path, alpha: float) -> None:
    from catdog_lab.io import atomic_path
    from catdog_lab.plots import plt
    from catdog_lab.viz.attributions import gradcam
    from catdog_lab.viz.figures import overlay

    cam = gradcam(net, layer, image, target)[0]
    with atomic_path(dest) as tmp:
        plt.imsave(tmp, overlay(image[0], cam, alpha), format="png")


def render(results: list[dict], fmt: str, classes=BOOK_CLASSES) -> str:
    """table: the classified files (failures go to stderr); json / csv: every file, `error` null / empty when
    fine, and a `gradcam` column only when overlays were drawn (--gradcam)."""
    columns = fields(classes) + (("gradcam",) if any("gradcam" in result for result in results) else ())
    if fmt == "json":
        return json.dumps([{key: result.get(key) for key in columns} for result in results], indent=2)
    if fmt == "csv":
        import io
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for result in results:
            writer.writerow({key: ("" if result.get(key) is None else
                                   (f"{result[key]:.6f}" if isinstance(result[key], float) else result[key]))
                             for key in columns})
        return buf.getvalue().rstrip("\n")
    ok = [result for result in results if not result["error"]]
    width = max([len("file")] + [len(result["file"]) for result in ok])
    label_width = max(len("label"), *map(len, classes))
    heads = [f"p({name})" for name in classes]
    lines = [f"{'file':<{width}}  {'label':<{label_width}}  probability  " + "  ".join(f"{h:>8}" for h in heads)]
    for result in ok:
        extra = f"  Grad-CAM: {result['gradcam']}" if "gradcam" in result else ""
        lines.append(f"{result['file']:<{width}}  {result['label']:<{label_width}}  "
                     f"{100 * result['probability']:10.1f}%  "
                     + "  ".join(f"{result[column]:>{len(head)}.4f}" if len(head) > 8 else f"{result[column]:>8.4f}"
                                 for column, head in zip(probability_columns(classes), heads)) + extra)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="catdog-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--evaluate", type=Path, metavar="DIR",
                        help="score the model on DIR, a folder of class folders named like the model's classes: "
                             "accuracy, recall per class, confusion matrix, worst mistakes (figures in --out)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stage", default="finetune", help="use models/<stage>.pt (default: finetune)")
    group.add_argument("--model", help="a model file written by a training stage, or a registered version: "
                       "models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("--tracking-uri", help="MLflow store for models:/ URIs "
                        "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output on stdout (default: table)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"images per forward pass (default: {BATCH_SIZE})")
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
    if args.evaluate is not None:
        if args.images:
            parser.error("--evaluate DIR takes no other images")
        summary = exit_on_user_error(evaluate_folder, model, args.evaluate, args.out or Path("evaluation"),
                                     batch_size=args.batch_size, tracking_uri=args.tracking_uri,
                                     max_pixels=args.max_pixels)
        print(render_evaluation(summary, args.format))
        for row in summary["unreadable"]:       # scored without them: exit 1, as for predictions
            print(f"error: {Path(args.evaluate) / row['file']}: {row['error']}", file=sys.stderr)
        if summary["unreadable"]:
            sys.exit(1)
        return
    if not args.images:
        parser.error("give images, folders or glob patterns (or --evaluate DIR)")
    skipped: list[str] = []
    files, input_errors = expand_inputs(args.images, skipped)
    for line in skipped:        # not an error: a folder may hold notes or labels beside its photos
        print(f"note: {line}", file=sys.stderr)
    results, errors, classes = exit_on_user_error(predict_files, model, files, args.gradcam, args.out,
                                         batch_size=args.batch_size, tracking_uri=args.tracking_uri,
                                         max_pixels=args.max_pixels, gradcam_layer=args.gradcam_layer)
    if results:
        print(render(results, args.format, classes))
    for error in input_errors + errors:
        print(f"error: {error}", file=sys.stderr)
    if input_errors or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
