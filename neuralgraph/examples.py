"""Built-in example models (no downloads): the paper's FashionMNIST convnets and a small MLP."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["FMConvNet", "fm16", "fm32", "mlp", "EXAMPLES", "build_example"]


class FMConvNet(nn.Module):
    """The paper's FM/16 and FM/32 convnets (DESIGN §5).

    Three 3x3 convolutions (the first with stride 2 and no padding, the others 'same'), ReLU,
    global average pooling and a linear classifier, all in ``self.fc`` so that parameter names are
    ``fc.0``, ``fc.2``, ``fc.4`` and ``fc.8`` as in the authors' code.
    """

    def __init__(self, hid: Sequence[int] = (16, 32, 32), in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = hid
        self.fc = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding="same"),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3, padding="same"),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c3, num_classes),
        )

    def forward(self, x):
        return self.fc(x)


def fm16() -> FMConvNet:
    """FM/16: channels 16-32-32 (14,378 parameters)."""
    return FMConvNet((16, 32, 32))


def fm32() -> FMConvNet:
    """FM/32: channels 32-64-64."""
    return FMConvNet((32, 64, 64))


def mlp(sizes: Sequence[int] = (4, 5, 3)) -> nn.Sequential:
    """A ReLU MLP with the given layer sizes (default: the reference graph's 4-5-3 MLP)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


EXAMPLES: dict[str, Callable[[], nn.Module]] = {"fm16": fm16, "fm32": fm32, "mlp": mlp}
"""Example models by name (what ``neuralgraph inspect NAME`` converts)."""


def build_example(name: str) -> nn.Module:
    try:
        return EXAMPLES[name]()
    except KeyError:
        raise KeyError(f"unknown example model '{name}'; choose from {', '.join(EXAMPLES)}") from None
