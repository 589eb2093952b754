"""The book's small convnets, from scratch. Output: one logit (two classes) or one per class (`outputs`).

1st edition (listing 5.5, + Dropout in 5.13): Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool-Conv(128)-Pool-
Flatten-[Dropout]-Dense(512, relu)-Dense(1): `filters=(32, 64, 128, 128), pool_last=True, hidden=512`.
2nd edition (chapter 8): Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool-Conv(256)-Pool-Conv(256)-Flatten-
[Dropout]-Dense(1): `filters=(32, 64, 128, 256, 256), pool_last=False, hidden=0`.
"""
from __future__ import annotations

from torch import nn

from catdog_lab.models.components.preprocess import rescale_01

BOOK1 = {"filters": (32, 64, 128, 128), "pool_last": True, "hidden": 512}
BOOK2 = {"filters": (32, 64, 128, 256, 256), "pool_last": False, "hidden": 0}


class BookConvNet(nn.Module):
    """Conv(3x3, relu) blocks, each followed by 2x2 max-pooling (the last one optionally not), Flatten,
    Dropout, an optional Dense(hidden, relu), Dense(1). The book's final sigmoid is folded into the loss
    (BCE with logits): same model, stabler."""

    def __init__(self, image_size: int = 150, dropout: float = 0.0, filters=BOOK1["filters"],
                 pool_last: bool = True, hidden: int = 512, outputs: int = 1):
        super().__init__()
        self.preprocess = rescale_01()
        layers, side, cin = [], image_size, 3
        for i, cout in enumerate(filters):
            # ReLU(inplace=False): Captum's hooks break on in-place activations
            layers += [nn.Conv2d(cin, cout, 3), nn.ReLU()]
            side -= 2
            if i < len(filters) - 1 or pool_last:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            cin = cout
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(filters)} conv/pool blocks")
        self.features = nn.Sequential(*layers)
        flat = cin * side * side
        dense = ([nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, outputs)] if hidden
                 else [nn.Linear(flat, outputs)])
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), *dense)
        self.outputs = outputs

    def forward(self, x):
        # N logits for one output (the book's), N x C for several (decided in Python: no Squeeze in an
        # exported graph that would fail on C > 1)
        out = self.classifier(self.features(self.preprocess(x)))
        return out.squeeze(1) if self.outputs == 1 else out

    # Named layers as in Keras' model.summary(), for the visualisations
    def named_feature_layers(self) -> dict[str, nn.Module]:
        names, counts = {}, {"Conv2d": 0, "MaxPool2d": 0}
        keras = {"Conv2d": "conv2d", "MaxPool2d": "max_pooling2d"}
        for module in self.features:
            kind = type(module).__name__
            if kind in counts:
                counts[kind] += 1
                names[f"{keras[kind]}_{counts[kind]}"] = module
        return names
