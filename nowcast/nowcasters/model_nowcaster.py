"""A :class:`NiNoModel` as a nowcaster: scale the states, one forward pass over the graph's edge
features, unscale (:func:`predict_with_model`; :class:`NiNoPredictor`, :class:`WNNPlus`)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from ..model import NiNoModel
from ..model.checkpoint import load_model
from ..model.graph_source import GraphStatesSource, tensor_statistics
from ..model.streamed import STREAM_CHUNK, streamed_forward
from ..scaling import scale_states, unscale
from .base import check_k, check_states, work_dtype

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["ModelNowcaster", "NiNoPredictor", "WNNPlus", "predict_with_model"]

log = logging.getLogger(__name__)


def _model_device(model: NiNoModel) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model: NiNoModel) -> torch.dtype:
    return next(model.parameters()).dtype


def _node_inputs(graph: NeuralGraph, model: NiNoModel, pos: torch.Tensor | None) -> SimpleNamespace:
    """What the model reads from the nodes: ``pos`` (Laplacian encodings) and ``pos_w``."""
    cfg = model.config
    data = SimpleNamespace()
    if cfg.lpe > 0:
        data.pos = graph.pos if pos is None else pos
        if data.pos is None:
            raise ValueError(
                "this NiNo model uses Laplacian positional encodings but the graph was built with lpe=0: "
                "convert the model with lpe=8 or pass pos="
            )
    if cfg.wte_pos_enc:
        data.pos_w = graph.pos_w
    return data


GPU_STREAM_CHUNK = 1 << 18
"""Edges per piece on a GPU: large enough that kernel launches do not dominate."""


def _history_on(states: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The history on the model's device when it fits there with room to spare (half the free
    memory), else where it is: pieces then travel to the device one at a time."""
    if states.device == device or device.type != "cuda":
        return states.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if states.numel() * states.element_size() < free // 2:
        return states.to(device)
    log.info("the history (%.1f GB) stays on the host; pieces are copied to %s", states.numel() * states.element_size() / 1e9,
             device)
    return states


def _predict_blockwise(graph: NeuralGraph, states: torch.Tensor, k: int, model: NiNoModel, pos: torch.Tensor | None,
                       edge_chunk: int | None) -> torch.Tensor:
    """The NiNo step block by block from the history itself (:mod:`nowcast.model.graph_source`):
    no edge features, edge index, scaled or float32 copy of the history; the result in the
    history's dtype, where the history is; a progress bar on long steps."""
    device = _model_device(model)
    x = _history_on(states, device)
    data = _node_inputs(graph, model, pos)
    data.blocks = graph.block_table()
    out = torch.empty(graph.num_params, dtype=x.dtype, device=x.device)
    scales = tensor_statistics(x, graph.params, work_dtype(x.dtype))
    source = GraphStatesSource(graph, x, scales, out, dtype=model_dtype(model), device=device)
    horizons, _ = model._horizons(k)
    passes = model.config.num_edge_updates + 1
    chunk = edge_chunk or (GPU_STREAM_CHUNK if device.type == "cuda" else STREAM_CHUNK)
    with _progress(graph.num_edges * passes) as bar, torch.no_grad():
        streamed_forward(model, data, source, horizons, chunk, progress=bar.update)
    return out.to(states.device)


def _progress(total: int):
    from tqdm.auto import tqdm  # only here: importing it costs ~75 ms at 'import nowcast'

    # shown only in a terminal, and only once a step has run for a few seconds
    return tqdm(total=total, desc="NiNo step", unit="edge", unit_scale=True, delay=3, leave=False, disable=None)


def predict_with_model(
    graph: NeuralGraph,
    states: torch.Tensor,
    k: int,
    model: NiNoModel,
    *,
    pos: torch.Tensor | None,
    edge_chunk: int | None,
) -> torch.Tensor:
    if graph is None:
        raise ValueError("a NiNo / WNN+ model needs the neural graph: pass graph=neuralgraph.convert(model)")
    cfg = model.config
    if states.shape[1] != cfg.ctx:
        raise ValueError(f"this model reads ctx={cfg.ctx} states but the history has {states.shape[1]}")
    if not 1 <= k <= cfg.seq_len:
        raise ValueError(f"horizon k must lie in 1..{cfg.seq_len} for this model, got {k}")
    if cfg.gnn and graph.max_feat_size > cfg.max_feat_size:
        log.info("kernels of up to %d slots split over parallel edges of at most %d slots (what the model reads)",
                 graph.max_feat_size, cfg.max_feat_size)
        graph = graph.split_kernels(cfg.max_feat_size)
    device = _model_device(model)
    if cfg.gnn and model._should_stream(graph.num_edges, None, True):  # pieces are cast one at a time
        return _predict_blockwise(graph, states, k, model, pos, edge_chunk)
    x = states.to(device=device, dtype=work_dtype(states.dtype))
    scaled, scales = scale_states(x, graph.params)
    # states were checked by predict(); a non-finite prediction is left for the caller to judge
    data = _node_inputs(graph, model, pos) if cfg.gnn else SimpleNamespace()
    data.edge_attr, data.edge_type = graph.edge_features(scaled, check=False), graph.edge_type
    del scaled
    if cfg.gnn:
        data.edge_index = graph.edge_index
    with torch.no_grad():
        out = model(data, k, edge_chunk=edge_chunk)
    del data
    theta = unscale(graph.to_params(out.to(x.dtype), check=False), scales)
    return theta.to(device=states.device, dtype=states.dtype)


class ModelNowcaster:
    """A :class:`NiNoModel` as a :class:`Nowcaster` (base of :class:`NiNoPredictor` and :class:`WNNPlus`).

    The model is used as is: never moved, put in another mode or modified.
    """

    needs_graph = True

    def __init__(self, model: NiNoModel, *, edge_chunk: int | None = None, name: str | None = None) -> None:
        if not isinstance(model, NiNoModel):
            raise TypeError(f"expected a nowcast.NiNoModel, got {type(model).__name__}")
        self.model = model
        self.edge_chunk = edge_chunk
        self.name = name or ("NiNo" if model.config.gnn else "WNN+")

    @property
    def ctx(self) -> int:
        return self.model.config.ctx

    @property
    def seq_len(self) -> int:
        return self.model.config.seq_len

    @property
    def context_hops(self) -> int:
        """Node updates feeding the outputs (see :func:`layer_parts`); 0 for WNN+."""
        return self.model.config.num_edge_updates

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> ModelNowcaster:
        """Load one model's checkpoint (a published ``.pt`` file or a folder written by
        :func:`nowcast.save`; a regime-router folder holds two: load it with :func:`nowcast.load`)."""
        return cls(load_model(path), **kwargs)

    def predict(
        self, graph: NeuralGraph | None, states: torch.Tensor, k: int
    ) -> torch.Tensor:
        return predict_with_model(graph, check_states(states, graph), check_k(k), self.model, pos=None, edge_chunk=self.edge_chunk)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model.config})"


class NiNoPredictor(ModelNowcaster):
    """NiNo: the graph network over the neural graph (a :class:`NiNoModel` with ``gnn=True``).

    ``NiNoPredictor.load("nino_no_posw.pt")`` loads a published checkpoint.
    """

    def __init__(self, model: NiNoModel, *, edge_chunk: int | None = None, name: str = "NiNo") -> None:
        super().__init__(model, edge_chunk=edge_chunk, name=name)
        if not model.config.gnn:
            raise ValueError("this checkpoint is a WNN+ model (gnn=False): use nowcast.WNNPlus")


class WNNPlus(ModelNowcaster):
    """WNN+: a per-parameter MLP with layerwise scaling and edge-type embeddings (``gnn=False``).

    ``WNNPlus.load("nino_mlp.pt")`` loads the published checkpoint. It needs the graph only for
    the per-tensor layout and the edge types, not for message passing.
    """

    def __init__(self, model: NiNoModel, *, edge_chunk: int | None = None, name: str = "WNN+") -> None:
        super().__init__(model, edge_chunk=edge_chunk, name=name)
        if model.config.gnn:
            raise ValueError("this checkpoint is a NiNo graph network (gnn=True): use nowcast.NiNoPredictor")
