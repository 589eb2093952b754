"""The MLflow face of a stage model: its pyfunc flavour (registering it is model_registry.py's).

The flavour is MLflow's "loader module" form: the logged model is the `.pt` bundle (under `data/`) plus
`loader_module: catdog_lab.serving`, and loading calls `_load_pyfunc(path)`, which rebuilds the net with
`torch.load(weights_only=True)`. Nothing is cloudpickled, so loading a model never runs pickled code.
The package itself travels in the model's `code/` folder, so `mlflow models serve` needs only the
dependencies listed in its requirements.

Request: a table with one column `image`, each cell a base64-encoded image file (JPEG, PNG...), e.g.
    {"dataframe_split": {"columns": ["image"], "data": [["/9j/4AAQ..."]]}}
Answer: one row per image, {"label": the top class, "probability": p(label), "p_<class>": p(class) for each
of the model's classes (p_cat, p_dog for the book's), "error": ""}. A bad image gets a row with its `error`
and no label; the other images are still classified. A request in which nothing can be classified (every
image bad, no image, no `image` column) is refused: HTTP 400 with a one-line reason (MLflow's own messages
for a malformed request are cut to one line too, see `_one_line_errors`).
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import os
from pathlib import Path

INPUT_COLUMN = "image"
REASON_CHARS = 300            # a refused request's reason: one line, at most this long


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
        columns = output_columns(self.predictor.classes)
        rows = []
        for image in decoded:
            result = next(results) if isinstance(image, bytes) else self.predictor.empty_result(image)
            rows.append({column: result[column] for column in columns}
                        | {"label": result["label"] or "", "error": result["error"] or ""})
        if all(row["error"] for row in rows):       # nothing to answer: the request itself is bad
            reasons = "; ".join(f"image {i}: {row['error']}" for i, row in enumerate(rows[:3]))
            raise bad_request(reasons + (f"; ... ({len(rows)} images, none readable)" if len(rows) > 3 else ""))
        return pd.DataFrame(rows, columns=columns)


def output_columns(classes) -> list[str]:
    """label, probability, p_<class> per class, error: predict.py's fields without the file."""
    from catdog_lab.predict import fields
    return [name for name in fields(classes) if name != "file"]


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
    `model_config` what `pyfunc_flavour` recorded (the decoding limits: a served model has no conf/)."""
    path = Path(data_path)
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.pt"))))
    _one_line_errors()
    config = model_config or {}
    return CatDogPyfunc(path, config.get("max_image_pixels"), config.get("min_image_side"),
                        config.get("max_aspect_ratio"))


def signature(classes=("cat", "dog")):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
                          outputs=Schema([ColSpec("string" if name in ("label", "error") else "double", name)
                                          for name in output_columns(classes)]))


def model_classes(model_path: Path) -> list[str]:
    """The classes a model file records (the book's cat, dog for files written before other classes)."""
    from catdog_lab import BOOK_CLASSES
    from catdog_lab.io import torch_load
    return list(torch_load(model_path).get("classes", BOOK_CLASSES))


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


def pyfunc_flavour(model_path: Path, input_example: str | None, model_config: dict) -> dict:
    """mlflow.pyfunc.log_model's arguments for a stage model in this flavour (model_registry.register logs
    it): the `.pt` bundle, this module as loader, the package as code, the signature, one base64 photo as
    input example, pinned requirements, and `model_config` (`decoding_config`: the run's decoding limits). The
signature's output columns name the model file's classes (p_<class> each)."""
    example = None
    if input_example is not None:
        import pandas as pd
        example = pd.DataFrame({INPUT_COLUMN: [input_example]})
    return {"loader_module": __name__, "data_path": str(model_path),
            "code_paths": [str(Path(__file__).resolve().parent)],
            "signature": signature(model_classes(Path(model_path))),
            "input_example": example, "pip_requirements": _requirements(),
            "model_config": dict(model_config)}


def start_server(model_uri: str, env: dict, log: Path, timeout_s: float = 300.0):
    """`mlflow models serve` of `model_uri` on a free loopback port, as the README serves it; returns
    (process, port) once `/ping` answers. The process leads its own session: `stop_server` stops it and
    uvicorn's workers. `env` must put the venv's bin on PATH (the server execs `uvicorn` by name). Raises
    RuntimeError with the end of `log` (the server's output) if it exits or does not answer within
    `timeout_s`. Used by the serving tests and benchmark."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "wb") as out:
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
                                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 200:
                    return server, port
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if server.poll() is not None:
            reason = f"exited with {server.returncode}"
        elif time.monotonic() > deadline:
            stop_server(server)
            reason = f"did not answer /ping within {timeout_s:.0f} s"
        else:
            time.sleep(0.5)
            continue
        raise RuntimeError(f"the model server {reason}: {Path(log).read_text(errors='replace')[-3000:]}")


def stop_server(process, grace_s: float = 60.0) -> list[int]:
    """Stops a server started in its own session (`start_server`, `mlflow ui`) with everything in its process
    group (uvicorn's and huey's workers): SIGTERM, then SIGKILL after `grace_s` to whatever is left. Returns
    the pids that needed SIGKILL."""
    import signal
    import subprocess
    import time

    def members() -> list[int]:
        """The group's live processes: the leader is reaped first (poll), zombies are not counted (a zombie
        stays in the list until its parent waits for it, so counting it made every stop wait `grace_s`)."""
        process.poll()
        out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid, group, stat in zip(out[::3], out[1::3], out[2::3])
                if int(group) == process.pid and not stat.startswith("Z")]

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    deadline = time.monotonic() + grace_s
    while members() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = members()
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return left
