"""Parameter specs, strided views into the flat parameter vector, and model <-> vector helpers.

The flat parameter vector of a model is the concatenation of ``model.named_parameters()``
(tied parameters once, as PyTorch lists them), each tensor flattened in row-major order
(``docs/design.md``, "Parameter order"). A :class:`ParamView` describes a strided window
into that vector (a parameter, a slice of a fused parameter, a transposed weight ...) without
copying anything, so converters can say *which* values an edge block carries and the graph can
move them between vectors and edge features with ``torch.as_strided``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import NonFiniteError, ParameterMismatchError

__all__ = [
    "all_finite",
    "ParamSpec",
    "ParamView",
    "StackedView",
    "param_specs",
    "normalize_specs",
    "flatten_params",
    "load_params",
    "locate",
    "check_finite",
]


@dataclass(frozen=True)
class ParamSpec:
    """Name, shape and offset of one parameter tensor in the flat parameter vector."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def view(self) -> "ParamView":
        """The whole parameter as a row-major :class:`ParamView`."""
        strides = []
        step = 1
        for size in reversed(self.shape):
            strides.append(step)
            step *= size
        return ParamView(self.name, self.offset, self.shape, tuple(reversed(strides)))


@dataclass(frozen=True)
class ParamView:
    """A strided window ``(offset, shape, strides)`` into the flat parameter vector.

    Supports basic indexing (integers and slices with positive steps) and transposition, so a
    converter can write ``attn_w[:, :d].t()`` for the query part of a fused, (in, out)-stored
    GPT-2 ``c_attn`` weight.
    """

    name: str
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def __getitem__(self, index) -> "ParamView":
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > self.ndim:
            raise IndexError(f"too many indices for view of '{self.name}' with shape {self.shape}")
        offset = self.offset
        shape: list[int] = []
        strides: list[int] = []
        for dim, (size, stride) in enumerate(zip(self.shape, self.strides)):
            if dim >= len(index):
                shape.append(size)
                strides.append(stride)
                continue
            item = index[dim]
            if isinstance(item, slice):
                start, stop, step = item.indices(size)
                if step <= 0:
                    raise IndexError(f"view of '{self.name}': only positive slice steps are supported")
                count = max(0, (stop - start + step - 1) // step)
                offset += start * stride
                shape.append(count)
                strides.append(stride * step)
            elif isinstance(item, int):
                if not -size <= item < size:
                    raise IndexError(f"index {item} out of range for dim {dim} of '{self.name}' {self.shape}")
                offset += (item % size) * stride
            else:
                raise TypeError(f"view of '{self.name}': unsupported index {item!r}")
        return ParamView(self.name, offset, tuple(shape), tuple(strides))

    def transpose(self, dim0: int = 0, dim1: int = 1) -> "ParamView":
        shape, strides = list(self.shape), list(self.strides)
        shape[dim0], shape[dim1] = shape[dim1], shape[dim0]
        strides[dim0], strides[dim1] = strides[dim1], strides[dim0]
        return ParamView(self.name, self.offset, tuple(shape), tuple(strides))

    def t(self) -> "ParamView":
        """Swap the first two dimensions (e.g. an (in, out) weight seen as (out, in))."""
        return self.transpose(0, 1)

    def reshape_tail(self, start: int) -> "ParamView":
        """Merge dimensions ``start..`` into one (kernel dimensions into one feature axis).

        Only possible when those dimensions are laid out contiguously relative to each other.
        """
        if start >= self.ndim:
            return ParamView(self.name, self.offset, self.shape + (1,), self.strides + (1,))
        tail_shape = self.shape[start:]
        tail_strides = self.strides[start:]
        for i in range(len(tail_shape) - 1):
            if tail_strides[i] != tail_strides[i + 1] * tail_shape[i + 1]:
                raise ValueError(f"dimensions {start}.. of the view of '{self.name}' cannot be merged")
        return ParamView(
            self.name,
            self.offset,
            self.shape[:start] + (math.prod(tail_shape),),
            self.strides[:start] + (tail_strides[-1],),
        )

    def of(self, flat: torch.Tensor) -> torch.Tensor:
        """This window of a contiguous flat vector ``[P]`` (a view, no copy)."""
        # as_strided offsets are absolute in the storage: add the tensor's own offset
        return torch.as_strided(flat, self.shape, self.strides, self.offset + flat.storage_offset())

    def of_states(self, states: torch.Tensor) -> torch.Tensor:
        """This window of a contiguous state stack ``[P, T]``: a view of shape ``shape + (T,)``."""
        steps = states.shape[1]
        return torch.as_strided(
            states,
            self.shape + (steps,),
            tuple(s * steps for s in self.strides) + (1,),
            self.offset * steps + states.storage_offset(),
        )

    @property
    def parts(self) -> tuple["ParamView", ...]:
        return (self,)

    def read(self, flat: torch.Tensor) -> torch.Tensor:
        """The values of this window of a flat vector (a view)."""
        return self.of(flat)

    def read_states(self, states: torch.Tensor) -> torch.Tensor:
        """The values of this window of a ``[P, T]`` stack: shape ``shape + (T,)``."""
        return self.of_states(states)

    def write(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (shaped like the view) into this window of ``flat``."""
        self.of(flat).copy_(values)

    def write_states(self, states: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (shape ``shape + (T,)``) into this window of a contiguous ``[P, T]`` stack."""
        self.of_states(states).copy_(values)

    def flat_indices(self) -> torch.Tensor:
        """Flat-vector positions covered by the view, shaped like the view (int64)."""
        index = torch.full((), self.offset, dtype=torch.int64)
        for size, stride in zip(self.shape, self.strides):
            index = index.unsqueeze(-1) + torch.arange(size, dtype=torch.int64) * stride
        return index


@dataclass(frozen=True)
class StackedView:
    """Several views side by side along the last (feature-slot) axis.

    For edges whose feature slots come from different tensors, e.g. the naive attention graph's
    ``[W_q, W_k, W_v]`` edge when the three are separate parameters. Every part has the same
    leading shape; the stacked view's last axis is the concatenation of the parts' last axes.
    """

    parts: tuple[ParamView, ...]

    def __post_init__(self) -> None:
        lead = {p.shape[:-1] for p in self.parts}
        if len(lead) != 1:
            raise ValueError(f"stacked views differ in shape: {[p.shape for p in self.parts]}")

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.parts[0].shape[:-1] + (sum(p.shape[-1] for p in self.parts),)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def __getitem__(self, index) -> "StackedView":
        """Index the leading (edge) axes of every part alike; the slot axis is not indexable."""
        items = index if isinstance(index, tuple) else (index,)
        if len(items) >= self.ndim:
            raise IndexError(f"stacked view '{self.name}': only the leading {self.ndim - 1} axes can be indexed")
        return StackedView(tuple(p[items] for p in self.parts))

    def columns(self, k: int) -> slice:
        """Where part ``k`` lies on the stacked last axis."""
        start = sum(p.shape[-1] for p in self.parts[:k])
        return slice(start, start + self.parts[k].shape[-1])

    def read(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.of(flat) for p in self.parts], dim=-1)

    def read_states(self, states: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.of_states(states) for p in self.parts], dim=-2)

    def write(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        start = 0
        for p in self.parts:
            k = p.shape[-1]
            p.of(flat).copy_(values[..., start : start + k])
            start += k

    def write_states(self, states: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (shape ``shape + (T,)``) into a contiguous ``[P, T]`` stack."""
        for k, p in enumerate(self.parts):
            p.of_states(states).copy_(values[..., self.columns(k), :])


def _named_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters())


def param_specs(model: nn.Module) -> list[ParamSpec]:
    """Specs of ``model.named_parameters()`` (tied parameters once) with their flat offsets."""
    return normalize_specs((name, tuple(p.shape)) for name, p in _named_parameters(model))


def normalize_specs(pairs: Iterable[tuple[str, Sequence[int]]]) -> list[ParamSpec]:
    """Turn ``(name, shape)`` pairs into :class:`ParamSpec` objects, checking them."""
    specs: list[ParamSpec] = []
    seen: set[str] = set()
    offset = 0
    for position, pair in enumerate(pairs):
        try:
            name, shape = pair
        except (TypeError, ValueError):
            raise ParameterMismatchError(
                f"shape list entry {position} is {pair!r}; expected a (name, shape) pair"
            ) from None
        if not isinstance(name, str) or not name:
            raise ParameterMismatchError(f"shape list entry {position}: name {name!r} is not a non-empty string")
        if name in seen:
            raise ParameterMismatchError(f"shape list entry {position}: parameter '{name}' appears twice")
        try:
            dims = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ParameterMismatchError(
                f"parameter '{name}': shape {shape!r} is not a sequence of integers"
            ) from None
        if any(s < 0 for s in dims):
            raise ParameterMismatchError(f"parameter '{name}': negative size in shape {dims}")
        seen.add(name)
        spec = ParamSpec(name, dims, offset)
        specs.append(spec)
        offset += spec.numel
    return specs


def flatten_params(model: nn.Module) -> torch.Tensor:
    """The model's flat parameter vector ``[P]`` (a detached copy, DESIGN's parameter order)."""
    tensors = [p.detach().reshape(-1) for _, p in _named_parameters(model)]
    if not tensors:
        return torch.zeros(0)
    return torch.cat(tensors)


def load_params(model: nn.Module, vector: torch.Tensor) -> nn.Module:
    """Copy a flat parameter vector ``[P]`` into the model's parameters, in place.

    Raises :class:`ParameterMismatchError` (saying how many values the model needs) when the
    vector has the wrong shape; nothing is modified in that case.
    """
    named = _named_parameters(model)
    total = sum(p.numel() for _, p in named)
    if not isinstance(vector, torch.Tensor):
        raise ParameterMismatchError(f"expected a torch.Tensor parameter vector, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.numel() != total:
        raise ParameterMismatchError(
            f"parameter vector has shape {tuple(vector.shape)} but {type(model).__name__} has "
            f"{total} parameters in {len(named)} tensors: pass a 1-D vector of length {total} "
            "(see neuralgraph.flatten_params for the order)"
        )
    offset = 0
    with torch.no_grad():
        for _, p in named:
            n = p.numel()
            p.copy_(vector[offset : offset + n].view(p.shape))
            offset += n
    return model


def locate(params: Sequence[ParamSpec], index: int) -> tuple[ParamSpec, int]:
    """The parameter holding position ``index`` of the flat vector, and the position within it.

    ``params`` are specs in flat-vector order (``graph.params``, :func:`param_specs`). Raises
    ``IndexError`` outside the vector.
    """
    offsets = [p.offset for p in params]
    at = bisect.bisect_right(offsets, index) - 1
    if index < 0 or at < 0 or index >= params[at].offset + params[at].numel:
        total = params[-1].offset + params[-1].numel if params else 0
        raise IndexError(f"position {index} is outside a flat vector of {total} parameters")
    return params[at], index - params[at].offset


def _element(shape: tuple[int, ...], index: int) -> tuple[int, ...]:
    """Row-major multi-index of flat position ``index`` in a tensor of ``shape``."""
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return tuple(reversed(out))


_FINITE_CHUNK = 1 << 22  # rows per isfinite pass of check_finite


def all_finite(values: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN or Inf, checked in row chunks: ``torch.isfinite`` of a whole
    float tensor makes temporaries larger than the tensor itself (its absolute values, masks)."""
    return all(bool(torch.isfinite(rows).all()) for rows in values.split(_FINITE_CHUNK))


def check_finite(
    values: torch.Tensor, params: Sequence[ParamSpec] | None, what: str, *, order: str = "counting from 0"
) -> None:
    """Raise :class:`NonFiniteError` if a flat vector ``[P]`` or stack ``[P, T]`` holds NaN or Inf.

    One ``isfinite`` pass over the whole tensor; only when it fails is the first bad value
    (earliest state, then lowest flat position) located and named: its parameter (from
    ``params``, specs in flat-vector order; None names the row only), its flat index within
    that parameter and, for a stack, its state. ``what`` says what was checked ("states", ...);
    ``order`` how states are numbered (for a history: "0 = oldest").
    """
    if all_finite(values):
        return  # checked in row chunks: no [P, T] temporary on the path that passes
    bad = ~torch.isfinite(values)
    state = None
    if values.ndim == 2:
        state = int(torch.nonzero(bad.any(dim=0))[0])
        row = int(torch.nonzero(bad[:, state])[0])
        value = values[row, state].item()
        where = f" in state {state} of {values.shape[1]} ({order})"
    else:
        row = int(torch.nonzero(bad.reshape(-1))[0])
        value = values.reshape(-1)[row].item()
        where = ""
    count = int(bad.sum())
    total = f"; {count} non-finite values in all" if count > 1 else ""
    if not params:
        raise NonFiniteError(f"{what}: row {row} of the flat vector is {value}{where}{total}", index=row, state=state)
    spec, index = locate(params, row)
    element = f", element {_element(spec.shape, index)} of shape {spec.shape}" if len(spec.shape) > 1 else ""
    raise NonFiniteError(
        f"{what}: parameter '{spec.name}' is {value} at flat index {index}{element}{where}{total}",
        name=spec.name,
        index=index,
        state=state,
    )
