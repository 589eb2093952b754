"""visualize(cfg): what the convnets learned, as PNG figures + an index (reports/figures/).

Reads models/<visualize.scratch_model>.pt (activations), models/<visualize.transfer_model>.pt
(Grad-CAM, attributions, sanity check, misclassified gallery, fine-tuned filters), the
pretrained backbone of `backbone.weights` (filter patterns) and the test split of the data cache.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from catdog_lab import BOOK_CLASSES
from catdog_lab.config import read_path
from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.io import write_json
from catdog_lab.models.components.backbones import build_backbone, output_shape
from catdog_lab.models.factory import load_model
from catdog_lab.models.features import device_for
from catdog_lab.settings import FilterSettings, backbone_spec, visualize_settings
from catdog_lab.stages import tracking_for
from catdog_lab.tracking import stage_run
from catdog_lab.viz import views
from catdog_lab.viz.activations import plot_activations
from catdog_lab.viz.figures import FigureIndex
from catdog_lab.viz.filters import filter_patterns
from catdog_lab.viz.primer import plot_primer


def _patterns(net, layer_index: int, name: str, filters: FilterSettings, seed: int,
              model: str = "pretrained") -> torch.Tensor:
    """Patterns of the first `filters.count` filters (all, if fewer) of the layer at `layer_index`."""
    n_out = output_shape(net.features[:layer_index + 1], filters.size)[0]    # channels: computed, any layout
    return filter_patterns(net.features, layer_index, net.preprocess, list(range(min(filters.count, n_out))),
                           seed=seed, progress=f"filters {name} ({model})", **filters.ascent())


def _finite(value: float) -> float | None:
    """JSON (and DVC metrics) have no NaN: a check with nothing to rank is recorded as null."""
    return None if value != value else round(value, 4)


def visualize(cfg) -> dict:
    settings = visualize_settings(cfg)
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    out = Path(cfg.paths.reports) / "figures"
    index = FigureIndex(out)
    test = load_cached_split(read_path(cfg, "cache"), "test")
    images, labels, files = test["images"], test["labels"], test["files"]
    classes = tuple(test.get("classes", BOOK_CLASSES))
    models = read_path(cfg, "models")
    metrics: dict = {}
    # nets go to the GPU when there is one (trainer.accelerator); images stay on the CPU for plotting
    device = device_for(str(cfg.trainer.accelerator))

    with stage_run(tracking_for(cfg), "visualize") as run:
        # 1. primer on the first test image of the first class (a cat, in the book's data)
        first = int((labels == 0).nonzero()[0])
        plot_primer(images[first], index, seed=settings.seed, label=classes[0])

        # 2. activations of the from-scratch model
        scratch = load_model(models / f"{settings.scratch_model}.pt")[0].to(device)
        plot_activations(scratch, images[first], stage=settings.scratch_model, index=index)

        # 3. filter patterns of the pretrained base, and of the fine-tuned blocks next to the pretrained ones
        spec = backbone_spec(cfg)
        backbone = build_backbone(spec)
        backbone.features.to(device)
        backbone.preprocess.to(device)
        filters = settings.filters
        for name in filters.layers:
            patterns = _patterns(backbone, backbone.layers[name], name, filters, settings.seed)
            views.plot_filter_grid(patterns,
                                   f"Filter patterns of {spec.title} {name} (pretrained, first {len(patterns)})",
                                   f"filters_{spec.name}_pretrained_{name}.png",
                                   f"Inputs that maximise the mean activation of each filter of {name}, by gradient "
                                   f"ascent from seeded grey noise in the weights' preprocessing space.", index)
        tuned = load_model(models / f"{settings.transfer_model}.pt")[0].to(device)
        for name in filters.finetuned_layers:
            for label, net in (("pretrained", backbone), (settings.transfer_model, tuned)):
                patterns = _patterns(net, backbone.layers[name], name, filters, settings.seed, label)
                views.plot_filter_grid(patterns, f"Filter patterns of {name}: {label}",
                                       f"filters_{name}_{label}.png",
                                       f"{name} filters before and after fine-tuning (same filters, same seed).", index)

        # 4-7. Grad-CAM, attributions, sanity check, misclassified gallery on the transfer model
        stage = settings.transfer_model
        layer = tuned.features[tuned.layer_index[settings.gradcam_layer]]
        probs = views.predict_probabilities(tuned, images)
        chosen = views.select_images(labels, probs, per_class=settings.images_per_class)
        shown = {"images": images[chosen], "labels": labels[chosen], "probs": probs[chosen], "classes": classes}
        views.plot_gradcam(tuned, layer, layer_name=settings.gradcam_layer, stage=stage, **shown,
                           alpha=settings.gradcam_alpha, index=index)
        views.plot_attributions(tuned, layer, stage=stage, **shown, ig_steps=settings.ig_steps,
                                window=settings.occlusion.window, stride=settings.occlusion.stride, index=index)
        # spread over the whole test split, so both classes are in it (the split is ordered by class)
        sanity_idx = torch.linspace(0, len(images) - 1, min(settings.sanity_images, len(images))).long().tolist()
        sanity = views.plot_sanity(tuned, layer, stage=stage, images=images[sanity_idx], index=index,
                                   seed=settings.seed)
        wrong = views.plot_gallery(tuned, layer, stage=stage, images=images, labels=labels, probs=probs, files=files,
                                   alpha=settings.gradcam_alpha, max_images=settings.gallery_max, index=index,
                                   classes=classes)
        index.write()

        metrics = {"sanity/gradcam_spearman": _finite(sanity["gradcam"]["mean"]),
                   "sanity/saliency_spearman": _finite(sanity["saliency"]["mean"]),
                   "sanity/constant_maps": sanity["gradcam"]["constant_maps"] + sanity["saliency"]["constant_maps"],
                   "misclassified": wrong,
                   "test/acc": round(float((views.predicted(probs) == labels).float().mean()), 4),
                   "figures": len(index.entries), "wall_time_s": round(time.perf_counter() - t0, 1)}
        write_json(Path(cfg.paths.metrics) / "visualize.json", metrics)
        run.log_metrics(metrics)
        for entry in index.entries:
            run.log_artifact(out / entry["file"], "figures")
        run.log_artifact(out / "index.json", "figures")
    print(f"[visualize] {len(index.entries)} figures in {out} in {metrics['wall_time_s']}s on {device.type}; "
          f"sanity check rank correlation Grad-CAM {metrics['sanity/gradcam_spearman']}, "
          f"saliency {metrics['sanity/saliency_spearman']}")
    return metrics
