"""The book's small convnet (listing 5.5), with optional dropout (listing 5.13). Outputs one logit."""
from __future__ import annotations

from torch import nn

from catdog_lab.models.components.preprocess import rescale_01


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    # ReLU(inplace=False): Captum's hooks break on in-place activations
    return [nn.Conv2d(cin, cout, 3), nn.ReLU(), nn.MaxPool2d(2)]


class BookConvNet(nn.Module):
    """Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool-Conv(128)-Pool-Flatten-[Dropout]-Dense(512)-Dense(1).

    The final sigmoid of the book is folded into the loss (BCE with logits): same model, stabler.
    """

    def __init__(self, image_size: int = 150, dropout: float = 0.0):
        super().__init__()
        self.preprocess = rescale_01()
        self.features = nn.Sequential(*_conv_block(3, 32), *_conv_block(32, 64), *_conv_block(64, 128),
                                      *_conv_block(128, 128))
        side = image_size
        for _ in range(4):
            side = (side - 2) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for four conv/pool blocks")
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(128 * side * side, 512),
                                        nn.ReLU(), nn.Linear(512, 1))

    def forward(self, x):
        return self.classifier(self.features(self.preprocess(x))).squeeze(1)

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
