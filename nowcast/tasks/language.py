"""Token streams for language modelling: random windows for training, fixed windows for validation."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .task import Batch

__all__ = ["TokenData", "CharVocab", "WordVocab"]


@dataclass
class TokenData:
    """Next-token prediction over ``train`` / ``val`` id streams (1-D long tensors).

    Training batches are ``batch_size`` windows of ``block_size + 1`` tokens at seeded random
    offsets (as nanoGPT samples). The validation metric is the perplexity ``exp(mean loss)`` over
    the first ``eval_windows`` non-overlapping windows of ``val`` (all of them if fewer): the same
    tokens at every evaluation.
    """

    train: torch.Tensor
    val: torch.Tensor
    block_size: int
    batch_size: int
    eval_windows: int = 64
    eval_batch: int = 32

    def __post_init__(self) -> None:
        for name, ids in (("train", self.train), ("val", self.val)):
            if ids.dim() != 1 or len(ids) <= self.block_size + 1:
                raise ValueError(f"{name} stream has {len(ids)} tokens: need more than block_size + 1 = {self.block_size + 1}")
        windows = min(self.eval_windows, (len(self.val) - 1) // self.block_size)
        starts = torch.arange(windows) * self.block_size
        self._val_x = torch.stack([self.val[s : s + self.block_size] for s in starts.tolist()])
        self._val_y = torch.stack([self.val[s + 1 : s + 1 + self.block_size] for s in starts.tolist()])

    def batches(self, seed: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(seed)
        span = torch.arange(self.block_size + 1)
        high = len(self.train) - self.block_size - 1
        while True:
            starts = torch.randint(0, high + 1, (self.batch_size,), generator=generator)
            windows = self.train[starts[:, None] + span]
            yield windows[:, :-1], windows[:, 1:]

    @staticmethod
    def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else getattr(out, "logits", out)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self._loss(model, *batch)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        total = 0.0
        for start in range(0, len(self._val_x), self.eval_batch):
            x, y = self._val_x[start : start + self.eval_batch], self._val_y[start : start + self.eval_batch]
            total += float(self._loss(model, x, y)) * len(x)
        model.train(was_training)
        mean = total / len(self._val_x)
        return math.exp(mean) if mean < 700 else math.inf


class CharVocab:
    """Characters of a text, sorted (Tiny Shakespeare: 65)."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary") from None


class WordVocab:
    """Words of a token list seen at least ``min_count`` times, in first-seen order after ``<unk>``;
    other words map to ``<unk>``."""

    UNK = "<unk>"

    def __init__(self, tokens: list[str], min_count: int = 1) -> None:
        counts = Counter(tokens)
        self.words = list(dict.fromkeys([self.UNK, *(w for w in tokens if counts[w] >= min_count)]))
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str]) -> torch.Tensor:
        unk = self.index[self.UNK]
        return torch.tensor([self.index.get(w, unk) for w in tokens], dtype=torch.long)
