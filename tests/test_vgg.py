"""The pretrained backbone: weights files of both formats, preprocessing from the weights, freezing."""
import os
import pickle

import pytest
import torch
import torchvision

from catdog_lab.errors import WeightsError
from catdog_lab.models.components.backbones import KERAS_VGG16_FORMAT, build_vgg16, load_weights_file
from catdog_lab.models.components.preprocess import TORCHVISION_IMAGENET, Preprocess
from catdog_lab.models.components.transfer import TransferNet

CAFFE = {"mode": "caffe", "channel_order": "BGR", "input_range": [0, 255],
         "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}


@pytest.fixture(scope="module")
def vgg_state():
    torch.manual_seed(0)
    return {k: v for k, v in torchvision.models.vgg16().state_dict().items()}


def test_keras_format_file_brings_its_caffe_preprocessing(tmp_path, vgg_state):
    path = tmp_path / "keras.pt"
    features = {k: v for k, v in vgg_state.items() if k.startswith("features.")}
    torch.save({"format": KERAS_VGG16_FORMAT, "state_dict": features, "preprocessing": CAFFE, "source": "test"}, path)
    backbone = build_vgg16(str(path))
    assert backbone.preprocess.spec == CAFFE
    assert torch.equal(backbone.features[28].weight, features["features.28.weight"])
    # Caffe: RGB 0-255 -> BGR, minus mean, no scaling
    pixel = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    out = backbone.preprocess(pixel).flatten().tolist()
    assert out == pytest.approx([30 - 103.939, 20 - 116.779, 10 - 123.68])


def test_torchvision_state_dict_uses_torchvision_preprocessing(tmp_path, vgg_state):
    path = tmp_path / "tv.pt"
    torch.save(vgg_state, path)                 # whole model, classifier included: ignored
    backbone = build_vgg16(str(path))
    assert backbone.preprocess.spec == TORCHVISION_IMAGENET
    assert torch.equal(backbone.features[0].weight, vgg_state["features.0.weight"])
    out = backbone.preprocess(torch.full((1, 3, 1, 1), 255.0)).flatten().tolist()
    mean, std = TORCHVISION_IMAGENET["mean"], TORCHVISION_IMAGENET["std"]
    assert out == pytest.approx([(1 - m) / s for m, s in zip(mean, std)])


def test_preprocess_inverse_round_trips():
    for spec in (CAFFE, TORCHVISION_IMAGENET):
        p = Preprocess(spec)
        x = torch.rand(2, 3, 5, 5) * 255
        assert torch.allclose(p.inverse(p(x)), x, atol=1e-3)


@pytest.mark.parametrize("content, message", [
    (b"not a torch file at all", "not a readable PyTorch file"),
    (None, "unknown format"),
    ("list", "neither a state dict"),
    ("shapes", "tensor shapes do not fit VGG16"),
    ("missing", "lacks"),
])
def test_bad_weights_files_give_one_clear_error(tmp_path, vgg_state, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        torch.save({"format": "something-else/v9", "state_dict": {}, "preprocessing": {}}, path)
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "shapes":
        torch.save({"features.0.weight": torch.zeros(3, 3), "features.0.bias": torch.zeros(3)}, path)
    else:
        torch.save({k: v for k, v in vgg_state.items() if k != "features.28.weight"}, path)
    with pytest.raises(WeightsError, match=message) as info:
        build_vgg16(str(path))
    assert "\n" not in str(info.value)


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    saved = tmp_path / "evil.pt"                      # the realistic attack: torch.save of a code object
    torch.save({"features.0.weight": Evil()}, saved)
    with pytest.raises(WeightsError, match=r"weights_only=True.*objects other than tensors \(GLOBAL io\.open\)"):
        load_weights_file(saved)

    class Shell:                                      # a blocked module: torch words it differently
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"features.0.weight": Shell()}, saved)
    with pytest.raises(WeightsError, match=r"objects other than tensors \(GLOBAL posix\.system\)"):
        load_weights_file(saved)
    raw = tmp_path / "evil.pkl"                       # a bare pickle is refused too
    with open(raw, "wb") as f:
        pickle.dump({"features.0.weight": Evil()}, f)
    with pytest.raises(WeightsError):
        load_weights_file(raw)
    assert not marker.exists()


def test_offline_imagenet_download_says_how_to_point_at_a_file(monkeypatch):
    def boom(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.models.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", boom)
    with pytest.raises(WeightsError, match="backbone.weights=imagenet.*local file"):
        build_vgg16("imagenet")


def test_frozen_layers_stay_frozen_and_block5_learns():
    torch.manual_seed(0)
    net = TransferNet(build_vgg16("none"), 64, hidden=8, trainable=["block5_conv1", "block5_conv2", "block5_conv3"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert all(n.startswith(("features.24.", "features.26.", "features.28.", "head.")) for n in trainable)
    opt = torch.optim.RMSprop([p for p in net.parameters() if p.requires_grad], lr=1e-3, alpha=0.9)
    x, y = torch.rand(4, 3, 64, 64) * 255, torch.tensor([0.0, 1.0, 0.0, 1.0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
    loss.backward()
    for name, p in net.named_parameters():      # no gradient at all reaches the frozen part
        if not p.requires_grad:
            assert p.grad is None, name
    opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    block5 = ("features.24.", "features.26.", "features.28.")
    frozen = {k for k in before if k.startswith("features.") and not k.startswith(block5)}
    assert not changed & frozen, "a frozen layer changed"
    assert {"features.24.weight", "features.26.weight", "features.28.weight", "head.net.1.weight"} <= changed


def test_frozen_base_still_gives_input_gradients_for_attribution():
    net = TransferNet(build_vgg16("none"), 64, hidden=8, trainable=[]).eval()
    x = (torch.rand(1, 3, 64, 64) * 255).requires_grad_(True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("stage", ["features", "features_augmented", "finetune"])
def test_transfer_stages_fast_dev_run(tiny_split, tmp_path, vgg_state, stage):
    from omegaconf import open_dict

    from catdog_lab.stages.train import train
    from helpers_stage import assert_fast_dev_run_outputs
    # one fixed conv base from a weights file: with backbone.weights=none every build draws another random
    # base, and the features stage's model file wraps its head around a base other than the one that
    # computed the features it was trained and tested on (its reloaded model would not give its test/acc)
    weights = tmp_path / "vgg16.pt"
    torch.save({k: v for k, v in vgg_state.items() if k.startswith("features.")}, weights)
    cfg = tiny_split
    with open_dict(cfg):
        cfg.data.image_size = 48
        cfg.backbone.weights = str(weights)
    if stage == "finetune":
        train(cfg, "features_augmented")           # finetune starts from this stage's model
    metrics = train(cfg, stage, fast_dev_run=True)
    assert_fast_dev_run_outputs(cfg, stage, metrics)


def test_finetune_starts_from_features_augmented_weights(tiny_split, tmp_path):
    from omegaconf import open_dict

    from catdog_lab.models.factory import load_model
    from catdog_lab.stages.train import train
    cfg = tiny_split
    with open_dict(cfg):
        cfg.tracking.enabled = False
    train(cfg, "features_augmented")
    train(cfg, "finetune")
    fa, _ = load_model(tmp_path / "models/features_augmented.pt")
    ft, bundle = load_model(tmp_path / "models/finetune.pt")
    assert bundle["arch"]["trainable"] == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert torch.equal(fa.features[0].weight, ft.features[0].weight)        # frozen: identical
    assert torch.equal(fa.features[21].weight, ft.features[21].weight)      # block4_conv3: identical
    assert not torch.equal(fa.features[28].weight, ft.features[28].weight)  # block5_conv3: fine-tuned


def test_forward_from_frozen_outputs_gives_the_whole_nets_logits():
    from catdog_lab.models.features import module_outputs
    torch.manual_seed(0)
    for trainable in ([], ["block5_conv1", "block5_conv2", "block5_conv3"]):
        net = TransferNet(build_vgg16("none"), 64, hidden=8, trainable=trainable).eval()
        images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
        frozen = module_outputs(net.frozen_part(), images, 2, torch.device("cpu"), channels_last=False)
        assert frozen.shape[1:] == ((512, 2, 2) if not trainable else (512, 4, 4))   # after block5_pool / block4_pool
        with torch.no_grad():
            assert torch.allclose(net.forward_from_frozen(frozen), net(images.float()), rtol=1e-4, atol=1e-5)
    net.train()                 # a net about to train keeps its modes (Lightning does not reset them)
    modes = [module.training for module in net.modules()]
    assert any(modes) and not all(modes)        # head and block5 train, the frozen prefix stays in eval mode
    module_outputs(net.frozen_part(), images, 2, torch.device("cpu"))
    assert [module.training for module in net.modules()] == modes


def test_transfer_stages_validate_on_frozen_outputs_with_the_same_results(tiny_split, tmp_path, monkeypatch):
    """The stage trains exactly as before (same weights) and its validation and test figures are the ones the
    whole net gives (up to float rounding): only the frozen layers' repeated cost is gone."""
    from omegaconf import open_dict

    import catdog_lab.stages.train as train_stage
    from catdog_lab.models.factory import load_model
    cfg = tiny_split
    with open_dict(cfg):
        cfg.tracking.enabled = False
        cfg.features_augmented.epochs = 2
        cfg.finetune.epochs = 2
    runs = {}
    for cached in (True, False):
        if not cached:      # the whole net every epoch, as before frozen outputs were cached
            monkeypatch.setattr(train_stage, "frozen_outputs", lambda *args, **kwargs: None)
        runs[cached] = {stage: train_stage.train(cfg, stage) for stage in ("features_augmented", "finetune")}
        runs[cached]["weights"] = load_model(tmp_path / "models/finetune.pt")[0].state_dict()
        assert not list((tmp_path / "checkpoints").glob("*.frozen"))        # removed when the stage finishes
    for stage in ("features_augmented", "finetune"):
        fast, whole = runs[True][stage], runs[False][stage]
        assert fast["test/acc"] == whole["test/acc"] and fast["test/acc_best"] == whole["test/acc_best"]
        for key in ("test/loss", "val/loss", "val/acc"):
            assert fast[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), (stage, key)
    assert all(torch.equal(v, runs[False]["weights"][k]) for k, v in runs[True]["weights"].items())
