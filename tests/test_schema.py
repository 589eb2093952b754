"""The config schema (schema.py): every shipped composition passes it, choices agree with the code that
uses them, and a bad value is one line naming the key and what the schema declares."""
import typing

import pytest

from catdog_lab import schema
from catdog_lab.config import CONF_DIR, compose
from catdog_lab.errors import ConfigError
from catdog_lab.registry import TRAINING_STAGES
from catdog_lab.settings import validate_stage, visualize_settings
from catdog_lab.stages.split import validate_data

PROFILES = sorted(path.stem for path in (CONF_DIR / "profile").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes_the_schema_in_every_stage(profile):
    cfg = compose([f"profile={profile}", "backbone.weights=none"])     # no weights file needed for the check
    assert validate_data(cfg).image_size == cfg.data.image_size
    for stage in TRAINING_STAGES:
        settings, run = validate_stage(cfg, stage)
        assert settings.name == stage and settings.epochs == cfg[stage].epochs
        assert (settings.augmentation is not None) == bool(cfg[stage].augment)
        assert (settings.convnet is not None) == (cfg[stage].model == "convnet")
        assert run.devices == cfg.trainer.devices and run.loader_workers == cfg.compute.loader_workers
    assert visualize_settings(cfg).filters.count == cfg.visualize.filters.count


def test_choices_spelled_in_the_schema_are_the_codes():
    from catdog_lab.data.augment import FILLS, INTERPOLATIONS
    from catdog_lab.models.components.heads import ACTIVATIONS
    assert set(typing.get_args(schema.Fill)) == set(FILLS)
    from catdog_lab.data.discover import LAYOUTS
    assert typing.get_args(schema.Layout) == LAYOUTS
    assert set(typing.get_args(schema.Interpolation)) == set(INTERPOLATIONS)
    from catdog_lab.data.augment import RESAMPLINGS
    from catdog_lab.data.split import SPLIT_ORDERS
    assert set(typing.get_args(schema.Resampling)) == set(RESAMPLINGS)
    assert set(typing.get_args(schema.SplitOrder)) == set(SPLIT_ORDERS)
    assert set(typing.get_args(schema.Activation)) == set(ACTIVATIONS)
    assert typing.get_args(schema.TrainingStage) == TRAINING_STAGES


@pytest.mark.parametrize("override, stage, message", [
    ("scratch.lr=0", "scratch", "scratch.lr: must be a number > 0, got 0"),
    ("scratch.select=worst", "scratch", "scratch.select: must be one of last, best, got 'worst'"),
    ("scratch.model=resnet", "scratch", "scratch.model: must be one of convnet, head, transfer, got 'resnet'"),
    ("scratch.steps_per_epoch=0", "scratch", "scratch.steps_per_epoch: must be a positive integer or null, got 0"),
    ("augmented.dropout=1.0", "augmented", "augmented.dropout: must be in [0, 1), got 1.0"),
    ("convnet.filters=[32,0]", "scratch",
     "convnet.filters: must be a non-empty list of positive integers, got [32, 0]"),
    ("augmentation.rotation_degrees=200", "augmented", "augmentation.rotation_degrees: must be in [0, 180], got 200"),
    ("features.activation=tanh", "features", "features.activation: must be one of relu, linear or null, got 'tanh'"),
    ("~features.hidden", "features", "features.hidden: missing from the config"),
    ("finetune.init_from=scrach", "finetune",
     "finetune.init_from: must be one of scratch, augmented, features, features_augmented, finetune or null, "
     "got 'scrach'"),
    ("trainer.deterministic=maybe", "scratch", "trainer.deterministic: must be one of true, false, warn, got 'maybe'"),
    ("trainer.progress_bar=1", "scratch", "trainer.progress_bar: must be true or false, got 1"),
    ("compute.loader_workers=-1", "scratch", "compute.loader_workers: must be a non-negative integer, got -1"),
    ("~trainer.devices", "scratch", "trainer.devices: missing from the config"),
    ("backbone.builder=resnet9000", "features",
     "backbone.builder: unknown builder 'resnet9000'; choose vgg16_book, torchvision or <module>:<function>"),
    ("trainer.precision=banana", "scratch", "trainer.precision: must be one of auto, 32-true, bf16-mixed, 16-mixed, "
                                            "bf16-true, 16-true, 64-true, got 'banana'"),
    ("seed=abc", "scratch", "seed: must be an integer, got 'abc'"),
    ("finetune.precision=bf17", "finetune", "finetune.precision: must be one of auto, 32-true, bf16-mixed, 16-mixed, "
                                            "bf16-true, 16-true, 64-true or null, got 'bf17'"),
])
def test_a_bad_training_value_is_one_line_naming_the_key(override, stage, message):
    with pytest.raises(ConfigError) as info:
        validate_stage(compose([override]), stage)
    assert str(info.value) == message


@pytest.mark.parametrize("override, message", [
    ("data.workers=0", "data.workers: must be auto or a positive integer, got 0"),
    ("data.image_size=16", "data.image_size: must be an integer >= 48, got 16"),
    ("data.split.train=0.5", "data.split.train: give all three as counts (1000) or all as fractions (0.8), got 0.5 "
                             "beside counts"),
    ("data.split={train: 0.8, validation: 0.2, test: 0.2, seed: 1}", "data.split: fractions add up to 1.2 > 1"),
    ("data.source.url=''", "data.source.url: empty, and data.source.path is null: nowhere to get images from"),
    ("data.split.fractions=[0.5,0.25]",           # a list one short is not a key "missing from the config"
     "data.split.fractions: must be a list of 3 numbers in (0, 1) or null, got [0.5, 0.25]"),
])
def test_a_bad_data_value_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        validate_data(compose([override]))
    assert str(info.value) == message


@pytest.mark.parametrize("override, message", [
    ("visualize.gradcam_layer=nope", "visualize.gradcam_layer: 'nope' is not a layer of backbone vgg16; choose from "
                                     "block1_conv1, "),
    ("visualize.filters.layers=[block1_conv1,block9]", "visualize.filters.layers: 'block9' is not a layer of "),
    ("visualize.transfer_model=augmented", "visualize.transfer_model: augmented trains a convnet model, not a "
                                           "backbone-based one; choose from features, features_augmented, finetune"),
    ("visualize.scratch_model=finetune", "visualize.scratch_model: finetune trains a transfer model, not the "
                                         "convnet; choose from scratch, augmented"),
    ("visualize.ig_steps=-1", "visualize.ig_steps: must be a positive integer, got -1"),
    ("visualize.gradcam_alpha=1.5", "visualize.gradcam_alpha: must be in [0, 1], got 1.5"),
    ("visualize.occlusion.stride=0", "visualize.occlusion.stride: must be a positive integer, got 0"),
    ("visualize.filters.size=16", "visualize.filters.size: must be an integer >= 32, got 16"),
])
def test_a_bad_visualize_value_is_one_line_before_any_figure(override, message):
    # these failed after a minute of figures (a KeyError, Captum's AssertionError), or drew nonsense
    with pytest.raises(ConfigError) as info:
        visualize_settings(compose([override, "backbone.weights=none"]))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_an_unusable_tracking_uri_is_one_line_naming_the_key():
    from catdog_lab.tracking import Tracking, mlflow_client
    with pytest.raises(ConfigError, match=r"^tracking\.uri: MLflow cannot use 'foo://bar' \(.*unsupported URI"):
        mlflow_client(Tracking(enabled=True, uri="foo://bar"))


def test_unknown_keys_pass_and_stay_readable():
    """The schema checks what it declares; a key it does not know yet (a new option) is kept, not rejected."""
    settings, _ = validate_stage(compose(["+scratch.label_smoothing=0.1"]), "scratch")
    assert settings.model_extra == {"label_smoothing": 0.1}
