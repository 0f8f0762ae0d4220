"""Collect parameter trajectories of the base optimizer: the training data of a NiNo meta-model.

A *run* (:class:`RunSpec`) trains one task from one seed with its base optimizer (Adam / AdamW,
the learning rate scaled by ``lr_mult``) for ``steps`` steps and saves the flat parameter vector
(``neuralgraph.flatten_params`` order) at step 0 and every ``every`` steps. Each run writes a
folder ``<out_dir>/<run_id>/``:

- ``params.npy``: float32 ``[T, P]``, ``T = steps // every + 1`` rows (row ``i`` = parameters
  after ``i * every`` steps), written through ``np.lib.format.open_memmap``; rows past
  ``meta["n_snapshots"]`` are not valid (yet);
- ``meta.json``: the task, the architecture (model class and config, the converter and its
  config, parameter names and shapes in flat order), the optimizer and its settings (incl. the
  learning rate actually used), seed, ``every``, the snapshots saved so far with the mean
  training loss over the preceding interval and the validation metric at each, and the status
  (``running``, ``complete`` or ``diverged``);
- ``resume.pt`` (only while the run is unfinished): model and optimizer state, RNG state, the
  step and the snapshot history, written atomically at every snapshot and read with
  ``torch.load(weights_only=True)``.

Resuming: :func:`collect` never redoes a finished run; an unfinished one continues from its last
snapshot *exactly*: the model and optimizer states are restored and the seeded batch stream is
fast-forwarded by the number of steps already taken, so the resumed ``params.npy`` is
bit-identical to an uninterrupted run's (same machine, same thread count).

Recipes (:data:`RECIPES`) name lists of runs plus the meta-training settings that go with them
(``nino-cpu``: the shipped checkpoint; ``tiny`` and ``digits-tiny``: minutes-long smoke runs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .safe_load import load_torch_file

__all__ = [
    "RECIPES",
    "Recipe",
    "RunSpec",
    "Trajectory",
    "collect",
    "collect_run",
    "get_recipe",
    "load_trajectory",
    "model_architecture",
]

log = logging.getLogger(__name__)

PARAMS_FILE = "params.npy"
META_FILE = "meta.json"
RESUME_FILE = "resume.pt"
TRAJECTORY_FORMAT = "nowcast.trajectory"
TRAJECTORY_VERSION = 1
DEFAULT_EVERY = 200


# ------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class RunSpec:
    """One trajectory to collect.

    Attributes:
        task: registered task name (``nowcast.tasks.tasks()``).
        seed: seeds the model's initialisation and the batch order (as :func:`nowcast.training.train`).
        lr_mult: multiplies the learning rate of every parameter group of the task's optimizer.
        steps: training steps (default: the task's ``max_steps``); a multiple of ``every``.
        every: steps between saved snapshots (200: the spacing of NiNo's states).
    """

    task: str
    seed: int = 0
    lr_mult: float = 1.0
    steps: int | None = None
    every: int = DEFAULT_EVERY

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"RunSpec.every must be a positive integer, got {self.every!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < self.every or self.steps % self.every):
            raise ValueError(f"RunSpec.steps must be a positive multiple of every={self.every}, got {self.steps!r}")
        if not (isinstance(self.lr_mult, (int, float)) and math.isfinite(self.lr_mult) and self.lr_mult > 0):
            raise ValueError(f"RunSpec.lr_mult must be a positive number, got {self.lr_mult!r}")

    def resolved_steps(self) -> int:
        """``steps``, or the task's ``max_steps`` rounded down to a multiple of ``every``."""
        if self.steps is not None:
            return self.steps
        from .tasks import get_task

        steps = get_task(self.task).max_steps // self.every * self.every
        if steps < self.every:
            raise ValueError(f"task {self.task} has max_steps below every={self.every}: give RunSpec.steps")
        return steps

    @property
    def run_id(self) -> str:
        """Folder name: ``<task>_s<seed>_lr<mult>_n<steps>_e<every>``."""
        return f"{self.task}_s{self.seed}_lr{self.lr_mult:g}_n{self.resolved_steps()}_e{self.every}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "steps": self.resolved_steps()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        return cls(**{k: d[k] for k in ("task", "seed", "lr_mult", "steps", "every") if k in d})


@dataclass(frozen=True)
class Route:
    """A recipe whose checkpoint is a :class:`nowcast.RegimeRouter` of two other recipes' models.

    Attributes:
        below: the recipe whose model predicts when ``lr_interval < split``.
        above: the recipe whose model predicts otherwise.
        split: the regime boundary (learning rate x steps between states).
    """

    below: str
    above: str
    split: float

    def to_dict(self) -> dict[str, Any]:
        return {"below": self.below, "above": self.above, "split": self.split}


@dataclass(frozen=True)
class Recipe:
    """A named dataset + meta-training recipe.

    Attributes:
        name: recipe key.
        description: one line for people (and the model card).
        runs: the trajectories to collect and meta-train on.
        metatrain: overrides of :class:`nowcast.metatrain.MetaTrainConfig` fields.
        val_runs: trajectories collected too but never trained on: meta-training evaluates on
            them and ships the weights where the metric named by ``metatrain["select"]`` was
            lowest (:class:`nowcast.metatrain.MetaTrainConfig`).
        workers: collection processes run in parallel by default (one thread each).
        init_from: a trained checkpoint folder that meta-training starts from instead of a random
            initialisation (relative paths from the working directory), e.g. the base model of a
            regime adapter; ``nowcast metatrain --init-from`` overrides it.
        route: set for a routed recipe: its runs are collected once, each named recipe's model is
            meta-trained on its own runs among them, and the checkpoint routes between the two
            (``metatrain`` is then unused; see :class:`Route`).
    """

    name: str
    description: str
    runs: tuple[RunSpec, ...]
    metatrain: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1
    val_runs: tuple[RunSpec, ...] = ()
    init_from: str | None = None
    route: Route | None = None

    def __post_init__(self) -> None:
        ids = [r.run_id for r in self.all_runs]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"recipe {self.name}: runs repeat (a validation run must not also be a training run): {repeated}")

    @property
    def all_runs(self) -> tuple[RunSpec, ...]:
        """Training runs, then validation runs: everything to collect."""
        return tuple(self.runs) + tuple(self.val_runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "runs": [r.to_dict() for r in self.runs],
            "val_runs": [r.to_dict() for r in self.val_runs],
            "metatrain": dict(self.metatrain),
            "workers": self.workers,
            **({"init_from": self.init_from} if self.init_from else {}),
            **({"route": self.route.to_dict()} if self.route else {}),
        }

    def experts(self) -> dict[str, Recipe]:
        """``{"below": recipe, "above": recipe}`` of a routed recipe, each checked to need no run
        this recipe does not collect (raises ``ValueError`` otherwise, ``KeyError`` for an unknown name)."""
        if self.route is None:
            raise ValueError(f"recipe {self.name} is not routed")
        own = {r.run_id for r in self.all_runs}
        out = {}
        for side in ("below", "above"):
            expert = get_recipe(getattr(self.route, side))
            if expert.route is not None or expert.init_from:
                raise ValueError(f"recipe {self.name}: expert {expert.name} must be a plain recipe (not routed, no init_from)")
            missing = sorted({r.run_id for r in expert.all_runs} - own)
            if missing:
                raise ValueError(f"recipe {self.name}: its runs lack {len(missing)} run(s) of expert {expert.name}: {', '.join(missing[:4])}")
            out[side] = expert
        return out


def _grid(task: str, seeds: Iterable[int], lr_mults: Sequence[float], steps: int | None, every: int = DEFAULT_EVERY) -> tuple[RunSpec, ...]:
    """One run per seed; learning-rate multipliers cycle over the seeds."""
    return tuple(RunSpec(task, s, lr_mults[i % len(lr_mults)], steps, every) for i, s in enumerate(seeds))


# Seeds start at 100 so that no collected trajectory equals a benchmark run (seeds 0, 1, 2, ...).
_FM16_LR_MULTS = (1.0, 0.5, 1.5, 0.75, 1.25, 1.0)
_NINO_CPU_RUNS = (
    _grid("fm16", range(100, 112), _FM16_LR_MULTS, 10_000)
    + _grid("shakespeare-3-24", range(100, 108), (1.0, 0.5, 1.5, 0.75), 5_000)
    + _grid("shakespeare-2-32", range(100, 108), (1.0, 1.5, 0.5, 1.25), 5_000)
)
# Twice and three times nino-cpu's long-regime FM/16 runs: the first 12 or all 24 of these, same learning rates.
_MORE_FM16_RUNS = _grid("fm16", range(150, 174), _FM16_LR_MULTS, 10_000)
# Convnets of a second width (24-48-48), same regime: does width variety in the data help FM/32's width?
_FM24_RUNS = _grid("fm24", range(180, 188), _FM16_LR_MULTS, 10_000)
_NINO_CPU_VAL = (RunSpec("fm16", 112, 1.0, 10_000), RunSpec("shakespeare-3-24", 108, 1.0, 5_000), RunSpec("shakespeare-2-32", 108, 1.0, 5_000))
# The regime of the held-out digits task (Adam 1e-3 = FM/16's 6e-3 x 1/6, states every 40 steps), on FashionMNIST.
_LOW_LR_FM16_RUNS = _grid("fm16", range(120, 128), (0.1667, 0.25, 0.125, 0.3333), 2_000, every=40)
_LOW_LR_FM16_VAL = (RunSpec("fm16", 128, 0.1667, 2_000, every=40),)
# Twice as many again for the regime adapter, which trains on this regime alone.
_MORE_LOW_LR_FM16_RUNS = _grid("fm16", range(129, 145), (0.1667, 0.25, 0.125, 0.3333), 2_000, every=40)
_MORE_LOW_LR_FM16_VAL = (RunSpec("fm16", 145, 0.1667, 2_000, every=40),)
# A regime adapter (nino-cpu-adapter, nino-cpu-mixed-adapter): only offsets train, from a trained checkpoint.
_ADAPTER_METATRAIN = {
    "hid": 64, "lr_interval_input": True, "regime_adapter": True, "trainable": "regime",
    "steps": 1_500, "batch": 4, "lr": 1e-3, "warmup": 50, "checkpoint_every": 100, "eval_every": 100,
    "val_windows": 64, "select": "val_jump",
}
_NINO_CPU_METATRAIN = {
    "hid": 64, "steps": 6_000, "batch": 4, "lr": 3e-3, "warmup": 250, "checkpoint_every": 250, "eval_every": 250,
    "val_windows": 64, "select": "val_jump",
}


def _nino_cpu_plus(name: str, description: str, extra_runs: tuple[RunSpec, ...]) -> Recipe:
    """nino-cpu with more training runs and nothing else changed (its validation runs and meta-training)."""
    return Recipe(
        name=name, description=description, runs=_NINO_CPU_RUNS + extra_runs, val_runs=_NINO_CPU_VAL,
        metatrain=dict(_NINO_CPU_METATRAIN), workers=2,
    )


RECIPES: dict[str, Recipe] = {
    "nino-cpu": Recipe(
        name="nino-cpu",
        description=(
            "the long-regime model (nino-cpu-routed's model at and above lr_interval 0.2): 12 FM/16 runs (10k steps) and 8 + 8 Tiny Shakespeare runs "
            "(GPT 3-24 and 2-32, 5k steps), learning rates x0.5 to x1.5, states every 200 steps, plus one run of each "
            "task for validation; NiNo hid 64 meta-trained for 6k steps of 4 windows, the weights with the lowest "
            "jump error on the validation runs shipped"
        ),
        runs=_NINO_CPU_RUNS,
        val_runs=_NINO_CPU_VAL,
        metatrain=_NINO_CPU_METATRAIN,
        workers=2,
    ),
    "nino-cpu-more": _nino_cpu_plus(
        "nino-cpu-more",
        "nino-cpu with twice the FM/16 runs (24 of 10k steps, seeds 100-111 and 150-161, learning rates x0.5 to x1.5) "
        "and the same 16 Tiny Shakespeare runs, validation runs and meta-training (an experiment on FM/32's "
        "dependence on the training run, see docs/metatraining.md)",
        _MORE_FM16_RUNS[:12],
    ),
    "nino-cpu-more3": _nino_cpu_plus(
        "nino-cpu-more3",
        "nino-cpu-more with 12 FM/16 runs more again (36 of 10k steps, seeds 100-111 and 150-173); same experiment",
        _MORE_FM16_RUNS,
    ),
    "nino-cpu-wide": _nino_cpu_plus(
        "nino-cpu-wide",
        "nino-cpu plus 8 FashionMNIST runs of a wider convnet (fm24: 24-48-48, 10k steps, seeds 180-187, the "
        "FM/16 learning-rate grid); same validation runs and meta-training (an experiment on FM/32's width, "
        "see docs/metatraining.md)",
        _FM24_RUNS,
    ),
    "nino-cpu-mixed": Recipe(
        name="nino-cpu-mixed",
        description=(
            "nino-cpu plus 8 short FM/16 runs in a second regime (2k steps, learning rates x1/8 to x1/3, states every "
            "40 steps) and one more validation run of that kind; same meta-training (nino-cpu-routed's model below "
            "lr_interval 0.2; on its own better than nino-cpu on digits, worse on FM/32, see docs/metatraining.md)"
        ),
        runs=_NINO_CPU_RUNS + _LOW_LR_FM16_RUNS,
        val_runs=_NINO_CPU_VAL + _LOW_LR_FM16_VAL,
        metatrain=dict(_NINO_CPU_METATRAIN),
        workers=2,
    ),
    "nino-cpu-routed": Recipe(
        name="nino-cpu-routed",
        description=(
            "the shipped checkpoint: nino-cpu-mixed's model below lr_interval 0.2 (the short regime it added: Adam "
            "lr x1/8 to x1/3, states every 40 steps, lr_interval 0.03-0.08) and nino-cpu's at and above 0.2 (the "
            "regime of all its training runs, 0.2-1.8), in one checkpoint; both trained from one collection of "
            "nino-cpu-mixed's runs (nino-cpu's are a subset)"
        ),
        runs=_NINO_CPU_RUNS + _LOW_LR_FM16_RUNS,
        val_runs=_NINO_CPU_VAL + _LOW_LR_FM16_VAL,
        workers=2,
        route=Route(below="nino-cpu-mixed", above="nino-cpu", split=0.2),
    ),
    "nino-cpu-regime": Recipe(
        name="nino-cpu-regime",
        description=(
            "nino-cpu-mixed's runs and validation runs, meta-trained with the regime as an input (log10 of each "
            "run's learning rate x steps between states), so one model can learn both regimes' futures"
        ),
        runs=_NINO_CPU_RUNS + _LOW_LR_FM16_RUNS,
        val_runs=_NINO_CPU_VAL + _LOW_LR_FM16_VAL,
        metatrain={**_NINO_CPU_METATRAIN, "lr_interval_input": True},
        workers=2,
    ),
    "nino-cpu-adapter": Recipe(
        name="nino-cpu-adapter",
        description=(
            "a regime adapter for checkpoints/nino-cpu: 24 short FM/16 runs in digits' regime (2k steps, learning "
            "rates x1/8 to x1/3, states every 40 steps) train zero-initialised offsets of every weight, scaled by "
            "log10(0.2 / lr_interval) below lr_interval 0.2 and absent above it, so the model is exactly nino-cpu in "
            "every regime nino-cpu was trained on; nino-cpu's own weights stay frozen"
        ),
        runs=_LOW_LR_FM16_RUNS + _MORE_LOW_LR_FM16_RUNS,
        val_runs=_LOW_LR_FM16_VAL + _MORE_LOW_LR_FM16_VAL,
        metatrain={**_ADAPTER_METATRAIN, "lr_interval_ceiling": 0.2},
        workers=2,
        init_from="checkpoints/nino-cpu",
    ),
    "nino-cpu-mixed-adapter": Recipe(
        name="nino-cpu-mixed-adapter",
        description=(
            "the mirror of nino-cpu-adapter, for checkpoints/nino-cpu-mixed: its 12 long-regime FM/16 runs (states every "
            "200 steps, lr_interval 0.6 to 1.8) train zero-initialised offsets of every weight, scaled by "
            "log10(lr_interval / 0.6) above lr_interval 0.6 and absent at and below it, so the model is exactly "
            "nino-cpu-mixed in every shorter regime (digits', WikiText-2's, Tiny Shakespeare's); nino-cpu-mixed's own "
            "weights stay frozen"
        ),
        runs=_NINO_CPU_RUNS[:12],
        val_runs=_NINO_CPU_VAL[:1],
        metatrain={**_ADAPTER_METATRAIN, "lr_interval_floor": 0.6},
        workers=2,
        init_from="checkpoints/nino-cpu-mixed",
    ),
    "tiny": Recipe(
        name="tiny",
        description="smoke test: one short FM/16 run and one short Shakespeare 3-24 run, 50 meta-training steps",
        runs=(RunSpec("fm16", 100, 1.0, 1400), RunSpec("shakespeare-3-24", 100, 1.0, 1400)),
        metatrain={"hid": 64, "steps": 50, "batch": 2, "lr": 3e-3, "warmup": 5, "checkpoint_every": 20, "eval_every": 25, "eval_windows": 8},
        workers=2,
    ),
    "digits-tiny": Recipe(
        name="digits-tiny",
        description="no data files needed: two short runs of the embedded digits task (and one for validation), 30 meta-training steps",
        runs=(RunSpec("digits", 100, 1.0, 200, every=20), RunSpec("digits", 101, 0.5, 200, every=20)),
        val_runs=(RunSpec("digits", 102, 1.0, 200, every=20),),
        metatrain={
            "hid": 16, "steps": 30, "batch": 2, "lr": 3e-3, "warmup": 3, "checkpoint_every": 10, "eval_every": 10, "eval_windows": 4,
            "val_windows": 4, "seq_len": 8,
        },
        workers=1,
    ),
}
"""Recipes by name (see :class:`Recipe`)."""


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe called ``name`` (a :class:`Recipe` is returned as is)."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe '{name}'; choose from {', '.join(sorted(RECIPES))}") from None


# ------------------------------------------------------------------------------------- helpers
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def model_architecture(model: nn.Module, graph: Any = None) -> dict[str, Any]:
    """What is needed to rebuild a model's neural graph without the model: class, config,
    converter name and config, and the ``(name, shape)`` list in flat order."""
    import neuralgraph

    graph = neuralgraph.convert(model) if graph is None else graph
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config_dict: Any = dataclasses.asdict(config)
    elif config is not None and hasattr(config, "to_dict"):
        config_dict = config.to_dict()
    else:
        config_dict = None
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_config": config_dict,
        "converter": graph.meta.get("converter", graph.arch),
        "converter_config": config_dict,
        "lpe": graph.lpe,
        "num_params": graph.num_params,
        "params": [[name, list(p.shape)] for name, p in model.named_parameters()],
    }


def _optimizer_info(optimizer: torch.optim.Optimizer, lr_mult: float) -> dict[str, Any]:
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return {
        "name": type(optimizer).__name__,
        "lr": group.get("lr"),
        "lr_mult": lr_mult,
        "base_lr": None if group.get("lr") is None else float(group["lr"]) / lr_mult,
        "settings": _jsonable(group),
    }


def _flat(model: nn.Module) -> np.ndarray:
    import neuralgraph

    return neuralgraph.flatten_params(model).detach().to(torch.float32).numpy()


# ------------------------------------------------------------------------------------- trajectories
@dataclass
class Trajectory:
    """A collected run as read back: ``params`` is a read-only memmap ``[T, P]``; only the first
    ``n_snapshots`` rows are valid."""

    path: Path
    meta: dict[str, Any]
    params: np.ndarray

    @property
    def n_snapshots(self) -> int:
        return int(self.meta["n_snapshots"])

    @property
    def complete(self) -> bool:
        return self.meta.get("status") in ("complete", "diverged")

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    def states(self, rows: slice | Sequence[int] | np.ndarray) -> torch.Tensor:
        """Snapshots ``rows`` as a float32 ``[P, len(rows)]`` tensor (column = snapshot)."""
        block = np.asarray(self.params[rows], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(block.T))


def load_trajectory(path: str | os.PathLike) -> Trajectory:
    """Read a run folder written by :func:`collect` (memory-mapped, nothing loaded eagerly)."""
    path = Path(path)
    meta_path, params_path = path / META_FILE, path / PARAMS_FILE
    if not meta_path.is_file() or not params_path.is_file():
        raise FileNotFoundError(f"{path} is not a collected trajectory (needs {META_FILE} and {PARAMS_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != TRAJECTORY_FORMAT:
        raise ValueError(f"{meta_path} is not a {TRAJECTORY_FORMAT} file")
    params = np.load(params_path, mmap_mode="r")
    if params.ndim != 2 or params.shape[1] != meta["architecture"]["num_params"]:
        raise ValueError(f"{params_path} has shape {params.shape}, expected [T, {meta['architecture']['num_params']}]")
    if int(meta["n_snapshots"]) > params.shape[0]:
        raise ValueError(f"{meta_path} claims {meta['n_snapshots']} snapshots but {params_path} has {params.shape[0]} rows")
    return Trajectory(path, meta, params)


# ------------------------------------------------------------------------------------- one run
def collect_run(
    spec: RunSpec,
    out_dir: str | os.PathLike,
    *,
    data: Any = None,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | bool = False,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> Path:
    """Collect (or finish) one run into ``out_dir/<run_id>``; returns that folder.

    Args:
        spec: the run.
        out_dir: parent folder of the run folders.
        data: already loaded task data (else ``task.load_data(data_dir)``).
        progress: True for a tqdm bar, or a function called with the number of steps just done.
        callback: ``callback(step, model)`` after every training step (tests use it to interrupt).

    A finished run (``meta.json`` status ``complete`` or ``diverged``) is returned untouched.
    """
    from .tasks import get_task

    task = get_task(spec.task)
    run_dir = Path(out_dir) / spec.run_id
    meta_path = run_dir / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("status") in ("complete", "diverged"):
            log.info("%s: already %s (%d snapshots)", spec.run_id, meta["status"], meta["n_snapshots"])
            return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(run_dir):
        return _collect_locked(spec, task, run_dir, data, data_dir, progress, callback)


class _RunLock:
    """An exclusive ``flock`` on ``<run_dir>/lock`` while a process writes the run (released when
    the process ends, however it ends): two processes never write one run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "lock"
        self.handle: Any = None

    def __enter__(self) -> _RunLock:
        self.handle = open(self.path, "a+")
        try:
            import fcntl

            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no protection
            pass
        except OSError:
            self.handle.close()
            raise RuntimeError(f"{self.path.parent} is being collected by another process; wait for it or stop it") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


def _collect_locked(
    spec: RunSpec,
    task: Any,
    run_dir: Path,
    data: Any,
    data_dir: str | os.PathLike | None,
    progress: Callable[[int], None] | bool,
    callback: Callable[[int, nn.Module], None] | None,
) -> Path:
    steps, every = spec.resolved_steps(), spec.every
    meta_path, params_path, resume_path = run_dir / META_FILE, run_dir / PARAMS_FILE, run_dir / RESUME_FILE
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("status") in ("complete", "diverged"):
        return run_dir  # finished by another process meanwhile
    data = task.load_data(data_dir) if data is None else data

    model = task.model(spec.seed)
    model.train()
    optimizer = task.make_optimizer(model)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * spec.lr_mult
    arch = model_architecture(model)
    n_rows = steps // every + 1
    history: dict[str, list] = {"step": [], "loss": [], "metric": []}
    step, wall = 0, 0.0

    if resume_path.is_file() and params_path.is_file():
        state = load_torch_file(resume_path, "collection resume checkpoint")
        if state.get("spec") != _jsonable(spec.to_dict()):
            raise ValueError(f"{resume_path} belongs to another run ({state.get('spec')}); remove {run_dir} to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, history, wall = int(state["step"]), dict(state["history"]), float(state["wall_s"])
        params = np.lib.format.open_memmap(params_path, mode="r+")
        if params.shape != (n_rows, arch["num_params"]):
            raise ValueError(f"{params_path} has shape {params.shape}, expected {(n_rows, arch['num_params'])}")
        log.info("%s: resuming at step %d (%d snapshots)", spec.run_id, step, len(history["step"]))
    else:
        params = np.lib.format.open_memmap(params_path, mode="w+", dtype=np.float32, shape=(n_rows, arch["num_params"]))
        history = {"step": [], "loss": [], "metric": []}

    info = {
        "format": TRAJECTORY_FORMAT,
        "version": TRAJECTORY_VERSION,
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "task": task.name,
        "seed": spec.seed,
        "lr_mult": spec.lr_mult,
        "steps": steps,
        "every": every,
        "metric_name": task.metric,
        "higher_is_better": task.higher_is_better,
        "architecture": arch,
        "optimizer": _optimizer_info(optimizer, spec.lr_mult),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }

    def write_meta(status: str) -> None:
        _write_json(meta_path, {**info, "status": status, "n_snapshots": len(history["step"]), "snapshots": history, "wall_s": wall})

    def snapshot(loss: float | None) -> bool:
        flat = _flat(model)
        if not np.isfinite(flat).all():
            return False
        row = len(history["step"])
        params[row] = flat
        params.flush()
        history["step"].append(step)
        history["loss"].append(loss)
        history["metric"].append(float(data.evaluate(model)))
        state = {
            "spec": _jsonable(spec.to_dict()),
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "history": history,
            "wall_s": wall + time.perf_counter() - start,
        }
        _atomic_torch_save(state, resume_path)
        return True

    bar = None
    report: Callable[[int], None] | None = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=step, desc=spec.run_id, leave=False, mininterval=0.5)
        report = bar.update
    elif callable(progress):
        report = progress
        if step:
            report(step)

    start = time.perf_counter()
    status = "running"
    try:
        if not history["step"]:
            snapshot(None)
            write_meta(status)
        batches = data.batches(spec.seed)
        for _ in range(step):  # fast-forward the seeded stream to where the run stopped
            next(batches)
        interval_loss, interval_n = 0.0, 0
        while step < steps:
            batch = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = data.loss(model, batch)
            loss.backward()
            optimizer.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                log.warning("%s: training loss is %s at step %d; the run stops here (diverged)", spec.run_id, value, step)
                status = "diverged"
                break
            interval_loss += value
            interval_n += 1
            if callback is not None:
                callback(step, model)
            if report is not None:
                report(1)
            if step % every == 0:
                if not snapshot(interval_loss / max(interval_n, 1)):
                    log.warning("%s: parameters are not finite at step %d; the run stops here (diverged)", spec.run_id, step)
                    status = "diverged"
                    break
                interval_loss, interval_n = 0.0, 0
                write_meta(status)
                if bar is not None:
                    bar.set_postfix({task.metric: f"{history['metric'][-1]:.4g}"}, refresh=False)
        if status == "running":
            status = "complete"
    finally:
        if bar is not None:
            bar.close()
    wall += time.perf_counter() - start
    write_meta(status)
    resume_path.unlink(missing_ok=True)
    log.info("%s: %s, %d snapshots, %.1f s", spec.run_id, status, len(history["step"]), wall)
    return run_dir


# ------------------------------------------------------------------------------------- many runs
def _as_runs(recipe_or_runs: str | Recipe | RunSpec | Iterable[RunSpec]) -> list[RunSpec]:
    if isinstance(recipe_or_runs, (str, Recipe)):
        return list(get_recipe(recipe_or_runs).all_runs)
    if isinstance(recipe_or_runs, RunSpec):
        return [recipe_or_runs]
    runs = list(recipe_or_runs)
    if not all(isinstance(r, RunSpec) for r in runs):
        raise TypeError("collect() takes a recipe name, a Recipe, a RunSpec or a list of RunSpec")
    return runs


def _done(spec: RunSpec, out_dir: Path) -> bool:
    meta = out_dir / spec.run_id / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("status") in ("complete", "diverged")
    except (OSError, json.JSONDecodeError):
        return False


def _steps_done(spec: RunSpec, out_dir: Path) -> int:
    meta = out_dir / spec.run_id / META_FILE
    try:
        snaps = json.loads(meta.read_text())["snapshots"]["step"]
        return int(snaps[-1]) if snaps else 0
    except (OSError, KeyError, IndexError, json.JSONDecodeError):
        return 0


def collect(
    recipe_or_runs: str | Recipe | RunSpec | Iterable[RunSpec],
    out_dir: str | os.PathLike,
    progress: bool = True,
    *,
    workers: int | None = None,
    threads: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Collect every run of a recipe (or a list of :class:`RunSpec`) into ``out_dir``.

    Finished runs are skipped; unfinished ones resume from their last snapshot.

    Args:
        recipe_or_runs: a recipe name (:data:`RECIPES`), a :class:`Recipe`, or run specs.
        out_dir: parent folder of the run folders.
        progress: one tqdm bar over all steps of all runs.
        workers: runs trained at once in separate processes (default: the recipe's, else 1).
            Results do not depend on it (each run is seeded on its own).
        threads: torch threads per run (default: 1 when ``workers > 1``, else unchanged).
        data_dir: where the tasks' datasets are (see :mod:`nowcast.tasks.data`).

    Returns:
        The run folders, in the order of the runs.
    """
    runs = _as_runs(recipe_or_runs)
    if workers is None:
        workers = get_recipe(recipe_or_runs).workers if isinstance(recipe_or_runs, (str, Recipe)) else 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"runs repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    todo = [r for r in runs if not _done(r, out)]
    log.info("collect: %d runs, %d to do, into %s", len(runs), len(todo), out)
    total = sum(r.resolved_steps() for r in todo)
    already = sum(_steps_done(r, out) for r in todo)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=0, desc=f"collect {len(todo)} run(s)", mininterval=1.0, unit="step")
    try:
        if workers <= 1 or len(todo) <= 1:
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                loaded: dict[str, Any] = {}
                for spec in todo:
                    if spec.task not in loaded:
                        from .tasks import get_task

                        loaded = {spec.task: get_task(spec.task).load_data(data_dir)}  # one dataset in memory at a time
                    collect_run(spec, out, data=loaded[spec.task], progress=(bar.update if bar is not None else False))
            finally:
                torch.set_num_threads(before)
        else:
            _collect_parallel(todo, out, workers, threads or 1, data_dir, bar)
    finally:
        if bar is not None:
            bar.close()
    if todo:
        log.info("collect: done (%d steps were already there)", already)
    return [out / i for i in ids]


def _collect_parallel(todo: list[RunSpec], out: Path, workers: int, threads: int, data_dir: Any, bar: Any) -> None:
    """Run ``todo`` in at most ``workers`` child processes (``python -m nowcast.collect_worker``), one
    thread each; progress is read from the runs' ``meta.json`` (one update per snapshot).
    A failed run lets the running ones finish, starts no new one, then raises."""
    import subprocess
    import sys

    import signal

    queue = list(todo)
    running: dict[RunSpec, tuple[subprocess.Popen, Any]] = {}
    shown = {r.run_id: 0 for r in todo}
    failed: list[str] = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def update(spec: RunSpec) -> None:
        done = _steps_done(spec, out)
        if bar is not None and done > shown[spec.run_id]:
            bar.update(done - shown[spec.run_id])
        shown[spec.run_id] = max(shown[spec.run_id], done)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term) if _in_main_thread() else None
    try:
        while queue or running:
            while queue and len(running) < workers and not failed:
                spec = queue.pop(0)
                run_dir = out / spec.run_id
                run_dir.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "nowcast.collect_worker", "--run", json.dumps(spec.to_dict()), "--out", str(out), "--threads", str(threads)]
                if data_dir is not None:
                    cmd += ["--data-dir", str(data_dir)]
                log_file = open(run_dir / "worker.log", "a")
                proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
                running[spec] = (proc, log_file)
                log.info("collect: started %s (pid %d)", spec.run_id, running[spec][0].pid)
            if failed and not running:
                break
            time.sleep(1.0)
            for spec, (proc, log_file) in list(running.items()):
                update(spec)
                if proc.poll() is None:
                    continue
                log_file.close()
                del running[spec]
                if proc.returncode != 0:
                    failed.append(f"{spec.run_id} (exit {proc.returncode}, see {out / spec.run_id / 'worker.log'})")
                    log.error("collect: %s failed", failed[-1])
    finally:
        for proc, log_file in running.values():  # interrupted: stop the children (their runs resume later)
            proc.terminate()
            proc.wait()
            log_file.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if failed:
        raise RuntimeError(f"collection failed for {', '.join(failed)}; rerun to retry (finished runs are kept)")


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM when the collecting process dies (even by SIGKILL)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
