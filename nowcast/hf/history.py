"""The parameter states of the current period, recorded in slots tied to the global step.

:class:`NiNoCallback <nowcast.hf.NiNoCallback>` records a state after every ``interval``-th
optimizer step and jumps after every ``period``-th, from the ``ctx`` states of that period. The
slot of a state is fixed by the step (``(step // interval - 1) % ctx``), so a run that starts or
resumes mid-period without the recorded states simply waits for the next period instead of
predicting from states at the wrong spacing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence

import torch

from neuralgraph.params import check_finite, normalize_specs

from ..history_store import allocate_history, history_place, record_column, write_params

__all__ = ["SlotHistory"]

log = logging.getLogger(__name__)


class SlotHistory:
    """``[P, ctx]`` states of ``params`` (flattened, in order), filled slot by slot.

    Args:
        names, params: the recorded parameters.
        ctx: states per prediction.
        device: where the states live (default: the first parameter's device); ``"disk"`` or a
            ``.bin`` path keeps them in a memory-mapped file (:mod:`nowcast.history_store`).

    States use float32 or the widest parameter dtype if wider, so bf16 weights are recorded exactly.
    """

    def __init__(self, names: Sequence[str], params: Sequence[torch.Tensor], ctx: int, device: torch.device | str | None = None):
        self.names = list(names)
        self.params = list(params)
        self.ctx = ctx
        self.num_params = sum(p.numel() for p in self.params)
        self.place = history_place(device, self.params[0].device)
        self.device = self.place if isinstance(self.place, torch.device) else torch.device("cpu")
        self.dtype = functools.reduce(torch.promote_types, (p.dtype for p in self.params), torch.float32)
        self._specs = normalize_specs((n, tuple(p.shape)) for n, p in zip(self.names, self.params))
        self._states: torch.Tensor | None = None
        self.filled = 0

    def record(self, slot: int, step: int) -> bool:
        """Record the parameters as state ``slot``; only the next free slot is taken (returns whether it was).

        Raises:
            neuralgraph.errors.NonFiniteError: a parameter holds NaN or Inf (the state is not kept).
        """
        if slot == 0:
            self.filled = 0
        if slot != self.filled:
            log.debug("step %d: state slot %d skipped (the states of this period start at slot %d)", step, slot, self.filled)
            return False
        if self._states is None:
            self._states = allocate_history(self.num_params, self.ctx, self.dtype, self.place)
        column = self._states[:, slot]
        record_column(column, self.params)
        check_finite(
            column, self._specs,
            f"step {step}: the parameters to record as state {slot + 1} of {self.ctx} are not finite (training diverged)",
        )
        self.filled += 1
        return True

    @property
    def full(self) -> bool:
        return self.filled == self.ctx

    def states(self) -> torch.Tensor:
        """``[P, ctx]``, oldest first (only when :attr:`full`)."""
        if not self.full or self._states is None:
            raise RuntimeError(f"only {self.filled} of {self.ctx} states are recorded")
        return self._states

    def clear(self) -> None:
        self.filled = 0

    def snapshot(self) -> torch.Tensor | None:
        """The recorded states ``[P, filled]`` on the CPU (None when there are none)."""
        if not self.filled or self._states is None:
            return None
        return self._states[:, : self.filled].to("cpu", copy=True).contiguous()

    def restore(self, states: torch.Tensor | None, filled: int) -> None:
        """Put back a :meth:`snapshot` (``filled`` states)."""
        if not 0 <= filled < self.ctx:
            raise ValueError(f"filled must be 0 .. {self.ctx - 1}, got {filled}")
        if filled:
            if states is None or tuple(states.shape) != (self.num_params, filled):
                shape = None if states is None else tuple(states.shape)
                raise ValueError(f"saved states have shape {shape}, expected ({self.num_params}, {filled})")
            if self._states is None:
                self._states = allocate_history(self.num_params, self.ctx, self.dtype, self.place)
            self._states[:, :filled].copy_(states)
        self.filled = filled

    def write(self, theta: torch.Tensor, mask: Sequence[bool]) -> None:
        """Copy ``theta [P]`` into the parameters whose ``mask`` entry is True (cast to their dtype)."""
        write_params(self.params, theta, mask)

    def fingerprint(self) -> str:
        """A SHA-256 of the parameters' current bytes: tells whether a saved history belongs to them."""
        digest = hashlib.sha256()
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                digest.update(name.encode())
                digest.update(p.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
