"""NiNo message passing: modulated convolutions with mean aggregation, and edge updates.

Layer ``l`` (``docs/design.md``, "NiNo"), for an edge ``j -> i`` with embedding ``e``:

- message ``m = s * (P [x_i || x_j]) + t`` with ``(s, t) = split(edge_encoder(e))``;
- ``a_i`` = mean of the messages over the incoming edges of ``i`` (0 for a node without any);
- ``x_i <- lin(Post [x_i || a_i])``, then SiLU unless it is the last layer without an edge update;
- after layers ``0..L-2`` (all layers with ``final_edge_update``) the edges update:
  ``e <- lin1(SiLU(lin_e(e) + lin_s(x_src) + lin_t(x_dst)))``.

``P [x_i || x_j]`` is split into two per-node products (``P_i x`` and ``P_j x``), computed once
per node and gathered per edge. Everything that is ``E x hidden`` wide is processed in chunks
of ``edge_chunk`` edges; chunking changes only the order in which work is done, not the math.
Parameter names follow the published checkpoints (``convs.{l}.edge_encoder``,
``convs.{l}.pre_nns.0.0``, ``convs.{l}.post_nns.0.0``, ``convs.{l}.lin``,
``edge_update.{l}.{lin_e,lin_s,lin_t,lin1}``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EdgeUpdate", "GraphNetwork", "ModulatedConv", "chunk_ranges"]


def chunk_ranges(total: int, chunk: int | None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in pieces of at most ``chunk``.

    ``chunk`` of None or <= 0 means one piece.
    """
    if chunk is None or chunk <= 0 or chunk >= total:
        if total > 0:
            yield 0, total
        return
    for start in range(0, total, chunk):
        yield start, min(start + chunk, total)


class ModulatedConv(nn.Module):
    """One message-passing layer: edge-modulated messages, mean aggregation, node update."""

    def __init__(self, hid: int) -> None:
        super().__init__()
        self.hid = hid
        self.edge_encoder = nn.Linear(hid, 2 * hid)
        self.pre_nns = nn.ModuleList([nn.Sequential(nn.Linear(2 * hid, hid))])
        self.post_nns = nn.ModuleList([nn.Sequential(nn.Linear(2 * hid, hid))])
        self.lin = nn.Linear(hid, hid)

    def aggregate(
        self,
        x: torch.Tensor,
        edges: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        edge_chunk: int | None,
    ) -> torch.Tensor:
        """Mean of the messages arriving at every node: ``[N, hid]``."""
        pre = self.pre_nns[0][0]
        h = self.hid
        # P [x_i || x_j] = P_i x_i + P_j x_j + b, both products per node.
        target_term = F.linear(x, pre.weight[:, :h], pre.bias)
        source_term = F.linear(x, pre.weight[:, h:])
        total = x.new_zeros(x.shape[0], h)
        for start, stop in chunk_ranges(edges.shape[0], edge_chunk):
            scale, shift = self.edge_encoder(edges[start:stop]).chunk(2, dim=-1)
            d = dst[start:stop]
            message = torch.addcmul(shift, scale, target_term[d] + source_term[src[start:stop]])
            total.index_add_(0, d, message)
        count = torch.bincount(dst, minlength=x.shape[0]).clamp_(min=1).to(total.dtype)
        return total / count.unsqueeze(1)

    def forward(
        self,
        x: torch.Tensor,
        edges: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        edge_chunk: int | None = None,
    ) -> torch.Tensor:
        """New node states ``[N, hid]`` (before the activation)."""
        aggregated = self.aggregate(x, edges, src, dst, edge_chunk)
        return self.lin(self.post_nns[0][0](torch.cat([x, aggregated], dim=-1)))


class EdgeUpdate(nn.Module):
    """``e <- lin1(SiLU(lin_e(e) + lin_s(x_src) + lin_t(x_dst)))``."""

    def __init__(self, hid: int) -> None:
        super().__init__()
        self.lin_e = nn.Linear(hid, hid)
        self.lin_s = nn.Linear(hid, hid)
        self.lin_t = nn.Linear(hid, hid)
        self.lin1 = nn.Linear(hid, hid)

    def forward(
        self,
        x: torch.Tensor,
        edges: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        edge_chunk: int | None = None,
    ) -> torch.Tensor:
        """Updated edge states ``[E, hid]``.

        Without autograd the update is written into ``edges`` chunk by chunk (no second
        ``E x hid`` buffer); with autograd a new tensor is returned.
        """
        source_term = self.lin_s(x)
        target_term = self.lin_t(x)
        out = edges if not torch.is_grad_enabled() else torch.empty_like(edges)
        for start, stop in chunk_ranges(edges.shape[0], edge_chunk):
            z = self.lin_e(edges[start:stop])
            z = z + source_term[src[start:stop]]
            z = z + target_term[dst[start:stop]]
            out[start:stop] = self.lin1(F.silu(z))
        return out


class GraphNetwork(nn.Module):
    """``layers`` modulated convolutions and the edge updates between them."""

    def __init__(self, hid: int, layers: int, final_edge_update: bool = False) -> None:
        super().__init__()
        self.convs = nn.ModuleList([ModulatedConv(hid) for _ in range(layers)])
        n_updates = layers if final_edge_update else layers - 1
        self.edge_update = nn.ModuleList([EdgeUpdate(hid) for _ in range(n_updates)])

    def forward(
        self,
        x: torch.Tensor,
        edges: torch.Tensor,
        edge_index: torch.Tensor,
        edge_chunk: int | None = None,
        need_nodes: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run all layers; returns ``(nodes, edges)``.

        With ``need_nodes=False`` a last layer that feeds no edge update is skipped (its node
        states cannot reach edge outputs); the returned node states are then those before it.
        Without autograd, ``edges`` is updated in place.
        """
        src, dst = edge_index[0], edge_index[1]
        n_layers = len(self.convs)
        for layer, conv in enumerate(self.convs):
            updates_edges = layer < len(self.edge_update)
            if layer == n_layers - 1 and not updates_edges and not need_nodes:
                break
            x = conv(x, edges, src, dst, edge_chunk)
            if updates_edges or layer < n_layers - 1:
                x = F.silu(x)
            if updates_edges:
                edges = self.edge_update[layer](x, edges, src, dst, edge_chunk)
        return x, edges
