"""Sanity check by model randomisation (Adebayo et al., 2018): an explanation worth trusting must
change when the weights it explains are replaced by random ones. We report the Spearman rank
correlation between the maps of the trained and the randomised model: near 1 means the map
ignores the weights (it is an edge detector, not an explanation)."""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn


def randomised_copy(net: nn.Module, seed: int = 0) -> nn.Module:
    """Same architecture and preprocessing, every learnable layer re-initialised (full cascade)."""
    device = next(net.parameters()).device
    clone = copy.deepcopy(net).cpu()        # re-initialise on the CPU RNG: the same random net on any device
    torch.manual_seed(seed)
    for module in clone.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
    return clone.to(device).eval()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps (nan when either map is constant: nothing to rank, and
    checked here so that scipy does not warn)."""
    x, y = a.detach().flatten().double().cpu().numpy(), b.detach().flatten().double().cpu().numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)           # ties share their average rank


def randomisation_check(explain: Callable[[nn.Module, torch.Tensor], torch.Tensor], net: nn.Module,
                        random_net: nn.Module, images: torch.Tensor) -> dict:
    """explain(net, images) -> N x H x W maps. Returns per-image and mean rank correlations."""
    trained, randomised = explain(net, images), explain(random_net, images)
    per_image = [spearman(trained_map, random_map) for trained_map, random_map in zip(trained, randomised)]
    ranked = [rho for rho in per_image if not np.isnan(rho)]
    return {"per_image": per_image, "mean": float(np.mean(ranked)) if ranked else float("nan"),
            "constant_maps": len(per_image) - len(ranked), "trained": trained, "random": randomised}
