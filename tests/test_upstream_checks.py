"""A stage that starts from another stage's model says so when that model is missing, before any work."""
import pytest

from catdog_lab.errors import DataError


def test_finetune_without_its_upstream_model_stops_before_building_vgg16(tiny_split, monkeypatch):
    import catdog_lab.stages.train as train_module

    def no_build(*args, **kwargs):          # building VGG16 with `imagenet` weights would download them
        raise AssertionError("the network was built before the missing upstream model was reported")

    monkeypatch.setattr(train_module, "build_from_arch", no_build)
    with pytest.raises(DataError, match=r"finetune.init_from: .*features_augmented.pt not found: train "
                                        r"features_augmented first"):
        train_module.train(tiny_split, "finetune")
