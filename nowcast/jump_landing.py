"""Where the optimizer wrapper's jumps land: the task metric of the predicted parameters.

The jump error (:mod:`nowcast.jump_error`) measures how far a jump lands from the base
optimizer's future parameters; it does not say whether the network it lands on is any good.
Held-out runs show why that matters: right after a jump the validation metric drops (digits,
FM/32, WikiText-2 alike) and the checkpoints whose jumps drop it least were the ones that saved
the most steps. This module evaluates, along collected trajectories, each jump the wrapper would
make (the same windows and horizons as :func:`nowcast.jump_error.jump_windows`): the task metric
of the last recorded state, of the recorded state at the jump's target step, and of each
predictor's landing point.

    from nowcast.jump_landing import jump_landings
    result = jump_landings({"nino-cpu": nowcast.load("checkpoints/nino-cpu")}, MetaDataset([run_dir]))
    table = result.table()  # a text table, one row per predictor
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .jump_error import jump_windows
from .predict import predict
from .tasks import get_task

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from .metatrain.dataset import MetaDataset

__all__ = ["JumpLandings", "jump_landings", "load_flat"]

log = logging.getLogger(__name__)

LAST, FUTURE = "last state", "base optimizer"
"""Reference columns: the state the jump starts from, and where the base optimizer really was
at the jump's target step."""


def load_flat(network: nn.Module, flat: torch.Tensor, params: list[tuple[str, list[int]]]) -> None:
    """Copy a flat parameter vector into ``network``, tensor by tensor in the order ``params``
    (``[name, shape]`` pairs, a trajectory's ``meta["architecture"]["params"]``)."""
    total = sum(int(torch.Size(shape).numel()) for _, shape in params)
    if flat.numel() != total:
        raise ValueError(f"the flat vector has {flat.numel()} values; the parameter list describes {total}")
    own = dict(network.named_parameters())
    missing = [name for name, _ in params if name not in own]
    if missing:
        raise ValueError(f"the network has no parameter(s) {', '.join(missing[:5])}: is it the trajectory's architecture?")
    offset = 0
    with torch.no_grad():
        for name, shape in params:
            n = int(torch.Size(shape).numel())
            own[name].copy_(flat[offset : offset + n].view(shape))
            offset += n


@dataclass
class JumpLandings:
    """Task metric at every jump: ``rows[i] = (trajectory, jump j, horizon k, {column: metric})``;
    columns are :data:`LAST`, :data:`FUTURE` and the predictors' names."""

    metric: str
    higher_is_better: bool
    columns: list[str]
    rows: list[tuple[str, int, int, dict[str, float]]] = field(default_factory=list)

    def mean(self, column: str) -> float:
        """Mean metric of a column over every jump."""
        values = [r[3][column] for r in self.rows]
        return statistics.fmean(values) if values else float("nan")

    def table(self) -> str:
        """Per-jump metrics and their means, one column per predictor."""
        width = max(12, *(len(c) for c in self.columns))
        head = f"{'trajectory':<34} {'j':>2} {'k':>3} " + " ".join(f"{c:>{width}}" for c in self.columns)
        lines = [f"{self.metric} where each jump lands ({'higher' if self.higher_is_better else 'lower'} is better)", head]
        for traj, j, k, values in self.rows:
            lines.append(f"{traj:<34} {j:>2} {k:>3} " + " ".join(f"{values[c]:>{width}.4f}" for c in self.columns))
        lines.append(f"{'mean':<34} {'':>2} {'':>3} " + " ".join(f"{self.mean(c):>{width}.4f}" for c in self.columns))
        return "\n".join(lines)


def jump_landings(
    predictors: Mapping[str, Any], dataset: MetaDataset, *, data_dir: str | os.PathLike | None = None, seed: int = 0
) -> JumpLandings:
    """Evaluate every jump of every trajectory of ``dataset`` (see the module docstring).

    Args:
        predictors: name -> anything :func:`nowcast.predict` accepts (a NiNo model, ``"linefit"``,
            a :class:`nowcast.Nowcaster`). Regime-conditioned models get each trajectory's
            ``lr_interval``.
        dataset: windows of collected trajectories (``spacing=1``), all of one task.
        data_dir: where the task's data lives (default: the usual search path).
        seed: builds the task network that receives the parameters (its own weights are
            overwritten; the seed only matters for layers without parameters, e.g. dropout).
    """
    reserved = {LAST, FUTURE} & set(predictors)
    if reserved:
        raise ValueError(f"{', '.join(sorted(reserved))} name the reference columns; call your predictor something else")
    tasks = {t.meta["task"] for t in dataset.trajectories}
    if len(tasks) != 1:
        raise ValueError(f"the trajectories belong to {len(tasks)} tasks ({', '.join(sorted(tasks))}); give one task's runs at a time")
    task = get_task(tasks.pop())
    data = task.load_data(data_dir)
    network = task.model(seed=seed).eval()
    result = JumpLandings(task.metric, task.higher_is_better, [LAST, FUTURE, *predictors])

    def score(traj: Any, flat: torch.Tensor) -> float:
        load_flat(network, flat, traj.meta["architecture"]["params"])
        with torch.no_grad():
            return float(data.evaluate(network))

    for index, j, k in jump_windows(dataset):
        window = dataset.windows[index]
        traj = dataset.trajectories[window.traj]
        inputs, futures, _ = dataset.window_states(index)
        values = {LAST: score(traj, inputs[:, -1]), FUTURE: score(traj, futures[:, k - 1])}
        graph = dataset.graph_info(window.traj).graph
        regime = dataset.lr_interval(window.traj)  # predict() hands it only to predictors that read it
        for name, predictor in predictors.items():
            with torch.no_grad():
                landed = predict(graph, inputs, k, predictor, lr_interval=regime)
            values[name] = score(traj, landed) if torch.isfinite(landed).all() else float("nan")
        result.rows.append((traj.run_id, j, k, values))
        log.info("%s jump %d (k=%d): %s", traj.run_id, j, k, values)
    return result
