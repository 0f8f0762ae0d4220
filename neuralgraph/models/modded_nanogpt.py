"""A small, self-contained GPT in the layout of the modded-nanogpt speedrun (early 2025 records).

The speedrun (github.com/KellerJordan/modded-nanogpt, ``train_gpt.py`` of the January–April 2025
records) trains a GPT-2-sized model with these parts, all kept here under the same names and shapes,
listed in ``named_parameters()`` order (a module's own parameters come before its submodules')::

    skip_weights                     (num_layers // 2,)   U-net skips from the first to the last blocks
    embed.weight                     (vocab_size, model_dim)     token embedding
    value_embeds.{j}.weight          (vocab_size, model_dim)     value embeddings, mixed into v
    blocks.{i}.lambdas               (2,)   x = lambdas[0] * x + lambdas[1] * x0
    blocks.{i}.attn.qkv_w            (3, num_heads*head_dim, model_dim)  W_q, W_k, W_v stacked, each (out, in)
    blocks.{i}.attn.lambdas          (2,)   v = lambdas[0] * v + lambdas[1] * value_embed
    blocks.{i}.attn.c_proj.weight    (model_dim, num_heads*head_dim)
    blocks.{i}.mlp.c_fc.weight       (mlp_ratio*model_dim, model_dim)    ReLU² MLP
    blocks.{i}.mlp.c_proj.weight     (model_dim, mlp_ratio*model_dim)
    lm_head.weight                   (padded vocab, model_dim)   untied; vocab padded to a multiple of 128

Computation (``forward``): ``x0 = norm(embed(idx))``; every block first mixes ``x`` with ``x0``,
then ``x += attn(norm(x))`` (blocks listed in ``skip_attention`` have no attention) and
``x += mlp(norm(x))``; the first ``n = num_layers // 2`` blocks push their outputs on a stack and
the last ``n`` blocks start with ``x += skip_weights[k] * stack.pop()``; the logits are
``30 * sigmoid(lm_head(norm(x)) / 7.5)``. ``norm`` is an RMS norm without parameters. In attention,
queries and keys are RMS-normed per head (no parameters), rotated by half-truncated RoPE (pairs
``(i, i + head_dim/2)``; the first ``head_dim/4`` pairs rotate with frequencies
``(1/1024) ** linspace(0, 1, head_dim/4)``, the other ``head_dim/4`` pairs have frequency zero), and
scaled by a constant ``attn_scale``. Value embedding ``j`` is used by block ``j`` and by block
``num_layers - E + j`` (E embeddings; see :func:`value_embed_layers`).

Left out (none has parameters): FP8 matmuls, bfloat16 casts, FlexAttention with sliding windows
and document masks (here plain causal softmax attention), ``torch.compile`` and the optimizers.
``forward(idx)`` takes a batch ``(B, T)`` and returns logits (the speedrun takes one flat sequence
and returns the loss). Nothing casts to a fixed dtype, so ``model.double()`` computes in float64.
Small generalisations for tiny test models: any number of layers (odd counts leave the middle
block out of the U-net; one layer has no ``skip_weights``), ``truncated_rope=False`` for the full
RoPE of the late-2024 records, and a configurable vocabulary padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GPTConfig",
    "GPT",
    "Rotary",
    "CausalSelfAttention",
    "MLP",
    "Block",
    "norm",
    "rotary_frequencies",
    "value_embed_layers",
    "next_multiple_of_n",
]


@dataclass
class GPTConfig:
    """The speedrun's architecture (defaults: the 124M-parameter GPT-2-small track)."""

    vocab_size: int = 50257
    num_layers: int = 12
    num_heads: int = 6
    model_dim: int = 768
    max_seq_len: int = 1024
    head_dim: int | None = None  # None: model_dim // num_heads (the speedrun uses 128)
    num_value_embeds: int = 3
    mlp_ratio: int = 4
    skip_attention: tuple[int, ...] = (7,)  # blocks without attention (the speedrun drops block 7's)
    vocab_multiple: int = 128  # lm_head rows: vocab_size rounded up to a multiple of this
    truncated_rope: bool = True  # half-truncated RoPE (2025); False: full RoPE with base 10000
    attn_scale: float = 0.12
    value_embed_layers: tuple[int | None, ...] | None = None  # None: the speedrun's 012...012 pattern

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.model_dim // self.num_heads


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMS norm over the last dimension, without parameters."""
    return F.rms_norm(x, (x.size(-1),))


def next_multiple_of_n(v: int, *, n: int) -> int:
    return -(-int(v) // n) * n


def rotary_frequencies(head_dim: int, truncated: bool = True) -> torch.Tensor:
    """Angular frequency of each rotary pair ``(i, i + head_dim/2)``, ``i < head_dim/2`` (float64).

    Half-truncated (the speedrun since January 2025): ``head_dim/4`` frequencies
    ``(1/1024) ** linspace(0, 1, head_dim/4)`` followed by ``head_dim/4`` zeros (pairs left
    unrotated). Full: ``10000 ** (-2i / head_dim)``, every pair rotates."""
    if truncated:
        if head_dim % 4 or head_dim < 4:
            raise ValueError(f"half-truncated RoPE needs a head size divisible by 4, got {head_dim}")
        quarter = head_dim // 4
        freq = (1 / 1024) ** torch.linspace(0, 1, quarter, dtype=torch.float64)
        return torch.cat([freq, freq.new_zeros(quarter)])
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head size, got {head_dim}")
    return (1 / 10000) ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def value_embed_layers(num_layers: int, num_value_embeds: int) -> list[int | None]:
    """Which value embedding each block mixes into its values (``None``: none).

    The speedrun's pattern: the first E blocks use embeddings ``0 .. E-1`` and so do the last E
    blocks (12 layers, E = 3: ``0 1 2 - - - - - - 0 1 2``). Where the two runs overlap (fewer than
    2E layers), the first run wins."""
    out: list[int | None] = [None] * num_layers
    for i in range(num_layers):
        if i < num_value_embeds:
            out[i] = i
        elif i >= num_layers - num_value_embeds:
            out[i] = i - (num_layers - num_value_embeds)
    return out


class Rotary(nn.Module):
    """Rotary position embedding of ``(B, T, H, D)`` tensors; no parameters."""

    def __init__(self, head_dim: int, truncated: bool = True) -> None:
        super().__init__()
        self.register_buffer("angular_freq", rotary_frequencies(head_dim, truncated), persistent=False)

    def forward(self, x_BTHD: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x_BTHD.size(-3), dtype=x_BTHD.dtype, device=x_BTHD.device)
        theta = torch.outer(t, self.angular_freq.to(x_BTHD.dtype))
        cos, sin = theta.cos()[None, :, None, :], theta.sin()[None, :, None, :]
        x1, x2 = x_BTHD.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def _uniform_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    bound = (3**0.5) * 0.5 * fan_in**-0.5  # the speedrun's init: std 0.5 / sqrt(fan_in)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, truncated_rope: bool = True,
                 attn_scale: float = 0.12) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.attn_scale = attn_scale
        hdim = num_heads * head_dim
        self.qkv_w = nn.Parameter(_uniform_(torch.empty(3, hdim, dim), dim))
        self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.rotary = Rotary(head_dim, truncated_rope)
        self.c_proj = nn.Linear(hdim, dim, bias=False)
        nn.init.zeros_(self.c_proj.weight)  # zero init, as in the speedrun

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None) -> torch.Tensor:
        B, T = x.size(0), x.size(1)
        qkv = F.linear(x, self.qkv_w.flatten(end_dim=1)).view(B, T, 3 * self.num_heads, self.head_dim)
        q, k, v = qkv.chunk(3, dim=-2)
        q, k = norm(q), norm(k)  # QK norm
        q, k = self.rotary(q), self.rotary(k)
        if ve is not None:
            v = self.lambdas[0] * v + self.lambdas[1] * ve.view_as(v)
        else:  # the second lambda is unused in blocks without a value embedding
            v = self.lambdas[0] * v
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) * self.attn_scale
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1) @ v
        y = y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, mlp_ratio * dim, bias=False)
        self.c_proj = nn.Linear(mlp_ratio * dim, dim, bias=False)
        _uniform_(self.c_fc.weight, dim)
        nn.init.zeros_(self.c_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU²


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        has_attn = layer_idx not in config.skip_attention
        self.attn = (
            CausalSelfAttention(config.model_dim, config.num_heads, config.head_size, config.truncated_rope,
                                config.attn_scale)
            if has_attn else None
        )
        self.mlp = MLP(config.model_dim, config.mlp_ratio)
        self.lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, x0: torch.Tensor) -> torch.Tensor:
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        if self.attn is not None:
            x = x + self.attn(norm(x), ve)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    """The speedrun's ``GPT``: ``forward(idx)`` maps token ids ``(B, T)`` to soft-capped logits
    ``(B, T, padded vocab)``; with ``targets`` it returns ``(logits, loss)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        L, E = config.num_layers, config.num_value_embeds
        hdim = config.num_heads * config.head_size
        if E and hdim != config.model_dim:
            raise ValueError(
                f"value embeddings have model_dim={config.model_dim} features but the values have "
                f"num_heads * head_dim = {hdim}: they must agree"
            )
        layers = config.value_embed_layers
        self.ve_layers = list(layers) if layers is not None else value_embed_layers(L, E)
        if len(self.ve_layers) != L or any(j is not None and not 0 <= j < E for j in self.ve_layers):
            raise ValueError(f"value_embed_layers {self.ve_layers} must name one of {E} embeddings (or None) per layer")
        self.embed = nn.Embedding(config.vocab_size, config.model_dim)
        self.value_embeds = nn.ModuleList([nn.Embedding(config.vocab_size, config.model_dim) for _ in range(E)])
        self.blocks = nn.ModuleList([Block(config, i) for i in range(L)])
        self.lm_head = nn.Linear(config.model_dim, next_multiple_of_n(config.vocab_size, n=config.vocab_multiple),
                                 bias=False)
        nn.init.zeros_(self.lm_head.weight)
        self.num_skips = L // 2
        if self.num_skips:
            self.skip_weights = nn.Parameter(torch.ones(self.num_skips))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.size(-1) > self.config.max_seq_len:
            raise ValueError(f"sequence of length {idx.size(-1)} is longer than max_seq_len={self.config.max_seq_len}")
        ve = [embed(idx) for embed in self.value_embeds]
        x = x0 = norm(self.embed(idx))
        L, n = len(self.blocks), self.num_skips
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= L - n:  # U-net: the last n blocks take the outputs of the first n, innermost first
                x = x + self.skip_weights[i - (L - n)] * skips.pop()
            j = self.ve_layers[i]
            x = block(x, ve[j] if j is not None else None, x0)
            if i < n:
                skips.append(x)
        logits = 30 * torch.sigmoid(self.lm_head(norm(x)) / 7.5)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
