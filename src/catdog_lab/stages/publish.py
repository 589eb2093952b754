"""publish(cfg): the trained models, published: model cards, MLflow models in the registry, the champion.

Runs after the training stages, which write only their model, metrics, history, curves and checkpoint: so
editing how a model is served, predicted with, described or explained reruns this stage, never training.

For each training stage whose `models/<stage>.pt` and `metrics/<stage>.json` exist, in pipeline order:
- tracking on: log the model as a pyfunc (signature, one test photo as input example; `serving.py`) to the
  MLflow run that trained it (found by the model file's SHA-256, which training tags its run with; this
  stage's own run when none did, e.g. it trained with tracking off), register it as `catdog-<stage>`, and
  attach the model card to that run and to the registered version;
- write the model card, `models/<stage>.md`.
Then the champion: the highest validation accuracy, `catdog-<stage>@champion` with tracking on. Writes
`models/published.json` (each model's SHA-256 and registered version, and the champion line that
`compare` prints under its table).

Registration errors are not swallowed: a stage that says it registered a model and did not would leave the
`champion` alias pointing at an older model.
"""
from __future__ import annotations

import json
from pathlib import Path

from catdog_lab.config import read_path
from catdog_lab.data.sources import sha256_file
from catdog_lab.errors import DataError
from catdog_lab.io import write_json
from catdog_lab.model_card import write_card
from catdog_lab.model_registry import PUBLISHED, crown_champion, describe, register, training_run
from catdog_lab.registry import TRAINING_STAGES
from catdog_lab.schema import Data, check
from catdog_lab.serving import decoding_config, jpeg_base64, pyfunc_flavour
from catdog_lab.stages import plain, tracking_for
from catdog_lab.tracking import StageRun, mlflow_client, stage_run


def trained_models(cfg) -> dict[str, tuple[Path, dict]]:
    """{stage: (its model file, its metrics)} for every training stage that has both, in pipeline order."""
    models_dir, metrics_dir = read_path(cfg, "models"), read_path(cfg, "metrics")
    found = {}
    for stage in TRAINING_STAGES:
        model, metrics = models_dir / f"{stage}.pt", metrics_dir / f"{stage}.json"
        if model.is_file() and metrics.is_file():
            found[stage] = (model, json.loads(metrics.read_text()))
    return found


def input_example(cfg) -> str | None:
    """One test photo of the split, as a request would carry it (base64 JPEG)."""
    from catdog_lab.data.datamodule import load_cached_split

    cache = read_path(cfg, "cache")
    if not (cache / "test.pt").exists():
        return None
    return jpeg_base64(load_cached_split(cache, "test")["images"][0])


def publish(cfg) -> dict:
    models = trained_models(cfg)
    if not models:
        raise DataError(f"publish: no trained model in {read_path(cfg, 'models')} (each needs <stage>.pt and "
                        f"its metrics/<stage>.json): run a training stage first")
    check(cfg, "data", Data)         # the decoding limits the served models keep (serving.decoding_config)
    tracking = tracking_for(cfg)
    config = plain(cfg)              # what the cards quote, as written (stages.plain)
    cards_dir = Path(cfg.paths.models)
    published: dict[str, dict] = {}
    with stage_run(tracking, "publish") as run:
        client = mlflow_client(tracking) if run.enabled else None
        example = input_example(cfg) if run.enabled else None
        for stage, (model_path, metrics) in models.items():
            digest = sha256_file(model_path)
            registered = None
            if run.enabled:
                run_id = training_run(client, tracking, stage, digest) or run.run_id
                registered = register(run_id, stage, model_path,
                                      pyfunc_flavour(model_path, example, decoding_config(config["data"])))
            card = write_card(config, stage, model_path, metrics, registered, dest=cards_dir / f"{stage}.md")
            if registered:
                describe(client, registered, card.read_text(encoding="utf-8"))
                model_run = StageRun(client, run_id)
                model_run.log_artifact(card, "model_card")
                model_run.set_tags({"registered_model": f"{registered['name']}/{registered['version']}"})
                print(f"[publish] {stage}: registered {registered['model_uri']}; model card {card}")
            else:
                print(f"[publish] {stage}: model card {card} (tracking off: not registered)")
            published[stage] = {"model_sha256": digest, "registered": registered}
        champion, champion_uri = crown_champion({stage: metrics for stage, (_, metrics) in models.items()},
                                                read_path(cfg, "models"), tracking)
        record = {"models": published, "champion": champion, "champion_uri": champion_uri}
        write_json(cards_dir / PUBLISHED, record)
        run.set_tags({"champion": champion})
        run.log_artifact(cards_dir / PUBLISHED, "published")
    print(f"[publish] {champion}")
    return record
