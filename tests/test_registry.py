"""The stage registry is the one list of stages: dvc.yaml, the entry scripts, conf/ and MLflow agree with it."""
from __future__ import annotations

import pytest
import yaml

from catdog_lab.config import LAYOUT, PROJECT_ROOT, compose
from catdog_lab.entry import stage_function
from catdog_lab.errors import ConfigError
from catdog_lab.registry import REGISTRY, STAGES, TRAINING_STAGES, WRITTEN


def test_dvc_yaml_runs_the_registrys_stages_in_its_order_each_through_its_entry_script():
    dvc = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(dvc) == STAGES
    for name in STAGES:
        assert dvc[name]["cmd"] == f"python3 pipelines/{name}.py"
        assert f"pipelines/{name}.py" in dvc[name]["deps"]


def test_every_entry_script_is_the_same_file():
    # the script finds its stage from its own file name: nothing in pipelines/ repeats the list
    texts = {(PROJECT_ROOT / "pipelines" / f"{name}.py").read_text() for name in STAGES}
    assert len(texts) == 1


def test_the_paths_stages_write_are_the_layout_of_conf():
    assert set(WRITTEN) == set(LAYOUT)


def test_training_stages_have_titles_and_a_config_section(tiny_cfg):
    assert TRAINING_STAGES == ("scratch", "augmented", "features", "features_augmented", "finetune")
    for name in TRAINING_STAGES:
        assert REGISTRY[name].title and REGISTRY[name].description and name in tiny_cfg


def test_run_names_number_the_stages_in_pipeline_order():
    assert REGISTRY["split"].run_name == "0 split: photos split per class"     # renamed with its counts once made
    assert REGISTRY["finetune"].for_config(compose([])).run_name == "5 finetune: VGG16 block5 fine-tuned (5.3.2)"
    assert [REGISTRY[n].run_name.split()[0] for n in STAGES] == [str(i) for i in range(len(STAGES))]


def test_an_unknown_stage_is_one_line_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"stage: unknown stage 'scrach'; choose one of split, scratch"):
        stage_function("scrach")


def test_stage_functions_resolve():
    from catdog_lab.stages.compare import compare
    from catdog_lab.stages.split import split

    assert stage_function("split") is split and stage_function("compare") is compare
    assert callable(stage_function("finetune"))


def test_run_names_and_titles_name_the_configured_backbone():
    """Not "VGG16" for a ResNet: {backbone} is the backbone's title, {top} the blocks finetune unfreezes."""
    resnet = compose(["backbone=resnet50"])
    assert REGISTRY["features"].for_config(resnet).run_name == "3 features: ResNet-50 feature extraction (5.3.1)"
    assert REGISTRY["finetune"].for_config(resnet).title == "Fine-tuned ResNet-50 layer4"
    assert REGISTRY["finetune"].for_config(compose(["finetune.trainable=[block5_conv3]"])).title == \
        "Fine-tuned VGG16 block5"
    for name in STAGES:             # every placeholder is filled, whatever the config holds
        assert "{" not in REGISTRY[name].for_config(resnet).run_name + (REGISTRY[name].for_config({}).title or "")
