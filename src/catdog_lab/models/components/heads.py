"""Dense classifier heads put on a conv base: Flatten - Dense(hidden, activation) - [Dropout] - Dense(outputs):
one logit for two classes, one per class for more (models/outputs.py).

The 1st edition's head is Dense(256, relu); the 2nd edition's is Dense(256) with no activation (linear).
"""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "linear": nn.Identity}


class DenseHead(nn.Module):
    def __init__(self, in_features: int, hidden: int = 256, dropout: float = 0.0, activation: str = "relu",
                 outputs: int = 1):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"head activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.outputs = outputs
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), ACTIVATIONS[activation](),
                                 nn.Dropout(dropout), nn.Linear(hidden, outputs))

    def forward(self, x):
        out = self.net(x)
        # N logits for one output, N x C for several; decided in Python, so an exported graph holds no
        # Squeeze that fails on C > 1
        return out.squeeze(1) if self.outputs == 1 else out
