"""The trained model in MLflow: logged, registered and crowned `champion` by `publish`, served over HTTP."""
import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from catdog_lab.model_registry import crown_champion
from catdog_lab.serving import _load_pyfunc, one_line, start_server, stop_server
from catdog_lab.stages import tracking_for
from catdog_lab.stages.compare import compare
from catdog_lab.stages.publish import publish
from catdog_lab.stages.train import train
from conftest import SHARED_DATA, make_photo

BIN = Path(sys.executable).parent


def _predict_json(args: list[str], env=None) -> list[dict]:
    proc = subprocess.run([str(BIN / "catdog-predict"), "--format", "json", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_champion_is_chosen_on_validation_never_on_test(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.tracking.enabled = False
    metrics = {"scratch": {"val/acc": 0.90, "test/acc": 0.70, "val/loss": 0.3},
               "finetune": {"val/acc": 0.80, "test/acc": 0.99, "val/loss": 0.2},
               "augmented": {"val/acc": 0.90, "test/acc": 0.60, "val/loss": 0.4}}
    line, uri = crown_champion(metrics, Path(tiny_cfg.paths.models), tracking_for(tiny_cfg))
    assert uri is None                                       # tracking off: no alias, nothing to serve by it
    # a tie on validation accuracy goes to the lower validation loss
    assert line.startswith("Champion: `scratch`, the highest validation accuracy (90.0%) of 3 stages")
    assert "no registry alias" in line


@pytest.mark.integration
def test_trained_model_is_registered_crowned_and_served(tiny_split, tmp_path):
    cfg = tiny_split
    train(cfg, "scratch")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    # training writes no card and registers nothing: that is the publish stage's
    assert not (tmp_path / "models/scratch.md").exists()
    assert not client.search_registered_models()
    training_run = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
                                      "tags.stage = 'scratch'")[0]

    published = publish(cfg)
    card = (tmp_path / "models/scratch.md").read_text()
    assert "`catdog-scratch` version 1" in card and "Split manifest" in card and "Known limits" in card
    version = client.get_model_version("catdog-scratch", "1")
    assert version.description == card
    assert version.run_id == training_run.info.run_id          # the model sits in the run that trained it
    run_artifacts = {f.path for f in client.list_artifacts(version.run_id, "model_card")}
    assert run_artifacts == {"model_card/scratch.md"}
    assert published["models"]["scratch"]["registered"]["version"] == "1"
    # what the README's serve command asks for the champion's URI (whichever stage won)
    asked = subprocess.run([str(BIN / "python"), "-m", "catdog_lab.model_registry", "champion", "--models",
                            str(tmp_path / "models")], capture_output=True, text=True)
    assert (asked.returncode, asked.stdout) == (0, "models:/catdog-scratch@champion\n"), asked.stderr

    summary = compare(cfg)
    assert summary["scratch/test_acc"] is not None
    comparison = (tmp_path / "reports/comparison.md").read_text()
    assert "Champion: `scratch`" in comparison and "`models:/catdog-scratch@champion` = version 1" in comparison
    # the line is about the workspace's models, not the ledger's means in the table above it
    assert f"Of the models in `models/` (each stage's last run: seed {cfg.seed}): Champion: `scratch`" in comparison
    assert str(client.get_model_version_by_alias("catdog-scratch", "champion").version) == "1"

    # the logged model is the .pt bundle + a loader module: no pickled Python object to unpickle on load
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/catdog-scratch@champion",
                                                     tracking_uri=uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "catdog_lab.serving" and "python_model" not in flavor
    assert not list(local.rglob("*.pkl")) and list((local / "data").rglob("scratch.pt"))
    # the decoding limit travels in the model (a served model has no conf/ to read it from)
    assert flavor["config"] == {"max_image_pixels": cfg.data.max_image_pixels,
                                "min_image_side": cfg.data.min_image_side,
                                "max_aspect_ratio": cfg.data.max_aspect_ratio}
    loaded = _load_pyfunc(str(local / "data"), {"max_image_pixels": 123, "min_image_side": 4, "max_aspect_ratio": 2.5})
    assert (loaded.predictor.max_pixels, loaded.predictor.min_side, loaded.predictor.max_aspect) == (123, 4, 2.5)

    photo = make_photo(tmp_path / "new" / "photo.jpg", "dog", 998, size=(97, 71))
    files = [photo] + ([SHARED_DATA / "cat.1.jpg"] if (SHARED_DATA / "cat.1.jpg").is_file() else [])
    expected = _predict_json(["--model", str(tmp_path / "models/scratch.pt"), *map(str, files)])
    # the server execs `uvicorn` by name: the venv's bin must be on PATH, as it is in an activated venv
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # catdog-predict reads the same registered model through the alias
    assert _predict_json(["--model", "models:/catdog-scratch@champion", *map(str, files)], env=env) == expected

    server, port = start_server("models:/catdog-scratch@champion", env, tmp_path / "server.log", timeout_s=180)
    try:
        cells = [[base64.b64encode(f.read_bytes()).decode("ascii")] for f in files] + [["bm90IGFuIGltYWdl"]]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": cells}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())["predictions"]
    finally:
        stop_server(server)
    assert len(answer) == len(files) + 1
    for got, want in zip(answer, expected):
        assert got["label"] == want["label"] and got["error"] == ""
        assert got["p_dog"] == pytest.approx(want["p_dog"], abs=1e-6)
    assert answer[-1]["label"] == "" and answer[-1]["error"].startswith("not an image")


def test_refused_request_reasons_are_one_line():
    wrapped = "Failed to predict data '  image\n0  abc'. \nError: image 0: not valid base64"
    assert one_line(wrapped) == "image 0: not valid base64"
    schema = ("Failed to predict data '  photo\n0  abc'. \nError: Failed to enforce schema of data '  photo\n0  abc' "
              "with schema '['image': string (required)]'. Error: Model is missing inputs ['image'].")
    assert one_line(schema) == "Failed to enforce the model's input schema: Model is missing inputs ['image']."
    echo = "Invalid input. Ensure that input is a valid JSON formatted string. Error: 'x'\nInput: \n" + "{" * 10 ** 6
    assert one_line(echo) == "Invalid input. Ensure that input is a valid JSON formatted string. Error: 'x'"
    assert len(one_line("y" * 10 ** 6)) == 300 and one_line("") == "bad request"


def test_asking_for_the_champion_without_one_is_one_line(tmp_path):
    from catdog_lab.model_registry import main
    assert main(["champion", "--models", str(tmp_path)]) == 1                  # no published.json yet
    (tmp_path / "published.json").write_text(json.dumps({"champion": "...; tracking off", "champion_uri": None}))
    assert main(["champion", "--models", str(tmp_path)]) == 1
