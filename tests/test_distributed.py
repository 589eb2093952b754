"""Several devices through Lightning: DDP over 2 CPU processes (gloo) trains a stage to the end, with rank 0
alone writing the model, metrics and the MLflow run, and testing on the whole test set."""
import json

import pytest
import torch

from conftest import tiny_overrides
from test_cli import _catdog


@pytest.mark.integration
def test_ddp_two_cpu_processes_write_once_and_test_the_full_set(tiny_split, tmp_path, raw_images):
    from mlflow.tracking import MlflowClient

    from catdog_lab.data.datamodule import load_cached_split
    from catdog_lab.models.factory import load_model

    overrides = [o for o in tiny_overrides(tmp_path, raw_images) if not o.startswith("paths.")]
    overrides += [f"paths.cache={tiny_split.paths.cache}", f"paths.split={tiny_split.paths.split}"]
    run = tmp_path / "run"
    # the CLI as a subprocess: Lightning's launcher re-runs the same command line for rank 1
    proc = _catdog(["stage=scratch", *overrides, "trainer.accelerator=cpu", "trainer.devices=2",
                    "trainer.strategy=ddp", f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[scratch] rank 1 of 2: training done" in proc.stdout + proc.stderr      # two ranks trained

    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*.pt")) == ["models/scratch.pt"]
    metrics = json.loads((run / "metrics/scratch.json").read_text())
    assert metrics["devices"] == 2
    # one ledger entry (rank 0's), in the CLI job's own folder: a CLI job never writes the workspace's ledger
    assert len(list((run / "metrics/seeds/scratch").glob("*/seed-*.json"))) == 1
    assert not (tmp_path / "metrics/seeds").exists()

    client = MlflowClient(tracking_uri=tiny_split.tracking.uri)
    exp = client.get_experiment_by_name(tiny_split.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics["test/acc"] == metrics["test/acc"]

    # the reported test accuracy is the saved model's accuracy on every test image, computed here by hand
    net, _ = load_model(run / "models/scratch.pt")
    test = load_cached_split(tiny_split.paths.cache, "test")
    with torch.no_grad():
        predicted = (net(test["images"].float()) > 0).long()
    by_hand = (predicted == test["labels"]).float().mean().item()
    assert metrics["test_images"] == len(test["labels"])
    assert abs(metrics["test/acc"] - by_hand) < 1e-6, (metrics["test/acc"], by_hand)


def test_stream_sampler_ranks_take_every_nth_batch_of_the_one_stream():
    from catdog_lab.data.sampler import StreamBatchSampler

    one = StreamBatchSampler(10, 4, steps=6, seed=3)                      # one device, 6 steps
    ranks = [StreamBatchSampler(10, 4, steps=3, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(3):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        interleaved = [b for pair in zip(*(list(r) for r in ranks)) for b in pair]
        assert interleaved == list(one)          # step i of the 2 ranks = stream batches 2i and 2i + 1


def test_devices_keys_are_validated_one_line(tiny_cfg):
    import pytest

    from catdog_lab.errors import ConfigError
    from catdog_lab.settings import validate_stage

    for key, value, message in [("devices", 0, "trainer.devices: must be a positive integer, got 0"),
                                ("num_nodes", "two", "trainer.num_nodes: must be a positive integer, got 'two'"),
                                ("strategy", "fsdp", "trainer.strategy: must be one of")]:
        cfg = tiny_cfg.copy()
        cfg.trainer[key] = value
        with pytest.raises(ConfigError, match=message):
            validate_stage(cfg, "scratch")


@pytest.mark.integration
def test_local_multirun_with_several_devices_is_one_line(tmp_path):
    proc = _catdog(["-m", "stage=scratch", "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu",
                    f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trainer.devices: several devices per job need")
