"""Collecting a trajectory during training: :class:`TrajectoryRecorder`, called every step or
attached to the optimizer, notes nowcast jumps."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from .trajectory import Trajectory, as_vector

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["TrajectoryRecorder"]

log = logging.getLogger(__name__)


class TrajectoryRecorder:
    """Collect parameter snapshots during training.

    Call it after every optimizer step (or :meth:`attach` it to the optimizer)::

        rec = TrajectoryRecorder("Adam", every=10)
        rec.record(0, model)                     # the initial parameters
        for step in range(1, n_steps + 1):
            ...; opt.step()
            rec(step, model, opt, loss=loss.item())
        traj = rec.trajectory()

    A snapshot is taken when ``step % every == 0``. With a :class:`nowcast.NiNo` optimizer (any
    object with a ``jumps`` counter), a step after which the counter grew is a *jump step*: its
    snapshot is always taken and marked; the step before a jump (``optimizer.jumps_now``) is
    always taken too, so the jump shows as one segment in plots. The counter is compared with
    its value at the previous call, so call the recorder every step from the start of the run
    (or from any non-jump step). :meth:`mark_jump` marks a jump by hand (your own nowcasting
    loop).

    Args:
        name: label of the run.
        every: snapshot interval in steps.
        max_snapshots: stop recording after this many snapshots (memory guard; default none).
    """

    def __init__(self, name: str = "run", every: int = 1, *, max_snapshots: int | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.name = name
        self.every = every
        self.max_snapshots = max_snapshots
        self._steps: list[int] = []
        self._rows: list[np.ndarray] = []
        self._metrics: list[dict[str, float]] = []
        self._jumps: set[int] = set()
        self._last_jumps: dict[int, int] = {}  # id(optimizer) -> jumps counter seen last
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def jump_steps(self) -> list[int]:
        return sorted(self._jumps)

    def mark_jump(self, step: int) -> None:
        """Mark ``step`` as a nowcast jump (the snapshot recorded at ``step`` is the post-jump state)."""
        self._jumps.add(int(step))

    def _jumped(self, optimizer: Any) -> bool:
        jumps = getattr(optimizer, "jumps", None)
        if jumps is None:
            return False
        key = id(optimizer)
        before = self._last_jumps.get(key)
        self._last_jumps[key] = int(jumps)
        # first sight: the counter may come from before recording started (a resumed run)
        return before is not None and int(jumps) > before

    def __call__(self, step: int, model: Any, optimizer: Any = None, **metrics: float) -> bool:
        """Per-step hook: record when due (see the class docstring); returns whether it recorded."""
        step = int(step)
        jumped = optimizer is not None and self._jumped(optimizer)
        if jumped:
            self.mark_jump(step)
        before_jump = optimizer is not None and bool(getattr(optimizer, "jumps_now", False))
        if jumped or before_jump or step % self.every == 0:
            return self.record(step, model, **metrics)
        return False

    def record(self, step: int, model: Any, **metrics: float) -> bool:
        """Take a snapshot now: ``model`` is an ``nn.Module``, a flat tensor or an array.

        Recording the same step twice replaces the earlier snapshot. Returns False when
        ``max_snapshots`` is reached.
        """
        step = int(step)
        row = as_vector(model)
        if self._rows and row.size != self._rows[0].size:
            raise ValueError(
                f"recorder '{self.name}': snapshot at step {step} has {row.size} values, "
                f"earlier ones {self._rows[0].size}"
            )
        values = {k: float(v) for k, v in metrics.items()}
        if self._steps and step == self._steps[-1]:
            self._rows[-1] = row
            self._metrics[-1].update(values)
            return True
        if self._steps and step < self._steps[-1]:
            raise ValueError(f"recorder '{self.name}': step {step} comes after step {self._steps[-1]}")
        if self.max_snapshots is not None and len(self._steps) >= self.max_snapshots:
            if not self._full_warned:
                log.warning(
                    "recorder '%s' holds %d snapshots (max_snapshots): not recording more", self.name, len(self)
                )
                self._full_warned = True
            return False
        self._steps.append(step)
        self._rows.append(row)
        self._metrics.append(values)
        return True

    def attach(self, model: nn.Module, optimizer: Any) -> Any:
        """Record through ``optimizer.register_step_post_hook``: after every ``step()`` call the
        hook runs with ``step = optimizer.step_count`` (NiNo) or the number of calls so far.
        Returns the hook handle (``handle.remove()`` detaches)."""
        calls = [0]

        def hook(opt: Any, args: Any, kwargs: Any) -> None:
            calls[0] += 1
            self(int(getattr(opt, "step_count", calls[0])), model, opt)

        return optimizer.register_step_post_hook(hook)

    def trajectory(self) -> Trajectory:
        """The snapshots so far as a :class:`Trajectory`."""
        if not self._rows:
            raise ValueError(f"recorder '{self.name}' has no snapshots yet")
        names = sorted({k for m in self._metrics for k in m})
        metrics = {k: np.array([m.get(k, np.nan) for m in self._metrics], dtype=np.float64) for k in names}
        jumps = np.array(sorted(self._jumps), dtype=np.int64)
        return Trajectory(self.name, np.array(self._steps), np.stack(self._rows), jumps, metrics)
