"""The NiNo meta-model (:class:`NiNoModel`): nowcasts future parameters from their recent history.

Two variants share one class (``docs/design.md``, "NiNo"):

- NiNo (``config.gnn=True``): edges of the neural graph carry the ``ctx`` most recent scaled
  states of their parameters; nodes carry Laplacian positional encodings (and optionally a token
  embedding). Message passing (:mod:`nowcast.model.message_passing`) mixes them, and a head predicts,
  per edge and feature slot, the change of the parameter after ``k`` more periods.
- WNN+ (``config.gnn=False``): no graph; every parameter element is mapped by an MLP from its own
  ``ctx`` values and its edge type.

Parameter names equal those of the published checkpoints, so their state dicts load directly.
Graphs whose edges have fewer feature slots than the model (``F < max_feat_size``) are handled by
reading only the first ``F * ctx`` input columns of ``edge_proj`` (the same as zero-padding the
missing slots); the model's parameters are never modified by a forward pass.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import NiNoConfig
from .feedforward import FeedForward
from .files import save_model
from .message_passing import GraphNetwork, chunk_ranges
from .streamed import STREAM_CHUNK, EdgeTensorSource, streamed_forward

__all__ = ["DEFAULT_EDGE_CHUNK", "NiNoEmbedding", "NiNoModel"]

log = logging.getLogger(__name__)

DEFAULT_EDGE_CHUNK = 1 << 16
"""Edges processed at once by default (bounds ``E x hidden`` temporaries)."""

_INIT_STD = 0.02


class NiNoEmbedding(NamedTuple):
    """Embeddings after message passing.

    Attributes:
        nodes: ``[N, hid]`` node states after the last layer (None for WNN+, which has no nodes).
        edges: ``[E, hid]`` edge states that feed the head (WNN+: ``[E, F, hid]``, one per
            feature slot, before its MLP).
    """

    nodes: torch.Tensor | None
    edges: torch.Tensor


class NiNoModel(nn.Module):
    """NiNo / WNN+ parameter-nowcasting model.

    Args:
        config: architecture; defaults to the published NiNo defaults (:class:`NiNoConfig`).
        edge_chunk: edges processed at once in every ``E x hidden`` step (None or 0: all).
            Only memory use depends on it, not the result.

    Call ``model(data, k)`` with a ``torch_geometric.data.Data`` (or any object with the same
    attributes) holding:

    - ``edge_attr``: ``[E, F * ctx]`` scaled parameter states, column ``f * ctx + t`` (oldest
      state first), ``F <= config.max_feat_size`` for the GNN variant;
    - ``edge_type``: ``[E]`` int64 edge types;
    - GNN only: ``edge_index`` ``[2, E]`` (row 0 source, row 1 target), ``pos`` ``[N, <= lpe]``
      when ``config.lpe > 0``, ``pos_w`` ``[N]`` int64 when ``config.wte_pos_enc``;

    For inference wrap calls in ``torch.no_grad()``: edge states are then updated in place.
    """

    def __init__(self, config: NiNoConfig | None = None, *, edge_chunk: int | None = DEFAULT_EDGE_CHUNK) -> None:
        super().__init__()
        self.config = config if config is not None else NiNoConfig()
        self.edge_chunk = edge_chunk
        self.max_edge_state_bytes = 1 << 30
        cfg = self.config
        if cfg.edge_types > 0:
            self.layer_embed = nn.Embedding(cfg.edge_types, cfg.hid)
        if cfg.gnn:
            self.edge_proj = FeedForward(cfg.max_feat_size * cfg.ctx, cfg.hid, cfg.hid, n_layers=1)
            if cfg.wte_pos_enc:
                self.wte_pos_enc_layer = nn.Embedding(cfg.vocab_size + 1, cfg.hid)
            if cfg.lpe > 0:
                self.node_proj = FeedForward(cfg.lpe, cfg.hid, cfg.hid, n_layers=1)
            self.gnn = GraphNetwork(cfg.hid, cfg.layers, cfg.final_edge_update)
            self.edge_out = FeedForward(cfg.hid, cfg.hid, cfg.max_feat_size * cfg.seq_len, n_layers=2)
        else:
            self.edge_proj = FeedForward(cfg.ctx, cfg.hid, cfg.hid, n_layers=1)
            self.edge_mlp = FeedForward(cfg.hid, cfg.hid, cfg.seq_len, n_layers=cfg.mlp_layers)
        self.apply(self._init_weights)
    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=_INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=_INIT_STD)

    # ------------------------------------------------------------------ public API
    def forward(
        self,
        data: Any,
        k: int | Sequence[int],
        *,
        edge_chunk: int | None = None,
        stream: bool | None = None,
    ) -> torch.Tensor:
        """Predicted scaled states ``k`` periods ahead, per edge and feature slot.

        Args:
            data: the graph (see the class docstring).
            k: a horizon in ``1..seq_len``, or a sequence of horizons.
            edge_chunk: overrides ``self.edge_chunk`` for this call.
            stream: never hold ``E x hid`` edge states: recompute them chunk by chunk in every
                pass instead (memory ``O(edge_chunk x hid)`` plus node states, about twice the
                edge work). ``None`` (default) streams when the edge states would take more than
                ``self.max_edge_state_bytes`` (1 GiB), or for graphs of 2^20+ edges that carry
                ``data.blocks``, where it is also the faster path. With ``data.blocks`` (graphs from
                ``NeuralGraph.to_pyg``) the streamed pass also works block by block, without
                per-edge gathers (:mod:`nowcast.model.streamed`). Results equal the stored computation
                up to float rounding.

        Returns:
            ``[E, F]`` (last state plus the predicted change at horizon ``k``) for an integer
            ``k``; ``[E, F, len(k)]`` for a sequence. ``F`` is the graph's number of feature
            slots (``edge_attr.shape[1] // ctx``).
        """
        horizons, single = self._horizons(k)
        chunk = self.edge_chunk if edge_chunk is None else edge_chunk
        states, edge_type = self._edge_inputs(data)
        blocks = isinstance(getattr(data, "blocks", None), torch.Tensor)
        if self.config.gnn and self._should_stream(states.shape[0], stream, blocks):
            if blocks:
                piece = edge_chunk or STREAM_CHUNK  # small pieces keep the per-edge work in cache
                source = EdgeTensorSource(states, horizons.numel())
                streamed_forward(self, data, source, horizons, piece)
                delta = source.out
            else:
                delta = self._gnn_streamed(data, states, edge_type, horizons, chunk or DEFAULT_EDGE_CHUNK)
        elif self.config.gnn:
            edges = self._gnn_edges(data, states, edge_type, chunk, need_nodes=False).edges
            delta = self._gnn_head(edges, states.shape[1], horizons, chunk)
        else:
            delta = self._mlp_predict(states, edge_type, self._edge_bias(data), horizons, chunk)
        out = delta + states[:, :, -1:]
        return out[:, :, 0] if single else out

    def embed(self, data: Any, *, edge_chunk: int | None = None) -> NiNoEmbedding:
        """Node and edge embeddings after message passing (all layers, last node update included)."""
        chunk = self.edge_chunk if edge_chunk is None else edge_chunk
        states, edge_type = self._edge_inputs(data)
        if self.config.gnn:
            return self._gnn_edges(data, states, edge_type, chunk, need_nodes=True)
        return NiNoEmbedding(None, self._mlp_input(states, edge_type, self._edge_bias(data)))

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``; see :func:`nowcast.load`."""
        return save_model(self, directory)

    # ------------------------------------------------------------------ inputs
    @property
    def _dtype(self) -> torch.dtype:
        return self.edge_proj.fc[0].weight.dtype

    @property
    def _device(self) -> torch.device:
        return self.edge_proj.fc[0].weight.device

    def _horizons(self, k: int | Sequence[int]) -> tuple[torch.Tensor, bool]:
        if isinstance(k, torch.Tensor):
            single, raw = k.ndim == 0, k.reshape(-1).tolist()
        else:
            single = not isinstance(k, Sequence)
            raw = [k] if single else list(k)
        seq_len = self.config.seq_len
        values: list[int] = []
        for value in raw:
            try:
                index = operator.index(value)
            except TypeError:
                index = None
            if isinstance(value, bool) or index is None or not 1 <= index <= seq_len:
                raise ValueError(f"horizon k must be an integer in 1..{seq_len}, got {value!r}")
            values.append(index)
        if not values:
            raise ValueError("at least one horizon k is required")
        return torch.tensor(values, dtype=torch.long, device=self._device) - 1, single

    def _edge_bias(self, data: Any) -> torch.Tensor:
        """Bias of the initial edge states (``edge_proj``'s)."""
        return self.edge_proj.fc[0].bias

    def _edge_inputs(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``edge_attr`` as ``[E, F, ctx]`` in the model's dtype, and ``edge_type`` ``[E]``."""
        cfg = self.config
        attr = getattr(data, "edge_attr", None)
        if not isinstance(attr, torch.Tensor) or attr.ndim != 2 or attr.shape[1] % cfg.ctx or attr.shape[1] == 0:
            shape = tuple(attr.shape) if isinstance(attr, torch.Tensor) else None
            raise ValueError(f"data.edge_attr must be [E, F*{cfg.ctx}] (F feature slots x ctx states), got {shape}")
        n_edges, width = attr.shape
        n_slots = width // cfg.ctx
        if cfg.gnn and n_slots > cfg.max_feat_size:
            raise ValueError(
                f"the graph has {n_slots} feature slots per edge but this model supports at most {cfg.max_feat_size}"
            )
        edge_type = getattr(data, "edge_type", None)
        if cfg.edge_types > 0:
            if not isinstance(edge_type, torch.Tensor) or edge_type.shape != (n_edges,):
                shape = tuple(edge_type.shape) if isinstance(edge_type, torch.Tensor) else None
                raise ValueError(f"data.edge_type must be [{n_edges}] integers, got {shape}")
            edge_type = edge_type.to(self._device, torch.long)
            if n_edges and (int(edge_type.min()) < 0 or int(edge_type.max()) >= cfg.edge_types):
                raise ValueError(f"edge types must lie in 0..{cfg.edge_types - 1}")
        states = attr.to(self._device, self._dtype).reshape(n_edges, n_slots, cfg.ctx)
        return states, edge_type

    def _node_features(self, data: Any) -> torch.Tensor:
        """Initial node states ``[N, hid]``."""
        cfg = self.config
        x: torch.Tensor | None = None
        if cfg.wte_pos_enc:
            pos_w = getattr(data, "pos_w", None)
            if not isinstance(pos_w, torch.Tensor) or pos_w.ndim != 1:
                raise ValueError("this model embeds token ids: data.pos_w must be an [N] integer tensor")
            pos_w = pos_w.to(self._device, torch.long)
            if pos_w.numel() and (int(pos_w.min()) < 0 or int(pos_w.max()) > cfg.vocab_size):
                raise ValueError(f"data.pos_w must lie in 0..{cfg.vocab_size} (token id + 1, 0 for no token)")
            x = self.wte_pos_enc_layer(pos_w)
        if cfg.lpe > 0:
            pos = getattr(data, "pos", None)
            if not isinstance(pos, torch.Tensor) or pos.ndim != 2 or pos.shape[1] > cfg.lpe:
                shape = tuple(pos.shape) if isinstance(pos, torch.Tensor) else None
                raise ValueError(
                    f"this model uses Laplacian positional encodings: data.pos must be [N, <= {cfg.lpe}], got {shape}"
                )
            proj = self.node_proj.fc[0]
            lpe = F.linear(pos.to(self._device, self._dtype), proj.weight[:, : pos.shape[1]], proj.bias)
            x = lpe if x is None else x + lpe
        assert x is not None  # guaranteed by NiNoConfig validation
        return x

    # ------------------------------------------------------------------ GNN variant
    def _gnn_edges(
        self,
        data: Any,
        states: torch.Tensor,
        edge_type: torch.Tensor | None,
        chunk: int | None,
        need_nodes: bool,
    ) -> NiNoEmbedding:
        edge_index = getattr(data, "edge_index", None)
        n_edges, n_slots, ctx = states.shape
        if not isinstance(edge_index, torch.Tensor) or edge_index.shape != (2, n_edges):
            shape = tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else None
            raise ValueError(f"data.edge_index must be [2, {n_edges}], got {shape}")
        x = self._node_features(data)
        edge_index = edge_index.to(self._device, torch.long)
        if n_edges and int(edge_index.max()) >= x.shape[0]:
            raise ValueError(f"edge_index refers to node {int(edge_index.max())} but the graph has {x.shape[0]} nodes")
        weight = self.edge_proj.fc[0].weight[:, : n_slots * ctx]  # same as zero-padding the missing slots
        bias = self._edge_bias(data)
        flat = states.reshape(n_edges, n_slots * ctx)
        edges = flat.new_empty(n_edges, self.config.hid)
        for start, stop in chunk_ranges(n_edges, chunk):
            e = F.linear(flat[start:stop], weight, bias)
            if edge_type is not None:
                e = e + self.layer_embed(edge_type[start:stop])
            edges[start:stop] = e
        nodes, edges = self.gnn(x, edges, edge_index, chunk, need_nodes=need_nodes)
        return NiNoEmbedding(nodes, edges)

    def _head_rows(self, n_slots: int, horizons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's last linear map restricted to rows ``f * seq_len + k - 1`` (slot-major)."""
        cfg = self.config
        last = self.edge_out.linears[-1]
        n_k = horizons.numel()
        weight = last.weight.reshape(cfg.max_feat_size, cfg.seq_len, cfg.hid)[:n_slots, horizons]
        bias = last.bias.reshape(cfg.max_feat_size, cfg.seq_len)[:n_slots, horizons]
        return weight.reshape(n_slots * n_k, cfg.hid), bias.reshape(n_slots * n_k)

    def _should_stream(self, n_edges: int, stream: bool | None, blocks: bool = False) -> bool:
        if stream is not None:
            return stream
        element = torch.finfo(self._dtype).bits // 8
        if blocks and n_edges >= 1 << 20:  # block-wise streaming is also the faster path there
            return True
        return n_edges * self.config.hid * element > self.max_edge_state_bytes

    def _initial_edges(
        self, flat: torch.Tensor, edge_type: torch.Tensor | None, bias: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        e = F.linear(flat[start:stop], self.edge_proj.fc[0].weight[:, : flat.shape[1]], bias)
        if edge_type is not None:
            e = e + self.layer_embed(edge_type[start:stop])
        return e

    def _gnn_streamed(
        self, data: Any, states: torch.Tensor, edge_type: torch.Tensor | None, horizons: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        """The forward pass without storing edge states: node states of every layer are kept;
        each edge chunk's states are recomputed from its inputs whenever a pass needs them."""
        edge_index = getattr(data, "edge_index", None)
        n_edges, n_slots, ctx = states.shape
        if not isinstance(edge_index, torch.Tensor) or edge_index.shape != (2, n_edges):
            raise ValueError(f"data.edge_index must be [2, {n_edges}]")
        edge_index = edge_index.to(self._device, torch.long)
        src, dst = edge_index[0], edge_index[1]
        flat = states.reshape(n_edges, n_slots * ctx)
        gnn = self.gnn
        updates = list(gnn.edge_update)
        x = self._node_features(data)
        in_bias = self._edge_bias(data)
        count = torch.bincount(dst, minlength=x.shape[0]).clamp_(min=1).to(x.dtype).unsqueeze(1)
        update_terms: list[tuple[torch.Tensor, torch.Tensor]] = []  # (lin_s x, lin_t x) after each layer

        def edge_states(start: int, stop: int, depth: int) -> torch.Tensor:
            e = self._initial_edges(flat, edge_type, in_bias, start, stop)
            for u in range(depth):
                s_term, t_term = update_terms[u]
                z = updates[u].lin_e(e) + s_term[src[start:stop]] + t_term[dst[start:stop]]
                e = updates[u].lin1(F.silu(z))
            return e

        # only layers followed by an edge update can reach the head
        for layer in range(len(updates)):
            conv = gnn.convs[layer]
            pre = conv.pre_nns[0][0]
            target_term = F.linear(x, pre.weight[:, : conv.hid], pre.bias)
            source_term = F.linear(x, pre.weight[:, conv.hid :])
            total = x.new_zeros(x.shape[0], conv.hid)
            for start, stop in chunk_ranges(n_edges, chunk):
                scale, shift = conv.edge_encoder(edge_states(start, stop, layer)).chunk(2, dim=-1)
                d = dst[start:stop]
                total.index_add_(0, d, torch.addcmul(shift, scale, target_term[d] + source_term[src[start:stop]]))
            x = F.silu(conv.lin(conv.post_nns[0][0](torch.cat([x, total / count], dim=-1))))
            update_terms.append((updates[layer].lin_s(x), updates[layer].lin_t(x)))
        n_k = horizons.numel()
        weight, bias = self._head_rows(n_slots, horizons)
        out = states.new_empty(n_edges, n_slots, n_k)
        for start, stop in chunk_ranges(n_edges, chunk):
            hidden = self.edge_out.hidden(edge_states(start, stop, len(updates)))
            out[start:stop] = F.linear(hidden, weight, bias).reshape(stop - start, n_slots, n_k)
        return out

    def _gnn_head(self, edges: torch.Tensor, n_slots: int, horizons: torch.Tensor, chunk: int | None) -> torch.Tensor:
        """Predicted changes ``[E, F, K]``: only the head rows ``f * seq_len + k - 1`` are computed."""
        n_k = horizons.numel()
        weight, bias = self._head_rows(n_slots, horizons)
        out = edges.new_empty(edges.shape[0], n_slots, n_k)
        for start, stop in chunk_ranges(edges.shape[0], chunk):
            hidden = self.edge_out.hidden(edges[start:stop])
            out[start:stop] = F.linear(hidden, weight, bias).reshape(stop - start, n_slots, n_k)
        return out

    # ------------------------------------------------------------------ WNN+ variant
    def _mlp_input(self, states: torch.Tensor, edge_type: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
        """WNN+ embeddings ``[E, F, hid]``: own history projection plus edge-type embedding."""
        hidden = F.linear(states, self.edge_proj.fc[0].weight, bias)
        if edge_type is not None:
            hidden = hidden + self.layer_embed(edge_type).unsqueeze(1)
        return hidden

    def _mlp_predict(
        self,
        states: torch.Tensor,
        edge_type: torch.Tensor | None,
        in_bias: torch.Tensor,
        horizons: torch.Tensor,
        chunk: int | None,
    ) -> torch.Tensor:
        last = self.edge_mlp.linears[-1]
        weight, bias = last.weight[horizons], last.bias[horizons]
        out = states.new_empty(states.shape[0], states.shape[1], horizons.numel())
        for start, stop in chunk_ranges(states.shape[0], chunk):
            types = None if edge_type is None else edge_type[start:stop]
            hidden = self.edge_mlp.hidden(self._mlp_input(states[start:stop], types, in_bias))
            out[start:stop] = F.linear(hidden, weight, bias)
        return out
