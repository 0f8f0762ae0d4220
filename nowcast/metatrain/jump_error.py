"""How well a predictor makes the jumps the optimizer wrapper would make, on collected trajectories.

The meta-training loss averages over every window and every horizon, but in use a NiNo model is
asked for one prediction per period: at jump ``j`` it reads the ``ctx`` states recorded during
period ``j`` and predicts ``k_j`` intervals ahead (:func:`nowcast.optim.horizon_schedule`: 40 at
the first jump of a 10-period run, 1 at the last). :func:`jump_errors` measures exactly those
predictions on trajectories the model has not been trained on: for a trajectory with states
every ``every`` steps, the wrapper's period is ``ctx * every`` and its planned length the
trajectory's, so jump ``j`` reads snapshot rows ``j*ctx + 1 .. (j+1)*ctx`` and is compared with
row ``(j+1)*ctx + k_j`` (skipped when that row is past the end).

This is a proxy, not a benchmark: after a real jump the run leaves the recorded trajectory. It
costs seconds and ranks checkpoints the way steps-to-target does on the cases we measured (see
``docs/metatraining.md``); ``benchmarks/jump_error.py`` prints the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..nowcasters import load_checkpoint
from ..optim import horizon_schedule

if TYPE_CHECKING:  # pragma: no cover - annotations only: nowcast.metatrain's training imports this module
    from .dataset import MetaDataset, WindowItem

__all__ = ["JumpErrors", "JumpScore", "jump_errors", "jump_windows", "load_comparable"]

Predictor = Callable[..., torch.Tensor]


def load_comparable(paths: Iterable[str]) -> tuple[dict[str, Any], int, int]:
    """Load checkpoints to compare on the same windows: ``({name: model}, ctx, seq_len)``, each
    named after its file or folder; they must share ``(ctx, seq_len)``."""
    models = {Path(p).stem or p: load_checkpoint(p) for p in paths}
    shapes = {(m.config.ctx, m.config.seq_len) for m in models.values()}
    if len(shapes) != 1:
        raise ValueError(f"the checkpoints differ in (ctx, seq_len): {sorted(shapes)}; compare like with like")
    ctx, seq_len = shapes.pop()
    return models, ctx, seq_len


def jump_windows(dataset: MetaDataset) -> list[tuple[int, int, int]]:
    """``(window index, jump j, horizon k_j)`` for every jump of every trajectory of ``dataset``
    whose target snapshot was recorded (each trajectory with its own length's schedule;
    ``dataset.windows[index].traj`` says which trajectory). ``dataset.spacing`` must be 1."""
    if dataset.spacing != 1:
        raise ValueError("jump_windows needs consecutive snapshots (MetaDataset spacing=1)")
    ctx = dataset.ctx
    by_start = {(w.traj, w.start): i for i, w in enumerate(dataset.windows)}
    out: list[tuple[int, int, int]] = []
    for t, traj in enumerate(dataset.trajectories):
        n = traj.n_snapshots
        every = int(traj.meta["every"])
        steps = (n - 1) * every
        ks = horizon_schedule(max(steps, ctx * every), ctx * every, dataset.seq_len)
        for j, k in enumerate(ks):
            start, last = j * ctx + 1, (j + 1) * ctx
            if last + k < n and (t, start) in by_start:
                out.append((by_start[(t, start)], j, k))
    return out


@dataclass
class JumpErrors:
    """Mean L1 error (scaled units, parameter slots only) of each jump, over trajectories.

    ``errors[name][j]`` is the predictor's mean error at jump ``j`` (None where no trajectory
    reaches it); ``horizons[j]`` the horizon; ``counts[j]`` the number of trajectories;
    ``zero`` is the no-change prediction (the size of the true change).
    """

    horizons: list[int]
    counts: list[int]
    errors: dict[str, list[float | None]]

    def mean(self, name: str) -> float:
        """Mean over the jumps that were measured."""
        vals = [v for v in self.errors[name] if v is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    def gain(self, name: str, jump: int | None = None) -> float:
        """Share of the no-change error removed: ``1 - error / zero`` (at one jump, or over all)."""
        if jump is None:
            return 1.0 - self.mean(name) / self.mean("zero")
        e, z = self.errors[name][jump], self.errors["zero"][jump]
        return float("nan") if e is None or z is None else 1.0 - e / z

    def table(self) -> str:
        """The errors per jump, the mean, and the first jump's gain over no change."""
        names = list(self.errors)
        width = max(len("(trajectories)"), *(len(n) for n in names))
        head = f"{'predictor':<{width}} " + " ".join(f"k={k:<5}" for k in self.horizons) + "    mean  first-jump gain  mean gain"
        lines = [head, f"{'(trajectories)':<{width}} " + " ".join(f"{c:<7}" for c in self.counts)]
        for n in names:
            cells = " ".join(f"{v:<7.4f}" if v is not None else f"{'-':<7}" for v in self.errors[n])
            gains = "" if n == "zero" else f"  {100 * self.gain(n, 0):>+14.1f}%  {100 * self.gain(n):>+8.1f}%"
            lines.append(f"{n:<{width}} {cells} {self.mean(n):>7.4f}{gains}")
        return "\n".join(lines)


def _error(item: WindowItem, out: torch.Tensor, k: int) -> float:
    e, f = item.slot_mask.shape
    target = item.target.view(e, f, item.seq_len)[:, :, k - 1]
    weight = item.slot_mask.to(target.dtype)
    pred = out.reshape(e, f) - item.last
    return float(((pred - target).abs() * weight).sum() / weight.sum())


@torch.no_grad()
def jump_errors(predictors: dict[str, Predictor], dataset: MetaDataset) -> JumpErrors:
    """:class:`JumpErrors` of each ``predictors[name]`` (a NiNo model: ``model(data, [k])``) on
    the jumps of ``dataset``'s trajectories, plus ``zero`` (no change)."""
    if "zero" in predictors:
        raise ValueError("'zero' names the no-change baseline; call your predictor something else")
    shapes = {(t.n_snapshots, int(t.meta["every"])) for t in dataset.trajectories}
    if len(shapes) > 1:
        raise ValueError(
            f"trajectories of different lengths or spacings ({sorted(shapes)} as (snapshots, every)): "
            "measure one task's runs at a time (jump j must mean the same thing in each)"
        )
    pairs = jump_windows(dataset)
    if not pairs:
        raise ValueError("no jump of these trajectories has its target recorded: use longer trajectories")
    n_jumps = max(j for _, j, _ in pairs) + 1
    horizons: list[int] = [0] * n_jumps
    sums: dict[str, list[float]] = {n: [0.0] * n_jumps for n in [*predictors, "zero"]}
    counts = [0] * n_jumps
    for index, j, k in pairs:
        item = dataset[index]
        horizons[j], counts[j] = k, counts[j] + 1
        for name, model in predictors.items():
            sums[name][j] += _error(item, model(item.data, [k]), k)
        sums["zero"][j] += _error(item, item.last.unsqueeze(-1), k)
    errors = {n: [s / c if c else None for s, c in zip(v, counts)] for n, v in sums.items()}
    return JumpErrors(horizons, counts, errors)


class JumpScore:
    """One number per predictor for model selection: the mean over trajectories of
    ``sum_j error_j / sum_j no-change error_j`` (1 = no better than predicting no change; lower is
    better; NaN when no trajectory has a measurable jump). Trajectories of any lengths may be
    mixed: each is scored on its own schedule.
    The windows and the no-change errors are computed once, at construction."""

    def __init__(self, dataset: MetaDataset) -> None:
        self.dataset = dataset
        self.pairs = jump_windows(dataset)  # may be empty: the score is then NaN
        self.trajs = [dataset.windows[i].traj for i, _, _ in self.pairs]
        self.zero = []
        for i, _, k in self.pairs:
            item = dataset[i]  # built once: scaling and edge features are the costly part
            self.zero.append(_error(item, item.last.unsqueeze(-1), k))

    @torch.no_grad()
    def __call__(self, model: Predictor) -> float:
        num: dict[int, float] = {}
        den: dict[int, float] = {}
        for (index, _, k), t, z in zip(self.pairs, self.trajs, self.zero):
            item = self.dataset[index]
            num[t] = num.get(t, 0.0) + _error(item, model(item.data, [k]), k)
            den[t] = den.get(t, 0.0) + z
        return sum(num[t] / den[t] for t in num) / len(num) if num else float("nan")
