"""Nowcasting under ``torch.distributed``: one prediction, the same parameters on every rank.

Under data parallelism (DDP) every rank holds the whole model and the same parameters. A jump
must keep it so: :func:`predict_synced` computes the prediction once and broadcasts it, so all
ranks write bit-identical values. Two ways to share the work (``split``):

- ``split=False`` (default): rank 0 predicts the whole model and broadcasts the ``[P]`` vector;
- ``split=True``: the parts of ``graph.layers()`` (:func:`nowcast.parts.layer_parts`) are dealt
  out to the ranks (largest first, to the least loaded rank); each rank predicts its parts and
  broadcasts the values it owns. The result equals per-block prediction on one process.

A failure on the computing rank(s) (an error in the predictor) is announced to all ranks before
any parameter is written, so no rank waits forever and none writes a partial result. Before
predicting, the ranks compare their latest state (sum and norm): ranks holding different
parameters are not data-parallel replicas, and each then nowcasts its own, with a warning.

Sharded models are refused (:func:`unwrap_model`): FSDP (its flat parameters or DTensor shards),
DeepSpeed ZeRO-3 partitions. Nowcasting one shard alone would predict from a piece of the graph
(wrong for NiNo), and a gathered prediction would need the whole model on one rank anyway.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .parts import GraphPart, context_hops, layer_parts
from .predict import predict

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["assign_parts", "is_distributed", "predict_synced", "rank", "unwrap_model", "world_size"]

log = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], int], Iterable[Any]]
"""Wraps the iterable of parts being predicted (``(iterable, total) -> iterable``), e.g. a tqdm bar."""

_WRAPPERS = ("DistributedDataParallel", "DataParallel")


def is_distributed() -> bool:
    """Whether a process group with more than one rank is set up."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


# ------------------------------------------------------------------------------ models
def _fsdp_classes() -> tuple[type, ...]:
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # torch without distributed support
        return ()
    return (FullyShardedDataParallel, FSDPModule)


def _sharding(model: nn.Module) -> str | None:
    """What shards ``model``'s parameters, or None."""
    fsdp = _fsdp_classes()
    for module in model.modules():
        if fsdp and isinstance(module, fsdp):
            return f"FSDP ({type(module).__name__})"
    for name, p in model.named_parameters():
        if type(p).__name__ == "DTensor" or type(getattr(p, "data", None)).__name__ == "DTensor":
            return f"FSDP2 / tensor parallelism (parameter '{name}' is a DTensor shard)"
        if hasattr(p, "ds_id"):
            return f"DeepSpeed (parameter '{name}' is managed by a DeepSpeed engine)"
        if "_flat_param" in name or "_fsdp_wrapped_module" in name:
            return f"FSDP (flat parameter '{name}')"
    return None


def unwrap_model(model: nn.Module, what: str = "model") -> nn.Module:
    """The module under DDP / DataParallel wrappers; sharded models are refused.

    Raises:
        NotImplementedError: the parameters are sharded (FSDP, FSDP2, tensor parallelism,
            DeepSpeed); the message says what to use instead.
    """
    while type(model).__name__ in _WRAPPERS and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    sharded = _sharding(model)
    if sharded is not None:
        raise NotImplementedError(
            f"{what} is sharded by {sharded}: nowcasting needs every parameter whole on each rank. Train with "
            "DDP (torchrun without fsdp / deepspeed options), or nowcast a model whose parameters fit on one "
            "device; see docs/trainer.md, 'Distributed training'"
        )
    return model


# ------------------------------------------------------------------------------ work split
def assign_parts(parts: Sequence[GraphPart], ranks: int) -> list[int]:
    """Rank computing each part: largest first, to the least loaded rank (ties: the lower rank)."""
    if ranks < 1:
        raise ValueError(f"ranks must be a positive integer, got {ranks!r}")
    load = [0] * ranks
    owner = [0] * len(parts)
    for i in sorted(range(len(parts)), key=lambda i: (-parts[i].num_params, i)):
        r = min(range(ranks), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += parts[i].num_params
    return owner


def _owned_segments(parts: Sequence[GraphPart], owner: Sequence[int], r: int) -> list[tuple[int, int]]:
    return [seg for part, o in zip(parts, owner) if o == r for seg, own in zip(part.segments, part.owned) if own]


def _comm_device() -> torch.device:
    """Where collectives run: the current CUDA device for NCCL, the CPU otherwise (gloo)."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------ prediction
def _predict_parts(
    parts: Sequence[GraphPart], states: torch.Tensor, k: int, predictor: Any, lr_interval: float | None,
    out: torch.Tensor, progress: Progress | None,
) -> None:
    todo: Iterable[GraphPart] = parts if progress is None else progress(parts, len(parts))
    for part in todo:
        part.scatter(predict(part.graph, part.gather(states), k, predictor, lr_interval=lr_interval), out)


def _predict_local(
    graph: NeuralGraph | None, states: torch.Tensor, k: int, predictor: Any, per_block: bool,
    parts: Sequence[GraphPart] | None, lr_interval: float | None, progress: Progress | None,
) -> torch.Tensor:
    if not per_block:
        todo: Iterable[None] = [None] if progress is None else progress([None], 1)
        for _ in todo:
            theta = predict(graph, states, k, predictor, lr_interval=lr_interval)
        return theta
    if parts is None:
        if graph is None:
            raise ValueError("per_block=True needs the neural graph (its layers)")
        parts = layer_parts(graph, context_hops=context_hops(predictor))
    out = torch.empty(states.shape[0], dtype=states.dtype, device=states.device)
    _predict_parts(parts, states, k, predictor, lr_interval, out, progress)
    return out


def _replicas_agree(states: torch.Tensor, comm: torch.device) -> bool:
    """Whether every rank holds the same latest state (compared by its sum and norm, without a copy)."""
    last = states.detach()[:, -1]
    mine = torch.zeros(2, dtype=torch.float64, device=last.device)
    for start in range(0, last.shape[0], 1 << 20):  # in chunks: a float64 copy of a big model's state is large
        chunk = last[start : start + (1 << 20)].double()
        mine += torch.stack([chunk.sum(), chunk.square().sum()])
    mine = mine.to(comm)
    both = torch.cat([mine, -mine])
    torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
    return bool(torch.equal(both[:2], -both[2:]))


def _raise_if_failed(error: BaseException | None, failed: bool, where: str) -> None:
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"the nowcast failed on {where} (see that rank's log); no parameter was changed")


def predict_synced(
    graph: NeuralGraph | None,
    states: torch.Tensor,
    k: int,
    predictor: Any,
    *,
    num_params: int,
    per_block: bool = False,
    parts: Sequence[GraphPart] | None = None,
    lr_interval: float | None = None,
    split: bool = False,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The prediction of :func:`nowcast.predict`, identical on every rank.

    Args:
        graph, states, k, predictor, per_block, parts, lr_interval: as for :func:`nowcast.predict`;
            every rank passes its own states (under DDP they are equal).
        num_params: ``P``.
        split: deal the parts of ``graph.layers()`` out to the ranks (needs ``graph`` or ``parts``).
        progress: wraps the iterable of parts predicted on this rank (a progress bar).

    Returns:
        ``[P]`` on the device and in the dtype of ``states``. Without a process group of several
        ranks this is a plain local prediction; so it is, with a ``RuntimeWarning``, when the ranks'
        states differ (the ranks are then not data-parallel replicas, and each nowcasts its own).

    Raises:
        RuntimeError: the prediction failed on another rank (that rank raises the original error).
    """
    if not is_distributed():
        return _predict_local(graph, states, k, predictor, per_block, parts, lr_interval, progress)
    me = rank()
    dtype, device, comm = states.dtype, states.device, _comm_device()
    if not _replicas_agree(states, comm):
        message = (
            "the ranks hold different parameter states, so they are not data-parallel (DDP) replicas: each rank "
            "nowcasts its own parameters"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)
        return _predict_local(graph, states, k, predictor, per_block, parts, lr_interval, progress)
    if split:
        if parts is None:
            if graph is None:
                raise ValueError("split=True needs the neural graph (its layers) or its parts")
            parts = layer_parts(graph, context_hops=context_hops(predictor))
        return _predict_split(parts, states, k, predictor, lr_interval, progress, num_params, dtype, comm, device)
    theta = torch.empty(num_params, dtype=dtype, device=comm)
    error: BaseException | None = None
    if me == 0:
        try:
            theta.copy_(_predict_local(graph, states, k, predictor, per_block, parts, lr_interval, progress))
        except Exception as exc:  # every rank learns of it below, before anything is written
            error = exc
    status = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=comm)
    torch.distributed.broadcast(status, src=0)
    _raise_if_failed(error, bool(status.item()), "rank 0")
    torch.distributed.broadcast(theta, src=0)
    log.debug("rank %d: received the nowcast of %d parameters from rank 0", me, num_params)
    return theta.to(device)


def _predict_split(
    parts: Sequence[GraphPart], states: torch.Tensor, k: int, predictor: Any, lr_interval: float | None,
    progress: Progress | None, num_params: int, dtype: torch.dtype, comm: torch.device, device: torch.device,
) -> torch.Tensor:
    me, ranks = rank(), world_size()
    owner = assign_parts(parts, ranks)
    mine = [part for part, o in zip(parts, owner) if o == me]
    out = torch.zeros(num_params, dtype=dtype, device=device)
    error: BaseException | None = None
    try:
        if mine:
            _predict_parts(mine, states, k, predictor, lr_interval, out, progress)
    except Exception as exc:
        error = exc
    status = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=comm)
    torch.distributed.all_reduce(status, op=torch.distributed.ReduceOp.MAX)
    _raise_if_failed(error, bool(status.item()), "another rank")
    for r in range(ranks):
        segments = _owned_segments(parts, owner, r)
        if not segments:
            continue
        if r == me:
            buffer = torch.cat([out[a:b] for a, b in segments]).to(comm)
        else:
            buffer = torch.empty(sum(b - a for a, b in segments), dtype=dtype, device=comm)
        torch.distributed.broadcast(buffer, src=r)
        if r != me:
            offset = 0
            for a, b in segments:
                out[a:b] = buffer[offset : offset + b - a].to(device)
                offset += b - a
    log.debug("rank %d: predicted %d of %d parts; the others came from their ranks", me, len(mine), len(parts))
    return out
