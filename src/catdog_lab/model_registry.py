"""The MLflow model registry: every read and write of registered models, in one module.

(Not `registry.py`, which is the list of the pipeline's stages.) The `publish` stage registers the stage
models and moves the `champion` alias; `catdog-predict` and `catdog-export` download a `models:/` URI; the
pyfunc flavour (`serving.py`) hands `register` its logging arguments. This module imports none of
predict, serving or publish, so all three can use it without importing each other.

Registered models are named `catdog-<stage>`; each version is tagged with the SHA-256 of the `.pt` file
it was built from, which is how the champion alias finds the version of a given `models/<stage>.pt`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from catdog_lab.data.sources import sha256_file
from catdog_lab.tracking import Tracking, experiment_id, mlflow_client, retry

CHAMPION = "champion"
PUBLISHED = "published.json"     # models/published.json: what `publish` registered, and the champion line


def registered_name(stage: str) -> str:
    return f"catdog-{stage}"


def _missing(exc: Exception) -> bool:
    """Is this MLflow error a registered model, version or alias that does not exist?"""
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text


def training_run(client, tracking: Tracking, stage: str, model_sha256: str) -> str | None:
    """The MLflow run that wrote this very model file (training tags its run `model_sha256`), newest first;
    None when no run did (the stage ran with tracking off)."""
    query = f"tags.stage = '{stage}' and tags.model_sha256 = '{model_sha256}'"
    found = retry(lambda: client.search_runs([experiment_id(client, tracking)], query, max_results=1,
                                             order_by=["attributes.start_time DESC"]))
    return found[0].info.run_id if found else None


def register(run_id: str, stage: str, model_path: Path, flavour: dict) -> dict:
    """Log the stage model to run `run_id` as an MLflow model and register it as `catdog-<stage>`.
    `flavour`: mlflow.pyfunc.log_model's arguments for the model itself (serving.pyfunc_flavour). The
    version is tagged with the model file's SHA-256 and its stage. Returns {"name", "version", "model_uri"}.
    The tracking URI is the one `mlflow_client` set."""
    import mlflow
    from mlflow import MlflowClient

    name = registered_name(stage)
    with mlflow.start_run(run_id=run_id):
        info = retry(lambda: mlflow.pyfunc.log_model(name="model", registered_model_name=name,
                                                     metadata={"stage": stage}, **flavour))
    client = MlflowClient()
    version = str(info.registered_model_version)
    retry(lambda: client.set_model_version_tag(name, version, "model_sha256", sha256_file(Path(model_path))))
    retry(lambda: client.set_model_version_tag(name, version, "stage", stage))
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}"}


def describe(client, registered: dict, text: str) -> None:
    """The registered version's description (its model card)."""
    retry(lambda: client.update_model_version(registered["name"], registered["version"], description=text))


def set_champion(client, stage: str, model_path: Path) -> str | None:
    """Point `catdog-<stage>@champion` at the registered version built from this very model file (matched by
    its SHA-256), so the alias serves exactly `models/<stage>.pt`. Returns the version, or None if unregistered."""
    name = registered_name(stage)
    digest = sha256_file(Path(model_path)) if Path(model_path).exists() else None
    try:
        versions = retry(lambda: client.search_model_versions(f"name = '{name}'"))
    except Exception as exc:                    # no such registered model
        if _missing(exc):
            return None
        raise
    matching = [candidate for candidate in versions if digest and candidate.tags.get("model_sha256") == digest]
    if not matching:
        return None
    version = max(matching, key=lambda candidate: int(candidate.version)).version
    retry(lambda: client.set_registered_model_alias(name, CHAMPION, str(version)))
    return str(version)


def choose_champion(metrics: dict[str, dict]) -> tuple[str, float, int] | None:
    """(stage, its validation accuracy, how many stages were scored): the highest validation accuracy (ties:
    lower validation loss), never test accuracy, which stays an unbiased estimate only if nothing is chosen
    on it. None when no stage has a validation accuracy."""
    scored = [(float(stage_metrics["val/acc"]),
               -float(stage_metrics.get("val/loss") if stage_metrics.get("val/loss") is not None else "inf"), stage)
              for stage, stage_metrics in metrics.items() if stage_metrics.get("val/acc") is not None]
    if not scored:
        return None
    acc, _, stage = max(scored)
    return stage, acc, len(scored)


def champion_sentence(choice: tuple[str, float, int] | None) -> str:
    """The champion line without its registry part (no trailing full stop unless there is no champion)."""
    if choice is None:
        # the workspace holds no trained model's metrics (e.g. a report made from the seed ledger alone)
        return "Champion: none (no trained model's metrics with a validation accuracy were found)."
    stage, acc, n = choice
    return (f"Champion: `{stage}`, the highest validation accuracy ({100 * acc:.1f}%) of {n} "
            f"stage{'' if n == 1 else 's'} (chosen on validation, not test)")


def crown_champion(metrics: dict[str, dict], models_dir: Path, tracking: Tracking) -> tuple[str, str | None]:
    """Pick the champion among the trained stages (choose_champion). With tracking on, set
    `catdog-<stage>@champion` and remove the alias from the other stages' models. Returns one line saying so,
    and the champion's `models:/` URI (None when no alias was set)."""
    choice = choose_champion(metrics)
    line = champion_sentence(choice)
    if choice is None:
        return line, None
    if not tracking.enabled:
        return line + "; tracking off, no registry alias set.", None
    stage = choice[0]
    client = mlflow_client(tracking)
    version = set_champion(client, stage, Path(models_dir) / f"{stage}.pt")
    if version is None:
        return line + f"; `models/{stage}.pt` is not in the registry, no alias set.", None
    for other in metrics:
        if other != stage:
            try:
                retry(lambda other=other: client.delete_registered_model_alias(registered_name(other), CHAMPION))
            except Exception as exc:        # that model or alias does not exist: nothing to remove
                if not _missing(exc):
                    raise
    uri = f"models:/{registered_name(stage)}@{CHAMPION}"
    return line + f": `{uri}` = version {version}.", uri


def published_record(models_dir: Path) -> dict | None:
    """models/published.json as `publish` wrote it (models, the champion line, its URI); None before publish."""
    path = Path(models_dir) / PUBLISHED
    return json.loads(path.read_text()) if path.is_file() else None


def published_champion(models_dir: Path, metrics: dict[str, dict]) -> str:
    """The champion line `publish` wrote (models/published.json); without one (publish not run), the choice
    on these metrics, saying that no alias was set."""
    record = published_record(models_dir)
    if record is not None:
        return record["champion"]
    choice = choose_champion(metrics)
    line = champion_sentence(choice)
    return line if choice is None else line + "; not published (the `publish` stage sets the registry alias)."


def registry_model_file(uri: str, tracking_uri: str | None = None) -> Path:
    """Download a registered model (`models:/name@alias`, `models:/name/3`) and return its `.pt` bundle."""
    import mlflow

    from catdog_lab.errors import DataError

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:
        raise DataError(f"{uri}: not found in the MLflow registry at {tracking_uri} "
                        f"({str(exc).splitlines()[0][:200]})") from None
    found = sorted((local / "data").rglob("*.pt")) if (local / "data").exists() else sorted(local.rglob("*.pt"))
    if not found:
        raise DataError(f"{uri}: no .pt model file in it (not a catdog-lab model)")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    """`python -m catdog_lab.model_registry champion`: the champion's `models:/` URI, for `mlflow models serve`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m catdog_lab.model_registry",
                                     description="Print the registry URI of the model `publish` chose.")
    parser.add_argument("what", choices=["champion"], help="champion: the models:/catdog-<stage>@champion URI")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help=f"the folder holding {PUBLISHED} (default: models)")
    args = parser.parse_args(argv)
    record = published_record(args.models)
    uri = record.get("champion_uri") if record else None
    if not uri:
        print(f"error: no champion in the registry ({args.models / PUBLISHED} "
              f"{'names none: tracking was off, or' if record else 'is missing:'} run the `publish` stage "
              "with tracking on)", file=sys.stderr)
        return 1
    print(uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
