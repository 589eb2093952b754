"""Shared fixtures: tiny generated photos and a composed config that writes only under tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from catdog_lab.config import LAYOUT, compose
from catdog_lab.data.toy import toy_photo

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Under pytest-xdist each worker gets its share of the cores for torch's threads (and, through
# OMP_NUM_THREADS, the processes its tests start), rather than every worker using all of them at once:
# oversubscribed OpenMP threads spin and the whole suite slows down.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    import torch
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The longest test files first (each file runs on one xdist worker, --dist loadfile): started last, one of them
# left a worker running alone for the suite's last minutes. Durations from `--durations` on this 2-core CPU.
LONGEST_FIRST = ("test_real_data.py",         # ~400 s with CATDOG_REAL_ACCURACY=1 (VGG16 over 1,300 real photos)
                 "test_dvc_pipeline.py",      # ~400 s: a tiny `dvc repro` in a repository copy, then more
                 "test_classes_stages.py",    # ~200 s
                 "test_cli.py",               # ~190 s
                 "test_gpu_path.py")          # ~150 s


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))       # stable: the rest keep their order

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data" / "dogs-vs-cats-4000"
SHARED_WEIGHTS_CANDIDATES = [
    SHARED / "weights" / "vgg16_keras_imagenet_features.pt",
    Path(os.environ.get("CATDOG_VGG16_WEIGHTS", "/nonexistent")),
    Path.home() / ".cache" / "catdog-lab" / "vgg16_keras_imagenet_features.pt",
]


def shared_weights() -> Path | None:
    return next((p for p in SHARED_WEIGHTS_CANDIDATES if p.is_file()), None)


def make_photo(path: Path, label: str, index: int, size=(64, 56), mode="RGB", fmt="JPEG") -> Path:
    """A learnable toy photo (catdog_lab.data.toy) in the given mode and file format."""
    image = toy_photo(label, index, size[0], size[1]).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_dataset(root: Path, per_class: int = 12, start: int = 1) -> Path:
    for label in ("cat", "dog"):
        for i in range(start, start + per_class):
            make_photo(root / f"{label}.{i}.jpg", label, i)
    return root


def make_class_folders(root: Path, classes, per_class: int = 12, size=(64, 56)) -> Path:
    """One folder per class (toy photos of class k of N), a few of them one folder deeper."""
    for label in classes:
        for i in range(per_class):
            sub = "deeper/" if i % 4 == 3 else ""
            image = toy_photo(label, i, size[0], size[1], classes=tuple(classes))
            (root / label / sub).mkdir(parents=True, exist_ok=True)
            image.save(root / label / sub / f"{i}.jpg", format="JPEG")
    return root


def tiny_overrides(tmp: Path, raw: Path, extra: list[str] | None = None) -> list[str]:
    return [
        f"data.source.path={raw}", "data.split.train=6", "data.split.validation=3", "data.split.test=3",
        "data.image_size=48", "profile=smoke", "backbone.weights=none", "backbone.feature_batch_size=8",
        "trainer.progress_bar=false", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.artifact_location={tmp}/mlartifacts",
        *[f"paths.{k}={tmp}/{v}" for k, v in LAYOUT.items()],      # the project's layout, under tmp
        *(extra or []),
    ]


@pytest.fixture
def raw_images(tmp_path) -> Path:
    return make_dataset(tmp_path / "raw")


@pytest.fixture
def tiny_cfg(tmp_path, raw_images):
    """Composed config over 12 generated photos per class (6/3/3), 48 px, writing under tmp_path."""
    return compose(tiny_overrides(tmp_path, raw_images))


@pytest.fixture
def tiny_split(tiny_cfg):
    """tiny_cfg with the split stage already run."""
    from catdog_lab.stages.split import split
    split(tiny_cfg)
    return tiny_cfg
