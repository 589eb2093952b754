"""The book's recipes, checked fact by fact: Keras initialisation, steps per epoch as a Keras stream,
ImageDataGenerator semantics on hand-checkable images, which epoch is kept, the 2nd-edition profile."""
import math

import pytest
import torch
from omegaconf import open_dict
from tests.conftest import tiny_overrides

from catdog_lab.config import compose
from catdog_lab.data.augment import BatchAugment, affine_matrices
from catdog_lab.data.sampler import StreamBatchSampler
from catdog_lab.errors import ConfigError
from catdog_lab.models.components.convnet import BOOK2, BookConvNet
from catdog_lab.models.components.init import keras_init_


# --------------------------------------------------------------------------- initialisation
def test_keras_init_is_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    net = keras_init_(BookConvNet(150))
    dense = net.classifier[2]                                    # Flatten, Dropout, Linear(6272, 512)
    assert dense.weight.shape == (512, 6272)
    glorot = math.sqrt(6 / (6272 + 512))                         # 0.0297
    assert glorot * 0.99 < dense.weight.abs().max() <= glorot
    conv1 = net.features[0]                                      # fan_in 3*9 = 27, fan_out 32*9 = 288
    assert math.sqrt(6 / 315) * 0.95 < conv1.weight.abs().max() <= math.sqrt(6 / 315)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(float(m.bias.abs().max()) == 0 for m in layers)
    # PyTorch's default for the same layer: U(+-1/sqrt(fan_in)) = 0.0126, what the book's net did not start from
    torch.manual_seed(0)
    assert BookConvNet(150).classifier[2].weight.abs().max() <= 1 / math.sqrt(6272)


def test_init_key_reaches_the_network(tiny_cfg):
    from catdog_lab.models.factory import build_from_arch
    from catdog_lab.settings import model_arch
    keras = build_from_arch(model_arch(tiny_cfg, "scratch"), init="keras")
    assert float(keras.classifier[2].bias.abs().max()) == 0                 # torch's default bias is not zero
    torch_net = build_from_arch(model_arch(tiny_cfg, "scratch"), init="torch")
    assert float(torch_net.classifier[2].bias.abs().max()) > 0


# --------------------------------------------------------------------------- steps per epoch
def test_stream_sampler_walks_reshuffled_passes_with_short_last_batches():
    sampler = StreamBatchSampler(10, 4, steps=5, seed=3)          # a pass: batches of 4, 4, 2
    epoch0 = list(sampler)
    assert [len(b) for b in epoch0] == [4, 4, 2, 4, 4]
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert [len(b) for b in epoch1] == [2, 4, 4, 2, 4]
    stream = [i for b in epoch0 + epoch1 for i in b]
    # passes are permutations of the data, and a new one each time
    passes = [stream[0:10], stream[10:20], stream[20:30]]
    assert all(sorted(p) == list(range(10)) for p in passes) and passes[0] != passes[1]
    # a pure function of (seed, epoch): a resumed run sees the same batches
    again = StreamBatchSampler(10, 4, steps=5, seed=3)
    again.set_epoch(1)
    assert list(again) == epoch1
    assert len(StreamBatchSampler(10, 4, steps=None)) == 3          # None: one pass


def test_lightning_trains_exactly_steps_per_epoch_batches_of_the_stream(tmp_path):
    """The datamodule's loaders under a real Trainer: epoch e sees stream batches [e*steps, (e+1)*steps)."""
    import pytorch_lightning as pl

    from catdog_lab.data.datamodule import TensorDataModule

    for split, n in (("train", 10), ("validation", 6), ("test", 6)):
        torch.save({"images": torch.arange(n).float().view(n, 1), "labels": torch.zeros(n, dtype=torch.long)},
                   tmp_path / f"{split}.pt")

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen, self.val_seen = [], []

        def training_step(self, batch, _):
            self.seen.append(batch[0].view(-1).long().tolist())
            return (self.w * batch[0].sum()).sum()

        def validation_step(self, batch, _):
            self.val_seen.append(len(batch[0]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = TensorDataModule(tmp_path, batch_size=4, seed=7, steps_per_epoch=5, validation_steps=2)
    module = Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 10
    expected = StreamBatchSampler(10, 4, steps=10, seed=7)
    assert module.seen == list(expected)                          # two epochs = the first 10 stream batches
    assert module.val_seen == [4, 2, 4, 2]                        # 2 validation batches an epoch, streamed


# --------------------------------------------------------------------------- augmentation
def _params(**kw):
    base = {"angle": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0, "flip": False}
    base |= kw
    return {k: torch.tensor([v]) for k, v in base.items()}


def _image(h=7, w=7):
    return torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)


def test_identity_flip_and_rotation_by_hand():
    aug = BatchAugment(interpolation="nearest", fill="nearest")
    img = _image()
    assert torch.equal(aug.warp(img, _params()), img)
    assert torch.equal(aug.warp(img, _params(flip=True)), img.flip(-1))
    # Keras' rotation matrix at +90 degrees maps output (row, col) to input (-col, row): torch.rot90 k=-1
    assert torch.equal(aug.warp(img, _params(angle=math.pi / 2)), torch.rot90(img, -1, dims=(2, 3)))


def test_shift_one_pixel_with_nearest_fill():
    aug = BatchAugment(interpolation="nearest", fill="nearest")
    img = _image()
    out = aug.warp(img, _params(tx=1 / 7))                        # one pixel of a 7-pixel-wide image
    assert torch.equal(out[..., :6], img[..., 1:])                 # the window moves right, the picture left
    assert torch.equal(out[..., 6], img[..., 6])                   # fill_mode='nearest': the edge repeats
    down = aug.warp(img, _params(ty=2 / 7))
    assert torch.equal(down[..., :5, :], img[..., 2:, :]) and torch.equal(down[..., 6, :], img[..., 6, :])


def test_shear_range_is_radians_as_in_keras_2_0_8():
    theta = affine_matrices(_params(shear=0.2), 21, 21)[0]
    # Keras' (row, col) shear [[1, -sin s], [0, cos s]]: in (x, y) order [[cos s, 0], [-sin s, 1]]
    assert theta[0, 0] == pytest.approx(math.cos(0.2)) and theta[1, 0] == pytest.approx(-math.sin(0.2))
    # a horizontal line through the centre of a 21x21 image leans by sin(0.2) = 0.2 rows per column:
    # two rows up/down at the left/right edges (0.2 degrees would move it by 0.03 rows: nothing)
    img = torch.zeros(1, 1, 21, 21)
    img[..., 10, :] = 1
    out = BatchAugment(interpolation="nearest").warp(img, _params(shear=0.2))
    rows = out[0, 0].argmax(0)
    assert rows[0] == 8 and rows[10] == 10 and rows[20] == 12


def test_zoom_is_drawn_per_axis_and_shrinks_above_one():
    aug = BatchAugment(interpolation="nearest", fill="zeros")
    img = torch.zeros(1, 1, 9, 9)
    img[..., 4 + 4] = 1                                           # a vertical bar 4 columns right of centre
    out = aug.warp(img, _params(zx=1.0, zy=2.0))                  # ours: zy scales x (Keras' zx scales rows)
    assert out[0, 0, 4].argmax() == 4 + 2                         # zoom 2 on x: the bar comes twice as close
    independent = BatchAugment(zoom=0.2).sample_params(1000, torch.Generator().manual_seed(0))
    tied = BatchAugment(zoom=0.2, zoom_independent=False).sample_params(1000, torch.Generator().manual_seed(0))
    assert not torch.equal(independent["zx"], independent["zy"]) and torch.equal(tied["zx"], tied["zy"])
    assert 0.8 <= float(independent["zx"].min()) and float(independent["zx"].max()) <= 1.2


def test_nearest_resampling_never_blends_pixels():
    img = torch.rand(4, 3, 32, 32)
    out = BatchAugment(interpolation="nearest")(img, torch.Generator().manual_seed(1))
    assert torch.isin(out, img).all()
    blended = BatchAugment(interpolation="bilinear")(img, torch.Generator().manual_seed(1))
    assert not torch.isin(blended, img).all()


def test_augmentation_keys_are_checked_by_name(tiny_cfg):
    from catdog_lab.settings import validate_stage
    for key, bad in (("fill", "wrap"), ("interpolation", "cubic"), ("shear_radians", 20)):
        with open_dict(tiny_cfg):
            cfg = tiny_cfg.copy()
            cfg.augmentation[key] = bad
        with pytest.raises(ConfigError, match=f"augmentation.{key}"):
            validate_stage(cfg, "augmented")


# --------------------------------------------------------------------------- which epoch is kept
@pytest.mark.parametrize("select", ["last", "best"])
def test_select_key_decides_the_tested_and_saved_model(tiny_split, tmp_path, select):
    from catdog_lab.data.datamodule import load_cached_split
    from catdog_lab.models.factory import load_model
    from catdog_lab.stages.train import train
    cfg = tiny_split
    with open_dict(cfg):
        cfg.tracking.enabled = False
        cfg.scratch.epochs, cfg.scratch.select, cfg.scratch.lr = 3, select, 3e-3
    metrics = train(cfg, "scratch")
    assert metrics["select"] == select
    assert metrics["test/acc"] == metrics[f"test/acc_{select}"]
    assert metrics["selected_epoch"] == (3 if select == "last" else metrics["best_epoch"])
    # the saved model is the kept one: its accuracy on the test cache is the reported one
    net, _ = load_model(tmp_path / "models/scratch.pt")
    test = load_cached_split(cfg.paths.cache, "test")
    with torch.no_grad():
        acc = ((net(test["images"].float()) > 0).long() == test["labels"]).float().mean().item()
    assert acc == pytest.approx(metrics["test/acc"], abs=1e-6)
    ledger = list((tmp_path / "metrics/seeds/scratch").glob("*/seed-*.json"))
    assert len(ledger) == 1 and ledger[0].name == f"seed-{cfg.seed}.json"


def test_bad_select_names_the_key(tiny_split):
    from catdog_lab.stages.train import train
    with open_dict(tiny_split):
        tiny_split.scratch.select = "worst"
    with pytest.raises(ConfigError, match="scratch.select"):
        train(tiny_split, "scratch", fast_dev_run=True)


# --------------------------------------------------------------------------- the 2nd edition
def test_book2_convnet_is_the_notebooks():
    net = BookConvNet(180, 0.5, **BOOK2)
    assert sum(p.numel() for p in net.parameters()) == 991_041      # the 2nd edition's model.summary()
    assert net(torch.zeros(2, 3, 180, 180)).shape == (2,)


def test_book2_profile_composes_the_second_edition():
    cfg = compose(["profile=book2"])
    assert cfg.data.image_size == 180 and list(cfg.convnet.filters) == [32, 64, 128, 256, 256]
    assert cfg.scratch.lr == 1e-3 and cfg.finetune.lr == 1e-5 and cfg.augmented.batch_size == 32
    assert cfg.features.activation == "linear" and cfg.finetune.select == "best"
    assert cfg.augmentation.rotation_degrees == 36 and cfg.augmentation.fill == "reflect"
    assert (cfg.scratch.epochs, cfg.augmented.epochs, cfg.features.epochs, cfg.features_augmented.epochs,
            cfg.finetune.epochs) == (30, 100, 20, 50, 30)


@pytest.mark.parametrize("stage", ["scratch", "augmented", "features", "features_augmented"])
def test_book2_fast_dev_run(tmp_path, raw_images, stage):
    from catdog_lab.stages.split import split
    from catdog_lab.stages.train import train
    overrides = [o for o in tiny_overrides(tmp_path, raw_images) if not o.startswith("profile=")]
    cfg = compose(overrides + ["profile=book2", "data.image_size=80"])   # 5 conv blocks need >= 80 px
    split(cfg)
    metrics = train(cfg, stage, fast_dev_run=True)
    assert metrics["test_images"] == 6 and (tmp_path / f"models/{stage}.pt").exists()
