"""One LightningModule for every training stage: binary logit, BCE, accuracy, RMSprop.

Stages differ only by the wrapped `net`, the optional batch augmentation, and the learning rate.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """Mean BCE of a logit. `clip`: Keras 2.0.8's `binary_crossentropy`, which clips the sigmoid's output to
    [clip, 1 - clip] (clip = K.epsilon() = 1e-7) and takes the logit of that: the same as clamping the logit
    to +-log((1 - clip) / clip) = +-16.1, where the loss stops at 16.1 and its gradient is zero (as
    tf.clip_by_value's). None: the unclipped loss (PyTorch's, and tf.keras' since it reads the logit)."""
    if clip:
        bound = math.log((1 - clip) / clip)
        logits = logits.clamp(-bound, bound)
    return F.binary_cross_entropy_with_logits(logits, targets)


class BinaryClassifier(pl.LightningModule):
    def __init__(self, net: nn.Module, lr: float, augment: nn.Module | None = None, channels_last: bool = True,
                 eval_from_frozen: bool = False, loss_clip: float | None = None):
        super().__init__()
        self.net, self.augment, self.lr, self.loss_clip = net, augment, lr, loss_clip
        self.channels_last = channels_last
        # validation and test batches hold the frozen layers' outputs, not images (train.py; the net's
        # `forward_from_frozen` runs the rest): the same logits without the frozen layers' cost every epoch
        self.eval_from_frozen = eval_from_frozen
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self._logits(x, from_frozen=False)

    def _logits(self, x, from_frozen: bool):
        x = x.float()
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net.forward_from_frozen(x) if from_frozen else self.net(x)

    def _step(self, batch, prefix: str, augment: bool = False):
        x, y = batch
        x = x.float()
        if augment and self.augment is not None:
            x = self.augment(x)                  # a fresh random view of every image, every epoch
        logits = self._logits(x, from_frozen=self.eval_from_frozen and prefix != "train")
        loss = binary_cross_entropy(logits, y.float(), self.loss_clip)
        acc = ((logits > 0).long() == y).float().mean()
        loss_in_bar = prefix == "train"          # the progress bar shows the training loss, every split's accuracy
        # sync_dist: with several devices the epoch figures are averaged over ranks (a no-op on one device)
        self.log(f"{prefix}/loss", loss, on_step=False, on_epoch=True, prog_bar=loss_in_bar, batch_size=len(y),
                 sync_dist=True)
        self.log(f"{prefix}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", augment=True)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        # Keras' RMSprop defaults (rho=0.9, epsilon=1e-7), not torch's (alpha=0.99, eps=1e-8)
        return torch.optim.RMSprop(params, lr=self.lr, alpha=0.9, eps=1e-7)
