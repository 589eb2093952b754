"""Dense classifier heads put on a conv base: Flatten - Dense(hidden, relu) - [Dropout] - Dense(1)."""
from __future__ import annotations

from torch import nn


class DenseHead(nn.Module):
    def __init__(self, in_features: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)
