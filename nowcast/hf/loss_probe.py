"""The loss just before and just after a jump, on the last training micro-batch.

:class:`LossProbe` keeps a reference to the inputs of the latest training forward pass (a forward
pre-hook on the model; evaluation passes are ignored) and evaluates the model's loss on them on
demand: in eval mode (no dropout, so no random numbers are drawn and the run is unchanged), under
``torch.no_grad()``, through the model's own ``forward`` (which carries the Trainer's autocast for
bf16 / fp16 runs). The Trainer's ``num_items_in_batch`` argument is dropped, so the value is the
micro-batch's mean loss. Under ``torch.distributed`` the ranks' values are averaged.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .. import distributed

__all__ = ["LossProbe"]

log = logging.getLogger(__name__)

_DROPPED = ("num_items_in_batch",)


class LossProbe:
    """Loss of ``model`` on its last training micro-batch (see the module docs)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._args: tuple[Any, ...] | None = None
        self._kwargs: dict[str, Any] | None = None
        self._handle = model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training and torch.is_grad_enabled():
            self._args = args
            self._kwargs = {k: v for k, v in kwargs.items() if k not in _DROPPED}

    def _local(self) -> float | None:
        if self._kwargs is None:
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(*self._args, **self._kwargs)
        finally:
            self.model.train(was_training)
        loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return None
        return float(loss.detach().float())

    def loss(self) -> float | None:
        """The loss now (averaged over ranks), or None when the model gave no ``loss`` (no labels)."""
        try:
            value = self._local()
        except Exception as exc:  # a probe must never stop training
            log.warning("could not evaluate the loss around the jump: %s", exc)
            value = None
        if not distributed.is_distributed():
            return value
        backend_gpu = torch.distributed.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if backend_gpu else torch.device("cpu")
        both = torch.tensor([0.0 if value is None else value, 0.0 if value is None else 1.0], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(both)
        return None if both[1].item() == 0 else float(both[0].item() / both[1].item())

    def remove(self) -> None:
        self._handle.remove()
        self._args = self._kwargs = None
