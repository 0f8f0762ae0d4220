"""Training windows for NiNo meta-training, built from collected trajectories (:mod:`nowcast.metatrain.collection`).

A *window* is ``ctx`` consecutive snapshots of one trajectory (``spacing`` snapshots apart, 1 by
default: 200 steps, so ``ctx = 5`` states span NiNo's period of 1000 steps) plus the snapshots
after it. :class:`MetaDataset` turns it into exactly what inference feeds the model
(:func:`nowcast.predict`): the states are scaled per parameter tensor with
:func:`nowcast.scaling.scale_states` and laid on the neural graph's edges with
``graph.edge_features``; the PyG ``Data`` holds ``edge_index``, ``edge_type``, ``pos``, ``pos_w``
and ``edge_attr`` like the inference path. Targets are the scaled future *changes*: the state
``k`` snapshots after the window's last one, scaled with the window's own per-tensor mean / std,
minus the last scaled input state, for ``k = 1..seq_len``, laid out like the model's output
(``[E, F * seq_len]``, column ``f * seq_len + k - 1``). Horizons past the end of the trajectory,
edges that carry no parameter (residual, head and self-loop edges) and feature slots beyond a
block's kernel are masked out.

Graphs are built once per architecture (keyed by converter, converter config and the
``(name, shape)`` list) and cached in memory; with ``cache_dir`` their Laplacian positional
encodings are also stored on disk (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import neuralgraph

from ..atomic import save_torch_atomic
from ..errors import CheckpointError
from ..safe_load import load_torch_file
from ..scaling import DEFAULT_EPS, LayerScales, scale_states
from ..tasks import get_task
from .trajectories import META_FILE, Trajectory, load_trajectory

__all__ = ["GraphCache", "GraphInfo", "MetaDataset", "Window", "WindowItem", "arch_key", "find_trajectories"]

log = logging.getLogger(__name__)


def arch_key(arch: dict[str, Any]) -> str:
    """Stable key of an architecture (converter, its config, parameter names and shapes, lpe)."""
    payload = json.dumps(
        [arch.get("converter"), arch.get("converter_config"), arch.get("params"), arch.get("lpe", 8)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


@dataclass
class GraphInfo:
    """A neural graph and the per-edge masks the loss needs.

    Attributes:
        graph: the ``neuralgraph.NeuralGraph``.
        slot_mask: ``[E, F]`` bool, True where edge slot ``f`` carries a parameter element.
        key: :func:`arch_key` of the architecture.
    """

    graph: Any
    slot_mask: torch.Tensor
    key: str

    @property
    def num_slots(self) -> int:
        return int(self.slot_mask.shape[1])


def _slot_mask(graph: Any) -> torch.Tensor:
    mask = torch.zeros(graph.num_edges, graph.max_feat_size, dtype=torch.bool)
    for b in graph.blocks:
        if b.view is not None:
            mask[b.edge_start : b.edge_stop, : b.feat_size] = True
    return mask


class GraphCache:
    """Neural graphs by architecture: built once, kept in memory, positional encodings optionally on disk."""

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._graphs: dict[str, GraphInfo] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def get(self, meta: dict[str, Any]) -> GraphInfo:
        """The graph of a trajectory (its ``meta.json`` dictionary)."""
        arch = meta["architecture"]
        key = arch_key(arch)
        info = self._graphs.get(key)
        if info is None:
            graph = self._build(meta)
            if graph.num_params != arch["num_params"]:
                raise ValueError(
                    f"the rebuilt {graph.arch} graph of {meta.get('run_id')} has {graph.num_params} parameters, "
                    f"the trajectory {arch['num_params']}"
                )
            self._load_pos(graph, key)
            info = GraphInfo(graph, _slot_mask(graph), key)
            self._graphs[key] = info
            log.info("graph %s (%s): %d nodes, %d edges, %d slots", key, graph.arch, graph.num_nodes, graph.num_edges, graph.max_feat_size)
        return info

    @staticmethod
    def _build(meta: dict[str, Any]) -> Any:
        arch = meta["architecture"]
        pairs = [(str(name), tuple(int(s) for s in shape)) for name, shape in arch["params"]]
        lpe = int(arch.get("lpe", 8))
        try:
            return neuralgraph.convert(pairs, arch=arch["converter"], config=arch.get("converter_config"), lpe=lpe)
        except Exception as err:  # fall back to instantiating the task's model
            log.info("rebuilding the graph of %s from its task's model (%s)", meta.get("run_id"), err)
            model = get_task(meta["task"]).model(int(meta.get("seed", 0)))
            return neuralgraph.convert(model, arch=arch["converter"], lpe=lpe)

    def _load_pos(self, graph: Any, key: str) -> None:
        if self.cache_dir is None or graph.lpe == 0:
            return
        path = self.cache_dir / f"graph-{key}.pt"
        if path.is_file():
            try:
                blob = load_torch_file(path, "graph cache")
            except CheckpointError as err:  # a damaged cache is rebuilt, not fatal
                log.warning("%s; it is rebuilt", err)
                blob = {}
            pos = blob.get("pos") if isinstance(blob, dict) else None
            if isinstance(pos, torch.Tensor) and pos.shape == (graph.num_nodes, graph.lpe) and blob.get("num_edges") == graph.num_edges:
                graph.__dict__["pos"] = pos  # cached_property: use the stored encodings
                return
            log.warning("ignoring the stale graph cache %s", path)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        save_torch_atomic({"pos": graph.pos, "num_edges": graph.num_edges, "arch": graph.arch}, path)


@dataclass(frozen=True)
class Window:
    """Where a window comes from: trajectory ``traj`` (index in the dataset), snapshot rows
    ``start, start + spacing, ..., last``."""

    traj: int
    start: int
    last: int


@dataclass
class WindowItem:
    """One training example.

    Attributes:
        data: ``torch_geometric.data.Data`` as :func:`nowcast.predict` builds it (``edge_attr``
            ``[E, F * ctx]``, ``edge_type``, ``edge_index``, ``pos``, ``pos_w``, ``lr_interval``).
        target: ``[E, F * seq_len]`` scaled changes, column ``f * seq_len + k - 1`` (0 where masked).
        horizon_mask: ``[seq_len]`` bool, True for horizons inside the trajectory.
        slot_mask: ``[E, F]`` bool, True for edge slots that carry a parameter.
        last: ``[E, F]`` last scaled input state (model output minus this = predicted change).
        scales: the window's per-tensor statistics (``unscale`` maps predictions back).
        graph: the neural graph.
        window: where the window comes from.
    """

    data: Any
    target: torch.Tensor
    horizon_mask: torch.Tensor
    slot_mask: torch.Tensor
    last: torch.Tensor
    scales: LayerScales
    graph: Any
    window: Window

    @property
    def seq_len(self) -> int:
        return int(self.horizon_mask.numel())

    @property
    def mask(self) -> torch.Tensor:
        """``[E, F * seq_len]`` bool, aligned with :attr:`target`."""
        e, f = self.slot_mask.shape
        return (self.slot_mask.unsqueeze(-1) & self.horizon_mask.view(1, 1, -1)).reshape(e, f * self.seq_len)

    @property
    def num_targets(self) -> int:
        return int(self.slot_mask.sum()) * int(self.horizon_mask.sum())


def find_trajectories(root: str | os.PathLike) -> list[Path]:
    """Run folders (holding ``meta.json``) under ``root``, sorted by name."""
    root = Path(root)
    if (root / META_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.glob(f"*/{META_FILE}"))


class MetaDataset(torch.utils.data.Dataset):
    """All windows of a set of trajectories.

    Args:
        trajectories: a folder of run folders, or run folders / :class:`Trajectory` objects.
        ctx: states per window (the model's ``ctx``).
        seq_len: horizons ``k = 1..seq_len`` per window (the model's ``seq_len``).
        spacing: snapshots between consecutive window states (1: 200 steps with ``every=200``).
        max_feat_size: feature slots of the model; graphs with more slots raise.
        cache_dir: folder for the on-disk graph cache (None: memory only).
        include_unfinished: also use runs still being collected (their valid snapshots).
        eps: the scaling epsilon (must match inference: :data:`nowcast.scaling.DEFAULT_EPS`).

    Every window has at least one future snapshot (``n_snapshots - (ctx - 1) * spacing - 1``
    windows per trajectory, starts ``0, 1, 2, ...``).
    """

    def __init__(
        self,
        trajectories: str | os.PathLike | Iterable[str | os.PathLike | Trajectory],
        *,
        ctx: int = 5,
        seq_len: int = 40,
        spacing: int = 1,
        max_feat_size: int = 9,
        cache_dir: str | os.PathLike | None = None,
        include_unfinished: bool = False,
        graphs: GraphCache | None = None,
        eps: float = DEFAULT_EPS,
    ) -> None:
        if isinstance(trajectories, (str, os.PathLike)):
            items: list[Any] = list(find_trajectories(trajectories))
            if not items:
                raise FileNotFoundError(f"no collected trajectories under {trajectories}")
        else:
            items = list(trajectories)
        self.ctx, self.seq_len, self.spacing, self.eps = int(ctx), int(seq_len), int(spacing), float(eps)
        if self.ctx < 2 or self.seq_len < 1 or self.spacing < 1:
            raise ValueError(f"need ctx >= 2, seq_len >= 1, spacing >= 1; got {ctx}, {seq_len}, {spacing}")
        self.max_feat_size = int(max_feat_size)
        self.graphs = graphs if graphs is not None else GraphCache(cache_dir)
        self.trajectories: list[Trajectory] = []
        self.windows: list[Window] = []
        span = (self.ctx - 1) * self.spacing
        for item in items:
            traj = item if isinstance(item, Trajectory) else load_trajectory(item)
            if not traj.complete and not include_unfinished:
                log.info("skipping unfinished trajectory %s", traj.path)
                continue
            info = self.graphs.get(traj.meta)
            if info.num_slots > self.max_feat_size:
                raise ValueError(f"{traj.run_id}: its graph has {info.num_slots} feature slots, the model {self.max_feat_size}")
            index = len(self.trajectories)
            self.trajectories.append(traj)
            n = traj.n_snapshots
            self.windows += [Window(index, s, s + span) for s in range(max(0, n - span - 1))]
        log.info("meta-dataset: %d trajectories, %d windows, %d graphs", len(self.trajectories), len(self.windows), len(self.graphs))

    def __len__(self) -> int:
        return len(self.windows)

    def graph_info(self, traj: int) -> GraphInfo:
        return self.graphs.get(self.trajectories[traj].meta)

    def lr_interval(self, traj: int) -> float | None:
        """Learning rate times the steps between two window states of trajectory ``traj`` (the
        input of regime-conditioned models); None when its metadata lacks the learning rate."""
        meta = self.trajectories[traj].meta
        lr = (meta.get("optimizer") or {}).get("lr")
        every = meta.get("every")
        return None if lr is None or every is None else float(lr) * int(every) * self.spacing

    def window_states(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw states of window ``i``: inputs ``[P, ctx]``, futures ``[P, seq_len]`` (past the end:
        copies of the last input) and the horizon mask ``[seq_len]``."""
        w = self.windows[i]
        traj = self.trajectories[w.traj]
        rows = list(range(w.start, w.last + 1, self.spacing))
        future = [w.last + k * self.spacing for k in range(1, self.seq_len + 1)]
        valid = [r < traj.n_snapshots for r in future]
        n_valid = sum(valid)
        block = traj.states(rows + future[:n_valid])  # one read of the memmap
        inputs = block[:, : self.ctx]
        futures = torch.empty(inputs.shape[0], self.seq_len, dtype=inputs.dtype)
        futures[:, :n_valid] = block[:, self.ctx :]
        futures[:, n_valid:] = inputs[:, -1:]
        return inputs, futures, torch.tensor(valid, dtype=torch.bool)

    def __getitem__(self, i: int) -> WindowItem:
        from torch_geometric.data import Data

        w = self.windows[i]
        info = self.graph_info(w.traj)
        graph = info.graph
        inputs, futures, horizon_mask = self.window_states(i)
        # exactly the inference path (nowcast.predict._predict_with_model)
        scaled, scales = scale_states(inputs, graph.params, eps=self.eps)
        mean_rows, std_rows = scales.per_row()
        scaled_future = (futures - mean_rows.unsqueeze(1)) / (std_rows.unsqueeze(1) + self.eps)
        delta = scaled_future - scaled[:, -1:]
        delta[:, ~horizon_mask] = 0.0
        edge_attr = graph.edge_features(scaled)
        target = graph.edge_features(delta)  # [E, F * seq_len], column f * seq_len + k - 1
        n_slots = info.num_slots
        slot_mask = info.slot_mask
        target.view(target.shape[0], n_slots, self.seq_len).mul_(slot_mask.unsqueeze(-1))
        last = edge_attr.view(edge_attr.shape[0], n_slots, self.ctx)[:, :, -1]
        data = Data(
            edge_index=graph.edge_index,
            edge_type=graph.edge_type,
            pos=graph.pos,
            pos_w=graph.pos_w,
            edge_attr=edge_attr,
            num_nodes=graph.num_nodes,
            lr_interval=self.lr_interval(w.traj),
        )
        return WindowItem(data, target, horizon_mask, slot_mask, last, scales, graph, w)

    def describe(self) -> list[dict[str, Any]]:
        """One row per trajectory: run id, task, seed, lr, regime (:meth:`lr_interval`), steps, snapshots,
        windows, last metric."""
        counts: dict[int, int] = {}
        for w in self.windows:
            counts[w.traj] = counts.get(w.traj, 0) + 1
        rows = []
        for i, t in enumerate(self.trajectories):
            m = t.meta
            snaps = m.get("snapshots", {})
            metric = (snaps.get("metric") or [None])[-1]
            rows.append({
                "run_id": m["run_id"], "task": m["task"], "seed": m["seed"], "lr_mult": m["lr_mult"],
                "lr": m.get("optimizer", {}).get("lr"), "optimizer": m.get("optimizer", {}).get("name"),
                "lr_interval": self.lr_interval(i),
                "steps": (snaps.get("step") or [0])[-1], "every": m.get("every"), "snapshots": t.n_snapshots, "windows": counts.get(i, 0),
                "metric_name": m.get("metric_name"), "final_metric": metric, "status": m.get("status"),
                "num_params": m["architecture"]["num_params"],
            })
        return rows

    def subset(self, indices: Sequence[int]) -> list[Window]:
        return [self.windows[i] for i in indices]
