"""A pretrained conv base + dense head, with only the named backbone blocks trainable.

Frozen parts compute in eval mode even while the net trains: a BatchNorm in training mode would
normalise with the batch's statistics and overwrite its running ones, so a "frozen" base would change.
"""
from __future__ import annotations

import torch
from torch import nn

from catdog_lab.models.components.backbones import Backbone
from catdog_lab.models.components.heads import DenseHead


class TransferNet(nn.Module):
    def __init__(self, backbone: Backbone, image_size: int, hidden: int = 256, dropout: float = 0.0,
                 trainable: list[str] | tuple[str, ...] = (), activation: str = "relu", outputs: int = 1):
        super().__init__()
        self.layer_index, self.block_index = backbone.layers, backbone.blocks
        self.gradcam_layer = backbone.gradcam_layer
        self.preprocess = backbone.preprocess
        self.features = backbone.features
        channels, height, width = backbone.output_shape(image_size)
        self.head = DenseHead(channels * height * width, hidden, dropout, activation, outputs)
        self.set_trainable(trainable)

    def set_trainable(self, trainable) -> None:
        unknown = [name for name in trainable if name not in self.block_index]
        if unknown:
            raise ValueError(f"unknown backbone layer(s) {unknown}; known: {', '.join(self.block_index)}")
        for p in self.features.parameters():
            p.requires_grad_(False)
        for name in trainable:
            for p in self.features[self.block_index[name]].parameters():
                p.requires_grad_(True)
        # everything before the first trainable block is a frozen prefix: run it without autograd
        self.frozen_prefix = min((self.block_index[n] for n in trainable), default=len(self.features))
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferNet:
        """Training mode for the head and the trainable blocks; the frozen prefix, and every frozen
        BatchNorm after it, stay in eval mode (running statistics used, never updated)."""
        super().train(mode)
        if mode:
            self.features[:self.frozen_prefix].eval()
            for module in self.features[self.frozen_prefix:].modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        prefix, rest = self.features[:self.frozen_prefix], self.features[self.frozen_prefix:]
        if self.training and not x.requires_grad:
            with torch.no_grad():                # training: no graph for the frozen part
                x = prefix(x)
        else:                                    # eval (Captum, Grad-CAM, predict): the full graph
            x = prefix(x)
        return rest(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def frozen_part(self) -> nn.Sequential:
        """Preprocessing and the frozen prefix: what `forward_from_frozen` expects to have been run. Its
        weights never change during a stage, so its outputs on unaugmented images (validation, test) can be
        computed once (models/features.py::frozen_outputs) instead of every epoch."""
        return nn.Sequential(self.preprocess, self.features[:self.frozen_prefix])

    def forward_from_frozen(self, z: torch.Tensor) -> torch.Tensor:
        """The logits from the frozen part's output `z`: the trainable layers and the head only."""
        return self.head(self.features[self.frozen_prefix:](z))
