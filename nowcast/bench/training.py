"""Train a task with its base optimizer, alone or wrapped by a nowcaster, and record the curve.

:func:`train` evaluates the validation metric at step 0 and every ``eval_every`` steps, stops
when the target is reached (or at ``max_steps``, or when the loss stops being finite), and
returns a :class:`RunResult`: the curve, the steps where nowcasting jumped, the training losses
and the steps-to-target (the number of completed steps at the first evaluation that met the
target, None if never).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer

from ..optim import NiNo
from ..tasks import Task, TaskData, get_task
from .methods import Method, resolve_method

__all__ = ["RunResult", "train"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One training run. ``steps[i]`` completed steps had validation ``values[i]``."""

    task: str
    method: str
    seed: int
    metric: str
    target: float
    higher_is_better: bool
    max_steps: int
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    jump_steps: list[int] = field(default_factory=list)
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    steps_to_target: int | None = None
    stopped: str = "max_steps"
    wall_s: float = 0.0
    checkpoint: str | None = None

    @property
    def reached(self) -> bool:
        return self.steps_to_target is not None

    @property
    def best(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return math.nan
        return max(finite) if self.higher_is_better else min(finite)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(**d)


def train(
    task: str | Task,
    method: str | Method = "adam",
    *,
    seed: int = 0,
    max_steps: int | None = None,
    eval_every: int | None = None,
    period: int | None = None,
    ctx: int = 5,
    stop_at_target: bool = True,
    data: TaskData | None = None,
    data_dir: str | os.PathLike | None = None,
    nino_checkpoint: str | os.PathLike | None = None,
    wnn_checkpoint: str | os.PathLike | None = None,
    callback: Callable[[int, nn.Module, Optimizer], None] | None = None,
    progress: bool = True,
    log_loss_every: int = 10,
) -> RunResult:
    """Run ``task`` with ``method`` from seed ``seed``.

    Args:
        task: a task name (``nowcast.tasks.tasks()``) or a :class:`Task`.
        method: ``adam`` (the base optimizer alone), ``linefit``, ``linefit+``, ``wnn+``, ``nino``
            or a :class:`Method`.
        seed: seeds the model's initialisation and the order of the training batches.
        max_steps: planned training length (default: the task's); also sets the nowcasting
            horizon schedule.
        eval_every / period: override the task's evaluation interval / nowcasting period.
        ctx: states per prediction (5 for the published checkpoints).
        stop_at_target: stop at the first evaluation that meets the target.
        data: already loaded task data (saves reloading across runs); else ``task.load_data(data_dir)``.
        callback: called as ``callback(step, model, optimizer)`` after every step
            (``step`` = steps completed).
        progress: show a progress bar (tqdm, on stderr).
        log_loss_every: keep the training loss of every n-th step in the result.
    """
    task = get_task(task)
    method = resolve_method(method, nino_checkpoint=nino_checkpoint, wnn_checkpoint=wnn_checkpoint)
    max_steps = task.max_steps if max_steps is None else int(max_steps)
    eval_every = task.eval_every if eval_every is None else int(eval_every)
    period = task.period if period is None else int(period)
    if max_steps < 1 or eval_every < 1:
        raise ValueError(f"max_steps and eval_every must be positive, got {max_steps} and {eval_every}")
    data = task.load_data(data_dir) if data is None else data

    model = task.model(seed)
    model.train()
    optimizer: Optimizer = task.make_optimizer(model)
    wrapper = None
    if method.nowcasts:
        wrapper = NiNo(optimizer, model, method.predictor, period=period, ctx=ctx, max_train_steps=max_steps)
        optimizer = wrapper
    result = RunResult(
        task=task.name, method=method.name, seed=seed, metric=task.metric, target=task.target,
        higher_is_better=task.higher_is_better, max_steps=max_steps, checkpoint=method.checkpoint,
    )
    run = _Run(task, data, model, optimizer, wrapper, result, seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # only for a progress bar: importing it costs ~75 ms at 'import nowcast'

        bar = tqdm(total=max_steps, desc=f"{task.name} {method.name} seed {seed}", leave=False, mininterval=0.5)
    start = time.perf_counter()
    try:
        run.loop(max_steps, eval_every, stop_at_target, log_loss_every, callback, bar)
    finally:
        if bar is not None:
            bar.close()
    if result.stopped == "max_steps" and result.steps_to_target is not None and stop_at_target:
        result.stopped = "target"
    result.wall_s = time.perf_counter() - start
    return result


class _Run:
    """One training run's moving parts: evaluates into ``result`` and takes the optimizer's steps."""

    def __init__(self, task: Task, data: TaskData, model: nn.Module, optimizer: Optimizer, wrapper: NiNo | None,
                 result: RunResult, seed: int):
        self.task, self.data, self.model, self.optimizer, self.wrapper = task, data, model, optimizer, wrapper
        self.result, self.seed = result, seed

    def evaluate(self, step: int) -> bool:
        """Evaluate at ``step``; True once the target has been reached."""
        result, task = self.result, self.task
        value = self.data.evaluate(self.model)
        result.steps.append(step)
        result.values.append(value)
        if result.steps_to_target is None and task.reached(value):
            result.steps_to_target = step
            log.info("%s/%s seed %d: target %s %g reached at step %d (%.4g)", task.name, result.method, self.seed, task.metric,
                     task.target, step, value)
        return result.steps_to_target is not None

    def step(self, batch: Any) -> tuple[float | None, bool]:
        """One optimizer step: (the training loss, or None where a jump needed no gradients; whether it jumped)."""
        jumps_before = self.wrapper.jumps if self.wrapper is not None else 0
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = None
        if self.wrapper is None or self.wrapper.need_grads:
            loss = self.data.loss(self.model, batch)
            loss.backward()
            loss_value = float(loss.detach())
        self.optimizer.step()
        return loss_value, self.wrapper is not None and self.wrapper.jumps > jumps_before

    def loop(self, max_steps: int, eval_every: int, stop_at_target: bool, log_loss_every: int,
             callback: Callable[[int, nn.Module, Optimizer], None] | None, bar: Any) -> None:
        result, task = self.result, self.task
        batches = self.data.batches(self.seed)
        done = self.evaluate(0) and stop_at_target
        step = 0
        while not done and step < max_steps:
            loss_value, jumped = self.step(next(batches))
            step += 1
            if jumped:
                result.jump_steps.append(step)
            if loss_value is not None:
                if not math.isfinite(loss_value):
                    result.stopped = "diverged"
                    log.warning("%s/%s seed %d: training loss is %s at step %d; stopping", task.name, result.method, self.seed,
                                loss_value, step)
                    break
                if step % log_loss_every == 0 or step == 1:
                    result.loss_steps.append(step)
                    result.losses.append(loss_value)
            if callback is not None:
                callback(step, self.model, self.optimizer)
            if step % eval_every == 0 or step == max_steps:
                if self.evaluate(step) and stop_at_target:
                    result.stopped = "target"
                    done = True
                if bar is not None:
                    bar.set_postfix({task.metric: f"{result.values[-1]:.4g}", "jumps": len(result.jump_steps)}, refresh=False)
            if bar is not None:
                bar.update(1)
