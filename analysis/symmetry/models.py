"""The tiny attention models the symmetry experiment permutes: configuration checks, one
model per architecture built from a config (no downloads), random parameters."""

from __future__ import annotations

import torch
from torch import nn

from neuralgraph import converters
from neuralgraph.models import nanogpt as nanogpt_model

__all__ = ["SYMMETRY_ARCHS", "build_model", "check_config", "redraw_parameters", "supported_archs"]

SYMMETRY_ARCHS: tuple[str, ...] = ("gpt2", "llama", "bert", "vit", "nanogpt")
"""Registered attention converters the experiment supports (it builds their models itself)."""

_VOCAB = 8  # token / position counts of the tiny embedding tables around the layer
_POSITIONS = 8


def supported_archs() -> tuple[str, ...]:
    """The registered converters the experiment supports (attention converters)."""
    registered = {c.name for c in converters()}
    return tuple(a for a in SYMMETRY_ARCHS if a in registered)


def check_config(arch: str, width: int, heads: int, kv_heads: int | None, layers: int, n: int) -> str:
    """``arch`` when the configuration is one the experiment can build; ``ValueError`` otherwise."""
    supported = supported_archs()
    if not isinstance(arch, str) or arch not in supported:
        raise ValueError(
            f"symmetry_experiment supports the attention converters {', '.join(supported)}; got {arch!r}"
        )
    for what, value, low in (("width", width, 1), ("heads", heads, 1), ("layers", layers, 1), ("n", n, 4)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    if width % heads:
        raise ValueError(f"width {width} does not split into {heads} heads")
    if kv_heads is not None:
        if arch != "llama":
            raise ValueError(
                f"kv_heads (grouped-query attention) is only meaningful for 'llama'; '{arch}' has as many "
                "key/value heads as query heads: leave kv_heads=None"
            )
        if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"kv_heads must be a positive divisor of heads={heads}, got {kv_heads!r}")
    if arch == "llama" and (width // heads) % 2:
        raise ValueError(f"llama: the head size width/heads = {width // heads} must be even (RoPE rotates pairs)")
    return arch


def build_model(arch: str, width: int, heads: int, kv_heads: int | None, layers: int, inner: int) -> nn.Module:
    """One (or ``layers``) layer of ``arch`` with tiny embedding tables, from a config."""
    if arch == "nanogpt":
        config = nanogpt_model.GPTConfig(block_size=_POSITIONS, vocab_size=_VOCAB, n_layer=layers, n_head=heads,
                                         n_embd=width, dropout=0.0, bias=True)
        return nanogpt_model.GPT(config)
    from neuralgraph.arch._hf import require_transformers

    transformers = require_transformers("the symmetry experiment")
    if arch == "gpt2":
        config = transformers.GPT2Config(
            n_embd=width, n_layer=layers, n_head=heads, n_inner=inner, vocab_size=_VOCAB, n_positions=_POSITIONS,
            bos_token_id=0, eos_token_id=0, attn_implementation="eager",
        )
        return transformers.GPT2Model(config)
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=_VOCAB, hidden_size=width, intermediate_size=inner, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads or heads, head_dim=width // heads,
            max_position_embeddings=2 * _POSITIONS, bos_token_id=0, eos_token_id=0, pad_token_id=0,
            attn_implementation="eager",
        )
        return transformers.LlamaModel(config)
    if arch == "bert":
        config = transformers.BertConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inner,
            vocab_size=_VOCAB, max_position_embeddings=_POSITIONS, type_vocab_size=2, pad_token_id=0,
            attn_implementation="eager",
        )
        return transformers.BertModel(config, add_pooling_layer=False)
    if arch == "vit":
        config = transformers.ViTConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inner,
            image_size=4, patch_size=2, num_channels=3, qkv_bias=True, attn_implementation="eager",
        )
        return transformers.ViTModel(config, add_pooling_layer=False)
    raise ValueError(f"no model builder for '{arch}'")  # pragma: no cover - guarded by check_config


def redraw_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Random parameters: matrices ~ N(0, 1/fan_in), embeddings ~ N(0, 1), 1-D ~ U(0.5, 1.5).

    Random values make every unit different from the others, so any permutation that is not a
    symmetry changes the outputs visibly.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                embedding = "embed" in name or name.endswith(("wte.weight", "wpe.weight")) or "position" in name
                fan_in = 1 if embedding else max(1, p.numel() // p.shape[0])
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * fan_in**-0.5)
            else:
                p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) + 0.5)
