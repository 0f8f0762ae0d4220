"""Graph embeddings along a trajectory: :func:`embedding_trajectory` passes windows of snapshots
through a NiNo model's message passing and mean-pools its node and edge states."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from nowcast import NiNoModel
from nowcast.scaling import scale_states

from .trajectory import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["embedding_trajectory"]

log = logging.getLogger(__name__)


def _graph_inputs(model: NiNoModel, graph: NeuralGraph) -> Any:
    """Graph-level inputs of a NiNoModel (edge_index, edge_type, pos, pos_w), as in ``nowcast.predict``."""
    from types import SimpleNamespace

    cfg = model.config
    data = SimpleNamespace(edge_type=graph.edge_type)
    if cfg.gnn:
        data.edge_index = graph.edge_index
        if cfg.lpe > 0:
            if graph.pos is None:
                raise ValueError(
                    "this NiNo model uses Laplacian positional encodings but the graph was built with lpe=0: "
                    "convert the network with lpe=8"
                )
            data.pos = graph.pos[:, : cfg.lpe]
        if cfg.wte_pos_enc:
            data.pos_w = graph.pos_w
    return data


def _slot_mask(graph: NeuralGraph) -> np.ndarray:
    """``[E, F]`` bool: which feature slots of every edge hold values (its block's kernel size)."""
    import torch

    sizes = torch.tensor([b.feat_size for b in graph.blocks], dtype=torch.long)
    counts = torch.tensor([b.num_edges for b in graph.blocks], dtype=torch.long)
    per_edge = torch.repeat_interleave(sizes, counts)
    return torch.arange(graph.max_feat_size).unsqueeze(0) < per_edge.unsqueeze(1)


def embedding_trajectory(
    model: NiNoModel,
    graph: NeuralGraph,
    trajectory: Trajectory,
    *,
    ctx: int | None = None,
    stride: int = 1,
    name: str | None = None,
) -> Trajectory:
    """Graph embeddings of a trajectory: one vector per window of ``ctx`` consecutive snapshots.

    Each window ``params[i - ctx + 1 .. i]`` is prepared exactly as for a NiNo prediction
    (per-tensor scaling with :func:`nowcast.scaling.scale_states`, edge features with
    ``graph.edge_features``), passed through :meth:`nowcast.NiNoModel.embed`, and mean-pooled:
    the vector is ``[mean of node states, mean of edge states]`` (``2 * hid`` values; WNN+
    models have no nodes: the mean of edge states over the feature slots that hold values,
    ``hid`` values).

    Args:
        model: a NiNo / WNN+ model (random, or from :func:`nowcast.load`); not modified.
        graph: the trained network's neural graph (``neuralgraph.convert(network)``).
        trajectory: snapshots in the graph's flat parameter order.
        ctx: snapshots per window: ``model.config.ctx`` (default), or 1 — every snapshot on its
            own, repeated ``ctx`` times (a still history).
        stride: take every ``stride``-th window (windows ending at a jump, and the last
            window, are always taken).
        name: name of the returned trajectory (default: the input's name).

    Returns:
        a :class:`Trajectory` whose ``params`` are the embeddings ``[W, D]``; its steps are the
        steps of each window's last snapshot; jumps and metrics are carried over.
    """
    import torch

    if not isinstance(model, NiNoModel):
        raise TypeError(f"model must be a nowcast.NiNoModel, got {type(model).__name__}")
    cfg = model.config
    window = cfg.ctx if ctx is None else int(ctx)
    if window not in (1, cfg.ctx):
        raise ValueError(f"ctx must be the model's ctx ({cfg.ctx}) or 1 (each snapshot alone), got {ctx}")
    if trajectory.num_params != graph.num_params:
        raise ValueError(
            f"trajectory '{trajectory.name}' has {trajectory.num_params} parameters but the {graph.arch} graph has "
            f"{graph.num_params}"
        )
    if len(trajectory) < window:
        raise ValueError(f"trajectory '{trajectory.name}' has {len(trajectory)} snapshots, fewer than ctx={window}")
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    ends = np.arange(window - 1, len(trajectory), stride)
    # keep the windows that end at a jump (and the last one) whatever the stride
    extra = np.flatnonzero(trajectory.is_jump)
    ends = np.union1d(ends, extra[extra >= window - 1])
    ends = np.union1d(ends, [len(trajectory) - 1])
    data = _graph_inputs(model, graph)
    mask = None if cfg.gnn else _slot_mask(graph)
    params = torch.from_numpy(trajectory.params)
    device = next(model.parameters()).device
    rows = []
    with torch.no_grad():
        for end in ends.tolist():
            states = params[end - window + 1 : end + 1].T.contiguous()  # [P, window]
            if window == 1:
                states = states.expand(-1, cfg.ctx)
            scaled, _ = scale_states(states.to(device), graph.params)
            data.edge_attr = graph.edge_features(scaled)
            emb = model.embed(data)
            if emb.nodes is not None:
                vec = torch.cat([emb.nodes.mean(0), emb.edges.mean(0)])
            else:
                m = mask[:, : emb.edges.shape[1]].to(emb.edges.device, emb.edges.dtype).unsqueeze(-1)
                vec = (emb.edges * m).sum((0, 1)) / m.sum().clamp(min=1)
            rows.append(vec.to("cpu", torch.float32).numpy())
    steps = trajectory.steps[ends]
    metrics = {k: v[ends] for k, v in trajectory.metrics.items()}
    log.debug("embedded %d windows of '%s' (dim %d)", len(rows), trajectory.name, rows[0].size)
    return Trajectory(name or trajectory.name, steps, np.stack(rows), trajectory.jump_steps, metrics)
