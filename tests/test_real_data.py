"""Slow checks on the real photos and weights (skipped when ../shared or the weights are absent)."""
import hashlib
import os

import pytest
from omegaconf import open_dict

from catdog_lab.config import compose
from conftest import SHARED_DATA, shared_weights

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")]


def _real_cfg(tmp, counts=()):
    return compose([f"data.source.path={SHARED_DATA}", "trainer.progress_bar=false", *counts,
                    f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_location={tmp}/mlartifacts",
                    *[f"paths.{k}={tmp}/{k}" for k in ("split", "cache", "features", "models", "metrics", "plots",
                                                        "reports", "checkpoints", "seeds")]])


@pytest.fixture(scope="module")
def real_split(tmp_path_factory):
    from catdog_lab.stages.split import split
    cfg = _real_cfg(tmp_path_factory.mktemp("real"))
    return cfg, split(cfg)


def test_real_split_is_the_books_split(real_split):
    cfg, report = real_split
    assert report["counts"] == {s: {"cat": n, "dog": n} for s, n in
                                (("train", 1000), ("validation", 500), ("test", 500))}
    assert report["skipped"] == 0
    sums = dict(line.split()[::-1] for line in (SHARED_DATA / "SHA256SUMS").read_text().splitlines() if line.strip())
    import csv
    rows = list(csv.DictReader(open(f"{cfg.paths.split}/manifest.csv")))
    assert len(rows) == 4000
    for row in rows[:50]:
        assert sums[row["file"]] == row["sha256"]
        assert hashlib.sha256((SHARED_DATA / row["file"]).read_bytes()).hexdigest() == row["sha256"]


@pytest.mark.skipif(shared_weights() is None, reason="the shared VGG16 weights file has not been built")
@pytest.mark.skipif(os.environ.get("CATDOG_REAL_ACCURACY") != "1",
                    reason="VGG16 over 1,300 real photos, ~390 s of a 2-core CPU: set CATDOG_REAL_ACCURACY=1")
def test_real_feature_extraction_reaches_93_percent_on_a_third_of_the_photos(tmp_path):
    """The features stage (Keras ImageNet VGG16, Caffe preprocessing, the book's head and 30 epochs) on real
    photos: 300 training photos per class, tested on 250 per class (the conv base's pass over all 4,000 took
    most of the suite's time; measured 95.2%). With all 2,000 training photos it reaches 95-97% (README); with
    150 per class it measured 92.3%, too close to the bound to be a stable check."""
    from catdog_lab.stages.split import split
    from catdog_lab.stages.train import train
    cfg = _real_cfg(tmp_path, ["data.split.train=300", "data.split.validation=100", "data.split.test=250"])
    with open_dict(cfg):
        cfg.backbone.weights = str(shared_weights())
    assert split(cfg)["counts"]["train"] == {"cat": 300, "dog": 300}
    metrics = train(cfg, "features")
    print(f"features stage on 600 real training photos: test/acc={metrics['test/acc']:.4f} on "
          f"{metrics.get('test_images')} test photos, {metrics['wall_time_s']}s")
    assert metrics["epochs"] == 30
    assert metrics["test/acc"] >= 0.93
