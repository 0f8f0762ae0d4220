"""One training run as a sequence of flat parameter snapshots (:class:`Trajectory`), and the
conversion of models, tensors, arrays and state dicts into such snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralgraph import flatten_params
from neuralgraph.build import param_specs

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["Trajectory", "as_vector"]


def as_vector(value: Any) -> np.ndarray:
    """A flat float32 numpy copy of a tensor / array / module's parameters."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.nn.Module):
        value = flatten_params(value)
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().reshape(-1).to("cpu", torch.float32).numpy().copy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"expected a model, a tensor or an array of parameters, got {type(value).__name__}")
    return array.reshape(-1).astype(np.float32, copy=True)


def _flatten_state_dict(state: Mapping[str, Any], keys: Sequence[str] | None) -> np.ndarray:
    if keys is None:
        keys = [k for k, v in state.items() if np.issubdtype(_dtype_of(v), np.floating)]
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"state dict lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    pieces = [as_vector(state[k]) for k in keys]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _dtype_of(value: Any) -> np.dtype:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return np.asarray(value).dtype
    if isinstance(dtype, np.dtype):
        return dtype
    return np.dtype("float32") if getattr(dtype, "is_floating_point", False) else np.dtype("int64")


@dataclass
class Trajectory:
    """One training run as a sequence of flat parameter snapshots.

    Attributes:
        name: label of the run in plots ("Adam", "NiNo", ...).
        steps: ``[T]`` int64 training step of every snapshot, increasing.
        params: ``[T, P]`` float32 snapshots (``neuralgraph.flatten_params`` order when recorded
            from a model).
        jump_steps: int64 steps at which a nowcast jump happened; the snapshot at such a step
            (when recorded) is the parameters right after the jump.
        metrics: optional per-snapshot values (``name -> [T]`` float64, NaN where not given).
    """

    name: str
    steps: np.ndarray
    params: np.ndarray
    jump_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64).reshape(-1)
        params = np.asarray(self.params)
        if params.ndim == 1 and self.steps.size == 1:
            params = params.reshape(1, -1)
        if params.ndim != 2 or params.shape[0] != self.steps.size:
            raise ValueError(
                f"trajectory '{self.name}': params must be [T, P] with T = {self.steps.size} steps, "
                f"got shape {params.shape}"
            )
        self.params = params.astype(np.float32, copy=False)
        if self.steps.size > 1 and not bool(np.all(np.diff(self.steps) > 0)):
            raise ValueError(f"trajectory '{self.name}': steps must be strictly increasing")
        self.jump_steps = np.unique(np.asarray(self.jump_steps, dtype=np.int64).reshape(-1))
        metrics = {}
        for key, values in dict(self.metrics).items():
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if values.size != self.steps.size:
                raise ValueError(
                    f"trajectory '{self.name}': metric '{key}' has {values.size} values for {self.steps.size} snapshots"
                )
            metrics[key] = values
        self.metrics = metrics

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_state_dicts(
        cls,
        states: Iterable[Any],
        *,
        name: str = "run",
        steps: Sequence[int] | None = None,
        jump_steps: Sequence[int] = (),
        keys: Sequence[str] | None = None,
        model: nn.Module | None = None,
        metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> Trajectory:
        """A trajectory from saved states: state dicts (``model.state_dict()``), flat vectors
        (tensors or arrays) or models, one per snapshot.

        Args:
            states: the snapshots, oldest first.
            steps: their training steps (default ``0, 1, 2, ...``).
            keys: state-dict entries to concatenate, in this order. Default: the parameters of
                ``model`` (``named_parameters()`` order, as ``neuralgraph.flatten_params``) when
                given, else every floating-point entry in the dict's order (buffers such as
                BatchNorm running statistics included).
            model: a model of the same architecture, used only for its parameter names.
        """
        if keys is None and model is not None:
            keys = [spec.name for spec in param_specs(model)]
        rows = [
            _flatten_state_dict(s, keys) if isinstance(s, Mapping) else as_vector(s)
            for s in states
        ]
        if not rows:
            raise ValueError("no states given")
        sizes = {r.size for r in rows}
        if len(sizes) != 1:
            raise ValueError(f"states have different numbers of values: {sorted(sizes)}")
        steps_array = np.arange(len(rows)) if steps is None else np.asarray(steps)
        if steps_array.size != len(rows):
            raise ValueError(f"{len(rows)} states but {steps_array.size} steps")
        return cls(name, steps_array, np.stack(rows), np.asarray(jump_steps), dict(metrics or {}))

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            metrics = {k[len("metric_"):]: data[k] for k in data.files if k.startswith("metric_")}
            return cls(str(data["name"]), data["steps"], data["params"], data["jump_steps"], metrics)

    def save(self, path: str | Path) -> Path:
        """Write the trajectory as a ``.npz`` file; returns its path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            name=np.asarray(self.name),
            steps=self.steps,
            params=self.params,
            jump_steps=self.jump_steps,
            **{f"metric_{k}": v for k, v in self.metrics.items()},
        )
        return path

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def num_params(self) -> int:
        return int(self.params.shape[1])

    @property
    def is_jump(self) -> np.ndarray:
        """``[T]`` bool: whether each snapshot was taken right after a nowcast jump."""
        return np.isin(self.steps, self.jump_steps)

    def every(self, n: int) -> Trajectory:
        """Every ``n``-th snapshot, keeping the first, the last and the jumps (and the snapshot
        before each jump)."""
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        keep = np.zeros(len(self), dtype=bool)
        keep[::n] = True
        if len(self):
            keep[-1] = True
        jumps = self.is_jump
        keep |= jumps
        keep[:-1] |= jumps[1:]
        return Trajectory(
            self.name, self.steps[keep], self.params[keep], self.jump_steps,
            {k: v[keep] for k, v in self.metrics.items()},
        )

    def __repr__(self) -> str:
        return (
            f"Trajectory(name={self.name!r}, snapshots={len(self)}, params={self.num_params}, "
            f"steps={int(self.steps[0]) if len(self) else None}..{int(self.steps[-1]) if len(self) else None}, "
            f"jumps={self.jump_steps.size}, metrics={sorted(self.metrics)})"
        )
