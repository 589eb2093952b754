"""What a network's output means, for any number of classes (no Lightning: predict and serving import it).

Two classes keep the book's single logit (sigmoid = p(second class), binary cross-entropy), so the
chapter's numbers do not move; three or more classes have one logit per class (softmax, cross-entropy).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def n_outputs(n_classes: int) -> int:
    """The network's output width: 1 logit for two classes, one per class otherwise."""
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least two classes, got {n_classes}")
    return 1 if n_classes == 2 else n_classes


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """N x C class probabilities (rows sum to 1) from N logits (two classes) or N x C logits."""
    if logits.dim() == 1:
        p = torch.sigmoid(logits)
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def predicted(logits: torch.Tensor) -> torch.Tensor:
    """The predicted label of each image (logit > 0 for two classes: p > 0.5, the book's threshold)."""
    return (logits > 0).long() if logits.dim() == 1 else logits.argmax(dim=1)


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """Mean BCE of a logit. `clip`: Keras 2.0.8's `binary_crossentropy`, which clips the sigmoid's output to
    [clip, 1 - clip] (clip = K.epsilon() = 1e-7) and takes the logit of that: the same as clamping the logit
    to +-log((1 - clip) / clip) = +-16.1, where the loss stops at 16.1 and its gradient is zero (as
    tf.clip_by_value's). None: the unclipped loss (PyTorch's, and tf.keras' since it reads the logit)."""
    if clip:
        bound = math.log((1 - clip) / clip)
        logits = logits.clamp(-bound, bound)
    return F.binary_cross_entropy_with_logits(logits, targets)


def loss(logits: torch.Tensor, labels: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """BCE of the single logit (two classes) or cross-entropy of N x C logits. `clip` (`<stage>.loss_clip`):
    Keras 2.0.8's clipping of the predicted probabilities to [clip, 1 - clip] (binary_cross_entropy; for
    several classes its `categorical_crossentropy` clips the softmax the same way: log p clamped to
    [log clip, log(1 - clip)], zero gradient outside)."""
    if logits.dim() == 1:
        return binary_cross_entropy(logits, labels.float(), clip)
    if clip:
        log_p = F.log_softmax(logits, dim=1).clamp(math.log(clip), math.log1p(-clip))
        return F.nll_loss(log_p, labels)
    return F.cross_entropy(logits, labels)


def class_score(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The per-image score whose gradient explains class `target` (Grad-CAM, attributions): the class's own
    logit, or for the single logit z of two classes, z for the second class and -z for the first."""
    if logits.dim() == 1:
        return logits if target == 1 else -logits
    return logits[:, target]


def confusion_matrix(labels: torch.Tensor, guesses: torch.Tensor, n_classes: int) -> torch.Tensor:
    """C x C counts, rows = true class, columns = predicted class."""
    index = labels.long() * n_classes + guesses.long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_metrics(confusion: torch.Tensor, classes) -> dict:
    """Accuracy, macro-F1 and each class's precision, recall, F1 and image count from a confusion matrix.
    A class never predicted has precision 0 (sklearn's zero_division=0). The macro-F1 averages the classes
    that occur, as true or as predicted class (sklearn's labels=None): every class of a test split, but not
    a class absent from a held-out folder (`catdog-predict --evaluate`), whose F1 of 0 would say nothing."""
    confusion = confusion.double()
    hits, true, guessed = confusion.diag(), confusion.sum(1), confusion.sum(0)
    precision = torch.where(guessed > 0, hits / guessed.clamp(min=1), torch.zeros_like(hits))
    recall = torch.where(true > 0, hits / true.clamp(min=1), torch.zeros_like(hits))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(hits))
    return {
        "acc": round(float(hits.sum() / confusion.sum().clamp(min=1)), 6),
        "macro_f1": round(float(f1[(true > 0) | (guessed > 0)].mean()), 6) if confusion.sum() else 0.0,
        "per_class": {name: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                             "f1": round(float(f1[i]), 6), "images": int(true[i])} for i, name in enumerate(classes)},
        "confusion": confusion.long().tolist(),
    }
