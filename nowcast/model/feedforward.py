"""A stack of linear layers with SiLU in between, stored as ``fc`` (the published layout)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeedForward"]


class FeedForward(nn.Module):
    """``Linear, SiLU, Linear, ..., Linear`` held in ``self.fc`` (an ``nn.Sequential``).

    Linear layer ``i`` is ``fc[2 * i]``, so parameter names are ``fc.0.weight``, ``fc.2.weight``,
    ... exactly as in the published NiNo checkpoints.

    Args:
        in_dim: input width.
        hid_dim: width of the hidden layers.
        out_dim: output width.
        n_layers: number of linear layers (>= 1).
    """

    def __init__(self, in_dim: int, hid_dim: int, out_dim: int, n_layers: int) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"FeedForward needs at least one layer, got {n_layers}")
        modules: list[nn.Module] = []
        for i in range(n_layers):
            modules.append(nn.Linear(in_dim if i == 0 else hid_dim, out_dim if i == n_layers - 1 else hid_dim))
            if i < n_layers - 1:
                modules.append(nn.SiLU())
        self.fc = nn.Sequential(*modules)

    @property
    def linears(self) -> list[nn.Linear]:
        """The linear layers in order."""
        return [m for m in self.fc if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Everything but the last linear layer: the input of ``linears[-1]``."""
        return self.fc[:-1](x)
