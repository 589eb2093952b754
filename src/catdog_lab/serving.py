"""The MLflow face of a stage model: a pyfunc flavour, the registry, the `champion` alias.

The flavour is MLflow's "loader module" form: the logged model is the `.pt` bundle (under `data/`) plus
`loader_module: catdog_lab.serving`, and loading calls `_load_pyfunc(path)`, which rebuilds the net with
`torch.load(weights_only=True)`. Nothing is cloudpickled, so loading a model never runs pickled code.
The package itself travels in the model's `code/` folder, so `mlflow models serve` needs only the
dependencies listed in its requirements.

Request: a table with one column `image`, each cell a base64-encoded image file (JPEG, PNG...), e.g.
    {"dataframe_split": {"columns": ["image"], "data": [["/9j/4AAQ..."]]}}
Answer: one row per image, {"label": "cat"|"dog", "probability": p(label), "p_dog": p(dog), "error": ""}.
A bad image gets a row with its `error` and no label; the other images are still classified. A request
in which nothing can be classified (every image bad, no image, no `image` column) is refused: HTTP 400
with a one-line reason (MLflow's own messages for a malformed request are cut to one line too, see
`_one_line_errors`).
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import os
from pathlib import Path

from catdog_lab.data.sources import sha256_file

INPUT_COLUMN = "image"
CHAMPION = "champion"
REASON_CHARS = 300            # a refused request's reason: one line, at most this long


def registered_name(stage: str) -> str:
    return f"catdog-{stage}"


class CatDogPyfunc:
    """What `mlflow.pyfunc.load_model` returns the inner object of: predict(DataFrame) -> DataFrame."""

    def __init__(self, model_file: str | Path, max_pixels: int | None = None, min_side: int | None = None,
                 max_aspect: float | None = None):
        from catdog_lab.predict import Predictor
        self.predictor = Predictor.from_file(model_file, max_pixels=max_pixels, min_side=min_side,
                                             max_aspect=max_aspect)

    def predict(self, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if INPUT_COLUMN not in frame.columns:
            raise bad_request(f"{INPUT_COLUMN}: the request needs a column {INPUT_COLUMN!r} of base64 image bytes, "
                              f"got columns {[str(column)[:40] for column in frame.columns][:5]}")
        if not len(frame):
            raise bad_request("no images in the request")
        decoded = [_image_bytes(cell) for cell in frame[INPUT_COLUMN]]
        good = [image for image in decoded if isinstance(image, bytes)]
        results = iter(self.predictor.predict(good))
        rows = []
        for image in decoded:
            result = next(results) if isinstance(image, bytes) else {"label": None, "probability": None,
                                                                      "p_dog": None, "error": image}
            rows.append({"label": result["label"] or "", "probability": result["probability"],
                         "p_dog": result["p_dog"], "error": result["error"] or ""})
        if all(row["error"] for row in rows):       # nothing to answer: the request itself is bad
            reasons = "; ".join(f"image {i}: {row['error']}" for i, row in enumerate(rows[:3]))
            raise bad_request(reasons + (f"; ... ({len(rows)} images, none readable)" if len(rows) > 3 else ""))
        return pd.DataFrame(rows, columns=["label", "probability", "p_dog", "error"])


def bad_request(reason: str):
    """An error MLflow's scoring server answers with HTTP 400 and this reason (one line)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(one_line(reason))


def one_line(message: str) -> str:
    """A reason on one line: MLflow's "Failed to predict data '<the request>'. \nError: <reason>" keeps its
    reason; other messages keep their first line (MLflow's JSON errors go on to echo the whole request)."""
    message = str(message)
    if "\nError: " in message:
        message = message.rsplit("\nError: ", 1)[1]
    if message.startswith("Failed to enforce schema") and "Error: " in message:    # it echoes the data too
        message = "Failed to enforce the model's input schema: " + message.rsplit("Error: ", 1)[1]
    line = message.strip().splitlines()[0].strip() if message.strip() else "bad request"
    return line if len(line) <= REASON_CHARS else line[:REASON_CHARS - 3] + "..."


def _one_line_errors() -> None:
    """Inside `mlflow models serve`: answer a malformed request (empty body, broken JSON, wrong shape) with
    a one-line reason and no stack trace. MLflow's messages echo the whole request over several lines (a
    20 MB body comes back as a 20 MB error). The scoring server imports this loader module to load the
    model before it builds its app, and its route calls `scoring_server.invocations` by name, so wrapping
    that function is enough; the status code stays MLflow's (400 for every bad request)."""
    if "__pyfunc_model_path__" not in os.environ:       # not the scoring server (scoring_server._SERVER_MODEL_PATH)
        return
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode
    from mlflow.pyfunc import scoring_server

    original = getattr(scoring_server, "invocations", None)
    if original is None or getattr(original, "one_line", False):
        return

    @functools.wraps(original)
    def invocations(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except MlflowException as exc:
            # the exception keeps its code's name; the constructor takes the code's number
            raise MlflowException(one_line(exc.message), error_code=ErrorCode.Value(exc.error_code)) from None

    invocations.one_line = True
    scoring_server.invocations = invocations


def _image_bytes(value) -> bytes | str:
    """A cell -> the image file's bytes, or why not (a str)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        return f"expected a base64 string, got {type(value).__name__}"
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "not valid base64"


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> CatDogPyfunc:
    """MLflow's loader-module hook: `data_path` is the logged `.pt` bundle (a file or a folder holding it);
    `model_config` what `log_and_register` recorded (the decoding limits: a served model has no conf/)."""
    path = Path(data_path)
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.pt"))))
    _one_line_errors()
    config = model_config or {}
    return CatDogPyfunc(path, config.get("max_image_pixels"), config.get("min_image_side"),
                        config.get("max_aspect_ratio"))


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability"),
                                          ColSpec("double", "p_dog"), ColSpec("string", "error")]))


def jpeg_base64(image_chw) -> str:
    """A uint8 3 x H x W tensor -> base64 JPEG, for input examples."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_chw.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _requirements() -> list[str]:
    """Pinned to what runs now: MLflow would otherwise infer them by loading the model in a subprocess (slow)."""
    from importlib.metadata import version

    pins = ["mlflow", "torch", "torchvision", "pillow", "numpy", "pandas"]
    return [f"{package}=={version(package)}" for package in pins]


DECODING_KEYS = ("max_image_pixels", "min_image_side", "max_aspect_ratio")    # data.* a served model decodes with


def decoding_config(data) -> dict:
    """The run's decoding limits (data.max_image_pixels, min_image_side, max_aspect_ratio), for model_config."""
    return {key: (float if key == "max_aspect_ratio" else int)(data[key]) for key in DECODING_KEYS}


def log_and_register(run_id: str, stage: str, model_path: Path, input_example: str | None,
                     model_config: dict) -> dict:
    """Log the stage model to its run as a pyfunc model and register it as `catdog-<stage>`; `model_config`
    (`decoding_config`: the run's decoding limits) travels with it. Returns {"name", "version", "model_uri"}."""
    import mlflow
    from mlflow import MlflowClient

    from catdog_lab.tracking import retry

    name = registered_name(stage)
    package = Path(__file__).resolve().parent
    example = None
    if input_example is not None:
        import pandas as pd
        example = pd.DataFrame({INPUT_COLUMN: [input_example]})
    with mlflow.start_run(run_id=run_id):
        info = retry(lambda: mlflow.pyfunc.log_model(
            name="model", loader_module="catdog_lab.serving", data_path=str(model_path), code_paths=[str(package)],
            signature=signature(), input_example=example, pip_requirements=_requirements(),
            model_config=dict(model_config), registered_model_name=name,
            metadata={"stage": stage}))
    client = MlflowClient()
    version = str(info.registered_model_version)
    retry(lambda: client.set_model_version_tag(name, version, "model_sha256", sha256_file(Path(model_path))))
    retry(lambda: client.set_model_version_tag(name, version, "stage", stage))
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}"}


def set_champion(client, stage: str, model_path: Path) -> str | None:
    """Point `catdog-<stage>@champion` at the registered version built from this very model file (matched by
    its SHA-256), so the alias serves exactly `models/<stage>.pt`. Returns the version, or None if unregistered."""
    from catdog_lab.tracking import retry

    name = registered_name(stage)
    digest = sha256_file(Path(model_path)) if Path(model_path).exists() else None
    try:
        versions = retry(lambda: client.search_model_versions(f"name = '{name}'"))
    except Exception as exc:                    # no such registered model
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            return None
        raise
    matching = [candidate for candidate in versions if digest and candidate.tags.get("model_sha256") == digest]
    if not matching:
        return None
    version = max(matching, key=lambda candidate: int(candidate.version)).version
    retry(lambda: client.set_registered_model_alias(name, CHAMPION, str(version)))
    return str(version)


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


def crown_champion(metrics: dict[str, dict], models_dir: Path, tracking) -> str:
    """Pick the champion among the trained stages by validation accuracy (ties: lower validation loss), never
    by test accuracy, which stays an unbiased estimate only if nothing is chosen on it. With tracking on, set
    `catdog-<stage>@champion` and remove the alias from the other stages' models. Returns one line."""
    scored = [(float(stage_metrics["val/acc"]),
               -float(stage_metrics.get("val/loss") if stage_metrics.get("val/loss") is not None else "inf"), stage)
              for stage, stage_metrics in metrics.items() if stage_metrics.get("val/acc") is not None]
    if not scored:
        return "Champion: none (no stage has a validation accuracy)."
    acc, _, stage = max(scored)
    stages = f"{len(scored)} stage{'' if len(scored) == 1 else 's'}"
    line = (f"Champion: `{stage}`, the highest validation accuracy ({100 * acc:.1f}%) of {stages} "
            f"(chosen on validation, not test)")
    if not tracking.enabled:
        return line + "; tracking off, no registry alias set."
    from catdog_lab.tracking import _client, retry

    client = _client(tracking)
    version = set_champion(client, stage, Path(models_dir) / f"{stage}.pt")
    if version is None:
        return line + f"; `models/{stage}.pt` is not in the registry, no alias set."
    for other in metrics:
        if other != stage:
            try:
                retry(lambda other=other: client.delete_registered_model_alias(registered_name(other), CHAMPION))
            except Exception as exc:        # that model or alias does not exist: nothing to remove
                if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
                    raise
    return line + f": `models:/{registered_name(stage)}@{CHAMPION}` = version {version}."
