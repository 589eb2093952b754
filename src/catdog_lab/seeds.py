"""Seeds, not single runs: a ledger of every training run's test accuracy, and the statistics over it.

Every finished training stage writes `<paths.seeds>/<stage>/<recipe>/seed-<seed>.json`, where `<recipe>`
hashes everything that defines the result except the seed (the stage's settings, the data split, image
size, augmentation, network, backbone weights file name, and for a stage started from another, that
stage's recipe). Rerunning a seed replaces its entry; changing a setting starts a new recipe folder, so
`compare` never averages different recipes. Runs from `dvc repro`, `dvc exp run [--queue] -S seed=...` and
a Hydra multirun (`catdog -m stage=scratch seed=1,2,3`) all land in the project's ledger (a relative
`paths.seeds` resolves from the project root, also inside DVC's temporary experiment copies).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from catdog_lab.config import params_hash
from catdog_lab.io import shared_path, write_json

CONFIDENCE = 0.95


# `config` below: the resolved config as plain data (stages.plain), the values as written: the recipe hash
# names ledger folders already on disk, so it must not see a typed copy (40 -> 40.0)
def recipe(config: dict, stage: str) -> dict:
    """The config that defines `stage`'s result, seed excluded (machine-specific paths reduced to names)."""
    section = config[stage]
    out = {"stage": dict(section), "split": dict(config["data"]["split"]),
           "image_size": int(config["data"]["image_size"])}
    if section["model"] == "convnet":
        out["convnet"] = dict(config["convnet"])
    else:
        backbone = config["backbone"]
        out["backbone"] = {"name": str(backbone["name"]), "weights": Path(str(backbone["weights"])).name}
    if section["augment"]:
        out["augmentation"] = dict(config["augmentation"])
    if section.get("init_from"):
        out["init_from"] = recipe(config, str(section["init_from"]))
    return out


def recipe_hash(config: dict, stage: str) -> str:
    return params_hash({"recipe": recipe(config, stage)}, ["recipe"])


def record(config: dict, stage: str, metrics: dict) -> Path:
    """Add (or replace) this seed's entry in the ledger."""
    seed = int(config["seed"])
    path = shared_path(config["paths"]["seeds"]) / stage / recipe_hash(config, stage) / f"seed-{seed}.json"
    write_json(path, {"stage": stage, "seed": seed, "profile": str(config.get("profile", "")),
                      "recipe": recipe(config, stage)} | metrics)
    return path


def entries(config: dict, stage: str, seeds_dir: str | Path | None = None) -> list[dict]:
    """The ledger entries of `stage` under the current recipe, ordered by seed."""
    folder = shared_path(seeds_dir or config["paths"]["seeds"]) / stage / recipe_hash(config, stage)
    found = [json.loads(path.read_text()) for path in sorted(folder.glob("seed-*.json"))]
    return sorted(found, key=lambda entry: entry["seed"])


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t quantile for n samples (n - 1 degrees of freedom)."""
    from scipy.stats import t
    return float(t.ppf(0.5 + confidence / 2, n - 1))


def summarise(accuracies: list[float], test_images: int | None = None, confidence: float = CONFIDENCE) -> dict:
    """Mean, sample standard deviation and a `confidence` interval of the mean over seeds.

    With two seeds or more: a Student t interval over the seeds (training randomness). With one seed the
    spread over seeds is unknown; the interval is then the binomial one of a single run's test accuracy on
    `test_images` images (the test set's sampling noise alone), and says so in `interval_kind`.
    """
    n = len(accuracies)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "low": None, "high": None, "interval_kind": None}
    mean = sum(accuracies) / n
    if n >= 2:
        std = math.sqrt(sum((acc - mean) ** 2 for acc in accuracies) / (n - 1))
        half = t_quantile(n, confidence) * std / math.sqrt(n)
        kind = f"t, {n} seeds"
    else:
        from scipy.stats import norm
        std = None
        half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(mean * (1 - mean) / test_images) \
            if test_images else None
        kind = f"binomial, 1 seed, {test_images} test images" if test_images else "1 seed"
    low, high = (mean - half, mean + half) if half is not None else (None, None)
    return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "interval_kind": kind}


def verdict(summary: dict, book: float | None) -> str:
    """'matches' (the book's figure inside our interval), 'above', 'below', or '–' when undecidable."""
    if book is None or summary.get("low") is None:
        return "–"
    if summary["low"] > book:
        return "above"
    if summary["high"] < book:
        return "below"
    return "matches"
