"""Helpers shared by the nowcast tests: small networks and predictors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nowcast import Linefit, NiNoConfig, NiNoModel


class Layered(nn.Module):
    """A ReLU MLP whose parameters are named ``layers.{i}.*``, so ``graph.layers()`` splits it per layer."""

    def __init__(self, sizes: tuple[int, ...] = (4, 8, 8, 3)) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                modules.append(nn.ReLU())
            modules.append(nn.Linear(a, b))
        self.layers = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.layers:
            x = module(x)
        return x


def small_nino(gnn: bool = True, seed: int = 0, std: float = 0.2, **config_fields) -> NiNoModel:
    """A small random NiNo / WNN+ model whose predictions move parameters noticeably."""
    config = NiNoConfig(**{"hid": 16, "wte_pos_enc": False, "gnn": gnn, "mlp_layers": 2, **config_fields})
    model = NiNoModel(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


class Recording:
    """A Nowcaster that records its calls and answers like Linefit (or with NaN)."""

    name = "Recording"
    needs_graph = False

    def __init__(self, nan: bool = False) -> None:
        self.calls: list[tuple[int, torch.Tensor]] = []
        self.outputs: list[torch.Tensor] = []
        self.nan = nan
        self._fit = Linefit()

    def predict(self, graph, states: torch.Tensor, k: int) -> torch.Tensor:
        self.calls.append((k, states.clone()))
        out = self._fit.predict(graph, states, k)
        if self.nan:
            out = out.clone()
            out[0] = float("nan")
        self.outputs.append(out.clone())
        return out


def regression_data(n_in: int = 4, n_out: int = 3, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=gen), torch.randn(n, n_out, generator=gen)


def official_checkpoint(shared: Path, name: str) -> Path:
    """``shared/checkpoints/official/<name>.pt``, or skip the test with the reason."""
    path = shared / "checkpoints" / "official" / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"official checkpoint {path} not found")
    return path


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Normwise relative error ``max|ours - ref| / max|ref|``."""
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def interrupt_at(stop: int):
    """A ``metatrain`` step callback that raises ``KeyboardInterrupt`` after step ``stop`` (a kill)."""
    def callback(step, model) -> None:
        if step == stop:
            raise KeyboardInterrupt

    return callback
