"""catdog-export: one file with the preprocessing inside, uint8 RGB in, p(dog) out, same logits as PyTorch."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from catdog_lab.data.images import open_rgb
from catdog_lab.data.split import resize_to_tensor
from catdog_lab.export import export, exported_classes, run_exported
from catdog_lab.models.components.preprocess import Preprocess
from catdog_lab.models.factory import load_model, save_model
from catdog_lab.stages.train import train
from conftest import SHARED_DATA, make_photo, shared_weights

CAFFE = {"channel_order": "BGR", "input_range": [0, 255], "mean": [103.939, 116.779, 123.68], "std": [1, 1, 1]}


def _decoded(files, size) -> torch.Tensor:
    return torch.stack([resize_to_tensor(open_rgb(Path(f), 10 ** 8)[0], size) for f in files])


@pytest.mark.integration
def test_onnx_and_torchscript_match_pytorch_on_photos(tiny_split, tmp_path):
    with open_dict(tiny_split):
        tiny_split.tracking.enabled = False
    train(tiny_split, "scratch")
    # the Keras weights' Caffe preprocessing (BGR flip, mean subtraction) must be inside the graph too
    net, bundle = load_model(tmp_path / "models/scratch.pt")
    net.preprocess = Preprocess(CAFFE)
    save_model(tmp_path / "models/bgr.pt", "bgr", bundle["arch"], net)
    photos = [make_photo(tmp_path / "new" / f"p{i}.jpg", ("cat", "dog")[i % 2], 700 + i, size=(90, 70))
              for i in range(5)]
    images = _decoded(photos, 48)
    for model in ("scratch.pt", "bgr.pt"):
        reference, _ = load_model(tmp_path / "models" / model)
        with torch.inference_mode():
            logits = reference(images.float()).reshape(-1)
        for fmt in ("onnx", "torchscript"):
            info = export(tmp_path / "models" / model, fmt, tmp_path / "exported" / f"{model}.{fmt}")
            assert info["max_logit_diff"] <= 1e-4
            p, logit = run_exported(info["path"], images, fmt)           # a batch of 5: the batch size is free
            assert logit.shape == (5,) and (logit - logits).abs().max() <= 1e-4, (model, fmt)
            assert p.shape == (5, 2) and torch.allclose(p[:, 1], torch.sigmoid(logits), atol=1e-5)
            assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-6)
            assert exported_classes(info["path"]) == ["cat", "dog"]
    bgr_logits = run_exported(tmp_path / "exported" / "bgr.pt.onnx", images, "onnx")[1]
    assert (bgr_logits - run_exported(tmp_path / "exported" / "scratch.pt.onnx", images, "onnx")[1]).abs().max() > 1e-3

    # the module behind the catdog-export console script (the shared dev venv may predate the script)
    proc = subprocess.run([sys.executable, "-m", "catdog_lab.export", "--model", str(tmp_path / "models/scratch.pt"),
                           "--out", str(tmp_path / "cli.onnx")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'cli.onnx'} (onnx, input uint8 N x 3 x 48 x 48 RGB")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir() or shared_weights() is None, reason="real photos or VGG16 weights absent")
def test_vgg16_onnx_parity_on_real_photos(tmp_path):
    from catdog_lab.models.factory import build_from_arch

    arch = {"kind": "transfer", "image_size": 150, "dropout": 0.0, "backbone": "vgg16",
            "weights": str(shared_weights()), "hidden": 256, "activation": "relu", "trainable": []}
    torch.manual_seed(0)
    net = build_from_arch(arch)                       # real conv base (Caffe preprocessing), random head
    save_model(tmp_path / "vgg.pt", "vgg", arch, net)
    info = export(tmp_path / "vgg.pt", "onnx", tmp_path / "vgg.onnx")
    images = _decoded(sorted(SHARED_DATA.glob("*.jpg"))[:16], 150)
    reference, _ = load_model(tmp_path / "vgg.pt")
    with torch.inference_mode():
        logits = reference(images.float()).reshape(-1)
    diff = float((run_exported(info["path"], images, "onnx")[1] - logits).abs().max())
    print(f"VGG16 ONNX vs PyTorch, 16 real photos: max |logit difference| {diff:.2e}")
    assert diff <= 1e-4
