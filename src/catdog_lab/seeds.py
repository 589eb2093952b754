"""Seeds, not single runs: a ledger of every training run's test accuracy, and the statistics over it.

Every finished training stage writes `<paths.seeds>/<stage>/<recipe>/seed-<seed>.json`, where `<recipe>`
hashes everything that defines the result except the seed: the stage's settings, the data split, image
size, augmentation, network, backbone weights (file name and tensor content md5), and for a stage started
from another, that stage's recipe; and three facts that are not settings but change the numbers: the photo
set (the split manifest's hash: file names, contents, split), the numeric precision the trainer resolves
to (32-true on a CPU, bf16-mixed on a GPU by default), and `RECIPE_CODE_VERSION`. Rerunning a seed replaces
its entry; changing any of these starts a new recipe folder, so `compare` never averages different recipes
(re-encoded photos, fp16 weights or bf16 runs never share a folder with CPU fp32 runs). Runs from `dvc repro`,
`dvc exp run [--queue] -S seed=...` and
a Hydra multirun (`catdog -m stage=scratch seed=1,2,3`) all land in the project's ledger (a relative
`paths.seeds` resolves from the project root, also inside DVC's temporary experiment copies).
"""
from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path

from catdog_lab.config import params_hash, read_path
from catdog_lab.errors import ConfigError
from catdog_lab.io import shared_path, write_json

CONFIDENCE = 0.95

# The version of the code that defines results: data/ (split, cache, sampler, augmentation), models/ (nets,
# initialisation, preprocessing, loss, optimizer) and the training loop (stages/train.py: epochs, selection,
# testing). Bump it by one in the commit that changes what a run computes for the same config and seed
# (a new augmentation formula, another loss, a fixed bug in the sampler), so the new runs start a new ledger
# folder instead of averaging with the old ones. Do NOT bump it for changes that keep the numbers: refactors,
# speed-ups, caching (e.g. validating the transfer stages on cached features, numerically the same), logging.
# A hash of the source files would change with every such edit and split identical runs across folders.
RECIPE_CODE_VERSION = 1
# facts that the ledger's entries record beside the settings; None = not known on this machine (compare only)
FACTS = ("photos", "precision", "code_version", "weights_md5")


# `config` below: the resolved config as plain data (stages.plain), the values as written: the recipe hash
# names ledger folders already on disk, so it must not see a typed copy (40 -> 40.0)
def recipe(config: dict, stage: str) -> dict:
    """What defines `stage`'s result, seed excluded (machine-specific paths reduced to names): the settings
    and the facts (photo set, weights content, precision, code version)."""
    section = config[stage]
    out = {"stage": recipe_settings(section), "split": dict(config["data"]["split"]),
           "image_size": int(config["data"]["image_size"]), "photos": photos_hash(config),
           "precision": precision(config, stage), "code_version": RECIPE_CODE_VERSION}
    if section["model"] == "convnet":
        out["convnet"] = dict(config["convnet"])
    else:
        backbone = config["backbone"]
        out["backbone"] = {"name": str(backbone["name"]), "weights": Path(str(backbone["weights"])).name,
                           "weights_md5": weights_md5(str(backbone["weights"]))}
    if section["augment"]:
        out["augmentation"] = dict(config["augmentation"])
    if section.get("init_from"):
        out["init_from"] = recipe(config, str(section["init_from"]))
    return out


def recipe_settings(section: dict) -> dict:
    """A stage's section as its recipe holds it. Its own `precision` is left to the recipe's `precision` fact:
    a run under `trainer.precision=bf16-mixed` and one under `<stage>.precision=bf16-mixed` compute the same
    and share a folder (and the folders of runs from before the key existed keep their names)."""
    return {key: value for key, value in section.items() if key != "precision"}


def hash_recipe(recipe_dict: dict) -> str:
    """The ledger folder name of a recipe (as `recipe` returns it, or as an entry recorded it)."""
    return params_hash({"recipe": recipe_dict}, ["recipe"])


def recipe_hash(config: dict, stage: str) -> str:
    return hash_recipe(recipe(config, stage))


def photos_hash(config: dict) -> str | None:
    """The photo set: the split manifest's hash (file names, their sha256, their split); None without one."""
    from catdog_lab.data.split import manifest_hash
    return manifest_hash(read_path(config, "split"))


def precision(config: dict, stage: str) -> str:
    """The precision `stage` trains in here (`<stage>.precision`, else `trainer.precision`; auto: bf16-mixed on a
    GPU, else 32-true). The conv base's feature extraction follows the device too (bf16 autocast on a GPU)."""
    import torch

    from catdog_lab.schema import TrainerSettings
    settings = TrainerSettings.for_stage(config["trainer"], {}, config[stage].get("precision"))
    return settings.resolved_precision(torch.cuda.is_available())


def weights_md5(weights: str) -> str | None:
    """`backbone.weights`' content: md5 of every tensor's bytes in key order (so an fp16 copy differs, a
    re-saved identical file does not); `imagenet` and `none` stand for themselves (torchvision checks its
    download's hash); None when the file is not on this machine."""
    if weights in ("imagenet", "none"):
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        return None
    stat = path.stat()
    return _file_md5(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _file_md5(path: str, size: int, mtime_ns: int) -> str:      # size and mtime: a changed file is re-read
    from catdog_lab.models.components.backbones import load_weights_file
    state, _ = load_weights_file(path)
    digest = hashlib.md5()
    for key in state:
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def record(config: dict, stage: str, metrics: dict) -> Path:
    """Add (or replace) this seed's entry in the ledger."""
    seed, settings = int(config["seed"]), recipe(config, stage)
    path = shared_path(config["paths"]["seeds"]) / stage / hash_recipe(settings) / f"seed-{seed}.json"
    write_json(path, {"stage": stage, "seed": seed, "profile": str(config.get("profile", ""))} | metrics
               | {"recipe": settings})
    return path


def entries(config: dict, stage: str, seeds_dir: str | Path | None = None) -> list[dict]:
    """The ledger entries of `stage` under the current recipe, ordered by seed.

    Where a fact cannot be known on this machine (no split manifest, the weights file absent: a `compare`
    run elsewhere), the one recipe folder that agrees with every known setting and fact is taken; if several
    do, the error says which fact to supply.
    """
    stage_dir = shared_path(seeds_dir or config["paths"]["seeds"]) / stage
    want = recipe(config, stage)
    folder = stage_dir / hash_recipe(want)
    if not folder.is_dir() and _unknown(want) and stage_dir.is_dir():
        matching = [f for f in sorted(stage_dir.iterdir()) if f.is_dir() and _agrees(_recorded(f), want)]
        if len(matching) > 1:
            raise ConfigError(
                f"paths.seeds: {len(matching)} recipes of {stage} in {stage_dir} differ only by what is unknown "
                f"here ({', '.join(_unknown(want))}): run the split (data/split/manifest.csv) and point "
                f"backbone.weights at the weights file")
        folder = matching[0] if matching else folder
    found = [json.loads(path.read_text()) for path in sorted(folder.glob("seed-*.json"))]
    return sorted(found, key=lambda entry: entry["seed"])


def _unknown(want: dict, prefix: str = "") -> list[str]:
    """The facts of a recipe that are None (unknown here), as dotted keys."""
    found = []
    for key, value in want.items():
        if isinstance(value, dict):
            found += _unknown(value, f"{prefix}{key}.")
        elif key in FACTS and value is None:
            found.append(prefix + key)
    return found


def _recorded(folder: Path) -> dict | None:
    first = next(iter(sorted(folder.glob("seed-*.json"))), None)
    return json.loads(first.read_text()).get("recipe") if first else None


def _agrees(recorded: dict | None, want: dict) -> bool:
    """Does a recorded recipe equal `want` on every key, a fact that `want` leaves unknown (None) aside?"""
    if not isinstance(recorded, dict) or set(recorded) != set(want):
        return False
    for key, value in want.items():
        if isinstance(value, dict):
            if not _agrees(recorded[key], value):
                return False
        elif not (key in FACTS and value is None) and recorded[key] != value:
            return False
    return True


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
        std = None
        kind = f"binomial (Wilson), 1 seed, {test_images} test images" if test_images else "1 seed"
        if test_images:
            low, high = wilson(mean, test_images, confidence)
            return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "interval_kind": kind}
        half = None
    # an accuracy lies in [0, 1]: cut there (2 seeds, 87.3% and 82.4%, have t = 12.7 and gave 53.7-116.0%)
    low, high = (max(0.0, mean - half), min(1.0, mean + half)) if half is not None else (None, None)
    return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "interval_kind": kind}


def wilson(accuracy: float, images: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on `images` images: inside [0, 1], and not of zero
    width at 0% or 100% (the normal approximation's p ± z·sqrt(p(1-p)/n) is both, on a small test set)."""
    from scipy.stats import norm
    z = float(norm.ppf(0.5 + confidence / 2))
    centre = (accuracy + z * z / (2 * images)) / (1 + z * z / images)
    half = z / (1 + z * z / images) * math.sqrt(accuracy * (1 - accuracy) / images + z * z / (4 * images * images))
    return max(0.0, centre - half), min(1.0, centre + half)


def prediction_band(values: list[float], images: int | None, book: float | None, book_images: int | None,
                    confidence: float = CONFIDENCE) -> dict:
    """Where the book's one run should lie if it were one more run of our recipe: a fair verdict's band.

    Three independent sources of noise, each a `confidence` half-width, added in quadrature:
    - the seeds (training randomness): a prediction interval for ONE new run, t * sd * sqrt(1 + 1/n) with
      n - 1 degrees of freedom (not the mean's interval t * sd / sqrt(n): the book reports one run, not a
      mean). Unknown with one seed: left out, and `seed_spread` says so;
    - our images: the binomial noise of an accuracy on `images` images (our seeds all use the same images,
      so their spread does not contain it);
    - the book's images: the binomial noise of its figure on `book_images` images (its own split).
    """
    from scipy.stats import norm
    n = len(values)
    if n == 0 or book is None:
        return {"low": None, "high": None, "half": None, "seed_spread": n >= 2}
    mean = sum(values) / n
    z = float(norm.ppf(0.5 + confidence / 2))
    seeds = 0.0
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        seeds = t_quantile(n, confidence) * sd * math.sqrt(1 + 1 / n)
    ours = z * math.sqrt(mean * (1 - mean) / images) if images else 0.0
    theirs = z * math.sqrt(book * (1 - book) / book_images) if book_images else 0.0
    half = math.sqrt(seeds ** 2 + ours ** 2 + theirs ** 2)
    # an accuracy lies in [0, 1]: the band is cut there (a 100% mean on a small test set gave 97.2-102.8%)
    return {"low": max(0.0, mean - half), "high": min(1.0, mean + half), "half": half, "seed_spread": n >= 2,
            "parts": {"seeds": seeds, "our_images": ours, "book_images": theirs}}


def verdict(summary: dict, book: float | None) -> str:
    """'matches' (the book's figure inside the band: `prediction_band`, or a summary's interval), 'above'
    (ours above the book's figure), 'below', or '–' when undecidable."""
    if book is None or summary.get("low") is None:
        return "–"
    if summary["low"] > book:
        return "above"
    if summary["high"] < book:
        return "below"
    return "matches"
