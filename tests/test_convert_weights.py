"""`catdog-convert-weights`: Keras' VGG16 h5 -> the project's weights file, on h5 files the tests write."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from catdog_lab.convert_weights import VGG16_CONVS, content_md5, convert, read_keras_vgg16  # noqa: E402
from catdog_lab.errors import WeightsError  # noqa: E402
from catdog_lab.models.components.backbones import build_vgg16  # noqa: E402
from conftest import shared_weights  # noqa: E402

LAYERS = ["input_1"] + [n for b in range(1, 6) for n in
                        [c for c, _, _ in VGG16_CONVS if c.startswith(f"block{b}_")] + [f"block{b}_pool"]]


def write_keras_h5(path: Path, weights: dict, style: str = "old") -> Path:
    """Keras' save_weights layout: root `layer_names`, per layer `weight_names`; `old` names tensors
    block1_conv1_W_1:0 / _b_1:0 (the published notop file), `new` nests block1_conv1/kernel:0, bias:0."""
    with h5py.File(path, "w") as f:
        layers = [n for n in LAYERS if n in weights or not n.startswith("block") or "pool" in n]
        f.attrs["layer_names"] = [n.encode() for n in layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.1.6"
        for name in layers:
            g = f.create_group(name)
            tensors = weights.get(name, ())
            names = ([f"{name}_W_1:0", f"{name}_b_1:0"] if style == "old"
                     else [f"{name}/kernel:0", f"{name}/bias:0"])[:len(tensors)]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, array in zip(names, tensors):
                g.create_dataset(n, data=array, compression="gzip")      # mostly zeros: a small file
    return path


def vgg16_keras_weights(seed: int = 0) -> dict:
    """Zero kernels except block1_conv1 (random) and one known element in block3_conv2; known biases."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, cin, cout in VGG16_CONVS:
        weights[name] = [np.zeros((3, 3, cin, cout), np.float32), np.arange(cout, dtype=np.float32) / 1000]
    weights["block1_conv1"][0] = rng.standard_normal((3, 3, 3, 64)).astype(np.float32)
    weights["block3_conv2"][0][0, 2, 7, 11] = 5.0          # row 0, column 2, in 7, out 11
    return weights


@pytest.mark.parametrize("style", ["old", "new"])
def test_conversion_transposes_kernels_and_the_model_computes_keras_conv(tmp_path, style):
    weights = vgg16_keras_weights()
    h5 = write_keras_h5(tmp_path / "vgg16.h5", weights, style)
    assert h5.stat().st_size < 2_000_000
    info = convert(h5, tmp_path / "vgg16.pt")
    assert info["tensors"] == 26 and info["parameters"] == 14_714_688

    saved = torch.load(tmp_path / "vgg16.pt", weights_only=True)
    assert saved["format"] == "torchvision-vgg16-features/v1" and saved["preprocessing"]["channel_order"] == "BGR"
    # block3_conv2 is torchvision's features.12; HWIO [h, w, in, out] lands at OIHW [out, in, h, w]
    w = saved["state_dict"]["features.12.weight"]
    assert w.shape == (256, 256, 3, 3) and w[11, 7, 0, 2] == 5.0 and w.abs().sum() == 5.0
    assert torch.equal(saved["state_dict"]["features.28.bias"], torch.arange(512) / 1000)

    # the model built from the file computes Keras' conv: out[o] = b[o] + sum_hwi x[i, y+h-1, x+w-1] K[h, w, i, o]
    backbone = build_vgg16(str(tmp_path / "vgg16.pt"))
    x = torch.randn(1, 3, 8, 8)
    out = backbone.features[0](x)[0, :, 4, 5]
    kernel, bias = weights["block1_conv1"]
    patch = x[0, :, 3:6, 4:7].numpy()                       # in, h, w around pixel (4, 5)
    by_hand = bias + np.einsum("ihw,hwio->o", patch, kernel)
    np.testing.assert_allclose(out.detach().numpy(), by_hand, rtol=1e-5, atol=1e-5)
    # and the Caffe preprocessing travels with the file: RGB 0-255 in, BGR minus the mean out
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    assert backbone.preprocess(rgb).flatten().tolist() == pytest.approx([30 - 103.939, 20 - 116.779, 10 - 123.68])


def _error(tmp_path, weights, **kw) -> str:
    with pytest.raises(WeightsError) as exc:
        read_keras_vgg16(write_keras_h5(tmp_path / "bad.h5", weights, **kw))
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_conversion_errors_name_what_is_wrong(tmp_path):
    weights = vgg16_keras_weights()
    missing = {k: v for k, v in weights.items() if k != "block4_conv2"}
    assert "no layer block4_conv2" in _error(tmp_path, missing)

    narrow = dict(weights, block2_conv1=[np.zeros((3, 3, 64, 64), np.float32), np.zeros(64, np.float32)])
    assert "block2_conv1 kernel block2_conv1_W_1:0 has shape (3, 3, 64, 64), expected (3, 3, 64, 128)" \
        in _error(tmp_path, narrow)

    theano = dict(weights, block1_conv1=[np.zeros((64, 3, 3, 3), np.float32), np.zeros(64, np.float32)])
    assert "th_dim_ordering" in _error(tmp_path, theano)

    no_bias = dict(weights, block5_conv3=[weights["block5_conv3"][0]])
    assert "block5_conv3 should hold one 4-D kernel and one bias" in _error(tmp_path, no_bias)

    (tmp_path / "not.h5").write_text("hello")
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        read_keras_vgg16(tmp_path / "not.h5")


@pytest.mark.integration
def test_cli_prints_one_line_error_and_writes_nothing(tmp_path):
    out = tmp_path / "w.pt"
    proc = subprocess.run([sys.executable, "-m", "catdog_lab.convert_weights", str(tmp_path / "absent.h5"),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'absent.h5'}: file not found "
                                                f"(Keras saves it as ~/.keras/models/"
                                                f"vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5)"]


@pytest.mark.skipif(shared_weights() is None, reason="the Keras-converted VGG16 weights are not on this machine")
def test_round_trip_of_the_real_keras_weights_keeps_their_content(tmp_path):
    """The real weights written back in Keras' layout (OIHW -> HWIO) convert to the same tensors (same md5)."""
    real = torch.load(shared_weights(), weights_only=True)["state_dict"]
    convs = [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    weights = {name: [real[f"{c}.weight"].permute(2, 3, 1, 0).numpy(), real[f"{c}.bias"].numpy()]
               for (name, _, _), c in zip(VGG16_CONVS, convs)}
    info = convert(write_keras_h5(tmp_path / "keras.h5", weights), tmp_path / "back.pt")
    assert info["md5"] == content_md5(real)
