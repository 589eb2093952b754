import json

import pytest
import torch
from omegaconf import open_dict

from catdog_lab.models.components.convnet import BookConvNet
from catdog_lab.stages.train import train
from helpers_stage import assert_fast_dev_run_outputs, assert_metrics_match_model, evaluate_saved_model


def test_book_convnet_shapes_and_parameter_count():
    net = BookConvNet(150)
    assert net(torch.zeros(2, 3, 150, 150)).shape == (2,)
    # the book's model.summary(): 3,453,121 parameters
    assert sum(p.numel() for p in net.parameters()) == 3_453_121


@pytest.mark.parametrize("stage", ["scratch", "augmented"])
def test_fast_dev_run(tiny_split, stage):
    metrics = train(tiny_split, stage, fast_dev_run=True)
    assert_fast_dev_run_outputs(tiny_split, stage, metrics)


def test_training_writes_outputs_and_logs_to_mlflow(tiny_split, tmp_path):
    cfg = tiny_split
    with open_dict(cfg):
        cfg.scratch.epochs = 2
    metrics = train(cfg, "scratch")
    for path in ("models/scratch.pt", "metrics/scratch.json", "plots/scratch.csv", "reports/curves/scratch.png"):
        assert (tmp_path / path).exists(), path
    assert json.loads((tmp_path / "metrics/scratch.json").read_text())["epochs"] == 2
    assert metrics["epochs"] == 2
    assert not (tmp_path / "checkpoints/scratch").exists()          # finished: no resume state left

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2
    assert run.data.params["scratch.lr"] == "0.0001"
    for tag in ("git_commit", "params_hash", "data_manifest", "pipeline_id", "mlflow.parentRunId"):
        assert run.data.tags.get(tag), tag
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["run_kind"] == "pipeline"
    # MLflow's standard tags, which MlflowClient.create_run does not add by itself
    from catdog_lab.tracking import git_commit
    for tags in (run.data.tags, parent.data.tags):
        assert tags.get("mlflow.user") and tags.get("mlflow.source.name")
        assert tags.get("mlflow.source.type") == "LOCAL"
        if git_commit() != "unknown":
            assert tags.get("mlflow.source.git.commit") == git_commit()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "curves")}
    assert "curves/scratch.png" in artifacts


def test_without_a_terminal_each_epoch_prints_one_line_instead_of_a_bar(tiny_split, capfd):
    cfg = tiny_split
    with open_dict(cfg):
        cfg.scratch.epochs = 2
        cfg.trainer.progress_bar = True                 # asked for, but stdout is captured: not a terminal
    train(cfg, "scratch")
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("[scratch] epoch ")]
    assert [line.split(":")[0] for line in lines] == ["[scratch] epoch 1/2", "[scratch] epoch 2/2"]
    assert "train loss" in lines[0] and "val loss" in lines[0] and lines[0].endswith(" left")
    assert "Epoch 0" not in out + err                   # Lightning's bar: not drawn into a file


def test_saved_model_reloads_and_predicts_the_same(tiny_split, tmp_path):
    """The model file is the model the stage tested: reloaded and run by hand over the test split, it gives
    the test/acc and test/loss of metrics/augmented.json (computed by Lightning on the module in memory)."""
    cfg = tiny_split
    with open_dict(cfg):
        cfg.tracking.enabled = False
    returned = train(cfg, "augmented")
    metrics = json.loads((tmp_path / "metrics/augmented.json").read_text())
    assert metrics == returned and metrics["select"] == "last"
    by_hand = evaluate_saved_model(tmp_path / "models/augmented.pt", cfg.paths.cache)
    assert by_hand["bundle"]["stage"] == "augmented" and by_hand["logits"].shape == (metrics["test_images"],)
    assert_metrics_match_model(metrics, by_hand)
    assert abs(metrics["test/acc_last"] - by_hand["acc"]) <= 1e-6           # select=last: the last epoch's
