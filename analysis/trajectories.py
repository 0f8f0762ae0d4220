"""Parameter trajectories: record them, project them with PCA, plot them (the paper's Fig. 4).

- :class:`TrajectoryRecorder` collects flat parameter snapshots (float32) during any training
  loop — call it every step, or :meth:`~TrajectoryRecorder.attach` it to the optimizer — and,
  when the optimizer is a :class:`nowcast.NiNo` wrapper, notes which steps were nowcast jumps.
- :class:`Trajectory` holds one run: steps ``[T]``, parameters ``[T, P]``, jump steps, metrics.
- :func:`pca_project` fits a 2-D PCA on the *baseline* run only (e.g. Adam) and projects every
  run into it; :func:`plot_trajectories` draws them together (Fig. 4a).
- :func:`embedding_trajectory` turns a trajectory into a sequence of graph embeddings from a
  :class:`nowcast.NiNoModel` (mean-pooled node and edge states after message passing, one per
  window of ``ctx`` consecutive snapshots); :func:`plot_embeddings` draws their PCA (Fig. 4b,c).

Only numpy is imported with this module; torch, nowcast and matplotlib are imported where used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from neuralgraph import NeuralGraph
    from nowcast import NiNoModel

    from .draw import SavedFigure

__all__ = [
    "PCAProjection",
    "Trajectory",
    "TrajectoryRecorder",
    "embedding_trajectory",
    "pca_project",
    "plot_embeddings",
    "plot_trajectories",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ helpers
def _as_vector(value: Any) -> np.ndarray:
    """A flat float32 numpy copy of a tensor / array / module's parameters."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.nn.Module):
        from neuralgraph import flatten_params

        value = flatten_params(value)
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().reshape(-1).to("cpu", torch.float32).numpy().copy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"expected a model, a tensor or an array of parameters, got {type(value).__name__}")
    return array.reshape(-1).astype(np.float32, copy=True)


def _flatten_state_dict(state: Mapping[str, Any], keys: Sequence[str] | None) -> np.ndarray:
    if keys is None:
        keys = [k for k, v in state.items() if np.issubdtype(_dtype_of(v), np.floating)]
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"state dict lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    pieces = [_as_vector(state[k]) for k in keys]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _dtype_of(value: Any) -> np.dtype:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return np.asarray(value).dtype
    if isinstance(dtype, np.dtype):
        return dtype
    return np.dtype("float32") if getattr(dtype, "is_floating_point", False) else np.dtype("int64")


# ------------------------------------------------------------------------------------ Trajectory
@dataclass
class Trajectory:
    """One training run as a sequence of flat parameter snapshots.

    Attributes:
        name: label of the run in plots ("Adam", "NiNo", ...).
        steps: ``[T]`` int64 training step of every snapshot, increasing.
        params: ``[T, P]`` float32 snapshots (``neuralgraph.flatten_params`` order when recorded
            from a model).
        jump_steps: int64 steps at which a nowcast jump happened; the snapshot at such a step
            (when recorded) is the parameters right after the jump.
        metrics: optional per-snapshot values (``name -> [T]`` float64, NaN where not given).
    """

    name: str
    steps: np.ndarray
    params: np.ndarray
    jump_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64).reshape(-1)
        params = np.asarray(self.params)
        if params.ndim == 1 and self.steps.size == 1:
            params = params.reshape(1, -1)
        if params.ndim != 2 or params.shape[0] != self.steps.size:
            raise ValueError(
                f"trajectory '{self.name}': params must be [T, P] with T = {self.steps.size} steps, "
                f"got shape {params.shape}"
            )
        self.params = params.astype(np.float32, copy=False)
        if self.steps.size > 1 and not bool(np.all(np.diff(self.steps) > 0)):
            raise ValueError(f"trajectory '{self.name}': steps must be strictly increasing")
        self.jump_steps = np.unique(np.asarray(self.jump_steps, dtype=np.int64).reshape(-1))
        metrics = {}
        for key, values in dict(self.metrics).items():
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if values.size != self.steps.size:
                raise ValueError(
                    f"trajectory '{self.name}': metric '{key}' has {values.size} values for {self.steps.size} snapshots"
                )
            metrics[key] = values
        self.metrics = metrics

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_state_dicts(
        cls,
        states: Iterable[Any],
        *,
        name: str = "run",
        steps: Sequence[int] | None = None,
        jump_steps: Sequence[int] = (),
        keys: Sequence[str] | None = None,
        model: nn.Module | None = None,
        metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> Trajectory:
        """A trajectory from saved states: state dicts (``model.state_dict()``), flat vectors
        (tensors or arrays) or models, one per snapshot.

        Args:
            states: the snapshots, oldest first.
            steps: their training steps (default ``0, 1, 2, ...``).
            keys: state-dict entries to concatenate, in this order. Default: the parameters of
                ``model`` (``named_parameters()`` order, as ``neuralgraph.flatten_params``) when
                given, else every floating-point entry in the dict's order (buffers such as
                BatchNorm running statistics included).
            model: a model of the same architecture, used only for its parameter names.
        """
        if keys is None and model is not None:
            from neuralgraph import param_specs

            keys = [spec.name for spec in param_specs(model)]
        rows = [
            _flatten_state_dict(s, keys) if isinstance(s, Mapping) else _as_vector(s)
            for s in states
        ]
        if not rows:
            raise ValueError("no states given")
        sizes = {r.size for r in rows}
        if len(sizes) != 1:
            raise ValueError(f"states have different numbers of values: {sorted(sizes)}")
        steps_array = np.arange(len(rows)) if steps is None else np.asarray(steps)
        if steps_array.size != len(rows):
            raise ValueError(f"{len(rows)} states but {steps_array.size} steps")
        return cls(name, steps_array, np.stack(rows), np.asarray(jump_steps), dict(metrics or {}))

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            metrics = {k[len("metric_"):]: data[k] for k in data.files if k.startswith("metric_")}
            return cls(str(data["name"]), data["steps"], data["params"], data["jump_steps"], metrics)

    def save(self, path: str | Path) -> Path:
        """Write the trajectory as a ``.npz`` file; returns its path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            name=np.asarray(self.name),
            steps=self.steps,
            params=self.params,
            jump_steps=self.jump_steps,
            **{f"metric_{k}": v for k, v in self.metrics.items()},
        )
        return path

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def num_params(self) -> int:
        return int(self.params.shape[1])

    @property
    def is_jump(self) -> np.ndarray:
        """``[T]`` bool: whether each snapshot was taken right after a nowcast jump."""
        return np.isin(self.steps, self.jump_steps)

    def every(self, n: int) -> Trajectory:
        """Every ``n``-th snapshot, keeping the first, the last and the jumps (and the snapshot
        before each jump)."""
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        keep = np.zeros(len(self), dtype=bool)
        keep[::n] = True
        if len(self):
            keep[-1] = True
        jumps = self.is_jump
        keep |= jumps
        keep[:-1] |= jumps[1:]
        return Trajectory(
            self.name, self.steps[keep], self.params[keep], self.jump_steps,
            {k: v[keep] for k, v in self.metrics.items()},
        )

    def __repr__(self) -> str:
        return (
            f"Trajectory(name={self.name!r}, snapshots={len(self)}, params={self.num_params}, "
            f"steps={int(self.steps[0]) if len(self) else None}..{int(self.steps[-1]) if len(self) else None}, "
            f"jumps={self.jump_steps.size}, metrics={sorted(self.metrics)})"
        )


# ------------------------------------------------------------------------------------ recorder
class TrajectoryRecorder:
    """Collect parameter snapshots during training.

    Call it after every optimizer step (or :meth:`attach` it to the optimizer)::

        rec = TrajectoryRecorder("Adam", every=10)
        rec.record(0, model)                     # the initial parameters
        for step in range(1, n_steps + 1):
            ...; opt.step()
            rec(step, model, opt, loss=loss.item())
        traj = rec.trajectory()

    A snapshot is taken when ``step % every == 0``. With a :class:`nowcast.NiNo` optimizer (any
    object with a ``jumps`` counter), a step after which the counter grew is a *jump step*: its
    snapshot is always taken and marked; the step before a jump (``optimizer.jumps_now``) is
    always taken too, so the jump shows as one segment in plots. The counter is compared with
    its value at the previous call, so call the recorder every step from the start of the run
    (or from any non-jump step). :meth:`mark_jump` marks a jump by hand (your own nowcasting
    loop).

    Args:
        name: label of the run.
        every: snapshot interval in steps.
        max_snapshots: stop recording after this many snapshots (memory guard; default none).
    """

    def __init__(self, name: str = "run", every: int = 1, *, max_snapshots: int | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.name = name
        self.every = every
        self.max_snapshots = max_snapshots
        self._steps: list[int] = []
        self._rows: list[np.ndarray] = []
        self._metrics: list[dict[str, float]] = []
        self._jumps: set[int] = set()
        self._last_jumps: dict[int, int] = {}  # id(optimizer) -> jumps counter seen last
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def jump_steps(self) -> list[int]:
        return sorted(self._jumps)

    def mark_jump(self, step: int) -> None:
        """Mark ``step`` as a nowcast jump (the snapshot recorded at ``step`` is the post-jump state)."""
        self._jumps.add(int(step))

    def _jumped(self, optimizer: Any) -> bool:
        jumps = getattr(optimizer, "jumps", None)
        if jumps is None:
            return False
        key = id(optimizer)
        before = self._last_jumps.get(key)
        self._last_jumps[key] = int(jumps)
        # first sight: the counter may come from before recording started (a resumed run)
        return before is not None and int(jumps) > before

    def __call__(self, step: int, model: Any, optimizer: Any = None, **metrics: float) -> bool:
        """Per-step hook: record when due (see the class docstring); returns whether it recorded."""
        step = int(step)
        jumped = optimizer is not None and self._jumped(optimizer)
        if jumped:
            self.mark_jump(step)
        before_jump = optimizer is not None and bool(getattr(optimizer, "jumps_now", False))
        if jumped or before_jump or step % self.every == 0:
            return self.record(step, model, **metrics)
        return False

    def record(self, step: int, model: Any, **metrics: float) -> bool:
        """Take a snapshot now: ``model`` is an ``nn.Module``, a flat tensor or an array.

        Recording the same step twice replaces the earlier snapshot. Returns False when
        ``max_snapshots`` is reached.
        """
        step = int(step)
        row = _as_vector(model)
        if self._rows and row.size != self._rows[0].size:
            raise ValueError(
                f"recorder '{self.name}': snapshot at step {step} has {row.size} values, "
                f"earlier ones {self._rows[0].size}"
            )
        values = {k: float(v) for k, v in metrics.items()}
        if self._steps and step == self._steps[-1]:
            self._rows[-1] = row
            self._metrics[-1].update(values)
            return True
        if self._steps and step < self._steps[-1]:
            raise ValueError(f"recorder '{self.name}': step {step} comes after step {self._steps[-1]}")
        if self.max_snapshots is not None and len(self._steps) >= self.max_snapshots:
            if not self._full_warned:
                log.warning(
                    "recorder '%s' holds %d snapshots (max_snapshots): not recording more", self.name, len(self)
                )
                self._full_warned = True
            return False
        self._steps.append(step)
        self._rows.append(row)
        self._metrics.append(values)
        return True

    def attach(self, model: nn.Module, optimizer: Any) -> Any:
        """Record through ``optimizer.register_step_post_hook``: after every ``step()`` call the
        hook runs with ``step = optimizer.step_count`` (NiNo) or the number of calls so far.
        Returns the hook handle (``handle.remove()`` detaches)."""
        calls = [0]

        def hook(opt: Any, args: Any, kwargs: Any) -> None:
            calls[0] += 1
            self(int(getattr(opt, "step_count", calls[0])), model, opt)

        return optimizer.register_step_post_hook(hook)

    def trajectory(self) -> Trajectory:
        """The snapshots so far as a :class:`Trajectory`."""
        if not self._rows:
            raise ValueError(f"recorder '{self.name}' has no snapshots yet")
        names = sorted({k for m in self._metrics for k in m})
        metrics = {k: np.array([m.get(k, np.nan) for m in self._metrics], dtype=np.float64) for k in names}
        jumps = np.array(sorted(self._jumps), dtype=np.int64)
        return Trajectory(self.name, np.array(self._steps), np.stack(self._rows), jumps, metrics)


# ------------------------------------------------------------------------------------ PCA
@dataclass(frozen=True)
class PCAProjection:
    """The result of :func:`pca_project`.

    Attributes:
        coords: one ``[T_i, n_components]`` array per trajectory, in the order given.
        names: the trajectories' names.
        baseline: index of the run the PCA was fitted on.
        mean: ``[P]`` mean of the baseline's snapshots.
        components: ``[n_components, P]`` principal directions (unit rows).
        explained_variance: ``[n_components]`` variance of the baseline along each direction.
        explained_variance_ratio: the same as a fraction of the baseline's total variance.
    """

    coords: list[np.ndarray]
    names: list[str]
    baseline: int
    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        return self.coords[self.names.index(name)]


def _baseline_index(trajectories: Sequence[Trajectory], baseline: int | str) -> int:
    if isinstance(baseline, str):
        names = [t.name for t in trajectories]
        if baseline not in names:
            raise ValueError(f"no trajectory named '{baseline}' (have: {', '.join(names)})")
        return names.index(baseline)
    if not -len(trajectories) <= baseline < len(trajectories):
        raise ValueError(f"baseline index {baseline} out of range for {len(trajectories)} trajectories")
    return baseline % len(trajectories)


def pca_project(
    trajectories: Trajectory | Sequence[Trajectory], *, baseline: int | str = 0, n_components: int = 2
) -> PCAProjection:
    """Fit a PCA on the baseline run's snapshots only and project every run into it.

    The PCA is an SVD of the baseline's centred ``[T, P]`` snapshots (float64). Signs are fixed
    so that the baseline ends at a non-negative coordinate on every component (it moves left to
    right and bottom to top). Directions the baseline does not span get zero variance.

    Args:
        trajectories: the runs (all with the same number of parameters).
        baseline: index or name of the run that defines the axes (e.g. ``"Adam"``).
        n_components: dimensions of the projection.
    """
    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    if not runs:
        raise ValueError("no trajectories given")
    b = _baseline_index(runs, baseline)
    size = runs[b].num_params
    bad = [f"'{t.name}' ({t.num_params})" for t in runs if t.num_params != size]
    if bad:
        raise ValueError(
            f"all trajectories need {size} parameters like the baseline '{runs[b].name}'; got {', '.join(bad)}"
        )
    x = runs[b].params.astype(np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"the baseline '{runs[b].name}' needs at least 2 snapshots for a PCA, has {x.shape[0]}")
    mean = x.mean(axis=0)
    centred = x - mean
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    k = int(n_components)
    if k < 1:
        raise ValueError(f"n_components must be positive, got {n_components}")
    comps = np.zeros((k, size))
    have = min(k, vt.shape[0])
    comps[:have] = vt[:have]
    variance = np.zeros(k)
    variance[:have] = sv[:have] ** 2 / (x.shape[0] - 1)
    total = float((sv**2).sum() / (x.shape[0] - 1))
    ratio = variance / total if total > 0 else np.zeros(k)
    end = centred[-1] @ comps.T
    comps *= np.where(end < 0, -1.0, 1.0)[:, None]
    coords = [(t.params.astype(np.float64) - mean) @ comps.T for t in runs]
    log.debug("PCA on '%s' (%d snapshots): explained variance ratio %s", runs[b].name, x.shape[0], ratio)
    return PCAProjection(coords, [t.name for t in runs], b, mean, comps, variance, ratio)


# ------------------------------------------------------------------------------------ plotting
def plot_trajectories(
    trajectories: Trajectory | Sequence[Trajectory],
    path: str | Path,
    *,
    baseline: int | str = 0,
    title: str | None = None,
    axis_label: str = "PC",
    jump_label: str = "nowcast jump",
    dpi: int = 150,
) -> SavedFigure:
    """Plot runs in the 2-D PCA of the baseline run (the paper's Fig. 4a); writes PNG and PDF.

    Every run is a line with markers; its start (square) and end (diamond) are annotated, the
    snapshots right after nowcast jumps get a star and the jump itself a dashed segment. Axis
    labels give the share of the baseline's variance each component explains.

    Args:
        path: output file; its stem gets ``.png`` and ``.pdf``.
        baseline: index or name of the run the PCA is fitted on.

    Returns:
        the written files (:class:`analysis.draw.SavedFigure`).
    """
    from .draw import _new_figure, _save

    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    proj = pca_project(runs, baseline=baseline)
    fig, ax = _new_figure((6.4, 5.0))
    from matplotlib.lines import Line2D

    colors = _run_colors(len(runs), proj.baseline)
    handles: list[Any] = []
    starts: list[np.ndarray] = []
    ends: list[tuple[np.ndarray, str, Any, int]] = []
    everything = np.concatenate(proj.coords)[:, :2]
    lo, hi = everything.min(axis=0), everything.max(axis=0)
    scale = float(np.abs(everything).max()) or 1.0
    for i, (run, xy) in enumerate(zip(runs, proj.coords)):
        color = colors[i]
        jumps = run.is_jump
        # a jump is the segment that ends at a post-jump snapshot: draw it dashed
        seg_jump = jumps[1:]
        pts = _broken_path(xy, seg_jump)  # the solid line skips the jump segments
        marker_every = max(1, len(run) // 60)
        (h,) = ax.plot(pts[:, 0], pts[:, 1], "-", color=color, lw=1.5, alpha=0.9, zorder=2, label=run.name)
        ax.plot(xy[::marker_every, 0], xy[::marker_every, 1], "o", color=color, ms=3, zorder=3)
        if seg_jump.any():
            idx = np.flatnonzero(seg_jump) + 1
            seg = np.stack([xy[idx - 1], xy[idx]], axis=1)  # [J, 2, 2]
            from matplotlib.collections import LineCollection

            ax.add_collection(LineCollection(seg, colors=[color], linestyles="--", linewidths=1.3, zorder=2))
            ax.plot(xy[idx, 0], xy[idx, 1], "*", color=color, ms=13, mec="black", mew=0.6, zorder=5)
        elif jumps.any():  # a jump at the first snapshot
            ax.plot(xy[jumps, 0], xy[jumps, 1], "*", color=color, ms=13, mec="black", mew=0.6, zorder=5)
        ax.plot(*xy[0], "s", color=color, ms=8, mec="black", mew=0.8, zorder=6)
        ax.plot(*xy[-1], "D", color=color, ms=8, mec="black", mew=0.8, zorder=6)
        ends.append((xy[-1], f"end ({run.name})", color, i))
        if not any(np.allclose(xy[0], s, rtol=0, atol=1e-6 * scale) for s in starts):
            ends.append((xy[0], "start", "black", 0))
            starts.append(xy[0])
        handles.append(h)
    # labels point toward the middle of the plot so that they stay inside the axes
    middle = (lo + hi) / 2
    for point, text, color, i in ends:
        right = point[0] > middle[0]
        up = point[1] <= middle[1]
        ax.annotate(
            text, point, xytext=(-8 if right else 8, (1 if up else -1) * (8 + 10 * (i % 3))),
            textcoords="offset points", fontsize=8, color=color, ha="right" if right else "left",
            va="bottom" if up else "top",
        )
    any_jump = any(r.is_jump.any() for r in runs)
    handles.append(Line2D([], [], ls="none", marker="s", color="grey", mec="black", label="start"))
    handles.append(Line2D([], [], ls="none", marker="D", color="grey", mec="black", label="end"))
    if any_jump:
        handles.append(Line2D([], [], ls="--", marker="*", ms=11, color="grey", mec="black", label=jump_label))
    ratio = proj.explained_variance_ratio
    ax.set_xlabel(f"{axis_label}1 ({100 * ratio[0]:.1f}% of {runs[proj.baseline].name}'s variance)")
    ax.set_ylabel(f"{axis_label}2 ({100 * ratio[1]:.1f}% of {runs[proj.baseline].name}'s variance)")
    ax.set_title(title or f"trajectories in the PCA of {runs[proj.baseline].name}")
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    ax.autoscale_view()
    labels = tuple(h.get_label() for h in handles)
    return _save(fig, path, dpi=dpi, legend=labels, info={"explained_variance_ratio": ratio.tolist()})


def _broken_path(xy: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Points of a polyline with NaN rows inserted where segment ``i`` (``xy[i] -> xy[i+1]``) is a gap."""
    if not gaps.any():
        return xy
    insert_at = np.flatnonzero(gaps) + 1
    return np.insert(xy, insert_at, np.nan, axis=0)


def _run_colors(n: int, baseline: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    # the baseline is black-ish blue (C0); others follow the cycle
    order = [baseline] + [i for i in range(n) if i != baseline]
    colors: list[Any] = [None] * n
    for rank, i in enumerate(order):
        colors[i] = cmap(rank % 10)
    return colors


# ------------------------------------------------------------------------------------ embeddings
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
    (per-tensor scaling with :func:`nowcast.scale_states`, edge features with
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

    from nowcast import NiNoModel, scale_states

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


def plot_embeddings(
    embeddings: Trajectory | Sequence[Trajectory],
    path: str | Path,
    *,
    baseline: int | str = 0,
    title: str | None = None,
    dpi: int = 150,
) -> SavedFigure:
    """PCA plot of graph-embedding trajectories (from :func:`embedding_trajectory`), as the
    paper's Fig. 4b,c: the PCA is fitted on the baseline run's embeddings."""
    runs = [embeddings] if isinstance(embeddings, Trajectory) else list(embeddings)
    return plot_trajectories(
        runs, path, baseline=baseline, title=title or "NiNo graph embeddings (PCA)", axis_label="embedding PC", dpi=dpi
    )
