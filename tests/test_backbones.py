"""Backbones by config: conf/backbone/<name>.yaml says all of it, and adding one is one file."""
import shutil

import pytest
import torch
import torchvision
from omegaconf import open_dict

from catdog_lab.config import CONF_DIR, compose
from catdog_lab.errors import ConfigError
from catdog_lab.models.components.backbones import BackboneSpec, build_backbone, build_vgg16
from catdog_lab.models.components.transfer import TransferNet
from catdog_lab.settings import backbone_spec

SHIPPED = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))

# a backbone the project does not ship, as a user would add it: one YAML file, no code
TINY_YAML = """\
name: tiny_mobilenet
title: Tiny MobileNet
builder: torchvision
arch: mobilenet_v3_small
imagenet: MobileNet_V3_Small_Weights.IMAGENET1K_V1
weights: none
preprocessing: weights
blocks: [features.0, features.1, features.2, features.3, features.4, features.5, features.6, features.7,
         features.8, features.9, features.10, features.11, features.12]
trainable: [features.11, features.12]
gradcam_layer: features.12
filter_layers: [features.1]
finetuned_filter_layers: [features.12]
feature_batch_size: 8
"""


def test_shipped_backbones_are_the_four_of_the_issue():
    assert SHIPPED == ["convnext_tiny", "efficientnet_b0", "resnet50", "vgg16"]


@pytest.mark.parametrize("name, classifier_in", [
    ("vgg16", None), ("resnet50", lambda m: m.fc.in_features),
    ("efficientnet_b0", lambda m: m.classifier[1].in_features),
    ("convnext_tiny", lambda m: m.classifier[2].in_features)])
def test_feature_output_is_computed_and_matches_torchvision_classifier_input(name, classifier_in):
    spec = backbone_spec(compose([f"backbone={name}", "backbone.weights=none"]))
    backbone = build_backbone(spec)
    channels, height, width = backbone.output_shape(150)
    # the channels torchvision's own classifier takes in (VGG16: its last conv's 512)
    expected = 512 if classifier_in is None else classifier_in(torchvision.models.get_model(spec.arch))
    assert channels == expected
    assert height == width and height >= 1
    assert backbone.name == name and backbone.gradcam_layer == spec.gradcam_layer
    assert spec.gradcam_layer in backbone.layers and set(spec.trainable) <= set(backbone.blocks)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "vgg16"])
def test_imagenet_preprocessing_comes_from_the_weights_enum(name):
    spec = backbone_spec(compose([f"backbone={name}", "backbone.weights=none"]))
    transforms = torchvision.models.get_weight(spec.imagenet).transforms()    # metadata: no download
    got = build_backbone(spec).preprocess.spec
    assert got["mean"] == pytest.approx(list(transforms.mean)) and got["std"] == pytest.approx(list(transforms.std))


def test_backbone_choice_composes_into_finetune_and_visualize():
    cfg = compose(["backbone=resnet50"])
    assert list(cfg.finetune.trainable) == ["layer4"] and cfg.visualize.gradcam_layer == "layer4"
    book = compose()
    assert list(book.finetune.trainable) == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert book.visualize.gradcam_layer == "block5_conv3"


@pytest.mark.parametrize("override, message", [
    ("backbone.builder=keras", r"^backbone\.builder: unknown builder 'keras'; choose vgg16_book, torchvision"),
    ("backbone.arch=resnet5000", r"^backbone\.arch: 'resnet5000' is not a torchvision.models model"),
    ("backbone.trainable=[layer9]", r"^backbone\.trainable: 'layer9' is not a trainable block of backbone resnet50; "
                                    r"choose from conv1, bn1"),
    ("backbone.gradcam_layer=fc", r"^backbone\.gradcam_layer: 'fc' is not a layer of backbone resnet50"),
    ("backbone.blocks=[conv1,head] backbone.trainable=[head] backbone.gradcam_layer=head backbone.filter_layers=[] "
     "backbone.finetuned_filter_layers=[]", r"^backbone\.blocks: the built model has no module 'head'"),
    ("backbone.imagenet=Nope_Weights.V1", r"^backbone\.imagenet: 'Nope_Weights.V1' is not a torchvision weights enum"),
    ("finetune.trainable=[layer3,layer7]", r"^finetune\.trainable: 'layer7' is not a trainable block of backbone "),
])
def test_bad_backbone_config_gives_one_line_naming_the_key(override, message):
    from catdog_lab.settings import stage_settings
    cfg = compose(["backbone=resnet50", "backbone.weights=none", *override.split()])
    with pytest.raises(ConfigError, match=message) as info:
        stage_settings(cfg, "finetune")
        build_backbone(backbone_spec(cfg))
    assert "\n" not in str(info.value)


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics():
    spec = backbone_spec(compose(["backbone=resnet50", "backbone.weights=none"]))
    torch.manual_seed(0)
    net = TransferNet(build_backbone(spec), 64, hidden=8, trainable=["layer4"]).train()
    assert net.frozen_prefix == 7
    frozen_bn = net.features[1]                                   # bn1, before layer4
    tuned_bn = net.features[7][0].bn1                             # in layer4: trainable
    assert isinstance(frozen_bn, torch.nn.BatchNorm2d) and not frozen_bn.training and tuned_bn.training
    before = frozen_bn.running_mean.clone(), net.features[6][0].bn1.running_var.clone()
    x = torch.rand(4, 3, 64, 64) * 255
    torch.nn.functional.binary_cross_entropy_with_logits(net(x), torch.tensor([0.0, 1, 0, 1])).backward()
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert torch.equal(net.features[6][0].bn1.running_var, before[1])     # layer3: frozen, statistics kept
    assert net.features[7][0].bn1.weight.grad is not None and net.features[6][0].bn1.weight.grad is None
    # a block frozen after the prefix (its BatchNorm params frozen) is in eval mode too
    net.set_trainable(["layer3"])
    net.features[7].requires_grad_(False)
    net.train()
    assert not net.features[7][0].bn1.training and net.features[6][0].bn1.training


def test_old_vgg16_model_files_still_load(tmp_path):
    """A model file written before backbones came from config: its arch names only "vgg16"."""
    from catdog_lab.models.factory import load_model, save_model
    torch.manual_seed(0)
    net = TransferNet(build_vgg16("none"), 48, hidden=8, trainable=["block5_conv3"])
    arch = {"kind": "transfer", "image_size": 48, "dropout": 0.0, "backbone": "vgg16", "weights": "none",
            "hidden": 8, "activation": "relu", "trainable": ["block5_conv3"]}
    save_model(tmp_path / "old.pt", "finetune", arch, net)
    loaded, bundle = load_model(tmp_path / "old.pt")
    assert "backbone_spec" not in bundle["arch"]
    x = torch.rand(2, 3, 48, 48) * 255
    assert torch.equal(loaded(x), net.eval()(x))


def _seeded_weights(tmp_path, spec: BackboneSpec):
    """A fixed random conv base as a weights file: with weights=none every build draws another base, and the
    features stage's model file would wrap its head around a base other than the one that computed its
    training features (see tests/test_vgg.py)."""
    torch.manual_seed(0)
    model = build_vgg16("none").features if spec.builder == "vgg16_book" else torchvision.models.get_model(spec.arch)
    state = {f"features.{k}": v for k, v in model.state_dict().items()} if spec.builder == "vgg16_book" \
        else model.state_dict()
    path = tmp_path / f"{spec.name}.pt"
    torch.save(state, path)
    return path


def _run_transfer_stages(cfg, tmp_path):
    from catdog_lab.stages.split import split
    from catdog_lab.stages.train import train
    from helpers_stage import assert_fast_dev_run_outputs

    with open_dict(cfg):
        cfg.backbone.weights = str(_seeded_weights(tmp_path, backbone_spec(cfg)))
    split(cfg)
    for stage in ("features", "features_augmented", "finetune"):
        metrics = train(cfg, stage, fast_dev_run=True)
        assert_fast_dev_run_outputs(cfg, stage, metrics)


# vgg16 runs the same three stages in tests/test_vgg.py::test_transfer_stages_fast_dev_run
@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "vgg16"])
def test_every_shipped_backbone_runs_the_transfer_stages(tmp_path, raw_images, name):
    from catdog_lab.models.factory import load_model
    from conftest import tiny_overrides

    cfg = compose(tiny_overrides(tmp_path, raw_images, [f"backbone={name}"]))
    _run_transfer_stages(cfg, tmp_path)
    spec = backbone_spec(cfg)
    _, bundle = load_model(tmp_path / "models" / "finetune.pt")
    assert bundle["arch"]["backbone_spec"] == spec.record() and bundle["arch"]["trainable"] == list(spec.trainable)
    from catdog_lab.stages.publish import publish
    with open_dict(cfg):
        cfg.tracking.enabled = False              # the cards alone: no MLflow registry needed for them
    publish(cfg)                                  # model cards are the publish stage's
    card = (tmp_path / "models" / "finetune.md").read_text()
    assert f"{spec.title} with its top blocks ({', '.join(spec.trainable)}) fine-tuned" in card


def test_a_new_backbone_is_one_yaml_file(tmp_path, raw_images):
    """conf/ as shipped plus one file: features, features_augmented, finetune and Grad-CAM run on it."""
    from catdog_lab.models.factory import load_model
    from catdog_lab.predict import _gradcam_layer
    from catdog_lab.viz.attributions import DOG, gradcam
    from conftest import tiny_overrides

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "backbone" / "tiny_mobilenet.yaml").write_text(TINY_YAML)
    cfg = compose(tiny_overrides(tmp_path, raw_images, ["backbone=tiny_mobilenet"]), config_dir=conf)
    assert list(cfg.finetune.trainable) == ["features.11", "features.12"]
    _run_transfer_stages(cfg, tmp_path)

    # the model files rebuild from their own arch record (no config): frozen blocks untouched by finetune
    tuned, bundle = load_model(tmp_path / "models" / "finetune.pt")
    start, _ = load_model(tmp_path / "models" / "features_augmented.pt")
    assert bundle["arch"]["backbone"] == "tiny_mobilenet"
    frozen = {k: v for k, v in start.state_dict().items() if k.startswith(("features.0.", "features.10."))}
    assert frozen and all(torch.equal(v, tuned.state_dict()[k]) for k, v in frozen.items())   # BN stats too
    assert not torch.equal(start.features[12][0].weight, tuned.features[12][0].weight)

    # Grad-CAM at the backbone's layer, named by the model file, not the config
    layer = _gradcam_layer(tuned, None)
    assert layer is tuned.features[12]
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    maps = gradcam(tuned, layer, images, DOG, relu=False)
    assert maps.shape == (2, 48, 48) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_a_function_builder_gives_the_conv_base_of_its_module():
    """builder <module>:<function>: any function returning an nn.Module, cut to `blocks` like torchvision's."""
    spec = BackboneSpec.from_config({"name": "r18", "builder": "torchvision.models:resnet18", "weights": "none",
                                     "blocks": ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"],
                                     "trainable": ["layer2"], "gradcam_layer": "layer2"})
    backbone = build_backbone(spec)
    assert backbone.output_shape(64) == (128, 8, 8) and backbone.layers["layer2"] == 5
    with pytest.raises(ConfigError, match=r"^backbone\.builder: cannot import nowhere\.at_all:make"):
        BackboneSpec.from_config({**spec.record(), "builder": "nowhere.at_all:make", "weights": "none"})
