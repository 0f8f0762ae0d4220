"""What to collect and how to meta-train on it: :class:`RunSpec`, :class:`Recipe` and :data:`RECIPES`.

A *run* (:class:`RunSpec`) trains one task from one seed with its base optimizer (Adam / AdamW,
the learning rate scaled by ``lr_mult``) for ``steps`` steps, saving the parameters every
``every`` steps (:mod:`nowcast.metatrain.collection` collects it). A *recipe* names a list of
runs, the validation runs kept apart from them, and the meta-training settings that go with them
(``nino-cpu``: the shipped checkpoint; ``tiny`` and ``digits-tiny``: minutes-long smoke runs); a
routed recipe (:class:`Route`) builds one checkpoint out of two other recipes' models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tasks import get_task

__all__ = ["DEFAULT_EVERY", "RECIPES", "Recipe", "Route", "RunSpec", "get_recipe"]

DEFAULT_EVERY = 200


@dataclass(frozen=True)
class RunSpec:
    """One trajectory to collect.

    Attributes:
        task: registered task name (``nowcast.tasks.tasks()``).
        seed: seeds the model's initialisation and the batch order (as :func:`nowcast.bench.training.train`).
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
            initialisation (relative paths from the working directory);
            ``nowcast metatrain --init-from`` overrides it.
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
_NINO_CPU_VAL = (RunSpec("fm16", 112, 1.0, 10_000), RunSpec("shakespeare-3-24", 108, 1.0, 5_000), RunSpec("shakespeare-2-32", 108, 1.0, 5_000))
# The regime of the held-out digits task (Adam 1e-3 = FM/16's 6e-3 x 1/6, states every 40 steps), on FashionMNIST.
_LOW_LR_FM16_RUNS = _grid("fm16", range(120, 128), (0.1667, 0.25, 0.125, 0.3333), 2_000, every=40)
_LOW_LR_FM16_VAL = (RunSpec("fm16", 128, 0.1667, 2_000, every=40),)
_NINO_CPU_METATRAIN = {
    "hid": 64, "steps": 6_000, "batch": 4, "lr": 3e-3, "warmup": 250, "checkpoint_every": 250, "eval_every": 250,
    "val_windows": 64, "select": "val_jump",
}


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
