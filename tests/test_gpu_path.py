"""The GPU path of the whole matrix, checked on the CPU: the batched warp against Keras' per-image warp for
the same draws, images resident on the training device, the bundle packer, and the matrix command's dry run."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import SHARED_DATA

from catdog_lab.data.augment import FILLS, INTERPOLATIONS, BatchAugment

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- batched warp == per-image warp
def _keras_matrix(p: dict, i: int, h: int, w: int) -> np.ndarray:
    """Keras 2.0.8 `random_transform`'s (row, col) output -> input matrix for image i's draws, written as
    Keras writes it (its tx is the ROW shift = height_shift x rows, its zx scales rows), offset about the
    image centre. The true centre ((h-1)/2, (w-1)/2), as augment.py documents, not Keras' h/2 + 0.5."""
    theta, s = float(p["angle"][i]), float(p["shear"][i])
    tx, ty = float(p["ty"][i]) * h, float(p["tx"][i]) * w
    zx, zy = float(p["zx"][i]), float(p["zy"][i])
    rotation = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shear = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    cy, cx = (h - 1) / 2, (w - 1) / 2
    offset, reset = np.array([[1, 0, cy], [0, 1, cx], [0, 0, 1]]), np.array([[1, 0, -cy], [0, 1, -cx], [0, 0, 1]])
    return offset @ rotation @ shift @ shear @ zoom @ reset


def _fold(index: np.ndarray, n: int, fill: str) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-range integer indices by scipy.ndimage's modes: (index inside, valid mask)."""
    if fill == "nearest":                                   # edge repeated
        return np.clip(index, 0, n - 1), np.ones(index.shape, bool)
    if fill == "reflect":                                   # half-sample symmetric: d c b a | a b c d | d c
        folded = np.mod(index, 2 * n)
        return np.where(folded >= n, 2 * n - 1 - folded, folded), np.ones(index.shape, bool)
    inside = (index >= 0) & (index < n)                     # constant 0
    return np.clip(index, 0, n - 1), inside


def _keras_warp_one(image: np.ndarray, matrix: np.ndarray, flip: bool, interpolation: str, fill: str):
    """One C x H x W image the way Keras 2.0.8's `apply_transform` does it (scipy.ndimage.affine_transform
    per channel, order 0 or 1), then `flip_axis` on the columns. Returns (image, pixels whose nearest
    source sits within 1e-3 of a rounding tie: either neighbour is right there)."""
    _, h, w = image.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    src_r = matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2]
    src_c = matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2]
    if interpolation == "nearest":
        r, rv = _fold(np.floor(src_r + 0.5).astype(int), h, fill)
        c, cv = _fold(np.floor(src_c + 0.5).astype(int), w, fill)
        out = np.where(rv & cv, image[:, r, c], 0.0)
        tie = (np.abs(src_r - np.floor(src_r) - 0.5) < 1e-3) | (np.abs(src_c - np.floor(src_c) - 0.5) < 1e-3)
    else:
        r0, c0 = np.floor(src_r).astype(int), np.floor(src_c).astype(int)
        fr, fc = src_r - r0, src_c - c0
        out = np.zeros_like(image)
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                r, rv = _fold(r0 + dr, h, fill)
                c, cv = _fold(c0 + dc, w, fill)
                out += np.where(rv & cv, image[:, r, c], 0.0) * (wr * wc)
        tie = np.zeros((h, w), bool)
    if flip:
        out, tie = out[:, :, ::-1], tie[:, ::-1]
    return out, tie


@pytest.mark.parametrize("fill", list(FILLS))
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("recipe", ["book", "book2"])
def test_batched_warp_is_kerass_per_image_warp_for_the_same_draws(recipe, interpolation, fill):
    """The batch path (one affine_grid + grid_sample for the whole batch, as on the GPU) gives, image by image,
    what Keras' per-image scipy warp gives for the same random draws, for every supported fill and
    interpolation. A non-square image catches swapped axes; the draws span the configured ranges."""
    ranges = {"book": {}, "book2": dict(rotation_degrees=36, width_shift=0.0, height_shift=0.0, shear_radians=0.0,
                                        zoom_independent=False)}[recipe]
    aug = BatchAugment(**ranges, fill=fill, interpolation=interpolation)
    n, h, w = 16, 23, 31
    images = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(3))
    params = aug.sample_params(n, torch.Generator().manual_seed(4))
    batched = aug.warp(images, params).double().numpy()
    ties = 0
    for i in range(n):
        expected, tie = _keras_warp_one(images[i].double().numpy(), _keras_matrix(params, i, h, w),
                                        bool(params["flip"][i]), interpolation, fill)
        ties += int(tie.sum())
        np.testing.assert_allclose(batched[i][:, ~tie], expected[:, ~tie], atol=1e-4, rtol=0,
                                   err_msg=f"image {i} ({recipe}, {interpolation}, fill {fill})")
    assert ties < 0.01 * n * h * w                     # the exclusion is a handful of pixels, not the test


def test_each_image_of_a_batch_is_warped_as_if_alone():
    """One grid_sample for the batch mixes nothing between images: row i equals warping image i alone."""
    aug = BatchAugment(interpolation="bilinear", fill="reflect")
    images = torch.rand(6, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    params = aug.sample_params(6, torch.Generator().manual_seed(1))
    batched = aug.warp(images, params)
    for i in range(6):
        alone = aug.warp(images[i:i + 1], {k: v[i:i + 1] for k, v in params.items()})
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- images resident on the device
def _batches(data, loader: str, epochs=(0, 1)) -> list:
    out = []
    for epoch in epochs:
        dl = getattr(data, loader)()
        if hasattr(dl.batch_sampler, "set_epoch"):
            dl.batch_sampler.set_epoch(epoch)
        out += [(x.clone(), y.clone()) for x, y in dl]
    return out


def test_resident_images_serve_the_same_batches(tiny_split):
    """compute.resident_data: the whole split on the device, the same batches as the memory map, in order."""
    from catdog_lab.data.datamodule import ResidentTensors, TensorDataModule
    common = dict(directory=tiny_split.paths.cache, batch_size=4, seed=7, steps_per_epoch=5, validation_steps=2)
    mapped, resident = TensorDataModule(**common), TensorDataModule(**common, device="cpu")
    mapped.setup(), resident.setup()
    assert isinstance(resident.datasets["train"], ResidentTensors)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        a, b = _batches(mapped, loader), _batches(resident, loader)
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.dtype == xb.dtype == torch.uint8 and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_resident_data_holds_given_eval_inputs(tiny_split):
    """A transfer stage's validation/test inputs (its frozen layers' outputs) are held on the device as well."""
    from catdog_lab.data.datamodule import ResidentTensors, TensorDataModule
    frozen = {"validation": torch.randn(6, 5), "test": torch.randn(6, 5)}
    common = dict(directory=tiny_split.paths.cache, batch_size=4, eval_inputs=frozen)
    plain, resident = TensorDataModule(**common), TensorDataModule(**common, device="cpu")
    plain.setup(), resident.setup()
    assert all(isinstance(resident.datasets[s], ResidentTensors) for s in ("train", "validation", "test"))
    for split in ("validation", "test"):
        assert torch.equal(resident.datasets[split].inputs, frozen[split])
        a, b = _batches(plain, f"{'val' if split == 'validation' else 'test'}_dataloader", epochs=(0,)), \
            _batches(resident, f"{'val' if split == 'validation' else 'test'}_dataloader", epochs=(0,))
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b)) and a


def test_resident_data_trains_to_the_same_model(tiny_split):
    """The augmented stage (shuffled stream, dropout, a warp per image) with and without resident data:
    the same weights and metrics, bit for bit, and the precision in the metrics."""
    from omegaconf import open_dict

    from catdog_lab.stages.train import train
    results = {}
    for resident in (False, True):
        with open_dict(tiny_split):
            tiny_split.compute.resident_data = resident
            tiny_split.tracking.enabled = False
        metrics = train(tiny_split, "augmented")
        state = torch.load(Path(tiny_split.paths.models) / "augmented.pt", weights_only=True)
        results[resident] = metrics, state
    (m0, s0), (m1, s1) = results[False], results[True]
    assert m0["precision"] == m1["precision"] == "32-true"
    assert "weights_dtype" not in m0                   # no conv base in this stage
    for key in ("test/acc", "test/loss", "val/acc", "val/loss"):
        assert m0[key] == m1[key], key
    w0, w1 = s0["state_dict"], s1["state_dict"]
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)


# --------------------------------------------------------------------------- the bundle: photos + fp16 weights
def _vgg16_file(path: Path) -> Path:
    """A VGG16 conv-base file in the project's format (random weights: the same shapes and bytes as ImageNet's)."""
    import torchvision

    from catdog_lab.convert_weights import CAFFE_BGR
    from catdog_lab.io import torch_save
    from catdog_lab.models.components.backbones import KERAS_VGG16_FORMAT
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}
    torch_save({"format": KERAS_VGG16_FORMAT, "state_dict": state, "preprocessing": dict(CAFFE_BGR),
                "source": "test"}, path)
    return path


def _pack_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    import pack_gpu_bundle
    return pack_gpu_bundle


def test_bundle_packs_photos_at_size_and_fp16_weights(tmp_path, raw_images, capsys):
    from catdog_lab.models.components.backbones import build_vgg16, load_weights_file, weights_dtype
    pack = _pack_module()
    weights = _vgg16_file(tmp_path / "vgg16.pt")
    split = ["data.split.train=6", "data.split.validation=3", "data.split.test=3", "data.workers=1"]
    assert pack.main(["--out", str(tmp_path / "bundle"), "--weights", str(weights), "--sizes", "48", "56",
                      "--derive", "--", f"data.source.path={raw_images}", *split]) == 0
    printed = capsys.readouterr().out
    info = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    for size, row in zip((48, 56), info["photos"]):
        files = sorted((tmp_path / "bundle" / f"photos-{size}").glob("*.jpg"))
        assert row["images"] == len(files) == 24               # every photo of the split, under its own name
        assert {f.name for f in files} == {p.name for p in raw_images.glob("*.jpg")}
        from PIL import Image
        assert all(Image.open(f).size == (size, size) for f in files)
        assert row["same_split_as_source"] is True              # the pool is the split: the same assignment
        assert 0 < row["mean_abs_pixel_error"] < 8              # the JPEG round trip, measured, small
    half = tmp_path / "bundle" / pack.WEIGHTS_FILE
    assert weights_dtype(str(half)) == "float16" and weights_dtype(str(weights)) == "float32"
    state16, spec16 = load_weights_file(half)
    state32, spec32 = load_weights_file(weights)
    assert spec16 == spec32 and state16.keys() == state32.keys()
    assert all(torch.equal(state16[k], state32[k].half()) for k in state32)
    assert info["weights"]["md5_float16"] != info["weights"]["md5_float32"]
    assert 0.45 < half.stat().st_size / weights.stat().st_size < 0.55          # half the bytes
    conv = build_vgg16(str(half)).features[0].weight                          # loads into float32 parameters
    assert conv.dtype == torch.float32 and torch.equal(conv, state32["features.0.weight"].half().float())
    total = sum(p.stat().st_size for p in (tmp_path / "bundle").rglob("*") if p.is_file())
    assert abs(info["total_bytes"] - total) < 100 and f"{total / 2**20:.1f} MiB" in printed


def test_bundle_over_the_limit_fails_with_one_line(tmp_path, raw_images, capsys):
    pack = _pack_module()
    weights = _vgg16_file(tmp_path / "vgg16.pt")
    code = pack.main(["--out", str(tmp_path / "bundle"), "--weights", str(weights), "--sizes", "48", "--derive",
                      "--limit-mib", "1", "--", f"data.source.path={raw_images}", "data.split.train=6",
                      "data.split.validation=3", "data.split.test=3", "data.workers=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]    # not the bars
    assert code == 1 and len(err) == 1 and err[0].startswith("error: the bundle is") and "--quality" in err[0]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_real_bundle_fits_64_mib(tmp_path, capsys):
    """The real 4,000 photos packed as the GPU run needs them, with a VGG16 file of the real one's shapes:
    under the 64 MiB that travels to the GPU machine."""
    pack = _pack_module()
    weights = _vgg16_file(tmp_path / "vgg16.pt")
    assert pack.main(["--out", str(tmp_path / "bundle"), "--weights", str(weights),
                      f"data.source.path={SHARED_DATA}"]) == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert info["total_bytes"] < pack.LIMIT_MIB * 2**20
    assert all(row["same_split_as_source"] for row in info["photos"])


# --------------------------------------------------------------------------- the matrix command, dry run
@pytest.mark.integration
def test_matrix_dry_run_on_generated_photos(tmp_path):
    """scripts/gpu_matrix.py --dry-run on the CPU: generated photos packed larger than used (the split
    resizes, as the real bundle's 180 px photos serve the 150 px profile), fp16 random VGG16, both profiles,
    every training stage, each profile's compare over its own ledger."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_matrix.py"), "--dry-run", "--out",
                           str(tmp_path), "--seeds", "7"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from catdog_lab.registry import TRAINING_STAGES
    summary = json.loads((tmp_path / "run" / "matrix_summary.json").read_text())
    assert summary["exit_codes"] == {"book": 0, "book2": 0}
    rows = {(r["profile"], r["stage"]): r for r in summary["runs"]}
    assert set(rows) == {(p, s) for p in ("book", "book2") for s in TRAINING_STAGES}
    for (profile, stage), row in rows.items():
        assert row["seed"] == 7 and row["precision"] == "32-true" and 0 <= row["test/acc"] <= 1
        assert row["weights_dtype"] == ("float16" if stage not in ("scratch", "augmented") else None)
    for profile in ("book", "book2"):
        ledger = sorted((tmp_path / "run" / profile / "seeds").glob("*/*/seed-7.json"))
        assert len(ledger) == len(TRAINING_STAGES)
        compared = json.loads((tmp_path / "run" / profile / "metrics" / "compare.json").read_text())
        assert compared["scratch/seeds"] == 1
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert [(r["size"], r["from"]) for r in bundle["photos"]] == [(88, "photos-88"), (80, "photos-88")]
    assert all(r["same_split_as_source"] for r in bundle["photos"])
    assert "| book2 | finetune | 7 |" in proc.stdout


def test_estimate_is_derived_from_the_h100_run(capsys):
    """--estimate reads the H100 run's per-epoch seconds and utilisation; the current book recipe has more
    batches per epoch than that run (validation_steps 50), so its estimate exceeds the measured epochs."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_matrix
    est = gpu_matrix.estimate(["book"], [1])
    rows = {r["stage"]: r for r in est["per_stage"]}
    assert rows["scratch"]["batches_per_epoch"] == 150 and rows["scratch"]["work_per_batch_x"] == 1.0
    from catdog_lab.io import read_csv
    measured = sum(float(r["seconds"]) for r in read_csv(gpu_matrix.H100_RUN / "plots" / "scratch.csv"))
    assert rows["scratch"]["seconds"] > measured
    assert est["best_seconds"] <= est["worst_seconds"]
