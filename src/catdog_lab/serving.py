"""The MLflow face of a stage model: its pyfunc flavour (registering it is model_registry.py's).

The flavour is MLflow's "loader module" form: the logged model is the `.pt` bundle (under `data/`) plus
`loader_module: catdog_lab.serving`, and loading calls `_load_pyfunc(path)`, which rebuilds the net with
`torch.load(weights_only=True)`. Nothing is cloudpickled, so loading a model never runs pickled code.
The package itself travels in the model's `code/` folder, so `mlflow models serve` needs only the
dependencies listed in its requirements.

Request: a table with one column `image`, each cell a base64-encoded image file (JPEG, PNG...), e.g.
    {"dataframe_split": {"columns": ["image"], "data": [["/9j/4AAQ..."]]}}
Answer: one row per image, {"label": "cat"|"dog", "probability": p(label), "p_dog": p(dog), "error": ""}.
A bad image gets a row with its `error` and no label; the other images are still classified.
"""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

INPUT_COLUMN = "image"


class CatDogPyfunc:
    """What `mlflow.pyfunc.load_model` returns the inner object of: predict(DataFrame) -> DataFrame."""

    def __init__(self, model_file: str | Path, max_pixels: int | None = None):
        from catdog_lab.predict import Predictor
        self.predictor = Predictor.from_file(model_file, max_pixels=max_pixels)

    def predict(self, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if INPUT_COLUMN not in frame.columns:
            raise ValueError(f"{INPUT_COLUMN}: the request needs a column {INPUT_COLUMN!r} of base64 image bytes, "
                             f"got columns {list(frame.columns)}")
        decoded = [_image_bytes(cell) for cell in frame[INPUT_COLUMN]]
        good = [image for image in decoded if isinstance(image, bytes)]
        results = iter(self.predictor.predict(good))
        rows = []
        for image in decoded:
            result = next(results) if isinstance(image, bytes) else {"label": None, "probability": None,
                                                                      "p_dog": None, "error": image}
            rows.append({"label": result["label"] or "", "probability": result["probability"],
                         "p_dog": result["p_dog"], "error": result["error"] or ""})
        return pd.DataFrame(rows, columns=["label", "probability", "p_dog", "error"])


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
    `model_config` what `pyfunc_flavour` recorded (the decoding limit: a served model has no conf/)."""
    path = Path(data_path)
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.pt"))))
    return CatDogPyfunc(path, (model_config or {}).get("max_image_pixels"))


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


def pyfunc_flavour(model_path: Path, input_example: str | None, max_pixels: int) -> dict:
    """mlflow.pyfunc.log_model's arguments for a stage model in this flavour (model_registry.register logs
    it): the `.pt` bundle, this module as loader, the package as code, the signature, one base64 photo as
    input example, pinned requirements, and `max_pixels` (the run's data.max_image_pixels) in its model_config."""
    example = None
    if input_example is not None:
        import pandas as pd
        example = pd.DataFrame({INPUT_COLUMN: [input_example]})
    return {"loader_module": __name__, "data_path": str(model_path),
            "code_paths": [str(Path(__file__).resolve().parent)], "signature": signature(),
            "input_example": example, "pip_requirements": _requirements(),
            "model_config": {"max_image_pixels": int(max_pixels)}}
