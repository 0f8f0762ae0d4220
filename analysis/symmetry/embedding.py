"""The graphs of the permuted models and their embeddings by one randomly initialised GNN:
the naive graph (also for grouped-query attention), automorphism-invariant node features, the
random NiNo GNN, edges passed both ways, per-tensor scaling of the parameters."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph import edge_types as et
from neuralgraph.lpe import dense_laplacian
from nowcast import NiNoConfig, NiNoModel

__all__ = ["CONSTRUCTIONS", "embed_samples", "naive_graph"]

CONSTRUCTIONS: tuple[str, ...] = ("correct", "naive")

_EDGE_TYPES = 15  # NiNo's edge-type vocabulary; reversed edges get type + 15


def naive_graph(model: nn.Module, arch: str, lpe: int) -> tuple[Any, torch.Tensor | None, str]:
    """The naive graph and, when it is built on an expanded model, the gather index mapping the
    model's flat parameter vector onto the expanded one."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv = getattr(config, "num_key_value_heads", None)
    if arch != "llama" or kv is None or kv == heads:
        return ng.convert(model, naive=True, lpe=lpe), None, "converter (naive=True)"
    # grouped-query attention: the naive graph of the equivalent multi-head layer
    mha_config = copy.deepcopy(config)
    mha_config.num_key_value_heads = heads
    with torch.device("meta"):
        expanded = type(model)(mha_config)
    graph = ng.convert(expanded, naive=True, lpe=lpe)
    group = heads // kv
    own = {p.name: p for p in ngb.param_specs(model)}
    index = []
    for spec in ngb.param_specs(expanded):
        src = own[spec.name]
        ids = torch.arange(src.offset, src.offset + src.numel).reshape(src.shape)
        if spec.shape != src.shape:  # k_proj / v_proj rows (and biases): repeat each key/value head
            head_dim = src.shape[0] // kv
            ids = ids.reshape(kv, head_dim, *src.shape[1:]).repeat_interleave(group, dim=0).reshape(spec.shape)
        index.append(ids.reshape(-1))
    how = f"naive graph of the equivalent multi-head layer (key/value heads repeated x{group})"
    return graph, torch.cat(index), how


# ---------------------------------------------------------------------------------------- node features
def _invariant_spectral_features(graph, k: int) -> torch.Tensor:
    """``[N, k]``: per node, the diagonal of the projector onto each of the ``k`` smallest
    non-trivial eigenvalue clusters of the graph's normalized Laplacian (basis-independent, hence
    unchanged by every automorphism; a dense eigendecomposition, for the small graphs used here)."""
    lap = dense_laplacian(graph.num_nodes, graph.connections())
    values, vectors = np.linalg.eigh(lap)
    order = np.argsort(values, kind="stable")
    values, vectors = values[order], vectors[:, order]
    cuts = np.flatnonzero(np.diff(values) > 1e-8) + 1
    clusters = np.split(np.arange(len(values)), cuts)
    out = np.zeros((graph.num_nodes, k))
    for col, members in enumerate(clusters[1 : k + 1]):  # skip the smallest (trivial) cluster
        out[:, col] = (vectors[:, members] ** 2).sum(axis=1) * len(values) / len(members)
    return torch.from_numpy(out)


def _node_features(graph, mode: str, lpe: int) -> torch.Tensor | None:
    if mode == "lpe":
        return graph.pos.to(torch.float64) if graph.pos is not None else None
    if mode == "invariant":
        return _invariant_spectral_features(graph, lpe)
    return None


# ---------------------------------------------------------------------------------------- GNN
def _random_gnn(max_feat_size: int, vocab: int, lpe: int, seed: int, hid: int = 32, layers: int = 3,
                edge_types: int = 2 * _EDGE_TYPES):
    """A randomly initialised NiNo GNN (float64): weights ~ N(0, 1/fan_in), biases ~ N(0, 0.01),
    embeddings ~ N(0, 1) — large enough that its non-linearities act (NiNo's own initialisation,
    std 0.02, would make a random network almost linear)."""
    config = NiNoConfig(ctx=1, hid=hid, layers=layers, max_feat_size=max_feat_size, seq_len=1, lpe=lpe,
                        wte_pos_enc=True, vocab_size=max(1, vocab), edge_types=edge_types)
    gen = torch.Generator().manual_seed(seed)
    model = NiNoModel(config, edge_chunk=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * module.in_features**-0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen))
    return model.double().eval()


class _Embedder:
    """Graph embeddings of many parameter vectors on one graph structure.

    With ``bidirectional`` every edge except the self-loops is also passed in reverse, with the
    same features and edge type ``type + 15``, so that messages flow both ways (a head node hears
    from its units). Graphs are embedded one at a time (the cost is the GNN's matrix products;
    one at a time also keeps every sample's arithmetic identical, so isomorphic graphs get
    embeddings equal to round-off)."""

    def __init__(self, graph, gnn, node_features: torch.Tensor | None, *, bidirectional: bool = True) -> None:
        from types import SimpleNamespace

        self.graph = graph
        self.gnn = gnn
        edge_index, edge_type = graph.edge_index, graph.edge_type
        self.reverse = (edge_type != et.SELF_LOOP).nonzero().squeeze(1) if bidirectional else None
        if self.reverse is not None:
            edge_index = torch.cat([edge_index, edge_index[:, self.reverse].flip(0)], dim=1)
            edge_type = torch.cat([edge_type, edge_type[self.reverse] + _EDGE_TYPES])
        self.data = SimpleNamespace(edge_index=edge_index, edge_type=edge_type, edge_attr=None,
                                    pos=node_features, pos_w=graph.pos_w)

    def __call__(self, vectors: torch.Tensor, chunk: int = 64) -> np.ndarray:
        """``vectors`` ``[B, P]`` (already scaled) -> embeddings ``[B, 2 * hid]``: the mean of the
        final edge states and the mean of the final node states."""
        g = self.graph
        out = []
        for start in range(0, vectors.shape[0], chunk):
            block = vectors[start : start + chunk]
            feats = g.edge_features(block.t().contiguous())  # [E, F * b], column f * b + t
            b = block.shape[0]
            feats = feats.reshape(g.num_edges, feats.shape[1] // b, b)
            if self.reverse is not None:
                feats = torch.cat([feats, feats[self.reverse]])
            for t in range(b):
                self.data.edge_attr = feats[:, :, t]
                with torch.no_grad():
                    emb = self.gnn.embed(self.data)
                out.append(torch.cat([emb.edges.mean(0), emb.nodes.mean(0)]))
        self.data.edge_attr = None
        return torch.stack(out).numpy()


def _scaling(graph, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor standardization ``(x - mean) / std`` of the reference parameters, as ``[P]``
    vectors (a permutation moves values only within a tensor, so one scaling fits all samples)."""
    mean = torch.empty_like(theta)
    std = torch.empty_like(theta)
    for p in graph.params:
        values = theta[p.offset : p.offset + p.numel]
        s = float(values.std()) if p.numel > 1 else 0.0
        mean[p.offset : p.offset + p.numel] = float(values.mean())
        std[p.offset : p.offset + p.numel] = s if s > 1e-12 else 1.0
    return mean, std



def embed_samples(
    graphs: dict[str, tuple[Any, torch.Tensor | None]], theta: torch.Tensor, vectors: torch.Tensor, *,
    node_features: str, lpe: int, gnn_seed: int, hidden: int, gnn_layers: int, bidirectional: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embed every permuted parameter vector on every construction with one random GNN.

    Args:
        graphs: construction -> (graph, gather index onto its parameter vector or None).
        theta: the unpermuted parameters; ``vectors`` ``[n, P]`` the permuted ones.
        node_features, lpe, bidirectional: see :func:`analysis.symmetry.symmetry_experiment`.
        gnn_seed, hidden, gnn_layers: the random GNN's seed and size.

    Returns:
        per construction: the embeddings ``[n, 2 * hidden]``, the embedding of the unpermuted graph,
        and each sample's distance from it relative to its norm.
    """
    mean, std = _scaling(graphs["correct"][0], theta)
    scaled = (vectors - mean) / std
    scaled_ref = ((theta - mean) / std).unsqueeze(0)
    feats = {c: _node_features(g, node_features, lpe) for c, (g, _) in graphs.items()}
    vocab = max(int(g.pos_w.max()) for g, _ in graphs.values())
    max_feat = max(g.max_feat_size for g, _ in graphs.values())
    with torch.random.fork_rng(devices=[]):
        gnn = _random_gnn(max_feat, vocab, lpe if node_features != "none" else 0, gnn_seed, hidden, gnn_layers)
    embeddings: dict[str, np.ndarray] = {}
    references: dict[str, np.ndarray] = {}
    distances: dict[str, np.ndarray] = {}
    for c, (g, index) in graphs.items():
        embed = _Embedder(g, gnn, feats[c], bidirectional=bidirectional)
        vec, ref = (scaled, scaled_ref) if index is None else (scaled[:, index], scaled_ref[:, index])
        embeddings[c] = embed(vec)
        references[c] = embed(ref)[0]
        distances[c] = np.linalg.norm(embeddings[c] - references[c], axis=1) / (np.linalg.norm(references[c]) + 1e-300)
    return embeddings, references, distances
