"""Example inputs: what the traced converter runs the forward on, and ``verify``'s default inputs.

Users pass ``example_inputs`` as a tensor, a tuple of positional arguments or a dict of keyword
arguments. Without them, a Hugging Face model's inputs come from its config (the main input's
kind, the vocabulary, the image size and channels, the feature size of audio models; decoder ids
for encoder-decoders, encoder states for a decoder with cross-attention used alone; a mask over image patches where the model has a learned mask token, so
that the token takes part); a module with an ``example_inputs()`` method says its own; a plain module's
come from its first layer when that says enough (a ``Linear``, ``Conv``, ``Embedding`` or
``LayerNorm``). Otherwise the error says how to pass them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import NeuralGraphError

__all__ = ["normalize_inputs", "example_inputs_for", "redraw_inputs", "batch_within"]

SEQUENCE_LENGTH = 6
"""Tokens per example sequence (capped by the model's maximum)."""

OUTPUT_BUDGET = 1 << 24
"""Most output elements one batch of verification inputs may produce (16M: 128 MB in float64)."""


def batch_within(batch: int, per_example: int) -> int:
    """``batch`` capped at 8 and at what keeps ``batch * per_example`` output elements (a language
    model's positions x vocabulary) within :data:`OUTPUT_BUDGET`; at least 1. At real size, GPT-2's
    1024 positions x 50257 logits fill the budget with one sequence."""
    return max(1, min(batch, 8, OUTPUT_BUDGET // max(1, per_example)))


def normalize_inputs(inputs: Any) -> tuple | dict:
    """A tensor, tuple/list of arguments or mapping of keyword arguments, as a tuple or dict."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs)
    raise NeuralGraphError(
        f"example_inputs must be a tensor, a tuple of positional arguments or a dict of keyword arguments, "
        f"not {type(inputs).__name__}"
    )


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _names(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` has an argument called ``name`` (not merely ``**kwargs``)."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _config_int(config: Any, *names: str, default: int | None = None) -> int | None:
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, (tuple, list)) and v and isinstance(v[0], int):
            return v[0]
    return default


def _text_config(config: Any) -> Any:
    for name in ("text_config", "decoder"):
        sub = getattr(config, name, None)
        if sub is not None and not isinstance(sub, (dict, str)):
            return sub
    return config


def _from_config(model: nn.Module, generator: torch.Generator) -> dict:
    config = model.config
    main = getattr(model, "main_input_name", "input_ids")
    batch = 2
    inputs: dict[str, Any] = {}
    text = _text_config(config)
    max_len = _config_int(text, "max_position_embeddings", "n_positions", "max_length", default=SEQUENCE_LENGTH)
    seq = max(1, min(SEQUENCE_LENGTH, max_len or SEQUENCE_LENGTH))
    two_towers = getattr(config, "vision_config", None) is not None and _names(model, "pixel_values")
    if main == "pixel_values" or two_towers:
        vision = getattr(config, "vision_config", None) or config
        size = _config_int(vision, "image_size", default=32)
        channels = _config_int(vision, "num_channels", default=3)
        inputs["pixel_values"] = torch.randn(batch, channels, size, size, generator=generator)
        if _names(model, "input_ids") and (main == "input_ids" or getattr(config, "text_config", None) is not None):
            vocab = _config_int(text, "vocab_size", default=10)
            inputs["input_ids"] = torch.randint(min(vocab, 1000), (batch, seq), generator=generator)
    elif main == "input_features":
        bins = _config_int(config, "num_mel_bins", "feature_size", "input_feat_per_channel", default=80)
        frames = 2 * (_config_int(config, "max_source_positions", default=16) or 16)
        inputs["input_features"] = torch.randn(batch, bins, frames, generator=generator)
    elif main == "input_values":
        inputs["input_values"] = torch.randn(batch, 1600, generator=generator)
    else:
        vocab = _config_int(text, "vocab_size", default=10)
        inputs[main] = torch.randint(min(vocab, 1000), (batch, seq), generator=generator)
    eos = getattr(text, "eos_token_id", None)
    if isinstance(eos, int) and isinstance(inputs.get("input_ids"), torch.Tensor) and getattr(config, "is_encoder_decoder", False):
        # one end-of-sequence token per sequence, at its end (sequence-classification heads of
        # encoder-decoders read the state there and need the same count in every row)
        ids = inputs["input_ids"]
        vocab = _config_int(text, "vocab_size", default=10) or 10
        ids[ids == eos] = (eos + 1) % min(vocab, 1000)
        ids[:, -1] = eos
    if getattr(config, "is_encoder_decoder", False) and _accepts(model, "decoder_input_ids"):
        vocab = _config_int(_text_config(config), "vocab_size", default=10)
        inputs["decoder_input_ids"] = torch.randint(min(vocab, 1000), (batch, seq), generator=generator)
    if "pixel_values" in inputs and _names(model, "bool_masked_pos") and _has_param(model, "mask_token"):
        # a learned mask token is part of the function only where patches are masked: mask some
        vision = getattr(config, "vision_config", None) or config
        size, patch = _config_int(vision, "image_size", default=32), _config_int(vision, "patch_size", default=16)
        patches = (size // patch) ** 2 if size and patch else 0
        if patches:
            inputs["bool_masked_pos"] = torch.rand(batch, patches, generator=generator) < 0.5
    if "input_values" in inputs and _names(model, "mask_time_indices") and _has_param(model, "masked_spec_embed"):
        # speech models replace masked time steps by a learned vector: mask some
        lengths = getattr(model, "_get_feat_extract_output_lengths", None)
        frames = int(lengths(torch.tensor(inputs["input_values"].shape[-1]))) if callable(lengths) else 0
        if frames:
            inputs["mask_time_indices"] = torch.rand(batch, frames, generator=generator) < 0.5
    cross = not getattr(config, "is_encoder_decoder", False) and any(
        part in name for name, _ in model.named_parameters() for part in _CROSS_ATTENTION
    )
    width = _config_int(text, "d_model", "hidden_size", "n_embd", default=None)
    if cross and width:  # a decoder alone (BART's or Whisper's ForCausalLM): its cross-attention reads an encoder's states
        states = torch.randn(batch, seq, width, generator=generator)
        if _names(model, "encoder_hidden_states"):
            inputs["encoder_hidden_states"] = states
        elif _names(model, "encoder_outputs"):
            inputs["encoder_outputs"] = (states,)
    if _accepts(model, "use_cache"):
        inputs["use_cache"] = False
    return inputs


_CROSS_ATTENTION = ("encoder_attn.", "crossattention.", "cross_attn.")


def _has_param(model: nn.Module, suffix: str) -> bool:
    return any(name.endswith(suffix) for name, _ in model.named_parameters())


def _from_first_layer(model: nn.Module, generator: torch.Generator) -> tuple | None:
    for _, m in model.named_modules():
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Linear):
            return (torch.randn(2, m.in_features, generator=generator),)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = len(m.kernel_size)
            return (torch.randn(2, m.in_channels, *([16] * dims), generator=generator),)
        if isinstance(m, nn.Embedding):
            return (torch.randint(m.num_embeddings, (2, SEQUENCE_LENGTH), generator=generator),)
        if isinstance(m, nn.LayerNorm):
            return (torch.randn(2, *m.normalized_shape, generator=generator),)
        return None
    return None


def example_inputs_for(model: nn.Module, given: Any = None, *, seed: int = 0) -> tuple | dict:
    """``given`` (normalized), or inputs derived from a Hugging Face config or the first layer."""
    if given is not None:
        return normalize_inputs(given)
    generator = torch.Generator().manual_seed(seed)
    own = getattr(model, "example_inputs", None)
    if callable(own):  # a model that says what it runs on
        return normalize_inputs(own())
    if getattr(model, "config", None) is not None and hasattr(model.config, "model_type"):
        return _from_config(model, generator)
    guessed = _from_first_layer(model, generator)
    if guessed is None:
        raise NeuralGraphError(
            f"{type(model).__name__}: no example inputs to trace the forward with. Pass them: "
            "neuralgraph.convert(model, example_inputs=x) with a tensor, a tuple of positional arguments or a dict of "
            "keyword arguments the model's forward accepts"
        )
    return guessed


def redraw_inputs(inputs: tuple | dict, generator: torch.Generator, dtype: torch.dtype) -> tuple | dict:
    """Inputs of the same shapes: floating tensors redrawn (in ``dtype``), everything else kept."""

    def draw(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return torch.randn(x.shape, generator=generator, dtype=dtype)
        return x

    if isinstance(inputs, Mapping):
        return {k: draw(v) for k, v in inputs.items()}
    return tuple(draw(x) for x in inputs)
