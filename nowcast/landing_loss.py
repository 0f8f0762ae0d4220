"""The task loss where a prediction lands: a meta-training term that judges a jump by its network.

The L1 loss on scaled changes (:func:`nowcast.metatrain.window_loss`) weighs every parameter's
error the same, whatever it does to the network. :mod:`nowcast.jump_landing` shows that this
misses what matters: every checkpoint of ours lands its jumps on networks worse than the one it
jumped from, and the published checkpoint, whose jump errors are larger in the short regime,
lands on better ones. :class:`LandingLoss` scores a prediction by the network it produces: the
predicted state at one horizon is mapped back to the task network's parameters (a gather and the
window's per-tensor unscaling, both differentiable), the network runs on a batch of the task's
training data, and the result is its loss minus the loss of the recorded state at that horizon
(the *excess*: 0 when the jump lands as well as the base optimizer did; the reference carries no
gradient). :class:`LandingScore` averages the same excess over the jumps the optimizer wrapper
would make along validation runs (:func:`nowcast.jump_error.jump_windows`), for model selection.

    landing = LandingLoss(seed=0)
    excess = landing(item, out[:, :, -1], meta, key=step)   # out: the model's [E, F, K] output
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call

from .jump_error import jump_windows
from .scaling import unscale
from .tasks import get_task

if TYPE_CHECKING:  # pragma: no cover - annotations only: nowcast.metatrain's training imports this module
    from .metatrain.dataset import MetaDataset, WindowItem

__all__ = ["LandingLoss", "LandingScore", "param_slots"]

log = logging.getLogger(__name__)

_VAL_KEYS = 1_000_000_000  # validation batches never coincide with training ones (keys = steps)


def param_slots(graph: Any, slot_mask: torch.Tensor) -> torch.Tensor:
    """For every parameter element (flat-vector order) the position of its edge slot in the
    flattened ``[E, F]`` edge features: ``edge_values.reshape(-1)[param_slots(...)]`` reads a
    state back out of edge values, as ``graph.to_params`` does, but as one differentiable gather."""
    labels = graph.edge_features(torch.arange(graph.num_params, dtype=torch.float64)).reshape(-1)
    where = torch.nonzero(slot_mask.reshape(-1)).flatten()
    owners = labels[where].round().long()
    index = torch.full((graph.num_params,), -1, dtype=torch.long)
    index[owners] = where
    if owners.numel() != graph.num_params or bool((index < 0).any()):
        raise ValueError(f"the {graph.arch} graph does not hold every parameter in exactly one edge slot")
    return index


class LandingLoss:
    """Excess task loss of the network a prediction lands on (module docstring).

    Args:
        data_dir: where the tasks' data live (default: the usual search path).
        seed: with the ``key`` of each call, picks the training batch (one of the task's own
            batches, its usual size), so a run that is resumed sees the same batches.
    """

    def __init__(self, *, data_dir: str | os.PathLike | None = None, seed: int = 0) -> None:
        self.data_dir = data_dir
        self.seed = int(seed)
        self._tasks: dict[str, tuple[Any, nn.Module]] = {}
        self._slots: dict[int, tuple[Any, torch.Tensor]] = {}  # id -> (graph, slots): the graph is kept, so its id stays its own

    def task(self, name: str) -> tuple[Any, nn.Module]:
        """``(data, network)`` of a task, loaded once; the network only lends its structure."""
        if name not in self._tasks:
            task = get_task(name)
            data = task.load_data(self.data_dir)
            network = task.model(seed=0).eval()
            for p in network.parameters():
                p.requires_grad_(False)
            self._tasks[name] = (data, network)
            log.info("landing loss: loaded %s", name)
        return self._tasks[name]

    def params(self, item: WindowItem, scaled: torch.Tensor) -> torch.Tensor:
        """The flat parameter vector ``[P]`` of scaled edge values ``[E, F]`` of ``item``'s graph."""
        key = id(item.graph)
        if key not in self._slots:
            self._slots[key] = (item.graph, param_slots(item.graph, item.slot_mask))
        return unscale(scaled.reshape(-1)[self._slots[key][1]], item.scales)

    def task_loss(self, meta: dict[str, Any], flat: torch.Tensor, batch: Any) -> torch.Tensor:
        """The task's training loss of the network with parameters ``flat`` on ``batch``."""
        data, network = self.task(meta["task"])
        named: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape in meta["architecture"]["params"]:
            n = int(torch.Size(shape).numel())
            named[name] = flat[offset : offset + n].view(*shape)
            offset += n
        return data.loss(lambda *args: functional_call(network, named, args), batch)

    def batch(self, task: str, key: int) -> Any:
        data, _ = self.task(task)
        return next(iter(data.batches(self.seed * 1_000_003 + int(key))))

    def __call__(self, item: WindowItem, predicted: torch.Tensor, meta: dict[str, Any], *, horizon: int, key: int) -> torch.Tensor:
        """Excess loss of the prediction ``predicted`` (``[E, F]`` scaled, the model's output at
        ``horizon``) over the recorded state at that horizon, on the training batch ``key``."""
        e, f = item.slot_mask.shape
        if not 1 <= horizon <= item.seq_len or not bool(item.horizon_mask[horizon - 1]):
            raise ValueError(f"window {item.window} has no recorded state at horizon {horizon}")
        if predicted.shape != (e, f):
            raise ValueError(f"expected a predicted state of shape [{e}, {f}], got {tuple(predicted.shape)}")
        batch = self.batch(meta["task"], key)
        with torch.no_grad():
            recorded = item.last + item.target.view(e, f, item.seq_len)[:, :, horizon - 1]
            reference = self.task_loss(meta, self.params(item, recorded), batch)
        return self.task_loss(meta, self.params(item, predicted), batch) - reference


class LandingScore:
    """Mean excess task loss over the jumps the optimizer wrapper would make along ``dataset``'s
    trajectories (lower is better; 0 = as good as where the base optimizer was), each jump on
    ``batches`` fixed training batches. For model selection (``select="val_landing"``)."""

    def __init__(self, dataset: MetaDataset, landing: LandingLoss, *, batches: int = 4) -> None:
        self.dataset = dataset
        self.landing = landing
        self.batches = int(batches)
        self.pairs = jump_windows(dataset)

    @torch.no_grad()
    def __call__(self, model: Any) -> float:
        if not self.pairs:
            return float("nan")
        total = 0.0
        for n, (index, _, k) in enumerate(self.pairs):
            item = self.dataset[index]
            meta = self.dataset.trajectories[item.window.traj].meta
            out = model(item.data, [k])[:, :, 0]
            total += sum(float(self.landing(item, out, meta, horizon=k, key=_VAL_KEYS + n * self.batches + b)) for b in range(self.batches))
        return total / (len(self.pairs) * self.batches)
