"""One LightningModule for every training stage: logits, loss, accuracy, RMSprop, and the test's confusion
matrix.

Two classes: one logit and binary cross-entropy (the book's sigmoid output); three or more: one logit per
class and cross-entropy (models/outputs.py). Stages differ only by the wrapped `net`, the optional batch
augmentation, and the learning rate.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from catdog_lab.models import outputs


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module, lr: float, augment: nn.Module | None = None, channels_last: bool = True,
                 n_classes: int = 2, eval_from_frozen: bool = False, loss_clip: float | None = None):
        super().__init__()
        self.net, self.augment, self.lr, self.loss_clip = net, augment, lr, loss_clip
        self.channels_last, self.n_classes = channels_last, n_classes
        # validation and test batches hold the frozen layers' outputs, not images (train.py; the net's
        # `forward_from_frozen` runs the rest): the same logits without the frozen layers' cost every epoch
        self.eval_from_frozen = eval_from_frozen
        self.confusion: torch.Tensor | None = None     # the last test's confusion matrix (rows: true class)
        self._test_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
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
        loss = outputs.loss(logits, y, self.loss_clip)
        guesses = outputs.predicted(logits)
        acc = (guesses == y).float().mean()
        loss_in_bar = prefix == "train"          # the progress bar shows the training loss, every split's accuracy
        # sync_dist: with several devices the epoch figures are averaged over ranks (a no-op on one device)
        self.log(f"{prefix}/loss", loss, on_step=False, on_epoch=True, prog_bar=loss_in_bar, batch_size=len(y),
                 sync_dist=True)
        self.log(f"{prefix}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)
        if prefix == "test":
            self._test_pairs.append((y.detach().cpu(), guesses.detach().cpu()))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", augment=True)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_test_epoch_start(self):
        self._test_pairs = []

    def on_test_epoch_end(self):
        labels = torch.cat([y for y, _ in self._test_pairs]) if self._test_pairs else torch.zeros(0, dtype=torch.long)
        guesses = torch.cat([g for _, g in self._test_pairs]) if self._test_pairs else labels
        self.confusion = outputs.confusion_matrix(labels, guesses, self.n_classes)
        self._test_pairs = []

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        # Keras' RMSprop defaults (rho=0.9, epsilon=1e-7), not torch's (alpha=0.99, eps=1e-8)
        return torch.optim.RMSprop(params, lr=self.lr, alpha=0.9, eps=1e-7)
