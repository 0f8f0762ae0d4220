"""NiNo in a Hugging Face ``Trainer`` run: :class:`NiNoCallback`.

Schedule, by the Trainer's ``state.global_step`` ``g`` (optimizer updates done, so gradient
accumulation counts once per update) with ``interval = period // ctx``:

- after every update with ``g % interval == 0`` the trainable parameters are recorded as a state;
- after every update with ``g % period == 0`` the ``ctx`` states of that period are nowcast
  ``k`` intervals ahead and the prediction is written into the trainable parameters (the
  *jump*); ``k`` follows :func:`nowcast.horizon_schedule` over the Trainer's ``max_steps``.

The Trainer's optimizer, scheduler and gradient scaler are left alone: the jump changes the
parameters between two updates, as ``nowcast.NiNo`` does (whose jump step replaces an update
instead). Docs: ``docs/trainer.md``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from .. import distributed
from ..nowcasters import follow_device
from ..optim import check_distributed_mode, discard_nonfinite, horizon_schedule, period_schedule
from ..parts import context_hops, layer_parts
from .history import SlotHistory
from .loss_probe import LossProbe
from .selection import Selection, select_parameters
from .state_file import FILENAME, candidate_folders, read_state, write_state

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["NiNoCallback"]

log = logging.getLogger(__name__)


class NiNoCallback(TrainerCallback):
    """Jump to nowcast parameters every ``period`` optimizer steps of a ``transformers.Trainer`` run.

    Args:
        predictor: what :func:`nowcast.resolve` accepts: ``"linefit+"``, ``"nino"``, a checkpoint
            file or folder, a :class:`nowcast.NiNoModel` or any :class:`nowcast.Nowcaster`.
        period: optimizer steps between jumps (default 1000); a multiple of ``ctx``.
        ctx: states per prediction (default 5; must match the predictor's).
        graph: the model's neural graph (``neuralgraph.convert(model)``); built when omitted and
            the predictor needs it, cut to the trainable parameters when some are frozen.
        per_block: predict one part of ``graph.layers()`` at a time (bounds memory).
        distributed: with several ranks, ``"rank0"`` (rank 0 predicts, then broadcasts) or
            ``"split"`` (the ranks share the parts of ``graph.layers()``); see
            :mod:`nowcast.distributed`.
        power: exponent of the horizon schedule (2).
        state_device: where recorded states live (default: the parameters' device; ``"cpu"``
            saves accelerator memory).
        lr_interval: for regime-conditioned predictors (:class:`nowcast.RegimeRouter`, the
            default ``"nino"``): learning rate x steps between states; default the optimizer's
            current learning rate times ``period // ctx``.
        loss_probe: evaluate the loss on the last training micro-batch just before and just after
            each jump, for the log (two forward passes per jump).
        progress: show a progress bar over the parts being predicted when a jump takes more than
            ``progress_delay`` seconds (never when the Trainer's ``disable_tqdm`` is set; rank 0 only).

    Each jump is logged through the Trainer (``trainer.state.log_history``, the console, and every
    logging callback added after this one) with ``nino_jump``, ``nino_k``, ``nino_seconds`` and
    ``nino_loss_before`` / ``nino_loss_after``; :attr:`jump_log` keeps them too. A prediction with
    NaN or Inf is discarded with a ``RuntimeWarning`` (parameters unchanged, ``nino_discarded``
    logged). The recorded states are saved in each checkpoint folder (``nino_callback.safetensors``)
    and restored by ``trainer.train(resume_from_checkpoint=...)``.
    """

    def __init__(
        self,
        predictor: Any,
        *,
        period: int = 1000,
        ctx: int = 5,
        graph: NeuralGraph | None = None,
        per_block: bool = False,
        distributed: str = "rank0",
        power: float = 2.0,
        state_device: str | torch.device | None = None,
        lr_interval: float | None = None,
        loss_probe: bool = True,
        progress: bool = True,
        progress_delay: float = 2.0,
    ) -> None:
        self.period, self.ctx, self.interval, self.predictor = period_schedule(period, ctx, predictor, "callback")
        self._spec = predictor  # a loaded model follows the Trainer's device at train start
        if not power > 0:
            raise ValueError(f"power must be positive, got {power!r}")
        if lr_interval is not None and (isinstance(lr_interval, bool) or not 0 < float(lr_interval) < math.inf):
            raise ValueError(f"lr_interval must be a positive number (learning rate x steps between states), got {lr_interval!r}")
        if not progress_delay >= 0:
            raise ValueError(f"progress_delay must be a number of seconds >= 0, got {progress_delay!r}")
        self.distributed = check_distributed_mode(distributed)
        self.per_block = bool(per_block)
        self.power = float(power)
        self.state_device = state_device
        self._lr_interval = None if lr_interval is None else float(lr_interval)
        self.loss_probe = bool(loss_probe)
        self.progress = bool(progress)
        self.progress_delay = float(progress_delay)
        self._given_graph = graph
        self._reset()

    def _reset(self) -> None:
        if getattr(self, "_probe", None) is not None:  # a previous train() that did not end normally
            self._probe.remove()
        self.selection: Selection | None = None
        self.history: SlotHistory | None = None
        self.k_schedule: list[int] = []
        self._parts = None
        self._probe: LossProbe | None = None
        self._pending: dict[str, float] = {}
        self._show_progress = False
        self._last_lr: float | None = None
        self.jumps = 0
        self.discarded = 0
        self.last_k: int | None = None
        self.jump_log: list[dict[str, float]] = []
        self.seconds = 0.0
        """Wall-clock seconds spent in the callback (recording, jumps, loss probes) this run."""

    @property
    def graph(self) -> NeuralGraph | None:
        """The graph the predictions use (of the recorded parameters), once training has begun."""
        return None if self.selection is None else self.selection.graph

    def __repr__(self) -> str:
        return (
            f"NiNoCallback(predictor={self.predictor.name}, period={self.period}, ctx={self.ctx}, "
            f"distributed={self.distributed!r}, jumps={self.jumps})"
        )

    # ------------------------------------------------------------------ set-up
    def _check_args(self, args: Any) -> None:
        if getattr(args, "deepspeed", None):
            raise NotImplementedError(
                "NiNoCallback does not support DeepSpeed (TrainingArguments.deepspeed): its engine keeps its own master "
                "weights, which a jump would not change. Train with DDP (torchrun without deepspeed); see docs/trainer.md"
            )
        if getattr(args, "fsdp", None):
            raise NotImplementedError(
                f"NiNoCallback does not support FSDP (TrainingArguments.fsdp={args.fsdp!r}): the parameters are sharded "
                "and a jump needs them whole on each rank. Train with DDP (no fsdp option); see docs/trainer.md"
            )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        start = time.perf_counter()
        self._reset()
        self._check_args(args)
        if model is None:
            raise ValueError("NiNoCallback needs the model: the Trainer passes it to callbacks as model=")
        model = distributed.unwrap_model(model, "the Trainer's model")
        by_parts = self.per_block or self.distributed == "split"
        needs_graph = bool(self.predictor.needs_graph) or by_parts
        self.selection = select_parameters(model, needs_graph=needs_graph, graph=self._given_graph)
        follow_device(self.predictor, self._spec, self.selection.params[0].device)  # a loaded model steps there
        self.history = SlotHistory(self.selection.names, self.selection.params, self.ctx, self.state_device)
        if by_parts:
            self._parts = layer_parts(self.selection.graph, context_hops=context_hops(self.predictor))
        seq_len = int(getattr(self.predictor, "seq_len", 40))
        self.k_schedule = horizon_schedule(max(1, state.max_steps), self.period, seq_len, self.power)
        if state.max_steps < self.period:
            log.warning("period (%d) exceeds the run's max_steps (%d): no jump will happen", self.period, state.max_steps)
        if self.loss_probe:
            self._probe = LossProbe(model)
        self._show_progress = self.progress and not args.disable_tqdm and state.is_world_process_zero
        if state.global_step > 0:
            self._restore(args, state)
        log.info(
            "NiNoCallback: %s, period %d, ctx %d, %d parameters recorded (%d written), k schedule %s",
            self.predictor.name, self.period, self.ctx, self.selection.num_params, self.selection.num_written, self.k_schedule,
        )
        self.seconds += time.perf_counter() - start

    # ------------------------------------------------------------------ training
    def on_step_end(self, args, state, control, **kwargs):
        if self.history is None:
            return control
        start = time.perf_counter()
        g = state.global_step
        if g % self.interval == 0:
            self.history.record((g // self.interval - 1) % self.ctx, g)
            if g % self.period == 0:
                try:
                    if self.history.full:
                        self._jump(g)
                        control.should_log = True
                    else:
                        log.info("step %d: no jump, only %d of %d states of this period were recorded", g, self.history.filled, self.ctx)
                finally:
                    self.history.clear()
        self.seconds += time.perf_counter() - start
        return control

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # before the scheduler steps: the learning rate of the update just made
        if optimizer is not None and getattr(optimizer, "param_groups", None):
            self._last_lr = optimizer.param_groups[0].get("lr")
        return control

    def _lr_interval_now(self) -> float | None:
        if not getattr(self.predictor, "uses_lr_interval", False):
            return None
        if self._lr_interval is not None:
            return self._lr_interval
        lr = self._last_lr
        if lr is None:
            raise ValueError(
                "the predictor routes by the learning rate, and the optimizer has none in its first parameter group: "
                "pass lr_interval= to NiNoCallback (learning rate x steps between states)"
            )
        return float(lr) * self.interval  # may be 0 (a schedule at its end): the jump is then skipped

    def _progress_bar(self, k: int):
        if not self._show_progress:
            return None
        from tqdm.auto import tqdm

        def bar(items: Iterable[Any], total: int) -> Iterable[Any]:
            return tqdm(items, total=total, desc=f"NiNo jump (k={k})", unit="part", leave=False, delay=self.progress_delay)

        return bar

    def _jump(self, g: int) -> None:
        assert self.selection is not None and self.history is not None
        k = self.k_schedule[min(g // self.period - 1, len(self.k_schedule) - 1)]
        lr_interval = self._lr_interval_now()
        if lr_interval is not None and not lr_interval > 0:
            log.warning("step %d: no jump, the learning rate is 0 (nothing to extrapolate for %s)", g, self.predictor.name)
            return
        before = self._probe.loss() if self._probe is not None else None
        start = time.perf_counter()
        theta = distributed.predict_synced(
            self.selection.graph, self.history.states(), k, self.predictor, num_params=self.history.num_params,
            per_block=self._parts is not None, parts=self._parts, lr_interval=lr_interval,
            split=self.distributed == "split", progress=self._progress_bar(k),
        )
        if discard_nonfinite(theta, f"NiNoCallback step {g}", self.predictor.name, k,
                             "the parameters are left as they are", stacklevel=2):
            self.discarded += 1
            self._pending = {"nino_discarded": float(self.discarded), "nino_k": float(k)}
            return
        self.history.write(theta, self.selection.write)
        seconds = time.perf_counter() - start
        after = self._probe.loss() if self._probe is not None else None
        self.jumps += 1
        self.last_k = k
        entry = {"nino_jump": float(self.jumps), "nino_k": float(k), "nino_seconds": seconds}
        if before is not None and after is not None:
            entry.update(nino_loss_before=before, nino_loss_after=after)
        self.jump_log.append({"step": float(g), **entry})
        self._pending = dict(entry)
        log.info(
            "step %d: NiNo jump %d with %s, k=%d, %.2f s%s", g, self.jumps, self.predictor.name, k, seconds,
            "" if before is None or after is None else f", loss {before:.4f} -> {after:.4f}",
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._pending or logs is None:
            return control
        logs.update(self._pending)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step:
            last.update(self._pending)
        self._pending = {}
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._probe is not None:
            self._probe.remove()
            self._probe = None
        return control

    # ------------------------------------------------------------------ checkpoints
    def on_save(self, args, state, control, **kwargs):
        if self.history is None or not args.should_save:
            return control
        start = time.perf_counter()
        folder = candidate_folders(args.output_dir, state.global_step)[-1]
        if not folder.is_dir():
            log.warning("no checkpoint folder %s to save the NiNo callback state in", folder)
            return control
        write_state(folder, self.history.snapshot(), self._info(state))
        self.seconds += time.perf_counter() - start
        return control

    def _info(self, state: Any) -> dict[str, Any]:
        assert self.history is not None
        return {
            "global_step": int(state.global_step), "filled": self.history.filled, "jumps": self.jumps,
            "discarded": self.discarded, "last_k": self.last_k, "period": self.period, "ctx": self.ctx,
            "max_steps": int(state.max_steps), "num_params": self.history.num_params, "predictor": self.predictor.name,
            "fingerprint": self.history.fingerprint(),
        }

    def _restore(self, args: Any, state: Any) -> None:
        assert self.history is not None
        folders = candidate_folders(args.output_dir, state.global_step, getattr(args, "resume_from_checkpoint", None))
        fingerprint = None
        for folder in folders:
            path = folder / FILENAME
            if not path.is_file():
                continue
            states, info = read_state(path)
            fingerprint = fingerprint or self.history.fingerprint()
            if info["global_step"] != state.global_step or info["fingerprint"] != fingerprint:
                log.info("%s belongs to another step or other parameters; not used", path)
                continue
            if info["ctx"] != self.ctx or info["num_params"] != self.history.num_params or info["period"] != self.period:
                raise ValueError(
                    f"{path} was saved with period={info['period']}, ctx={info['ctx']} and {info['num_params']} recorded "
                    f"parameters; this callback has period={self.period}, ctx={self.ctx} and {self.history.num_params}: "
                    "resume with the same NiNoCallback settings"
                )
            self.history.restore(states, info["filled"])
            self.jumps, self.discarded, self.last_k = info["jumps"], info["discarded"], info.get("last_k")
            log.info("NiNoCallback: resumed at step %d with %d recorded states from %s", state.global_step, info["filled"], path)
            return
        if state.global_step % self.period < self.interval:  # no state of this period was recorded yet
            log.info("NiNoCallback: resuming at step %d, at the start of a period: no saved state needed", state.global_step)
            return
        message = (
            f"NiNoCallback: training resumes at step {state.global_step} but no matching {FILENAME} was found in "
            f"{', '.join(map(str, folders)) or 'the output folder'}; the states of the current period are lost and the next "
            "jump waits for a full period. If the checkpoint is outside output_dir, also set "
            "TrainingArguments(resume_from_checkpoint=<that folder>)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.warning(message)
