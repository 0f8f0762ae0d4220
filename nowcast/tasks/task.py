"""What a task is: a dataset, a model, an optimizer recipe, an evaluation schedule and a target."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["Task", "TaskData", "Batch"]

Batch = tuple[torch.Tensor, torch.Tensor]


class TaskData(Protocol):
    """The data side of a task: seeded training batches, a loss and the validation metric."""

    def batches(self, seed: int) -> Iterator[Batch]:
        """An endless stream of training batches, the same for the same seed."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Training loss of ``model`` on ``batch`` (a scalar with grad)."""
        ...

    def evaluate(self, model: nn.Module) -> float:
        """The validation metric (deterministic; the model is in eval mode and no grad)."""
        ...


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        name: registry key (``fm16``, ``digits``, ``shakespeare-3-24`` ...).
        description: one line for people.
        build_model: ``fn() -> nn.Module``; called under ``torch.manual_seed(seed)``.
        make_optimizer: ``fn(model) -> Optimizer``, the base optimizer (Adam / AdamW recipe).
        load_data: ``fn(data_dir) -> TaskData``; ``data_dir`` may be None (search the defaults).
        metric: name of the validation metric (``accuracy`` or ``perplexity``).
        higher_is_better: direction of the metric.
        target: the value to reach (steps-to-target counts steps until the metric first reaches it).
        max_steps: planned training length (also sets the nowcasting horizon schedule).
        eval_every: steps between evaluations.
        period: default nowcasting period (steps between jumps) for this task.
        validation: how the validation split is formed (documentation).
        in_distribution: whether the published NiNo checkpoints were trained on this kind of task.
    """

    name: str
    description: str
    build_model: Callable[[], nn.Module]
    make_optimizer: Callable[[nn.Module], Optimizer]
    load_data: Callable[[str | os.PathLike | None], TaskData]
    metric: str
    higher_is_better: bool
    target: float
    max_steps: int
    eval_every: int
    period: int = 1000
    validation: str = ""
    optimizer: str = ""
    in_distribution: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def reached(self, value: float) -> bool:
        """Whether a validation ``value`` meets the target."""
        if value != value:  # NaN never reaches anything
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    def model(self, seed: int = 0) -> nn.Module:
        """The task's model, initialised from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build_model()

    def describe(self) -> str:
        direction = ">=" if self.higher_is_better else "<="
        return (
            f"{self.name}: {self.description}; {self.optimizer}; target {self.metric} {direction} {self.target:g}, "
            f"evaluated every {self.eval_every} steps, up to {self.max_steps} steps, nowcast period {self.period}"
        )
