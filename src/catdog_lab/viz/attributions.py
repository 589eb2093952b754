"""Grad-CAM and pixel attributions with Captum, with explicit targets for a one-logit model.

Every function takes CPU images, computes on the device the net lives on (a GPU when the stage put
it there) and returns CPU maps, so the plotting code never sees a CUDA tensor."""
from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import nn

CAT, DOG = 0, 1


def on_net_device(net: nn.Module, images: torch.Tensor, target=None):
    """(float images, target) moved to the net's device: Captum gathers the target column on it."""
    device = next(net.parameters()).device
    if isinstance(target, torch.Tensor):
        target = target.to(device)
    return images.to(device).float(), target


class TwoLogits(nn.Module):
    """A two-class net outputs one logit z = log p(dog)/p(cat). Captum needs a target column: this returns
    [cat logit, dog logit] = [-z, z] (sigmoid(-z) = p(cat)), so `target=0` explains "cat" and
    `target=1` explains "dog" explicitly. A net of three or more classes already has one logit per class:
    passed through, `target=k` explains class k."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return torch.stack([-z, z], dim=1) if z.dim() == 1 else z


def gradcam(net: nn.Module, layer: nn.Module, images: torch.Tensor, target: int | torch.Tensor,
            upsample: bool = True, relu: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.) at `layer`: N x H x W maps (ReLU'd, as the paper), upsampled to the input.
    relu=False keeps the signed map (used by the sanity check: a ReLU'd map of a random net is often all 0)."""
    x, target = on_net_device(net, images, target)
    maps = LayerGradCam(TwoLogits(net), layer).attribute(x, target=target, relu_attributions=relu)
    if upsample:
        maps = LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return maps[:, 0].detach().cpu()


def saliency(net: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """|d logit / d pixel|, max over colour channels: N x H x W."""
    x, target = on_net_device(net, images, target)
    x = x.clone().requires_grad_(True)
    return Saliency(TwoLogits(net)).attribute(x, target=target, abs=True).amax(dim=1).detach().cpu()


def integrated_gradients(net: nn.Module, images: torch.Tensor, target, steps: int = 32) -> torch.Tensor:
    """IG from a black image, summed |attribution| over channels: N x H x W."""
    x, target = on_net_device(net, images, target)
    attr = IntegratedGradients(TwoLogits(net)).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                         n_steps=steps, internal_batch_size=max(1, steps))
    return attr.abs().sum(dim=1).detach().cpu()


def occlusion(net: nn.Module, images: torch.Tensor, target, window: int = 30, stride: int = 15) -> torch.Tensor:
    """Drop in the target logit when a grey patch covers each region ("cover part of the image"): N x H x W."""
    x, target = on_net_device(net, images, target)
    attr = Occlusion(TwoLogits(net)).attribute(x, sliding_window_shapes=(3, window, window),
                                               strides=(3, stride, stride), baselines=128.0, target=target,
                                               perturbations_per_eval=16)
    return attr.sum(dim=1).detach().cpu()
