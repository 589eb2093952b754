"""Same config and seed on the CPU -> the same metrics and bit-identical weights."""
import hashlib
import json

import pytest
import torch

from catdog_lab.config import compose
from catdog_lab.models.factory import load_model
from catdog_lab.stages.split import split
from catdog_lab.stages.train import train
from conftest import make_dataset, tiny_overrides

TIMING_KEYS = {"seconds_per_epoch", "epoch_seconds", "fit_seconds", "wall_time_s", "extract_images_per_second"}


def weights_sha256(path) -> str:
    net, _ = load_model(path)
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _train_in(tmp, raw, stage, extra=()):
    cfg = compose(tiny_overrides(tmp, raw, ["tracking.enabled=false", "trainer.accelerator=cpu", f"{stage}.epochs=2",
                                            *extra]))
    split(cfg)
    train(cfg, stage)
    metrics = json.loads((tmp / "metrics" / f"{stage}.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}, weights_sha256(tmp / "models" / f"{stage}.pt")


# `augmented` draws the most random numbers (shuffling, dropout masks, one warp per image and step);
# `features` adds the conv-base extraction and the head
@pytest.mark.parametrize("stage", ["augmented", "features"])
def test_two_runs_with_the_same_seed_give_identical_metrics_and_weights(tmp_path, stage):
    raw = make_dataset(tmp_path / "raw")
    first = _train_in(tmp_path / "a", raw, stage)
    second = _train_in(tmp_path / "b", raw, stage)
    print(f"{stage} weights sha256: {first[1]} / {second[1]}")
    assert first[0] == second[0]
    assert first[1] == second[1]


def test_deterministic_kernels_change_nothing_on_the_cpu(tmp_path):
    """trainer.deterministic=true (torch.use_deterministic_algorithms) runs, and on the CPU gives the same bits."""
    raw = make_dataset(tmp_path / "raw")
    default = _train_in(tmp_path / "a", raw, "augmented")
    try:
        strict = _train_in(tmp_path / "b", raw, "augmented", ["trainer.deterministic=true"])
    finally:
        torch.use_deterministic_algorithms(False)       # Lightning sets it for the whole process
    assert default == strict


def test_a_different_seed_gives_different_weights(tmp_path):
    """The check above can fail: the hash does see the seed."""
    raw = make_dataset(tmp_path / "raw")
    base = tiny_overrides(tmp_path / "a", raw, ["tracking.enabled=false", "scratch.epochs=1"])
    other = tiny_overrides(tmp_path / "b", raw, ["tracking.enabled=false", "scratch.epochs=1", "seed=7"])
    hashes = []
    for overrides, tmp in ((base, tmp_path / "a"), (other, tmp_path / "b")):
        cfg = compose(overrides)
        split(cfg)
        train(cfg, "scratch")
        hashes.append(weights_sha256(tmp / "models" / "scratch.pt"))
    assert hashes[0] != hashes[1]
