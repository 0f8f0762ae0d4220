"""NiNo's forward pass for large graphs: no ``E x hid`` buffer, no per-edge gathers.

Two ideas (``docs/design.md``, "NiNo"):

* **Streaming.** Node states of every layer are kept (``N x hid``, small); the edge states an
  edge chunk needs are recomputed from its inputs in every pass. Only the layers that feed an edge
  update can reach the head, so with the published 3 layers and 2 edge updates there are three
  passes: aggregate layer 0, aggregate layer 1, predict.
* **Blocks.** A neural graph's edges come in blocks (dense, star, diagonal) between contiguous
  node ranges, with one edge type per block. Given ``data.blocks`` (see
  :meth:`neuralgraph.NeuralGraph.block_table`), per-node terms are broadcast over a block's
  rows instead of gathered per edge, messages are summed over a dense block's source axis instead
  of scattered, and the edge-type embedding is a per-block constant. The initial edge embedding
  is folded into the first linear map that reads it (``W_next @ W_proj``), so it never exists.

The result equals the stored computation up to float rounding (the folded matrices round
differently, ~1e-6 relative).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["DENSE", "DIAGONAL", "STAR", "STREAM_CHUNK", "EdgeTensorSource", "Piece", "pieces", "streamed_forward"]

DENSE, STAR, DIAGONAL = 0, 1, 2

STREAM_CHUNK = 4096
"""Edges per piece by default: 4096 x 128 floats stay in cache through a piece's chain of
operations; on the 2-core benchmark machine 2-4K edges ran 2.7x faster than 64K."""


class Piece(NamedTuple):
    """Consecutive edges of one block, processed together."""

    start: int  # first edge id
    stop: int  # one past the last edge id
    src: slice  # source nodes (a dense piece: its rows; a star: the one source)
    dst: slice  # target nodes
    rows: int  # dense: source rows in the piece (``rows x n_dst`` edges, source-major); else 0
    etype: int
    block: int  # row of the block table
    lo: int  # range along the block's first axis: dense source rows, else edges
    hi: int


def pieces(blocks: torch.Tensor, chunk: int) -> Iterator[Piece]:
    """The pieces of at most about ``chunk`` edges that cover a block table, in edge order."""
    for i, (start, count, s0, ns, d0, nd, kind, etype) in enumerate(blocks.tolist()):
        if count == 0:
            continue
        if kind == DENSE:
            rows = max(1, chunk // max(nd, 1))
            for r in range(0, ns, rows):
                r2 = min(ns, r + rows)
                yield Piece(start + r * nd, start + r2 * nd, slice(s0 + r, s0 + r2), slice(d0, d0 + nd), r2 - r,
                            etype, i, r, r2)
        else:
            step = max(1, chunk)
            for a in range(0, count, step):
                b = min(count, a + step)
                src = slice(s0, s0 + 1) if kind == STAR else slice(s0 + a, s0 + b)
                yield Piece(start + a, start + b, src, slice(d0 + a, d0 + b), 0, etype, i, a, b)


class EdgeTensorSource:
    """Edge inputs from a ``[E, F, ctx]`` tensor (``data.edge_attr``); changes into ``[E, F, K]``.

    The other source, :class:`nowcast.model.graph_source.GraphStatesSource`, reads a neural graph's
    parameter history block by block instead, so that no ``E``-sized tensor exists at all."""

    def __init__(self, states: torch.Tensor, n_k: int) -> None:
        n_edges, self.n_slots, self.ctx = states.shape
        self.flat = states.reshape(n_edges, self.n_slots * self.ctx)
        self.out = states.new_empty(n_edges, self.n_slots, n_k)

    def slots(self, piece: Piece) -> int:
        return self.n_slots

    def read(self, piece: Piece) -> torch.Tensor:
        return self.flat[piece.start : piece.stop]

    def write(self, piece: Piece, delta: torch.Tensor, inputs: torch.Tensor) -> None:
        self.out[piece.start : piece.stop] = delta


def _pair(src_term: torch.Tensor, dst_term: torch.Tensor, rows: int) -> torch.Tensor:
    """``src_term[s] + dst_term[d]`` for every edge of a piece, as ``[edges, h]``."""
    if rows:  # dense: [rows, 1, h] + [1, nd, h]
        return (src_term.unsqueeze(1) + dst_term.unsqueeze(0)).reshape(-1, dst_term.shape[-1])
    return src_term + dst_term  # star (broadcast of one source) or diagonal


def _fold(next_linear: torch.nn.Linear, proj_weight: torch.Tensor, proj_bias: torch.Tensor, width: int,
          type_table: torch.Tensor | None):
    """``next(proj(x) + type_emb)`` as one map: weight [out, width], per-type bias [types, out]."""
    weight = next_linear.weight @ proj_weight[:, :width]
    bias = next_linear.weight @ proj_bias + next_linear.bias
    per_type = bias.unsqueeze(0) if type_table is None else type_table @ next_linear.weight.T + bias
    return weight, per_type


def _in_degrees(blocks: torch.Tensor, n_nodes: int, like: torch.Tensor) -> torch.Tensor:
    counts = torch.zeros(n_nodes, dtype=like.dtype, device=like.device)
    for start, count, s0, ns, d0, nd, kind, _ in blocks.tolist():
        counts[d0 : d0 + nd] += ns if kind == DENSE else 1
    return counts.clamp_(min=1).unsqueeze(1)


NODE_CHUNK = 1 << 14
"""Nodes per row chunk of a node update: its temporaries stay small next to the node states."""


def _update_nodes(conv: Any, x: torch.Tensor, total: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """A layer's node update ``silu(lin(post([x || total / counts])))``, row chunk by row chunk,
    written over ``total``: no ``[N, 2 * hid]`` concatenation or other whole-graph temporary."""
    post = conv.post_nns[0][0]
    for i in range(0, x.shape[0], NODE_CHUNK):
        rows = slice(i, i + NODE_CHUNK)
        total[rows] = F.silu(conv.lin(post(torch.cat([x[rows], total[rows] / counts[rows]], dim=-1))))
    return total


def streamed_forward(model: Any, data: Any, source: Any, horizons: torch.Tensor, chunk: int,
                     progress: Any = None) -> None:
    """Predicted changes of a GNN :class:`nowcast.NiNoModel` over ``data.blocks``, handed to
    ``source.write`` piece by piece (``source``: :class:`EdgeTensorSource` or any object with
    ``slots``, ``read`` and ``write``; ``progress``: called with the edges of each piece done)."""
    cfg = model.config
    blocks = data.blocks.to(torch.long).cpu()
    gnn = model.gnn
    updates = list(gnn.edge_update)
    proj_weight, proj_bias = model.edge_proj.fc[0].weight, model._edge_bias(data)
    table = model.layer_embed.weight if cfg.edge_types > 0 else None
    x = model._node_features(data)
    n_nodes = x.shape[0]
    counts = _in_degrees(blocks, n_nodes, x)
    # a piece of k slots reads the first k * ctx input columns (the same as zero padding); the
    # folded maps are made once per width: layer-0 messages and the first edge update straight from inputs
    first_enc = functools.cache(lambda width: _fold(gnn.convs[0].edge_encoder, proj_weight, proj_bias, width, table))
    first_upd = functools.cache(lambda width: _fold(updates[0].lin_e, proj_weight, proj_bias, width, table))
    head_rows = functools.cache(lambda slots: model._head_rows(slots, horizons))
    update_terms: list[tuple[torch.Tensor, torch.Tensor]] = []
    kind = (lambda p: p.etype) if table is not None else (lambda p: 0)

    def edge_states(p: Piece, inputs: torch.Tensor, depth: int) -> torch.Tensor:
        """Edge states after ``depth`` edge updates (depth >= 1)."""
        weight, per_type = first_upd(inputs.shape[1])
        z = F.linear(inputs, weight, per_type[kind(p)])
        s_term, t_term = update_terms[0]
        e = updates[0].lin1(F.silu(z + _pair(s_term[p.src], t_term[p.dst], p.rows)))
        for u in range(1, depth):
            s_term, t_term = update_terms[u]
            e = updates[u].lin1(F.silu(updates[u].lin_e(e) + _pair(s_term[p.src], t_term[p.dst], p.rows)))
        return e

    for layer in range(len(updates)):
        conv = gnn.convs[layer]
        pre = conv.pre_nns[0][0]
        target_term = F.linear(x, pre.weight[:, : conv.hid], pre.bias)
        source_term = F.linear(x, pre.weight[:, conv.hid :])
        total = x.new_zeros(n_nodes, conv.hid)
        for p in pieces(blocks, chunk):
            inputs = source.read(p)
            if layer == 0:
                weight, per_type = first_enc(inputs.shape[1])
                enc = F.linear(inputs, weight, per_type[kind(p)])
            else:
                enc = conv.edge_encoder(edge_states(p, inputs, layer))
            scale, shift = enc.chunk(2, dim=-1)
            message = torch.addcmul(shift, scale, _pair(source_term[p.src], target_term[p.dst], p.rows))
            if p.rows:
                total[p.dst] += message.reshape(p.rows, -1, conv.hid).sum(0)
            else:
                total[p.dst] += message
            if progress is not None:
                progress(p.stop - p.start)
        del target_term, source_term  # node states kept: x, the update terms, one aggregate
        x = _update_nodes(conv, x, total, counts)
        update_terms.append((updates[layer].lin_s(x), updates[layer].lin_t(x)))
    x = total = None  # the last pass reads the update terms only

    n_k = horizons.numel()
    for p in pieces(blocks, chunk):
        inputs = source.read(p)
        slots = source.slots(p)
        if updates:
            e = edge_states(p, inputs, len(updates))
        else:
            e = F.linear(inputs, proj_weight[:, : inputs.shape[1]], proj_bias)
            if table is not None:
                e = e + table[p.etype]
        weight, bias = head_rows(slots)
        delta = F.linear(model.edge_out.hidden(e), weight, bias)
        source.write(p, delta.reshape(p.stop - p.start, slots, n_k), inputs)
        if progress is not None:
            progress(p.stop - p.start)
