"""Nowcasters: what predicts future parameters from recent ones (:class:`Nowcaster`) — a NiNo
or WNN+ model (:class:`NiNoPredictor`, :class:`WNNPlus`), the Linefit baselines, a regime router
of two models — and the one resolver that turns what a user passes into one (:func:`resolve`)."""

from .base import Nowcaster
from .baselines import WNN, Linefit, LinefitPlus
from .model_nowcaster import ModelNowcaster, NiNoPredictor, WNNPlus
from .regime_router import RegimeRouter
from .resolver import follow_device, load_checkpoint, resolve, resolve_spec

__all__ = [
    "Linefit", "LinefitPlus", "ModelNowcaster", "NiNoPredictor", "Nowcaster", "RegimeRouter", "WNN", "WNNPlus",
    "follow_device", "load_checkpoint", "resolve", "resolve_spec",
]
