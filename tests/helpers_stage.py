"""Checks of what a training stage wrote (tests/test_train.py, tests/test_vgg.py).

The reference is the saved model file itself, evaluated here by hand on every image of the cached test
split, computed as Classifier's test step does (models/classifier.py): two classes, a logit > 0 is the
second class and the loss BCE-with-logits; more classes, the largest logit and cross-entropy; the
accuracy and the loss are means over the images. The stage's reported test/acc and
test/loss (rounded to 6 decimals in metrics/<stage>.json) must be these figures: the file on disk is the
model that was tested, not merely a model that loads.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from catdog_lab.models.outputs import class_metrics, confusion_matrix

HISTORY_COLUMNS = ["epoch", "train/loss", "train/acc", "val/loss", "val/acc", "seconds"]
METRICS_KEYS = {"test/acc", "test/loss", "test/acc_last", "test/acc_best", "val/acc", "val/loss", "select",
                "selected_epoch", "best_epoch", "epochs", "seed", "test_images", "profile", "seconds_per_epoch",
                "epoch_seconds", "recipe_hash", "fit_seconds", "wall_time_s", "device", "devices", "precision",
                "classes", "test/macro_f1", "test/per_class", "test/confusion"}
# rounding to 6 decimals (<= 5e-7) and float32 differences between Lightning's channels-last forward and
# this plain one (~1e-7 of the value, more with two threads, which split the convolutions otherwise: a deep
# random base, ResNet-50's, gives losses of ~5.67 and differed by 1.9e-5 = 3.3e-6 of the value with
# OMP_NUM_THREADS=2; so the bound scales with values above 1); a model with other weights is off by orders
# of magnitude more
TOLERANCE = 5e-6


def _close(reported: float, by_hand: float) -> bool:
    return abs(reported - by_hand) <= TOLERANCE * max(1.0, abs(by_hand))


def evaluate_saved_model(model_path: str | Path, cache_dir: str | Path) -> dict:
    """The model file's accuracy and mean BCE loss on the whole cached test split, by hand."""
    from catdog_lab.data.datamodule import load_cached_split
    from catdog_lab.models.factory import load_model

    net, bundle = load_model(model_path)
    test = load_cached_split(cache_dir, "test")
    labels = test["labels"]
    n_classes = len(bundle["classes"])
    assert test["classes"] == bundle["classes"]
    with torch.no_grad():
        logits = net(test["images"].float())          # uint8 RGB N x 3 x H x W -> one logit (or C) per image
    if n_classes == 2:                                # the book's single logit, by hand
        assert logits.shape == labels.shape, (logits.shape, labels.shape)
        guesses, loss = (logits > 0).long(), F.binary_cross_entropy_with_logits(logits, labels.float())
    else:
        assert logits.shape == (len(labels), n_classes), logits.shape
        guesses, loss = logits.argmax(1), F.cross_entropy(logits, labels)
    return {"acc": (guesses == labels).float().mean().item(), "loss": loss.item(),
            "confusion": confusion_matrix(labels, guesses, n_classes).tolist(),
            "images": len(labels), "logits": logits, "bundle": bundle}


def assert_metrics_match_model(metrics: dict, by_hand: dict) -> None:
    """metrics/<stage>.json's test figures are those of the saved model, on every test image."""
    assert metrics["test_images"] == by_hand["images"]
    assert _close(metrics["test/acc"], by_hand["acc"]), (metrics["test/acc"], by_hand["acc"])
    assert _close(metrics["test/loss"], by_hand["loss"]), (metrics["test/loss"], by_hand["loss"])
    assert metrics["test/confusion"] == by_hand["confusion"]
    assert metrics["classes"] == by_hand["bundle"]["classes"]
    by_class = class_metrics(torch.tensor(by_hand["confusion"]), metrics["classes"])
    assert metrics["test/per_class"] == by_class["per_class"]


def assert_fast_dev_run_outputs(cfg, stage: str, returned: dict) -> None:
    """Everything train(cfg, stage, fast_dev_run=True) writes, and what it must not leave behind."""
    from mlflow.tracking import MlflowClient
    from PIL import Image

    paths = cfg.paths
    model_path = Path(paths.models) / f"{stage}.pt"
    metrics_path = Path(paths.metrics) / f"{stage}.json"
    history_path = Path(paths.plots) / f"{stage}.csv"
    curves_path = Path(paths.reports) / "curves" / f"{stage}.png"
    confusion_png = Path(paths.reports) / "confusion" / f"{stage}.png"
    confusion_csv = Path(paths.plots) / f"{stage}_confusion.csv"
    for path in (model_path, metrics_path, history_path, curves_path, confusion_png, confusion_csv):
        assert path.is_file(), path
    assert not (Path(paths.models) / f"{stage}.md").exists()     # the model card is the publish stage's

    # the metrics file: what train() returned, every key, one epoch, and the saved model's test figures
    metrics = json.loads(metrics_path.read_text())
    assert metrics == returned
    assert METRICS_KEYS <= metrics.keys(), METRICS_KEYS - metrics.keys()
    assert metrics["epochs"] == metrics["selected_epoch"] == metrics["best_epoch"] == 1
    assert metrics["test/acc"] == metrics["test/acc_last"] == metrics["test/acc_best"]
    by_hand = evaluate_saved_model(model_path, paths.cache)
    assert by_hand["bundle"]["stage"] == stage
    assert_metrics_match_model(metrics, by_hand)

    # the history: one row for the one epoch, the row the metrics' val figures come from
    with open(history_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == HISTORY_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert rows[0][key] != "", key
    assert float(rows[0]["val/loss"]) == metrics["val/loss"] and float(rows[0]["val/acc"]) == metrics["val/acc"]
    # the training time compare shows is the epochs' seconds summed; the recipe hash names the ledger folder
    assert abs(metrics["epoch_seconds"] - sum(float(r["seconds"]) for r in rows)) < 0.01
    from catdog_lab.seeds import recipe_hash
    from catdog_lab.stages import plain
    assert metrics["recipe_hash"] == recipe_hash(plain(cfg), stage)

    for png in (curves_path, confusion_png):
        with Image.open(png) as image:                   # a real PNG, not an empty or truncated file
            assert image.format == "PNG" and min(image.size) > 100, (image.format, image.size)
            image.load()
    # DVC's confusion plot: one (actual, predicted) row per test image, adding up to the matrix
    with open(confusion_csv, newline="", encoding="utf-8") as f:
        pairs = [(row["actual"], row["predicted"]) for row in csv.DictReader(f)]
    classes = metrics["classes"]
    assert len(pairs) == metrics["test_images"]
    assert [[pairs.count((a, p)) for p in classes] for a in classes] == metrics["test/confusion"]

    # a smoke run leaves no resume state and never enters the seed ledger (compare's error bars)
    assert not (Path(paths.checkpoints) / stage).exists()
    assert not (Path(paths.seeds) / stage).exists()

    # the stage's one MLflow run ended FINISHED and holds the same figures and files
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.stage = '{stage}'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    run = runs[0]
    # (the run's latest test/* is Lightning's own unrounded log at step 1, after the rounded summary at step 0)
    for key in ("test/acc", "test/loss"):
        assert _close(run.data.metrics[key], metrics[key]), (key, run.data.metrics[key], metrics[key])
    for label in metrics["classes"]:
        assert run.data.metrics[f"test/recall/{label}"] == metrics["test/per_class"][label]["recall"]
    # the tag by which `publish` finds the run that made this very model file
    from catdog_lab.data.sources import sha256_file
    assert run.data.tags["model_sha256"] == sha256_file(model_path)
    for folder, name in (("curves", f"{stage}.png"), ("history", f"{stage}.csv"), ("confusion", f"{stage}.png")):
        assert f"{folder}/{name}" in {a.path for a in client.list_artifacts(run.info.run_id, folder)}, name
