"""The NiNo optimizer wrapper (:class:`NiNo`): a base optimizer plus periodic nowcasting jumps.

Schedule (``docs/design.md``, "NiNo"). Steps are counted from 0 (``s`` = number of ``step()`` calls
made before this one). With ``interval = period // ctx``:

- at every step with ``(s + 1) % interval == 0`` the current parameters (after ``s`` updates)
  are recorded as a state;
- the step that records the ``ctx``-th state does not call the base optimizer: it predicts
  ``k_j`` intervals ahead from the ``ctx`` recorded states and writes the prediction into the
  parameters (the *jump*); no gradient is needed there (:attr:`NiNo.need_grads` is False); the
  recorded states are then cleared;
- ``k_j = round(linspace(seq_len ** (1/p), 1, n) ** p)[j]`` with ``p = 2``,
  ``n = max(1, max_train_steps // period)``, ``j = min(s // period, n - 1)``.

So with ``period = 1000, ctx = 5``, states are the parameters after 199, 399, 599, 799 and 999
updates; the 1000th ``step()`` call (``s = 999``) jumps instead of updating. Jumps happen at
``s = period * (j + 1) - 1``. This is the schedule of the authors' wrapper.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

import neuralgraph
from neuralgraph.params import all_finite, check_finite, normalize_specs

from .distributed import predict_synced, unwrap_model
from .history_store import allocate_history, history_place, record_column, write_params
from .nowcasters import Nowcaster, follow_device, resolve
from .parts import GraphPart, context_hops, layer_parts

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["DISTRIBUTED_MODES", "NiNo", "check_distributed_mode", "horizon_schedule"]

log = logging.getLogger(__name__)

STATE_KEY = "nowcast"
"""Key of the wrapper's own entries in :meth:`NiNo.state_dict` (next to the base's ``state`` / ``param_groups``)."""
_STATE_VERSION = 1


DISTRIBUTED_MODES = ("rank0", "split")
"""How ranks share a jump under ``torch.distributed`` (see :mod:`nowcast.distributed`): rank 0 predicts
and broadcasts, or the ranks split ``graph.layers()`` between them."""


def check_distributed_mode(value: Any) -> str:
    if value not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {', '.join(map(repr, DISTRIBUTED_MODES))}, got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def period_schedule(period: Any, ctx: Any, predictor: Any, owner: str) -> tuple[int, int, int, Nowcaster]:
    """``(period, ctx, interval, nowcaster)`` after checking them: positive, ``period`` a multiple of
    ``ctx`` (a state every ``interval = period // ctx`` steps), ``ctx`` what the predictor reads.
    ``owner`` names the caller in messages ("wrapper", "callback")."""
    period, ctx = positive_int("period", period), positive_int("ctx", ctx)
    if period % ctx:
        raise ValueError(f"period ({period}) must be a multiple of ctx ({ctx}): a state is recorded every period/ctx steps")
    nowcaster: Nowcaster = resolve(predictor)
    want = getattr(nowcaster, "ctx", None)
    if want is not None and want != ctx:
        raise ValueError(f"predictor {nowcaster.name} reads ctx={want} states but the {owner} was given ctx={ctx}")
    return period, ctx, period // ctx, nowcaster


def discard_nonfinite(theta: torch.Tensor, where: str, name: str, k: int, instead: str, stacklevel: int) -> bool:
    """Whether a prediction holds NaN/Inf; if so, says so (a ``RuntimeWarning`` raised ``stacklevel``
    frames up, and a log line) with ``instead``, what happens in its place."""
    if all_finite(theta):
        return False
    bad = int((~torch.isfinite(theta)).sum())
    message = f"{where}: the {name} prediction (k={k}) has {bad} NaN/Inf value(s); it is discarded and {instead}"
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    log.warning(message)
    return True


def horizon_schedule(max_train_steps: int, period: int, seq_len: int = 40, power: float = 2.0) -> list[int]:
    """Horizons ``k_j`` of the jumps ``j = 0 .. n-1``: ``round(linspace(seq_len**(1/power), 1, n)**power)``
    with ``n = max(1, max_train_steps // period)`` (rounding half to even, as numpy).

    >>> horizon_schedule(10_000, 1000)
    [40, 33, 26, 21, 16, 11, 8, 5, 3, 1]
    """
    positive_int("max_train_steps", max_train_steps)
    positive_int("period", period)
    positive_int("seq_len", seq_len)
    if not power > 0:
        raise ValueError(f"power must be positive, got {power!r}")
    n = max(1, max_train_steps // period)
    ks = np.round(np.linspace(seq_len ** (1.0 / power), 1.0, num=n) ** power).astype(np.int64)
    return [int(min(max(k, 1), seq_len)) for k in ks]


class NiNo(Optimizer):
    """Wrap a base optimizer (Adam, AdamW, ...) and jump to predicted parameters every ``period`` steps.

    Args:
        base: the optimizer doing the regular steps. The wrapper shares its ``param_groups``,
            ``state`` and ``defaults`` (they are properties reading the base), so learning-rate
            schedulers may hold either object, also after :meth:`load_state_dict`.
        model: the network being trained; its ``named_parameters()`` order is the flat order of
            the recorded states and of the graph. Every parameter of ``base`` must belong to it.
        predictor: a :class:`nowcast.NiNoModel`, any :class:`nowcast.Nowcaster` (NiNo, WNN+,
            Linefit, Linefit+, WNN, your own), ``"linefit"`` / ``"linefit+"`` / ``"nino"``, or a
            checkpoint path (anything :func:`nowcast.resolve` accepts).
        period: steps between jumps (default 1000); must be a multiple of ``ctx``.
        ctx: states per prediction (default 5; must match the predictor's ``ctx``).
        max_train_steps: planned length of training; sets the horizon schedule.
        graph: the network's neural graph; built once with ``neuralgraph.convert(model)`` when
            omitted and the predictor needs it (or ``per_block`` is set).
        per_block: predict one part of ``graph.layers()`` (transformer block / layer) at a time.
        reset_base_state_after_jump: clear the base optimizer's per-parameter state (Adam moment
            estimates and step counts) after each jump.
        power: exponent ``p`` of the horizon schedule (2).
        state_device: where recorded states live (default: the device of the first parameter):
            a device, ``"disk"`` (a memory-mapped file in the temporary folder, removed with the
            wrapper) or a file path ending in ``.bin``, so that recording ``ctx`` states of a large
            model does not hold them in memory (:mod:`nowcast.history_store`).
        lr_interval: for predictors conditioned on the training regime (``uses_lr_interval``,
            :class:`nowcast.RegimeRouter`): the learning rate times the steps between two
            states. None (default): the base optimizer's current learning rate (its first
            parameter group, so schedulers are followed) times ``period // ctx``.
        distributed: under ``torch.distributed`` with several ranks (DDP), who computes a jump:
            ``"rank0"`` (default; rank 0 predicts and broadcasts) or ``"split"`` (the parts of
            ``graph.layers()`` are dealt out to the ranks, as per-block prediction; on one process
            ``"split"`` is per-block prediction). Either way every rank writes the same values.
            A DDP-wrapped ``model`` is unwrapped; sharded models (FSDP, DeepSpeed) are refused.

    The step that jumps writes the prediction only into parameters that ``base`` updates and that
    require grad; other parameters (frozen ones) are recorded and shown to the predictor, but keep
    their values. A prediction containing NaN or Inf is discarded with a ``RuntimeWarning``: the
    parameters are left as they are and the base optimizer takes a regular step instead. NaN or
    Inf in the parameters themselves when a state is recorded raises
    :class:`neuralgraph.errors.NonFiniteError` (a ``ValueError``) naming the parameter and its
    flat index; that state is not recorded.
    """

    def __init__(
        self,
        base: Optimizer,
        model: nn.Module,
        predictor: Any,
        *,
        period: int = 1000,
        ctx: int = 5,
        max_train_steps: int,
        graph: NeuralGraph | None = None,
        per_block: bool = False,
        reset_base_state_after_jump: bool = False,
        power: float = 2.0,
        state_device: str | torch.device | None = None,
        lr_interval: float | None = None,
        distributed: str = "rank0",
    ) -> None:
        if not isinstance(base, Optimizer) or isinstance(base, NiNo):
            raise TypeError(f"base must be a torch.optim.Optimizer (not a NiNo wrapper), got {type(base).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be the nn.Module being trained, got {type(model).__name__}")
        model = unwrap_model(model)
        self._base = base
        # What Optimizer.__init__ sets up, without registering the parameters a second time.
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._warned_capturable_if_run_uncaptured = True
        self._patch_step_function()

        self.period, self.ctx, self.interval, self.predictor = period_schedule(period, ctx, predictor, "wrapper")
        self.max_train_steps = positive_int("max_train_steps", max_train_steps)
        self.per_block = bool(per_block)
        self.distributed = check_distributed_mode(distributed)
        by_parts = self.per_block or self.distributed == "split"
        self.reset_base_state_after_jump = bool(reset_base_state_after_jump)
        self.power = power
        if lr_interval is not None and (isinstance(lr_interval, bool) or not 0 < float(lr_interval) < float("inf")):
            raise ValueError(f"lr_interval must be a positive number (learning rate x steps between states), got {lr_interval!r}")
        self._lr_interval = None if lr_interval is None else float(lr_interval)
        self._uses_lr_interval = bool(getattr(self.predictor, "uses_lr_interval", False))
        self.k_schedule = horizon_schedule(max_train_steps, period, int(getattr(self.predictor, "seq_len", 40)), power)

        self._names, self._params = self._model_params(model)
        self.num_params = sum(p.numel() for p in self._params)
        self._specs = normalize_specs((n, tuple(p.shape)) for n, p in zip(self._names, self._params))
        self._check_base_params()
        self.graph = graph
        if graph is None and (self.predictor.needs_graph or by_parts):
            self.graph = neuralgraph.convert(model)
        if self.graph is not None:
            self._check_graph(self.graph)
        self._parts: list[GraphPart] | None = None
        if by_parts:
            self._parts = layer_parts(self.graph, context_hops=context_hops(self.predictor))

        first = self._params[0]
        follow_device(self.predictor, predictor, first.device)  # a loaded model steps where training runs
        self._history_place = history_place(state_device, first.device)
        self.state_device = self._history_place if isinstance(self._history_place, torch.device) else torch.device("cpu")
        self.state_dtype = functools.reduce(torch.promote_types, (p.dtype for p in self._params))
        self._history: torch.Tensor | None = None
        self._step = 0
        self._recorded = 0
        self.jumps = 0
        self.discarded = 0
        self.last_k: int | None = None
        log.info(
            "NiNo wrapper: %s over %s, period %d, ctx %d, state every %d steps, k schedule %s%s",
            self.predictor.name, type(base).__name__, period, ctx, self.interval, self.k_schedule,
            ", per block" if self.per_block else "",
        )

    # ------------------------------------------------------------------ shared with the base
    @property
    def base(self) -> Optimizer:
        """The wrapped optimizer."""
        return self._base

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self._base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self._base.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self._base.state

    @state.setter
    def state(self, value) -> None:
        self._base.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self._base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self._base.defaults = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._base.add_param_group(param_group)
        self._check_base_params()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._patch_step_function()

    def __repr__(self) -> str:
        return (
            f"NiNo(predictor={self.predictor.name}, period={self.period}, ctx={self.ctx}, "
            f"max_train_steps={self.max_train_steps}, step={self._step}, jumps={self.jumps},\n  base={self._base!r})"
        )

    # ------------------------------------------------------------------ set-up checks
    @staticmethod
    def _model_params(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
        named = list(model.named_parameters())
        if not named:
            raise ValueError(f"{type(model).__name__} has no parameters")
        return [n for n, _ in named], [p for _, p in named]

    def _check_base_params(self) -> None:
        ours = {id(p) for p in self._params}
        foreign = sum(1 for g in self._base.param_groups for p in g["params"] if id(p) not in ours)
        if foreign:
            raise ValueError(
                f"the base optimizer updates {foreign} tensor(s) that are not parameters of the model given to NiNo: "
                "pass the model whose parameters the optimizer trains"
            )

    def _check_graph(self, graph: NeuralGraph) -> None:
        got = [(p.name, tuple(p.shape)) for p in graph.params]
        want = [(n, tuple(p.shape)) for n, p in zip(self._names, self._params)]
        if got != want:
            diff = next(
                (f"graph {g} vs model {w}" for g, w in zip(got, want) if g != w),
                f"graph has {len(got)} parameters, model {len(want)}",
            )
            raise ValueError(f"the graph does not describe this model's parameters ({diff}); build it with neuralgraph.convert(model)")

    # ------------------------------------------------------------------ schedule
    @property
    def step_count(self) -> int:
        """``step()`` calls made so far."""
        return self._step

    @property
    def num_recorded(self) -> int:
        """States recorded in the current period."""
        return self._recorded

    def horizon(self, step: int | None = None) -> int:
        """Horizon ``k`` of a jump at step index ``step`` (default: the next ``step()`` call)."""
        s = self._step if step is None else step
        return self.k_schedule[min(s // self.period, len(self.k_schedule) - 1)]

    def lr_interval(self) -> float:
        """The learning rate times the steps between two states that a regime-conditioned
        predictor is told (see the ``lr_interval`` argument)."""
        if self._lr_interval is not None:
            return self._lr_interval
        lr = self._base.param_groups[0].get("lr")
        if lr is None:
            raise ValueError(
                f"{type(self._base).__name__} has no 'lr' in its first parameter group: pass lr_interval= to NiNo "
                "(learning rate x steps between states) for this regime-conditioned predictor"
            )
        return float(lr) * self.interval

    def _records_now(self) -> bool:
        return (self._step + 1) % self.interval == 0

    @property
    def jumps_now(self) -> bool:
        """Whether the next ``step()`` call jumps (predicts) instead of calling the base optimizer."""
        return self._records_now() and self._recorded == self.ctx - 1

    @property
    def need_grads(self) -> bool:
        """False exactly when the next ``step()`` jumps, so the training loop may skip ``backward``.

        If that jump's prediction is then discarded (NaN/Inf), the base optimizer steps with
        whatever gradients exist (none, after ``zero_grad``): that one update is lost. Pass a
        ``closure`` to :meth:`step` to have gradients computed in that case.
        """
        return not self.jumps_now

    # ------------------------------------------------------------------ stepping
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One training step: a base-optimizer update, or a jump (returns None then).

        ``closure`` is passed to the base optimizer; it is not evaluated on a jump step.
        """
        loss = None
        jumped = False
        if self._records_now():
            self._record()
            if self._recorded == self.ctx:
                try:
                    jumped = self._jump(self._step)
                finally:
                    self._recorded = 0
        if not jumped:
            loss = self._base.step(closure) if closure is not None else self._base.step()
        self._step += 1
        return loss

    def _record(self) -> None:
        if self._history is None:
            self._history = allocate_history(
                self.num_params, self.ctx, self.state_dtype, getattr(self, "_history_place", self.state_device)
            )
        column = self._history[:, self._recorded]
        record_column(column, self._params)
        # one isfinite pass; the state is not counted when it fails (the next record overwrites it)
        check_finite(
            column,
            getattr(self, "_specs", None),  # absent in wrappers pickled by older versions
            f"NiNo step {self._step}: the parameters to record as state {self._recorded + 1} of {self.ctx} are not "
            "finite (training diverged)",
        )
        self._recorded += 1
        log.debug("step %d: recorded state %d/%d", self._step, self._recorded, self.ctx)

    def _trainable(self) -> list[bool]:
        updated = {id(p) for g in self._base.param_groups for p in g["params"]}
        return [id(p) in updated and p.requires_grad for p in self._params]

    def _jump(self, step: int) -> bool:
        assert self._history is not None
        k = self.horizon(step)
        states = self._history[:, : self.ctx]
        lr_interval = self.lr_interval() if self._uses_lr_interval else None
        split = getattr(self, "distributed", "rank0") == "split"  # absent in wrappers pickled by older versions
        with torch.no_grad():
            theta = predict_synced(
                self.graph, states, k, self.predictor, num_params=self.num_params, per_block=self._parts is not None,
                parts=self._parts, lr_interval=lr_interval, split=split,
            ).to(device=states.device, dtype=states.dtype)
        if theta.shape != (self.num_params,):
            raise ValueError(f"predictor {self.predictor.name} returned {tuple(theta.shape)}, expected [{self.num_params}]")
        if discard_nonfinite(theta, f"NiNo step {step}", self.predictor.name, k, "the base optimizer takes this step",
                             stacklevel=4):
            self.discarded += 1
            return False
        trainable = self._trainable()
        write_params(self._params, theta, trainable)
        if self.reset_base_state_after_jump:
            for p, write in zip(self._params, trainable):
                if write:
                    self._base.state.pop(p, None)
        self.jumps += 1
        self.last_k = k
        log.info("NiNo step %d: jumped with %s, k=%d (jump %d)", step, self.predictor.name, k, self.jumps)
        return True

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's state dict plus ``"nowcast"``: step counter, recorded states, counters."""
        out = self._base.state_dict()
        history = None
        if self._history is not None and self._recorded:
            history = self._history[:, : self._recorded].clone()
        out[STATE_KEY] = {
            "version": _STATE_VERSION,
            "step": self._step,
            "recorded": self._recorded,
            "history": history,
            "jumps": self.jumps,
            "discarded": self.discarded,
            "last_k": self.last_k,
            "period": self.period,
            "ctx": self.ctx,
            "max_train_steps": self.max_train_steps,
            "num_params": self.num_params,
            "predictor": self.predictor.name,
        }
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore :meth:`state_dict` output (also of a run with the same settings in another process).

        A plain base-optimizer state dict (no ``"nowcast"`` entry) loads too, with a warning: the
        wrapper's counters then restart at step 0 with no recorded states.
        """
        state_dict = dict(state_dict)
        ours = state_dict.pop(STATE_KEY, None)
        if ours is not None:
            self._check_saved(ours)
        self._base.load_state_dict(state_dict)
        if ours is None:
            warnings.warn("loading a state dict without NiNo entries: the step counter restarts at 0", RuntimeWarning, stacklevel=2)
            self._step, self._recorded, self.jumps, self.discarded, self.last_k = 0, 0, 0, 0, None
            return
        self._step = int(ours["step"])
        self._recorded = int(ours["recorded"])
        self.jumps = int(ours.get("jumps", 0))
        self.discarded = int(ours.get("discarded", 0))
        self.last_k = ours.get("last_k")
        if self._recorded:
            if self._history is None:
                self._history = allocate_history(
                self.num_params, self.ctx, self.state_dtype, getattr(self, "_history_place", self.state_device)
            )
            self._history[:, : self._recorded].copy_(ours["history"])
        for name in ("period", "max_train_steps"):
            if ours.get(name) != getattr(self, name):
                log.warning("state dict was saved with %s=%s, this wrapper uses %s", name, ours.get(name), getattr(self, name))

    def _check_saved(self, ours: Any) -> None:
        if not isinstance(ours, dict) or ours.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported NiNo state (expected a dict with version {_STATE_VERSION})")
        if ours.get("ctx") != self.ctx or ours.get("num_params") != self.num_params:
            raise ValueError(
                f"NiNo state was saved with ctx={ours.get('ctx')} and {ours.get('num_params')} parameters; "
                f"this wrapper has ctx={self.ctx} and {self.num_params}"
            )
        recorded = int(ours.get("recorded", 0))
        if not 0 <= recorded < self.ctx:
            raise ValueError(f"NiNo state holds {recorded} recorded states; expected 0..{self.ctx - 1}")
        history = ours.get("history")
        if recorded and (not isinstance(history, torch.Tensor) or tuple(history.shape) != (self.num_params, recorded)):
            shape = tuple(history.shape) if isinstance(history, torch.Tensor) else None
            raise ValueError(f"NiNo state history has shape {shape}, expected ({self.num_params}, {recorded})")
