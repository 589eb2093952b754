"""The book's remaining differences as options, each off by default (docs/reproducing-the-book.md, section 7):
the index-ordered split, Keras 2.0.8's clipped cross-entropy, tf.data's shuffle buffer, and the 2nd
edition's successive resamplings."""
import math

import pytest
import torch
from omegaconf import open_dict
from tests.conftest import make_dataset

from catdog_lab.config import compose
from catdog_lab.data.augment import BatchAugment
from catdog_lab.data.sampler import StreamBatchSampler, buffer_shuffle
from catdog_lab.data.split import make_split
from catdog_lab.errors import ConfigError, DataError
from catdog_lab.models.outputs import binary_cross_entropy
from catdog_lab.schema import Augmentation, Data, check
from catdog_lab.settings import stage_settings


# ------------------------------------------------------------------------------------------ split order
def _train_ids(manifest, label):
    return sorted(int(row["file"].split(".")[1]) for row in manifest
                  if row["class"] == label and row["split"] == "train")


def test_index_order_splits_by_sorted_id_as_the_book_copies(tmp_path):
    raw = make_dataset(tmp_path / "raw", per_class=12, start=1)
    counts = {"train": 6, "validation": 3, "test": 3}
    index = make_split(raw, counts, seed=1, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "c1", order="index")
    split_of = {row["file"]: row["split"] for row in index["manifest"]}
    # ids 1-6 train, 7-9 validation, 10-12 test (cat.10 sorts after cat.9: by number, not by name)
    assert _train_ids(index["manifest"], "cat") == [1, 2, 3, 4, 5, 6]
    assert [split_of[f"dog.{i}.jpg"] for i in (7, 9, 10, 12)] == ["validation", "validation", "test", "test"]
    shuffled = make_split(raw, counts, seed=1, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "c2")
    assert _train_ids(shuffled["manifest"], "cat") != [1, 2, 3, 4, 5, 6]          # the default: a seeded shuffle
    with pytest.raises(DataError, match="data.split.order"):
        make_split(raw, counts, seed=1, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "c3", order="name")


def test_split_order_is_validated_by_key():
    cfg = compose(["data.split.order=sorted"])
    with pytest.raises(ConfigError, match=r"data.split.order: must be one of shuffle, index"):
        check(cfg, "data", Data)


# ------------------------------------------------------------------------------------ clipped BCE
def test_clipped_cross_entropy_is_keras_2_0_8s():
    # Keras 2.0.8: p = clip(sigmoid(z), 1e-7, 1 - 1e-7); loss = -log(1 - p) for label 0: -log(1e-7) = 16.118
    z = torch.tensor([50.0, -50.0, 0.3], requires_grad=True)
    y = torch.tensor([0.0, 0.0, 1.0])
    per = [binary_cross_entropy(z[i:i + 1], y[i:i + 1], clip=1e-7) for i in range(3)]
    assert per[0].item() == pytest.approx(-math.log(1e-7), rel=1e-5)          # capped (unclipped: 50)
    assert binary_cross_entropy(z[:1], y[:1]).item() == pytest.approx(50.0)
    assert per[1].item() == pytest.approx(-math.log(1 - 1e-7), abs=1e-6)      # the other side, clipped too
    p = torch.sigmoid(torch.tensor(0.3)).item()
    assert per[2].item() == pytest.approx(-math.log(p), rel=1e-6)              # inside the clip: unchanged
    sum(per).backward()
    assert z.grad[0] == 0 and z.grad[1] == 0 and z.grad[2] != 0                # tf.clip_by_value: no gradient beyond


def test_loss_clip_and_shuffle_buffer_keys_are_validated(tiny_cfg):
    assert stage_settings(tiny_cfg, "scratch").loss_clip is None                # the default: the exact loss
    with open_dict(tiny_cfg):
        tiny_cfg.scratch.loss_clip = 1.0e-7
        tiny_cfg.scratch.shuffle_buffer = 256
    settings = stage_settings(tiny_cfg, "scratch")
    assert settings.loss_clip == 1e-7 and settings.shuffle_buffer == 256
    for key, bad, message in (("loss_clip", 2, "scratch.loss_clip"), ("shuffle_buffer", 0, "scratch.shuffle_buffer")):
        with open_dict(tiny_cfg):
            tiny_cfg.scratch[key] = bad
        with pytest.raises(ConfigError, match=message):
            stage_settings(tiny_cfg, "scratch")
        with open_dict(tiny_cfg):
            tiny_cfg.scratch[key] = None


# ---------------------------------------------------------------------------------- shuffle buffer
def test_buffer_shuffle_is_tf_datas():
    items = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    assert buffer_shuffle(items, 1, g).tolist() == items.tolist()               # a buffer of one: no shuffle
    full = buffer_shuffle(items, 100, torch.Generator().manual_seed(0))
    assert sorted(full.tolist()) == items.tolist() and full.tolist() != items.tolist()
    out = buffer_shuffle(items, 10, torch.Generator().manual_seed(1)).tolist()
    assert sorted(out) == items.tolist()
    # item i enters the buffer after i - 9 outputs: it can never come out before position i - 9
    assert all(position >= item - 9 for position, item in enumerate(out))
    assert max(item - position for position, item in enumerate(out)) > 0      # but it did move


def test_sampler_with_a_shuffle_buffer_keeps_passes_correlated():
    def passes(buffer):
        sampler = StreamBatchSampler(200, 200, steps=2, seed=3, shuffle_buffer=buffer)
        return [torch.tensor(batch) for batch in sampler]

    first, second = passes(16)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(200))     # each pass: every item once
    assert [b.tolist() for b in passes(16)] == [first.tolist(), second.tolist()]     # a function of the seed
    # one fixed file order, locally reshuffled: far closer between passes than two fresh permutations
    local = (first.argsort() - second.argsort()).abs().float().mean()
    fresh_first, fresh_second = passes(None)
    fresh = (fresh_first.argsort() - fresh_second.argsort()).abs().float().mean()
    assert local < 20 < fresh


# ---------------------------------------------------------------------------- successive resampling
def _book2(resampling, rotation=36.0, zoom=0.2):
    return BatchAugment(rotation_degrees=rotation, width_shift=0.0, height_shift=0.0, shear_radians=0.0, zoom=zoom,
                        zoom_independent=False, horizontal_flip=True, fill="reflect", interpolation="bilinear",
                        resampling=resampling)


def test_successive_resampling_blurs_twice_and_equals_one_warp_for_one_factor():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    params = _book2("combined").sample_params(4, torch.Generator().manual_seed(5))
    # one interpolating factor (the flip moves pixel centres onto pixel centres): the same single resampling
    zoom_only = {"rotation": 0.0, "zoom": 0.2}
    drawn = _book2("combined", **zoom_only).sample_params(4, torch.Generator().manual_seed(5))
    assert torch.allclose(_book2("combined", **zoom_only).warp(images, drawn),
                          _book2("successive", **zoom_only).warp(images, drawn), atol=1e-5)
    # rotation then zoom, each bilinear: the same geometry, interpolated twice, so smoother
    once, twice = _book2("combined").warp(images, params), _book2("successive").warp(images, params)
    inner = (slice(None), slice(None), slice(10, 22), slice(10, 22))           # the centre: no fill involved
    assert not torch.allclose(once, twice, atol=1e-3)
    assert twice[inner].std() < once[inner].std()
    assert (twice[inner].mean() - once[inner].mean()).abs() < 0.02              # the same picture on average


def test_resampling_key_is_validated():
    cfg = compose(["augmentation.resampling=twice"])
    with pytest.raises(ConfigError, match=r"augmentation.resampling: must be one of combined, successive"):
        check(cfg, "augmentation", Augmentation)
