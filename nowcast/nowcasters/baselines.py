"""Baseline nowcasters with NiNo's interface (:class:`nowcast.Nowcaster`): Linefit, Linefit+, WNN.

All of them work per parameter element and do not need the neural graph (``needs_graph =
False``); WNN+ (the published ``nino_mlp.pt``) is :class:`nowcast.WNNPlus`.

Units. The history ``states [P, ctx]`` holds states at positions ``t = 0 .. ctx-1`` (oldest first),
one *state interval* apart; the horizon ``k`` counts the same intervals, so the prediction is the
value at position ``ctx - 1 + k``. This is NiNo's unit: its training targets lie on the grid of its
input states, and the optimizer wrapper records a state every ``period / ctx`` steps, so ``k = ctx``
is one period ahead.

- :class:`Linefit`: per element, the least-squares line through the ``ctx`` points ``(t, x_t)``,
  evaluated at ``ctx - 1 + k``. Exact on exactly linear trajectories.
- :class:`LinefitPlus`: the same with weighted least squares, weights ``w_t = t + 1``
  (1, 2, ..., ctx: the newest state counts ``ctx`` times as much as the oldest).
- :class:`WNN` (after Jang et al., 2023): a small MLP applied to every element's own history
  after per-element min-max scaling, predicting the change of the scaled value at horizons
  ``1 .. seq_len``. No trained WNN checkpoint is published (the NiNo authors released NiNo and
  WNN+ only), so a :class:`WNN` is randomly initialized unless you load weights you trained
  (``WNN.load`` / ``load_state_dict``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .base import check_k, check_states, work_dtype

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["Linefit", "LinefitPlus", "WNN"]

log = logging.getLogger(__name__)


class Linefit:
    """Per-parameter (weighted) least-squares line through the history, extrapolated ``k`` intervals.

    Args:
        weights: one non-negative weight per state, oldest first (None: all equal). A callable
            ``ctx -> sequence`` adapts to any history length.
        seq_len: largest horizon the optimizer's horizon schedule starts from (40, as NiNo).

    The prediction is a fixed linear combination of the states, ``sum_t c_t x_t`` with
    ``c_t = w_t / W + w_t (t - m) (ctx - 1 + k - m) / S`` (``W = sum w``, ``m = sum w t / W``,
    ``S = sum w (t - m)^2``); it is evaluated as ``x_last + sum_t c_t (x_t - x_last)`` (the
    coefficients sum to 1), which keeps constant parameters exactly constant.
    """

    name = "Linefit"
    needs_graph = False
    ctx: int | None = None

    def __init__(self, weights: Sequence[float] | Any = None, *, seq_len: int = 40) -> None:
        self._weights = weights
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        self.seq_len = seq_len

    def weights(self, ctx: int) -> torch.Tensor:
        """The ``[ctx]`` float64 weights used for a history of ``ctx`` states (oldest first)."""
        if self._weights is None:
            w = torch.ones(ctx, dtype=torch.float64)
        else:
            raw = self._weights(ctx) if callable(self._weights) else self._weights
            w = torch.as_tensor(raw, dtype=torch.float64).reshape(-1)
        if w.numel() != ctx:
            raise ValueError(f"{self.name} has {w.numel()} weights but the history has {ctx} states")
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"{self.name} weights must be finite and non-negative, got {w.tolist()}")
        if int((w > 0).sum()) < 2:
            raise ValueError(f"{self.name} needs at least two states with positive weight to fit a line")
        return w

    def coefficients(self, ctx: int, k: int) -> torch.Tensor:
        """``[ctx]`` float64 ``c`` with prediction ``sum_t c_t x_t`` at position ``ctx - 1 + k``."""
        w = self.weights(ctx)
        t = torch.arange(ctx, dtype=torch.float64)
        total = w.sum()
        mean = (w * t).sum() / total
        spread = (w * (t - mean) ** 2).sum()
        target = ctx - 1 + k
        return w / total + w * (t - mean) * (target - mean) / spread

    def predict(self, graph: NeuralGraph | None, states: torch.Tensor, k: int) -> torch.Tensor:
        k = check_k(k)
        states = check_states(states, graph)
        if states.shape[1] < 2:
            raise ValueError(f"{self.name} needs at least two states, got {states.shape[1]}")
        dtype = work_dtype(states.dtype)
        c = self.coefficients(states.shape[1], k).to(device=states.device, dtype=dtype)
        x = states.to(dtype)
        last = x[:, -1]
        out = last + (x[:, :-1] - last.unsqueeze(1)) @ c[:-1]
        return out.to(states.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self._weights!r})"


def _ramp(ctx: int) -> list[float]:
    return [float(t + 1) for t in range(ctx)]


class LinefitPlus(Linefit):
    """Linefit with weights growing linearly toward recent states: ``w_t = t + 1`` (oldest first).

    For ``ctx = 5`` the weights are 1, 2, 3, 4, 5. Pass ``weights`` to use another profile.
    """

    name = "Linefit+"

    def __init__(self, weights: Sequence[float] | Any = None, *, seq_len: int = 40) -> None:
        super().__init__(_ramp if weights is None else weights, seq_len=seq_len)


class WNN(nn.Module):
    """Weight nowcaster network: an MLP over each parameter element's own min-max scaled history.

    Per element, ``lo = min_t x_t``, ``r = max_t x_t - lo``; the MLP reads
    ``(x_t - lo) / r`` (0 where ``r = 0``) and outputs, per horizon ``k = 1 .. seq_len``, the
    change of the scaled value after the last state; the prediction is
    ``lo + (scaled_last + delta_k) * r`` (so an element that did not move stays put).

    Args:
        ctx: history length.
        hid: hidden width.
        layers: linear layers (>= 2), SiLU between them.
        seq_len: horizons predicted.
        chunk: elements processed at once (bounds ``chunk x hid`` temporaries).

    No published WNN checkpoint exists (the NiNo authors released NiNo and WNN+ only): a new
    instance is randomly initialized (``torch.manual_seed`` for reproducibility). Train it yourself
    or load weights with :meth:`load` / ``load_state_dict``.
    """

    name = "WNN"
    needs_graph = False

    def __init__(self, ctx: int = 5, hid: int = 32, layers: int = 3, seq_len: int = 40, *, chunk: int = 1 << 16) -> None:
        super().__init__()
        for label, value, low in (("ctx", ctx, 2), ("hid", hid, 1), ("layers", layers, 2), ("seq_len", seq_len, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"WNN {label} must be an integer >= {low}, got {value!r}")
        self.ctx, self.hid, self.layers, self.seq_len, self.chunk = ctx, hid, layers, seq_len, chunk
        sizes = [ctx] + [hid] * (layers - 1) + [seq_len]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                modules.append(nn.SiLU())
            modules.append(nn.Linear(a, b))
        self.net = nn.Sequential(*modules)

    @property
    def config(self) -> dict[str, int]:
        return {"ctx": self.ctx, "hid": self.hid, "layers": self.layers, "seq_len": self.seq_len}

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        """``[N, ctx]`` scaled histories -> ``[N, seq_len]`` predicted changes of the scaled value."""
        return self.net(scaled)

    def predict(self, graph: NeuralGraph | None, states: torch.Tensor, k: int) -> torch.Tensor:
        k = check_k(k)
        states = check_states(states, graph)
        if states.shape[1] != self.ctx:
            raise ValueError(f"this WNN reads ctx={self.ctx} states but the history has {states.shape[1]}")
        if k > self.seq_len:
            raise ValueError(f"horizon k must lie in 1..{self.seq_len} for this WNN, got {k}")
        weight = self.net[0].weight
        out = torch.empty(states.shape[0], dtype=states.dtype, device=states.device)
        chunk = self.chunk or states.shape[0] or 1
        with torch.no_grad():
            for start in range(0, states.shape[0], chunk):
                x = states[start : start + chunk].to(device=weight.device, dtype=work_dtype(states.dtype))
                lo = x.min(dim=1).values
                span = x.max(dim=1).values - lo
                scaled = (x - lo.unsqueeze(1)) / torch.where(span > 0, span, torch.ones_like(span)).unsqueeze(1)
                delta = self(scaled.to(weight.dtype))[:, k - 1].to(x.dtype)
                pred = lo + (scaled[:, -1] + delta) * span
                out[start : start + chunk] = pred.to(device=states.device, dtype=states.dtype)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the weights and configuration to one ``.safetensors`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"format": "nowcast.WNN", "config": json.dumps(self.config)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> WNN:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no WNN weights at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "nowcast.WNN":
            raise ValueError(f"{path} is not a WNN file written by nowcast.WNN.save")
        model = cls(**json.loads(meta["config"]))
        model.load_state_dict(load_file(str(path)))
        return model
