"""Image classification data held in memory: epoch-shuffled batches, cross-entropy, accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .task import Batch

__all__ = ["ClassificationData"]


@dataclass
class ClassificationData:
    """Train and validation tensors (``x`` float ``[N, C, H, W]``, ``y`` long ``[N]``) and a batch size.

    Training batches come from a fresh seeded permutation every epoch (the last partial batch of an
    epoch is dropped); the validation metric is the accuracy on all of ``val_x``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    batch_size: int
    eval_batch: int = 2000

    def __post_init__(self) -> None:
        if len(self.train_x) != len(self.train_y) or len(self.val_x) != len(self.val_y):
            raise ValueError("images and labels differ in number")
        if self.batch_size > len(self.train_x):
            raise ValueError(f"batch_size {self.batch_size} exceeds the {len(self.train_x)} training examples")

    def batches(self, seed: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(seed)
        n, b = len(self.train_x), self.batch_size
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n - b + 1, b):
                idx = order[start : start + b]
                yield self.train_x[idx], self.train_y[idx]

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        correct = 0
        for start in range(0, len(self.val_x), self.eval_batch):
            logits = model(self.val_x[start : start + self.eval_batch])
            correct += int((logits.argmax(-1) == self.val_y[start : start + self.eval_batch]).sum())
        model.train(was_training)
        return correct / len(self.val_x)
