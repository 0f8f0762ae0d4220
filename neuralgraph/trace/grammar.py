"""Random small models from a grammar of building blocks: the traced converter's fuzzing corpus.

A model is a stem (a ``Linear`` on vectors or sequences, or a ``Conv2d`` on images), a random
chain of blocks acting on a stream of width ``d``, and a head. The blocks are the patterns the
traced converter must read correctly: residual MLPs, concatenation skips, SwiGLU gating, norms
(LayerNorm and a hand-written RMSNorm), layer scales, multi-head attention (separate or fused
projections, grouped-query), a module applied twice, an output head tied to an embedding, grouped
and depthwise convolutions with residual adds. ``sample_traced_model(rng)`` draws one; its
``example_inputs()`` are what it runs on.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sample_traced_model", "GrammarModel", "BLOCKS"]

_ACTS = (torch.relu, torch.tanh, F.gelu, F.silu, torch.sigmoid)


class ResidualMLP(nn.Module):
    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        self.up = nn.Linear(d, rng.randint(2, 6), bias=rng.random() < 0.7)
        self.down = nn.Linear(self.up.out_features, d, bias=rng.random() < 0.7)
        self.act = rng.choice(_ACTS)

    def forward(self, x):
        return x + self.down(self.act(self.up(x)))


class ConcatSkip(nn.Module):
    """``proj(cat([x, act(W x)]))``: a skip placed beside new features."""

    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        self.new = nn.Linear(d, rng.randint(2, 5))
        self.proj = nn.Linear(d + self.new.out_features, d)
        self.act = rng.choice(_ACTS)

    def forward(self, x):
        return self.proj(torch.cat([x, self.act(self.new(x))], dim=-1))


class Gated(nn.Module):
    """SwiGLU: ``down(silu(gate x) * up x)``, with or without a residual."""

    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        hidden = rng.randint(2, 6)
        self.gate = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=rng.random() < 0.5)
        self.residual = rng.random() < 0.6

    def forward(self, x):
        y = self.down(F.silu(self.gate(x)) * self.up(x))
        return x + y if self.residual else y


class Norm(nn.Module):
    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        self.rms = rng.random() < 0.4
        self.ln = None if self.rms else nn.LayerNorm(d, bias=rng.random() < 0.7)
        self.weight = nn.Parameter(torch.ones(d)) if self.rms else None

    def forward(self, x):
        if self.rms:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight
        return self.ln(x)


class LayerScale(nn.Module):
    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        self.inner = nn.Linear(d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, x):
        return x + self.gamma * torch.tanh(self.inner(x))


class Twice(nn.Module):
    """One square layer applied twice."""

    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        self.layer = nn.Linear(d, d)

    def forward(self, x):
        return self.layer(torch.tanh(self.layer(x)))


class Attention(nn.Module):
    """Multi-head (or grouped-query) self-attention over ``[B, T, d]``, residual around it."""

    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        self.heads = rng.choice([h for h in (1, 2, 3) if d % h == 0] or [1])
        self.kv_heads = rng.choice([k for k in (1, self.heads) if self.heads % k == 0])
        self.head_dim = rng.randint(2, 3)
        self.fused = self.kv_heads == self.heads and rng.random() < 0.4
        hd = self.head_dim
        if self.fused:
            self.qkv = nn.Linear(d, 3 * self.heads * hd)
        else:
            self.q = nn.Linear(d, self.heads * hd)
            self.k = nn.Linear(d, self.kv_heads * hd, bias=False)
            self.v = nn.Linear(d, self.kv_heads * hd)
        self.o = nn.Linear(self.heads * hd, d)
        self.sdpa = rng.random() < 0.5

    def forward(self, x):
        b, t, _ = x.shape
        hd = self.head_dim
        if self.fused:
            q, k, v = self.qkv(x).split(self.heads * hd, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(b, t, self.heads, hd).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, hd).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, hd).transpose(1, 2)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1) @ v
        return x + self.o(a.transpose(1, 2).reshape(b, t, self.heads * hd))


class ConvBlock(nn.Module):
    """A grouped or depthwise convolution with a residual add, on ``[B, d, H, W]``."""

    def __init__(self, d: int, rng: random.Random) -> None:
        super().__init__()
        groups = rng.choice([g for g in (1, 2, d) if d % g == 0])
        self.conv = nn.Conv2d(d, d, 3, padding=1, groups=groups, bias=rng.random() < 0.7)
        self.bn = nn.BatchNorm2d(d) if rng.random() < 0.4 else None
        self.residual = rng.random() < 0.6

    def forward(self, x):
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        y = torch.relu(y)
        return x + y if self.residual else y


BLOCKS = {
    "vector": (ResidualMLP, ConcatSkip, Gated, Norm, LayerScale, Twice),
    "sequence": (ResidualMLP, Gated, Norm, LayerScale, Twice, Attention, Attention),
    "image": (ConvBlock, ConvBlock),
}
"""Which blocks each kind of model draws from."""


class GrammarModel(nn.Module):
    """stem -> blocks -> head, for ``kind`` in ``vector`` / ``sequence`` / ``tokens`` / ``image``."""

    def __init__(self, kind: str, rng: random.Random) -> None:
        super().__init__()
        self.kind = kind
        d = rng.randint(3, 6)
        self.inputs = rng.randint(2, 4)
        self.vocab = rng.randint(4, 9)
        if kind == "tokens":
            self.stem = nn.Embedding(self.vocab, d)
        elif kind == "image":
            self.stem = nn.Conv2d(self.inputs, d, 3, padding=1)
        else:
            self.stem = nn.Linear(self.inputs, d)
        pool = BLOCKS["sequence" if kind == "tokens" else kind]
        self.blocks = nn.ModuleList(rng.choice(pool)(d, rng) for _ in range(rng.randint(1, 3)))
        self.tied = kind == "tokens" and rng.random() < 0.5
        self.head = nn.Linear(d, self.vocab if self.tied else rng.randint(2, 4), bias=not self.tied)
        if self.tied:
            self.head.weight = self.stem.weight

    def example_inputs(self, generator: torch.Generator | None = None) -> tuple:
        g = generator or torch.Generator().manual_seed(0)
        if self.kind == "tokens":
            return (torch.randint(self.vocab, (2, 5), generator=g),)
        if self.kind == "image":
            return (torch.randn(2, self.inputs, 5, 5, generator=g),)
        if self.kind == "sequence":
            return (torch.randn(2, 4, self.inputs, generator=g),)
        return (torch.randn(4, self.inputs, generator=g),)

    def forward(self, x):
        x = self.stem(x)
        if self.kind == "tokens":
            x = torch.tanh(x)
        for block in self.blocks:
            x = block(x)
        if self.kind == "image":
            x = x.mean((2, 3))
        return self.head(x)


def sample_traced_model(rng: random.Random) -> GrammarModel:
    """A random model of the grammar (the ``traced`` converter's registry example)."""
    return GrammarModel(rng.choice(["vector", "vector", "sequence", "tokens", "image"]), rng).eval()
