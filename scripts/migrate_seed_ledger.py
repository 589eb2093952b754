"""Give seed-ledger entries recorded before a recipe gained keys the values they ran with, and move each to
the folder its completed recipe hashes to. Every number of an entry is kept; only its `recipe` grows.

Two kinds of additions (catdog_lab/seeds.py, `recipe`):
- facts: the photo set (`photos`: the split manifest's hash), the weights' tensor content (`weights_md5`),
  the precision and `code_version`. An entry gets what its own record implies (`device: cpu` -> the CPU's
  `32-true`; code version 1, the version of every entry recorded before versions existed) and, for what
  it does not record, the values given here: `--photos` (`python -c "from catdog_lab.data.split import
  manifest_hash; print(manifest_hash('data/split'))"` after the split the entries used) and `--weights-md5
  NAME=MD5` per weights file name (`catdog_lab.seeds.weights_md5(path)`).
- settings added since: a key the entry's profile composes but the entry lacks is added with the composed
  value. Valid because such keys are added with a default that keeps the behaviour the entries ran with
  (e.g. `data.split.order: shuffle`, `<stage>.loss_clip: null`, `augmentation.resampling: combined`).

Idempotent: an entry already complete and in its folder is left alone. Run it after pulling entries made by
older code, then commit the moved files:

    python scripts/migrate_seed_ledger.py metrics/seeds --photos 630473b8e278 \\
        --weights-md5 vgg16_keras_imagenet_features.pt=6e4a81f2d467644985a39e9f6380193e
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from catdog_lab.io import write_json  # noqa: E402
from catdog_lab.seeds import hash_recipe, recipe_settings  # noqa: E402

FIRST_CODE_VERSION = 1       # the code version of every entry recorded before RECIPE_CODE_VERSION existed
CPU_PRECISION = "32-true"    # what trainer.precision=auto resolves to on a CPU (settings.py)
SECTIONS = {"stage": None, "split": ("data", "split"), "convnet": ("convnet",), "augmentation": ("augmentation",)}


def composed(profile: str, cache: dict = {}):  # noqa: B006 (a per-process memo of composed profiles)
    if profile not in cache:
        from catdog_lab.config import compose
        cache[profile] = compose([f"profile={profile}"] if profile else [])
    return cache[profile]


def complete(recipe: dict, stage: str, entry: dict, photos: str | None, weights: dict[str, str]) -> dict:
    """`recipe` with the facts and the settings added since (a stage started from another: that one too)."""
    from omegaconf import OmegaConf
    out = dict(recipe)
    if "code_version" not in out:
        out["code_version"] = FIRST_CODE_VERSION
    if "precision" not in out:
        if entry.get("device", "cpu") != "cpu":
            raise SystemExit(f"{stage} seed {entry.get('seed')}: ran on {entry['device']}; its precision is not "
                             f"recorded: migrate it by hand")
        out["precision"] = CPU_PRECISION
    if "photos" not in out:
        if photos is None:
            raise SystemExit("--photos: needed (the split manifest hash of the photos these entries used)")
        out["photos"] = photos
    if "backbone" in out and "weights_md5" not in out["backbone"]:
        name = out["backbone"]["weights"]
        md5 = name if name in ("imagenet", "none") else weights.get(name)
        if md5 is None:
            raise SystemExit(f"--weights-md5: give {name}=<md5> (the tensor content md5 of the weights used)")
        out["backbone"] = dict(out["backbone"], weights_md5=md5)
    cfg = composed(str(entry.get("profile", "")))
    for key, where in SECTIONS.items():
        if key in out:
            node = cfg[stage] if where is None else OmegaConf.select(cfg, ".".join(where))
            now = OmegaConf.to_container(node, resolve=True)
            now = recipe_settings(now) if key == "stage" else now
            out[key] = dict(out[key]) | {k: v for k, v in now.items() if k not in out[key]}
    if "init_from" in out:
        out["init_from"] = complete(out["init_from"], str(recipe["stage"]["init_from"]), entry, photos, weights)
    return out


def migrate(ledger: Path, photos: str | None, weights: dict[str, str], dry_run: bool = False) -> list[tuple]:
    """Move every entry to its completed recipe's folder. Returns (stage, seed, old folder, new folder)."""
    moves = []
    for path in sorted(Path(ledger).glob("*/*/seed-*.json")):
        entry = json.loads(path.read_text())
        stage = path.parent.parent.name
        recipe = complete(entry["recipe"], stage, entry, photos, weights)
        target = path.parent.parent / hash_recipe(recipe) / path.name
        if target == path and recipe == entry["recipe"]:
            continue
        if target.exists() and target != path:
            existing = json.loads(target.read_text())
            numbers = {k: v for k, v in entry.items() if k != "recipe"}
            if {k: v for k, v in existing.items() if k != "recipe"} != numbers:
                raise SystemExit(f"{target} exists with other numbers than {path}: resolve by hand")
        moves.append((stage, entry.get("seed"), path.parent.name, target.parent.name))
        if not dry_run:
            write_json(target, entry | {"recipe": recipe})
            if target != path:
                path.unlink()
                if not any(path.parent.iterdir()):
                    path.parent.rmdir()
    return moves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ledger", type=Path, help="the seed ledger (paths.seeds, e.g. metrics/seeds)")
    parser.add_argument("--photos", help="split manifest hash of the photos the entries without one used")
    parser.add_argument("--weights-md5", nargs="*", default=[], metavar="NAME=MD5",
                        help="tensor content md5 per backbone weights file name")
    parser.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    args = parser.parse_args(argv)
    weights = dict(item.split("=", 1) for item in args.weights_md5)
    moves = migrate(args.ledger, args.photos, weights, args.dry_run)
    for stage, seed, old, new in moves:
        print(f"{stage} seed {seed}: {old} -> {new}")
    print(f"{len(moves)} entr{'y' if len(moves) == 1 else 'ies'} {'to migrate' if args.dry_run else 'migrated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
