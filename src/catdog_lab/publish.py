"""After a training stage: the model card next to the model file, and (tracking on) the model in MLflow.

Called once by `stages/train.py`, once `models/<stage>.pt` and the metrics exist. Registration errors are
not swallowed: a stage that says it registered a model and did not would leave `compare`'s `champion`
alias pointing at an older model.
"""
from __future__ import annotations

from pathlib import Path

from catdog_lab.model_card import write_card


def _input_example(config: dict) -> str | None:
    """One test photo of the split, as a request would carry it (base64 JPEG)."""
    from catdog_lab.config import read_path
    from catdog_lab.data.datamodule import load_cached_split
    from catdog_lab.serving import jpeg_base64

    cache = read_path(config, "cache")
    if not (cache / "test.pt").exists():
        return None
    return jpeg_base64(load_cached_split(cache, "test")["images"][0])


def publish_model(run, config: dict, stage: str, model_path: Path, metrics: dict) -> dict | None:
    """Write `models/<stage>.md`; with tracking on, log the model (pyfunc) to `run`, register it as
    `catdog-<stage>`, and attach the card to the run and to the registered version. `config`: the resolved
    config as plain data (stages.plain)."""
    model_path = Path(model_path)
    if not run.enabled:
        write_card(config, stage, model_path, metrics)
        return None
    from catdog_lab.serving import decoding_config, log_and_register
    from catdog_lab.tracking import retry

    registered = log_and_register(run.run_id, stage, model_path, _input_example(config),
                                  decoding_config(config["data"]))
    card = write_card(config, stage, model_path, metrics, registered)
    run.log_artifact(card, "model_card")
    text = card.read_text(encoding="utf-8")
    retry(lambda: run.client.update_model_version(registered["name"], registered["version"], description=text))
    run.set_tags({"registered_model": f"{registered['name']}/{registered['version']}"})
    print(f"[{stage}] registered {registered['model_uri']}; model card {card}")
    return registered
