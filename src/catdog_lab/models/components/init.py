"""Keras' initialisation for layers trained from scratch: `glorot_uniform` kernels, zero biases.

PyTorch's default (Kaiming-uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in))) starts the book's
6272 -> 512 dense layer with a bound of 0.013 where Glorot gives sqrt(6 / (6272 + 512)) = 0.030, and its
conv kernels smaller too: with identical optimiser settings the network then learns more slowly per
update than the book's. Glorot's fan_in/fan_out for a conv kernel are in * k * k and out * k * k,
the same in both frameworks, so `xavier_uniform_` is Keras' `glorot_uniform` exactly.
"""
from __future__ import annotations

from torch import nn

KERAS_INIT_TYPES = (nn.Conv2d, nn.Linear)


def keras_init_(module: nn.Module) -> nn.Module:
    """Re-initialise every Conv2d and Linear under `module` the Keras way; returns the module."""
    for layer in module.modules():
        if isinstance(layer, KERAS_INIT_TYPES):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
