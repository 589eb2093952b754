"""A short model card for each trained stage model: `models/<stage>.md`, next to `models/<stage>.pt`.

Written by the `publish` stage (stages/publish.py) from what the training stage left: the split (and its
manifest hash), the recipe (and its hash in the seed ledger), the accuracies and the spread over the seeds
run so far, the time and hardware, the intended use and the known limits. The same text goes to the MLflow
run and to the registered model version's description.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from catdog_lab.config import read_path
from catdog_lab.data.split import manifest_hash
from catdog_lab.io import write_text
from catdog_lab.registry import REGISTRY

SETTING_KEYS = ("model", "epochs", "lr", "batch_size", "dropout", "augment", "trainable", "init_from", "select",
                "init")


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".md")


def _pct(fraction) -> str:
    return "–" if fraction is None else f"{100 * float(fraction):.1f}%"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hardware(metrics: dict) -> str:
    device = str(metrics.get("device", "cpu"))
    threads = torch.get_num_threads()
    cpu = f"{_cpu_name()}, {threads} torch thread{'' if threads == 1 else 's'}"
    return f"GPU {device} (host CPU {cpu})" if device != "cpu" else f"CPU only: {cpu}"


def _seed_spread(config: dict, stage: str, metrics: dict) -> str:
    from catdog_lab import seeds

    try:
        found = seeds.entries(config, stage)
    except Exception:                               # no ledger folder yet (fast runs do not record seeds)
        found = []
    accs = [float(entry["test/acc"]) for entry in found if entry.get("test/acc") is not None]
    if not accs:
        return "test accuracy over seeds: unknown (this run is not in the seed ledger)"
    stats = seeds.summarise(accs, metrics.get("test_images"))
    seeds_run = ", ".join(str(entry["seed"]) for entry in found)
    interval = f"95% interval {_pct(stats['low'])}–{_pct(stats['high'])} ({stats['interval_kind']})"
    if stats["n"] >= 2:
        return (f"test accuracy over {stats['n']} seeds ({seeds_run}): mean {_pct(stats['mean'])}, "
                f"sd {100 * stats['std']:.1f} pts, {interval}")
    interval = f", {interval}" if stats["low"] is not None else ""
    return f"one seed so far ({seeds_run}): the spread over seeds is unknown{interval}"


def _describe(spec: dict) -> str:
    if not spec:
        return "RGB scaled to [0, 1]"
    lo, hi = spec.get("input_range", [0, 1])
    mean = [round(float(value), 3) for value in spec.get("mean", [0, 0, 0])]
    std = [round(float(value), 3) for value in spec.get("std", [1, 1, 1])]
    text = f"{spec.get('channel_order', 'RGB')}, range [{lo}, {hi}]"
    text += f", mean {mean}" if any(mean) else ""
    return text + (f", std {std}" if std != [1, 1, 1] else "")


def _data_lines(config: dict, classes) -> list[str]:
    data = config["data"]
    split_dir = read_path(config, "split")          # the workspace's, or a Hydra CLI job's upstream
    report_path = split_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    source = data["source"]["path"]
    # a folder name, never a machine path: the card is published
    where = f"a local copy (`{Path(str(source)).name}`)" if source else "Microsoft's download of the Kaggle photos"
    what = "Kaggle Dogs vs. Cats" if report.get("layout", "kaggle") == "kaggle" else "one folder per class"
    lines = [f"- Photos: {what}, {where}; {len(classes)} classes: {', '.join(f'`{name}`' for name in classes)} "
             + (f"(seeded shuffle per class, `data.split.seed` = {data['split']['seed']})"
                if data["split"].get("order", "shuffle") == "shuffle" else "(each class in file-id order)")
             + f", decoded once at "
             f"{data['image_size']}x{data['image_size']} px."]
    counts = report.get("counts")
    if counts:
        lines += ["", "| class | train | validation | test |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | " + " | ".join(str(counts[split].get(name, 0))
                                              for split in ("train", "validation", "test")) + " |" for name in classes]
        lines.append("")
    skipped = report.get("skipped")
    lines.append(f"- Split manifest (`data/split/manifest.csv`, file/class/split/sha256 per photo): hash "
                 f"`{manifest_hash(split_dir) or 'unknown'}`" + (f"; {skipped} unusable files skipped." if skipped
                                                                 is not None else "."))
    return lines


def render_card(config: dict, stage: str, model_path: Path, metrics: dict, registered: dict | None = None) -> str:
    """`config`: the resolved config as plain data (stages.plain), as the seed ledger hashes it."""
    from catdog_lab import seeds

    recipe, image_size = config[stage], config["data"]["image_size"]
    settings = ", ".join(f"{key} {recipe[key]}" for key in SETTING_KEYS
                         if key in recipe and recipe[key] not in (None, [], ""))
    bundle = torch.load(model_path, map_location="cpu", weights_only=True)
    n_params = sum(tensor.numel() for name, tensor in bundle["state_dict"].items()
                   if not name.startswith("preprocess."))
    spec = bundle.get("preprocessing") or {}
    arch = bundle.get("arch") or {}
    backbone = None
    if arch.get("kind") == "transfer":          # the model file's own record names its backbone
        from catdog_lab.models.components.backbones import BackboneSpec
        backbone = BackboneSpec.from_record(arch.get("backbone_spec"), arch.get("backbone", "vgg16"))
    weights = (f"; backbone {backbone.title}, pretrained weights `{Path(str(arch.get('weights'))).name}`"
               if backbone else "")
    description = REGISTRY[stage].description.format(backbone=backbone.title if backbone else "",
                                                     trainable=", ".join(arch.get("trainable") or []) or "none")
    wrong = round((1 - float(metrics["test/acc"])) * int(metrics.get("test_images") or 0))
    reg = (f"`{registered['name']}` version {registered['version']} in the MLflow registry "
           f"(`{registered['model_uri']}`)") if registered else "not registered (MLflow tracking was off)"
    classes = list(bundle.get("classes", ("cat", "dog")))
    book = classes == ["cat", "dog"]
    output = ("Output: one logit, sigmoid = p(dog)." if book else
              f"Output: one logit, sigmoid = p({classes[1]}) (p({classes[0]}) = 1 - that)." if len(classes) == 2 else
              f"Output: {len(classes)} logits, softmax = the probability of each class in the order above.")
    lines = [
        f"# Model card: `{stage}`",
        "",
        f"{description}. File `models/{stage}.pt` ({n_params:,} parameters); {reg}.",
        "",
        "## Data",
        *_data_lines(config, classes),
        "",
        "## Recipe",
        f"- Stage `{stage}`, profile `{metrics.get('profile', '')}`, seed {metrics.get('seed')}: {settings}{weights}.",
        f"- Recipe hash (seed ledger `metrics/seeds/{stage}/<recipe>/`): `{seeds.recipe_hash(config, stage)}`.",
        f"- Kept weights: the `{metrics.get('select')}` epoch ({metrics.get('selected_epoch')} of "
        f"{metrics.get('epochs')}; lowest validation loss at epoch {metrics.get('best_epoch')}).",
        "",
        "## Results",
        f"- Test accuracy {_pct(metrics.get('test/acc'))} on {metrics.get('test_images')} images "
        f"(test loss {float(metrics.get('test/loss', float('nan'))):.3f}); validation accuracy "
        f"{_pct(metrics.get('val/acc'))} (the one used to pick a champion).",
        f"- Macro-F1 {float(metrics['test/macro_f1']):.3f}; per class on the test split:" if "test/macro_f1" in metrics
        else "- Per-class figures: not recorded.",
        *_class_lines(metrics),
        f"- {_seed_spread(config, stage, metrics)}.",
        f"- Training: {metrics.get('fit_seconds')} s fitting, {metrics.get('wall_time_s')} s for the whole stage "
        f"({metrics.get('seconds_per_epoch')} s/epoch) on {_hardware(metrics)}; torch {torch.__version__}.",
        "",
        "## Intended use",
        f"- A photo of one {' or one '.join(classes) if len(classes) <= 3 else 'of: ' + ', '.join(classes)}, "
        "any size (it is resized to "
        f"{image_size}x{image_size}, EXIF orientation applied). Input: RGB 0-255 pixels; the "
        f"model does its own preprocessing ({_describe(spec)}). " + output,
        "- A teaching model for the book's chapter, not a product: check it on your own photos first.",
        "",
        "## Known limits",
        f"- {wrong} of the {metrics.get('test_images')} test photos are misclassified; `visualize` shows the "
        "fine-tuned model's mistakes in `reports/figures/misclassified_finetune_gallery.png` (with Grad-CAM).",
        f"- {len(classes)} classes only: a photo of none of them, or of several, still gets one of "
        f"{', '.join(f'`{name}`' for name in classes)}, often with high probability. The probabilities are not "
        "calibrated for such inputs.",
        "- Trained on Kaggle pet photos (mostly centred, well-lit, one animal); small, occluded or "
        "unusually posed animals, drawings and close crops are outside that data." if book else
        "- Trained on the photos listed in the split manifest only: what they do not show (other lighting, "
        "framing, sources) is outside that data.",
    ]
    return "\n".join(lines) + "\n"


def _class_lines(metrics: dict) -> list[str]:
    per_class = metrics.get("test/per_class")
    if not per_class:
        return []
    rows = ["", "| class | test images | precision | recall | F1 |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {name} | {f['images']} | {_pct(f['precision'])} | {_pct(f['recall'])} | {f['f1']:.3f} |"
             for name, f in per_class.items()]
    return rows + [""]


def write_card(config: dict, stage: str, model_path: Path, metrics: dict, registered: dict | None = None,
               dest: Path | None = None) -> Path:
    """`dest` (default: next to the model file) is the card's file: a Hydra CLI job writes into its own folder."""
    dest = Path(dest) if dest is not None else card_path(model_path)
    write_text(dest, render_card(config, stage, model_path, metrics, registered))
    return dest
