"""The seed ledger's recipe hash separates what changes the numbers: the photo set, the weights' content, the
precision and the code version, beside the settings; and the migration of entries recorded before."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from catdog_lab import seeds as ledger
from catdog_lab.config import PROJECT_ROOT
from catdog_lab.errors import ConfigError
from catdog_lab.stages import plain


class _Plain:
    """seeds.py takes the config as plain data (stages.plain): the tests hand it DictConfigs through this."""

    def __getattr__(self, name):
        value = getattr(ledger, name)
        if not callable(value) or name in ("hash_recipe", "weights_md5"):
            return value
        return lambda config, *args, **kw: value(plain(config) if not isinstance(config, dict) else config,
                                                 *args, **kw)


seeds = _Plain()


def _weights(path: Path, dtype=torch.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({"features.0.weight": torch.randn(4, 3, 3, 3).to(dtype), "features.0.bias": torch.zeros(4).to(dtype)},
               path)
    return path


def _with(cfg, **values):
    cfg = cfg.copy()
    with open_dict(cfg):
        for key, value in values.items():
            target = cfg
            for part in key.split(".")[:-1]:
                target = target[part]
            target[key.split(".")[-1]] = value
    return cfg


def test_the_recipe_hash_separates_photos_weights_precision_and_code_version(tiny_split, tmp_path, monkeypatch):
    cfg = tiny_split
    base = seeds.recipe_hash(cfg, "scratch")
    assert seeds.recipe(cfg, "scratch")["photos"] == seeds.photos_hash(cfg) is not None
    assert seeds.recipe(cfg, "scratch")["precision"] == "32-true"           # the CPU's resolution of `auto`
    assert seeds.recipe_hash(_with(cfg, seed=99), "scratch") == base       # the seed is not part of a recipe
    # the photo set: one photo re-encoded changes its sha256 in the manifest
    manifest = Path(cfg.paths.split) / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    rows[0]["sha256"] = "0" * 64
    with manifest.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    reencoded = seeds.recipe_hash(cfg, "scratch")
    assert reencoded != base
    # the precision
    assert seeds.recipe_hash(_with(cfg, **{"trainer.precision": "bf16-mixed"}), "scratch") not in (base, reencoded)
    # the code version, bumped by hand when a change moves the numbers
    monkeypatch.setattr(ledger, "RECIPE_CODE_VERSION", ledger.RECIPE_CODE_VERSION + 1)
    assert seeds.recipe_hash(cfg, "scratch") != reencoded


def test_a_stages_own_precision_is_its_recipes_precision_and_only_its_own(tiny_split):
    """`<stage>.precision` (the VGG stages in bf16 on a CPU, the convnets in fp32) trains that stage alone in it,
    is recorded as the recipe's precision fact (the folder of a `trainer.precision` run of the same), and a stage
    started from it carries the upstream's precision in its `init_from` recipe."""
    from catdog_lab.settings import trainer_settings, validate_stage
    cfg = tiny_split
    own = _with(cfg, **{"features_augmented.precision": "bf16-mixed"})
    _, trainer_args = validate_stage(own, "features_augmented")             # what stages/train.py trains with
    assert trainer_args.resolved_precision(False) == "bf16-mixed"
    assert trainer_settings(own, "scratch").resolved_precision(False) == "32-true"
    assert trainer_settings(own).resolved_precision(False) == "32-true"           # not a stage: trainer.* alone
    everywhere = _with(cfg, **{"trainer.precision": "bf16-mixed"})
    assert seeds.recipe(own, "features_augmented")["precision"] == "bf16-mixed"
    assert seeds.recipe_hash(own, "features_augmented") == seeds.recipe_hash(everywhere, "features_augmented")
    assert seeds.recipe_hash(own, "features_augmented") != seeds.recipe_hash(cfg, "features_augmented")
    assert seeds.recipe_hash(own, "scratch") == seeds.recipe_hash(cfg, "scratch")
    assert "precision" not in seeds.recipe(own, "features_augmented")["stage"]   # a fact, hashed once
    # finetune in fp32 from a bf16 features_augmented: its own fact 32-true, the upstream's bf16
    finetune = seeds.recipe(own, "finetune")
    assert (finetune["precision"], finetune["init_from"]["precision"]) == ("32-true", "bf16-mixed")
    assert seeds.recipe_hash(own, "finetune") not in (seeds.recipe_hash(cfg, "finetune"),
                                                      seeds.recipe_hash(everywhere, "finetune"))


def test_weights_content_md5_tells_an_fp16_copy_from_the_fp32_file(tiny_cfg, tmp_path):
    fp32, fp16 = _weights(tmp_path / "w.pt"), _weights(tmp_path / "half" / "w.pt", torch.float16)
    again = _weights(tmp_path / "again" / "w.pt")
    assert seeds.weights_md5(str(fp32)) == seeds.weights_md5(str(again))            # same tensors, another file
    assert seeds.weights_md5(str(fp32)) != seeds.weights_md5(str(fp16))             # same name, other content
    hashes = {seeds.recipe_hash(_with(tiny_cfg, **{"backbone.weights": str(path)}), "features")
              for path in (fp32, fp16)}
    assert len(hashes) == 2
    assert seeds.weights_md5("imagenet") == "imagenet" and seeds.weights_md5(str(tmp_path / "absent.pt")) is None


def test_compare_without_the_weights_file_finds_the_one_recipe_that_fits(tiny_cfg, tmp_path):
    """A fact unknown on the comparing machine (weights file absent) matches the one recorded folder that
    agrees on everything else; two such folders are an error naming what to supply."""
    fp32 = _weights(tmp_path / "w.pt")
    runner = _with(tiny_cfg, **{"backbone.weights": str(fp32)})
    seeds.record(runner, "features", {"test/acc": 0.9})
    elsewhere = _with(tiny_cfg, **{"backbone.weights": str(tmp_path / "gone" / "w.pt")})
    assert [e["test/acc"] for e in seeds.entries(elsewhere, "features")] == [0.9]
    fp16 = _weights(tmp_path / "h.pt", torch.float16)
    seeds.record(_with(tiny_cfg, **{"backbone.weights": str(fp16)}), "features", {"test/acc": 0.8})
    # the fp16 file is named h.pt: a missing w.pt still matches only the fp32 folder by name
    assert [e["test/acc"] for e in seeds.entries(elsewhere, "features")] == [0.9]
    _weights(tmp_path / "other" / "w.pt", torch.float16)           # named w.pt too: only its content differs
    seeds.record(_with(tiny_cfg, **{"backbone.weights": str(tmp_path / "other" / "w.pt")}), "features",
                 {"test/acc": 0.7})
    with pytest.raises(ConfigError, match="backbone.weights"):
        seeds.entries(elsewhere, "features")


def _migration():
    spec = importlib.util.spec_from_file_location("migrate_seed_ledger",
                                                  PROJECT_ROOT / "scripts/migrate_seed_ledger.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_gives_old_entries_their_facts_and_keeps_every_number(tiny_split, tmp_path):
    cfg = _with(tiny_split, **{"paths.seeds": str(tmp_path / "ledger")})
    current = seeds.recipe(cfg, "scratch")
    # an entry as the code before recorded it: no facts, no keys added since
    old_recipe = {k: v for k, v in current.items() if k not in ("photos", "precision", "code_version")}
    old_recipe["split"] = {k: v for k, v in current["split"].items() if k != "order"}
    old_recipe["stage"] = {k: v for k, v in current["stage"].items() if k not in ("loss_clip", "shuffle_buffer")}
    numbers = {"seed": 7, "test/acc": 0.731, "val/acc": 0.72, "epochs": 30, "seconds_per_epoch": 50.5,
               "device": "cpu", "profile": ""}
    old = tmp_path / "ledger" / "scratch" / "0123456789ab" / "seed-7.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps(numbers | {"recipe": old_recipe}))
    # the keys added since are filled from the entry's profile (here the default): their defaults keep the
    # old behaviour, so the completed recipe is the current config's and compare finds the entry again
    migration = _migration()
    moves = migration.migrate(tmp_path / "ledger", photos=current["photos"], weights={})
    assert moves == [("scratch", 7, "0123456789ab", seeds.recipe_hash(cfg, "scratch"))]
    [moved] = seeds.entries(cfg, "scratch")
    assert {k: v for k, v in moved.items() if k != "recipe"} == numbers       # every number kept
    assert moved["recipe"]["precision"] == "32-true" and moved["recipe"]["code_version"] == 1
    assert moved["recipe"]["split"]["order"] == "shuffle" and moved["recipe"]["stage"]["loss_clip"] is None
    assert not old.parent.exists()
    assert migration.migrate(tmp_path / "ledger", photos=current["photos"], weights={}) == []   # idempotent
    # a GPU entry without a recorded precision is not guessed
    gpu = tmp_path / "ledger" / "scratch" / "fedcba987654" / "seed-8.json"
    gpu.parent.mkdir()
    gpu.write_text(json.dumps(numbers | {"seed": 8, "device": "NVIDIA H100", "recipe": old_recipe}))
    with pytest.raises(SystemExit, match="precision"):
        migration.migrate(tmp_path / "ledger", photos=current["photos"], weights={})


def test_the_committed_ledger_is_of_the_current_recipes():
    """A setting added to a recipe changes every folder's hash: the committed entries (the README's and the
    findings' tables) must be migrated in the same commit, or `compare` shows them as "not run yet"."""
    ledger = PROJECT_ROOT / "metrics" / "seeds"
    if not any(ledger.glob("*/*/seed-*.json")):
        pytest.skip("no committed ledger entries")
    moves = _migration().migrate(ledger, photos=None, weights={}, dry_run=True)
    assert moves == [], ("run `python scripts/migrate_seed_ledger.py metrics/seeds` and commit the moved entries: "
                         f"{moves}")
