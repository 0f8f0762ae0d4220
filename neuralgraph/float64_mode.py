"""Run a float64 model in float64 throughout, even where its code asks for float32.

Many Hugging Face layers compute a step in float32 on purpose — RMSNorm (``x.to(torch.float32)``),
attention softmax (``softmax(..., dtype=torch.float32)``), rotary tables (``.float()``) — which
in a float64 copy rounds every value to float32 there and back. A permutation that only reorders
sums then moves the outputs by ~1e-7 instead of ~1e-16, and a permutation that breaks a symmetry
only a little can hide under that noise. The verifier runs its float64 copies under
:class:`StayInFloat64`, so that their round-off is float64's and its margin between good and bad
permutations is wide.

Only conversions *from* float64 to a narrower float type are kept at float64; everything else
(integer casts, constants the code builds in float32, device moves) runs as written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["StayInFloat64"]

_NARROW = (torch.float32, torch.float16, torch.bfloat16)

_SAME_TENSOR = {torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax}


def _wide(value: Any) -> Any:
    """``value`` with a narrow float dtype (or a tensor of one, as the target of ``.to``) widened."""
    if isinstance(value, torch.dtype) and value in _NARROW:
        return torch.float64
    if isinstance(value, torch.Tensor) and value.dtype in _NARROW:
        return value.new_empty((), dtype=torch.float64)
    return value


class StayInFloat64(TorchFunctionMode):
    """A torch function mode under which float64 tensors stay float64: ``.to(float32)``,
    ``.float()``, ``.type_as(float32 tensor)`` and ``softmax(..., dtype=float32)`` of a float64
    tensor return / compute float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else kwargs.get("input")
        if isinstance(first, torch.Tensor) and first.dtype == torch.float64:
            if func in _SAME_TENSOR:
                return first
            if func is torch.Tensor.type_as and _wide(args[1]) is not args[1]:
                return first
            if func is torch.Tensor.to or func in _SOFTMAX or func is torch.Tensor.type:
                args = (first, *(_wide(a) for a in args[1:])) if args else args
                kwargs = {k: _wide(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)
