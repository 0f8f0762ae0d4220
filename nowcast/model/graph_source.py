"""NiNo's inputs read straight from a parameter history, block by block, and its predictions
written straight into a parameter vector: a nowcasting step without any edge-sized tensor.

The whole-graph step builds the scaled history (``[P, ctx]``), the edge features
(``[E, F * ctx]``), ``edge_index`` (``[2, E]`` int64), ``edge_type`` and a ``[E, F]`` output: on
GPT-2 124M that is several copies of the history on top of the history itself. Here
:func:`nowcast.model.streamed.streamed_forward` asks :class:`GraphStatesSource` for each piece of a
block: the piece's parameters are read through the block's strided view of the raw history, scaled
with their tensor's statistics, and its predictions are unscaled and written through the same view
into the output vector. Peak memory is the history, the output vector, the node states and one
piece's working set.

Scaling statistics are computed one parameter tensor at a time (:func:`tensor_statistics`),
in float64 like :func:`nowcast.scaling.scale_states`, whose values they equal up to the order of the
float64 summation (the scaled inputs then agree to float32 rounding).
"""

from __future__ import annotations

from typing import Any

import torch

from ..scaling import DEFAULT_EPS, LayerScales
from .streamed import Piece

__all__ = ["GraphStatesSource", "tensor_statistics"]

_STATS_CHUNK = 1 << 20  # rows per float64 temporary while computing a tensor's statistics (~40 MB at ctx 5)


def _moments(rows: torch.Tensor) -> tuple[float, float]:
    """Mean and unbiased std of all values of ``rows`` ``[n, ctx]``, in float64, in chunks."""
    count = rows.numel()
    total = sum(float(rows[i : i + _STATS_CHUNK].sum(dtype=torch.float64)) for i in range(0, rows.shape[0], _STATS_CHUNK))
    mean = total / count
    if count < 2:
        return mean, 0.0
    squares = 0.0
    for i in range(0, rows.shape[0], _STATS_CHUNK):
        squares += float((rows[i : i + _STATS_CHUNK].to(torch.float64) - mean).square().sum())
    return mean, (squares / (count - 1)) ** 0.5


def tensor_statistics(states: torch.Tensor, params, dtype: torch.dtype | None = None) -> LayerScales:
    """Per-tensor mean and std of a history ``[P, ctx]`` (see :func:`nowcast.scaling.scale_states`),
    one tensor at a time: no ``[P]``-sized temporary. ``dtype``: of the statistics (default: the
    history's)."""
    pairs = [_moments(states[p.offset : p.offset + p.numel]) for p in params]
    stats = torch.tensor(pairs, dtype=torch.float64).reshape(-1, 2)
    sizes = torch.tensor([p.numel for p in params], dtype=torch.long)
    dtype = dtype or states.dtype
    return LayerScales(mean=stats[:, 0].to(dtype), std=stats[:, 1].to(dtype), sizes=sizes)


class GraphStatesSource:
    """A :func:`~nowcast.model.streamed.streamed_forward` source over a neural graph's history.

    Args:
        graph: the neural graph (its blocks, in the order of ``graph.block_table()``).
        states: ``[P, ctx]`` raw history, contiguous, in any floating dtype (a memory-mapped
            tensor works): each piece is cast to the statistics' dtype before scaling.
        scales: per-tensor statistics (:func:`tensor_statistics`), in the dtype to compute in.
        out: ``[P]`` vector the predicted parameters are written into (cast to its dtype).
        dtype: the model's dtype: inputs are scaled in the statistics' dtype, then cast to it,
            and predictions cast back before unscaling (as the whole-graph step does).
        device: the model's device, where inputs are handed (default: the history's). A
            history kept on the host is copied there piece by piece; predictions go back to
            ``out``'s device.
        eps: added to the standard deviation when scaling (as in training).
    """

    def __init__(self, graph: Any, states: torch.Tensor, scales: LayerScales, out: torch.Tensor, *,
                 dtype: torch.dtype | None = None, device: torch.device | None = None,
                 eps: float = DEFAULT_EPS) -> None:
        self.blocks = graph.blocks
        self.states, self.out, self.eps = states, out, eps
        self.dtype = dtype or states.dtype
        self.device = device or states.device
        self.ctx = states.shape[1]
        mean, std = scales.mean.to(self.device), scales.std.to(self.device)
        self.stats = {p.name: (mean[i], std[i]) for i, p in enumerate(graph.params)}
        self.work = scales.mean.dtype

    def slots(self, piece: Piece) -> int:
        return self.blocks[piece.block].feat_size

    def _parts(self, piece: Piece):
        return self.blocks[piece.block].view[piece.lo : piece.hi].parts

    def read(self, piece: Piece) -> torch.Tensor:
        """Scaled inputs ``[edges, slots * ctx]`` of a piece (column ``f * ctx + t``)."""
        block, edges = self.blocks[piece.block], piece.stop - piece.start
        if block.view is None:  # auxiliary edges: their fixed value in every state, never scaled
            return torch.full((edges, self.ctx), block.value, dtype=self.dtype, device=self.device)
        columns = []
        for part in self._parts(piece):
            mean, std = self.stats[part.name]
            raw = part.read_states(self.states).reshape(edges, -1, self.ctx).to(self.device, self.work)
            columns.append((raw - mean) / (std + self.eps))
        scaled = columns[0] if len(columns) == 1 else torch.cat(columns, dim=1)
        return scaled.reshape(edges, -1).to(self.dtype)

    def write(self, piece: Piece, delta: torch.Tensor, inputs: torch.Tensor) -> None:
        """Last scaled state plus the predicted change (one horizon), unscaled, into ``out``."""
        block, edges = self.blocks[piece.block], piece.stop - piece.start
        if block.view is None:
            return
        scaled = (delta[:, :, 0] + inputs.view(edges, -1, self.ctx)[:, :, -1]).to(self.work)
        slot = 0
        for part in self._parts(piece):
            mean, std = self.stats[part.name]
            width = part.shape[-1]
            part.write(self.out, (scaled[:, slot : slot + width] * std + mean).reshape(part.shape).to(self.out.device))
            slot += width
