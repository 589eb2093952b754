"""Visualisations: Captum-style checks on tiny hand-built models, then the whole stage on tiny models."""
import json

import pytest
import torch
from torch import nn

from catdog_lab.models.components.preprocess import Preprocess
from catdog_lab.viz import attributions as A
from catdog_lab.viz.filters import filter_patterns
from catdog_lab.viz.primer import primer_panels
from catdog_lab.viz.sanity import randomisation_check, randomised_copy, spearman


class OneConv(nn.Module):
    """x -> 1x1 conv (2 channels) -> ReLU -> global average -> linear: z = dog logit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]).view(2, 3, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3))).squeeze(1)


def test_gradcam_matches_the_hand_computation_for_both_logits():
    torch.manual_seed(0)
    net = OneConv()
    x = torch.rand(1, 3, 4, 4) * 255
    act = torch.relu(net.conv(x))[0]                       # 2 x 4 x 4
    # d z / d A_k(i,j) = w_k / 16  ->  alpha_k = w_k / 16 ; cat logit = -z -> alpha_k = -w_k / 16
    w = net.fc.weight[0].detach()
    dog = torch.relu((w.view(2, 1, 1) / 16 * act).sum(0))
    cat = torch.relu((-w.view(2, 1, 1) / 16 * act).sum(0))
    assert torch.allclose(A.gradcam(net, net.relu, x, A.DOG, upsample=False)[0], dog, atol=1e-4)
    assert torch.allclose(A.gradcam(net, net.relu, x, A.CAT, upsample=False)[0], cat, atol=1e-4)
    up = A.gradcam(net, net.relu, torch.cat([x, x]), torch.tensor([A.DOG, A.CAT]))
    assert up.shape == (2, 4, 4)


def test_two_logits_are_consistent_with_the_sigmoid():
    net = OneConv()
    x = torch.rand(3, 3, 4, 4) * 255
    two = A.TwoLogits(net)(x)
    assert torch.allclose(torch.softmax(two, 1)[:, 1], torch.sigmoid(net(x)), atol=1e-6)


def test_captum_hooks_are_removed_after_every_technique():
    net = OneConv()
    x = torch.rand(2, 3, 8, 8) * 255
    A.gradcam(net, net.relu, x, A.DOG)
    A.saliency(net, x, A.CAT)
    A.integrated_gradients(net, x, A.DOG, steps=4)
    A.occlusion(net, x, A.DOG, window=4, stride=4)
    for module in net.modules():                          # Captum must remove every hook it added
        hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
        assert not any(hooks), module


def test_saliency_is_the_input_gradient():
    net = OneConv()
    x = torch.rand(1, 3, 4, 4) * 255
    xr = x.clone().requires_grad_(True)
    net(xr).sum().backward()
    assert torch.allclose(A.saliency(net, x, A.DOG), xr.grad.abs().amax(1), atol=1e-6)


def test_spearman_basics():
    a = torch.arange(10.0)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.zeros(10)) != spearman(a, torch.zeros(10))          # nan: nothing to rank
    assert spearman(torch.tensor([1.0, 1, 2, 3]), torch.tensor([5.0, 5, 6, 7])) == pytest.approx(1.0)
    # ties share their average rank: ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4], deviations [-1.5, 0, 0, 1.5]
    # and [-1.5, .5, -.5, 1.5]: rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.9 ** 0.5, abs=1e-12)


def test_randomisation_check_flags_a_map_that_ignores_the_weights():
    torch.manual_seed(0)
    net = OneConv()
    random_net = randomised_copy(net, seed=1)
    x = torch.rand(4, 3, 6, 6) * 255

    def edges(model, images):                              # looks only at the image: ignores the model
        return (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().sum(1)

    blind = randomisation_check(edges, net, random_net, x)
    assert blind["mean"] == pytest.approx(1.0)
    faithful = randomisation_check(lambda m, im: A.gradcam(m, m.relu, im, A.DOG, upsample=False), net, random_net, x)
    assert faithful["mean"] < 0.9
    assert not torch.equal(net.conv.weight, random_net.conv.weight)


def test_filter_patterns_find_what_each_filter_detects_and_are_deterministic():
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0                            # input is BGR: filter 0 likes blue
        conv.weight[1, 2] = 1.0                            # filter 1 likes red
        conv.bias.zero_()
    features = nn.Sequential(conv, nn.ReLU())
    spec = {"channel_order": "BGR", "input_range": [0, 255], "mean": [100.0, 110.0, 120.0], "std": [1, 1, 1]}
    kwargs = dict(size=16, iterations=8, step=0.05, jitter=1, blur_every=2, seed=3)
    a = filter_patterns(features, 1, Preprocess(spec), [0, 1], **kwargs)
    b = filter_patterns(features, 1, Preprocess(spec), [0, 1], **kwargs)
    assert torch.equal(a, b) and a.shape == (2, 3, 16, 16)
    red, blue = a[:, 0].mean((1, 2)), a[:, 2].mean((1, 2))
    assert blue[0] > red[0] and red[1] > blue[1]          # patterns come back as RGB
    unblurred = filter_patterns(features, 1, Preprocess(spec), [0, 1], **(kwargs | {"blur_every": 0}))
    assert not torch.equal(a, unblurred)                   # the blur regulariser is applied


def test_primer_panels_name_operation_and_shape():
    image = (torch.rand(3, 48, 48) * 255).to(torch.uint8)
    titles = [t for t, _ in primer_panels(image)]
    assert "conv 3 random 3x3 kernels -> (3, 46, 46)" in titles
    assert "conv 3 random 15x15 kernels -> (3, 34, 34)" in titles
    assert "max pool 5x5 -> (3, 9, 9)" in titles
    assert any(t.startswith("LeNet-style") and t.endswith("(1, 9, 9)") for t in titles)


def test_visualize_stage_writes_every_figure(tiny_split, tmp_path):
    from omegaconf import open_dict

    from catdog_lab.stages.train import train
    from catdog_lab.stages.visualize import visualize
    cfg = tiny_split
    for stage in ("augmented", "features_augmented", "finetune"):
        train(cfg, stage)
    metrics = visualize(cfg)
    figures = tmp_path / "reports/figures"
    index = json.loads((figures / "index.json").read_text())
    names = {e["file"] for e in index}
    for expected in ("primer_conv_relu_pool_on_a_cat.png", "activations_augmented_01_conv2d_1.png",
                     "activations_augmented_08_max_pooling2d_4.png", "filters_vgg16_pretrained_block4_conv1.png",
                     "filters_block5_conv3_finetune.png", "gradcam_finetune_block5_conv3.png",
                     "attributions_finetune_gradcam_saliency_ig_occlusion.png",
                     "sanity_check_finetune_randomised_weights.png", "misclassified_finetune_gallery.png"):
        assert expected in names, expected
    for e in index:
        assert (figures / e["file"]).read_bytes()[:4] == b"\x89PNG" and e["caption"]
    saved = json.loads((tmp_path / "metrics/visualize.json").read_text())
    assert saved == metrics and -1 <= saved["sanity/saliency_spearman"] <= 1
    assert saved["sanity/constant_maps"] >= 0
    with open_dict(cfg):
        cfg.paths.reports = str(tmp_path / "again")
    visualize(cfg)                                             # deterministic for a seed
    for name in ("primer_conv_relu_pool_on_a_cat.png", "filters_vgg16_pretrained_block1_conv1.png"):
        assert (tmp_path / "again/figures" / name).read_bytes() == (figures / name).read_bytes()


def test_visualize_settings_are_typed_once_and_name_a_bad_key():
    from catdog_lab.config import compose
    from catdog_lab.errors import ConfigError
    from catdog_lab.stages.visualize import visualize_settings
    settings = visualize_settings(compose(["visualize.filters.step=1", "visualize.occlusion.window=20"]))
    assert settings.filters.step == 1.0 and isinstance(settings.filters.step, float)
    assert settings.occlusion.window == 20 and settings.filters.layers[0] == "block1_conv1"
    assert set(settings.filters.ascent()) == {"size", "iterations", "step", "jitter", "blur_every", "blur_sigma",
                                              "l2", "octaves", "octave_scale"}
    with pytest.raises(ConfigError, match=r"^visualize\.filters\.count: must be a positive integer, got .many.$"):
        visualize_settings(compose(["visualize.filters.count=many"]))


def test_the_primer_names_the_class_of_its_photo(tmp_path):
    # it said "a cat photo" (and wrote primer_..._on_a_cat.png) for a bird, label 0 of birds/cats/dogs
    from catdog_lab.viz.figures import FigureIndex
    from catdog_lab.viz.primer import plot_primer
    index = FigureIndex(tmp_path)
    plot_primer(torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8), index, label="snow birds")
    (entry,) = index.entries
    assert (tmp_path / "primer_conv_relu_pool_on_a_snow_birds.png").is_file()
    assert entry["caption"].startswith("A test-split snow birds photo convolved with random kernels")
