"""One checkpoint made of two NiNo models, each used in the training regime it was trained for.

A nowcaster's training data fixes the regime it knows: the base optimizer's learning rate times
the steps between two states (``lr_interval``). ``nino-cpu`` was trained on runs at 0.2–1.8 and
``nino-cpu-mixed`` also on runs at 0.03–0.08; each is the better one in its own regime and neither
in both (``docs/metatraining.md``). :class:`RegimeRouter` holds both and sends each prediction to
``below`` when ``lr_interval < split`` and to ``above`` otherwise, so every prediction is bit for bit
one expert's. The optimizer wrapper passes ``lr_interval`` (its learning rate times ``period /
ctx``), like it does for regime-conditioned models.

The directory format mirrors :func:`nowcast.save`: ``config.json`` (format
``nowcast.RegimeRouter``: the split and both experts' :class:`NiNoConfig`) and one
``model.safetensors`` whose keys are the experts' own, prefixed ``below.`` / ``above.``. Loading
reads no pickle.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model import NiNoConfig, NiNoModel, check_state_dict
from ..model.files import CONFIG_FILE, ROUTER_FORMAT, WEIGHTS_FILE, read_directory_config, read_directory_weights, write_directory
from .model_nowcaster import ModelNowcaster, NiNoPredictor, WNNPlus

log = logging.getLogger(__name__)

__all__ = ["ROUTER_FORMAT", "RegimeRouter", "is_router_checkpoint"]

ROUTER_VERSION = 1
_SIDES = ("below", "above")


def _wrap(model: NiNoModel) -> ModelNowcaster:
    return NiNoPredictor(model) if model.config.gnn else WNNPlus(model)


def is_router_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by :meth:`RegimeRouter.save`."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        meta = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == ROUTER_FORMAT


def _positive(value: Any) -> float | None:
    """``value`` as a finite positive float (a number or a one-element tensor), else None."""
    if isinstance(value, (bool, str)) or (isinstance(value, torch.Tensor) and value.numel() != 1):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < math.inf else None


class RegimeRouter:
    """Two NiNo models; ``below`` predicts when ``lr_interval < split``, ``above`` otherwise.

    Args:
        below: the model (or :class:`ModelNowcaster`) for shorter regimes.
        above: the model for ``lr_interval >= split``.
        split: the regime boundary, a positive number (learning rate x steps between states).
        name: a short name for tables.

    Both experts must take the same history (``ctx``) and horizons (``seq_len``): the optimizer
    wrapper plans its jumps once. :meth:`predict` without ``lr_interval`` raises (the router cannot
    guess the regime).
    """

    needs_graph = True
    uses_lr_interval = True

    def __init__(self, below: NiNoModel | ModelNowcaster, above: NiNoModel | ModelNowcaster, split: float, *, name: str = "NiNo-routed") -> None:
        experts = {}
        for side, expert in zip(_SIDES, (below, above)):
            if isinstance(expert, NiNoModel):
                expert = _wrap(expert)
            if not isinstance(expert, ModelNowcaster):
                raise TypeError(f"RegimeRouter {side}= must be a nowcast.NiNoModel or NiNoPredictor, got {type(expert).__name__}")
            experts[side] = expert
        if _positive(split) is None or isinstance(split, torch.Tensor):
            raise ValueError(f"RegimeRouter split must be a positive number (learning rate x steps between states), got {split!r}")
        b, a = experts["below"], experts["above"]
        if (b.ctx, b.seq_len) != (a.ctx, a.seq_len):
            raise ValueError(
                f"RegimeRouter experts differ in (ctx, seq_len): below {(b.ctx, b.seq_len)}, above {(a.ctx, a.seq_len)}; "
                "the optimizer wrapper needs one history length and one horizon schedule"
            )
        self.below, self.above, self.split, self.name = b, a, float(split), name

    @property
    def ctx(self) -> int:
        return self.below.ctx

    @property
    def seq_len(self) -> int:
        return self.below.seq_len

    @property
    def context_hops(self) -> int:
        """The larger of the experts' (per-block prediction must give either enough context)."""
        return max(self.below.context_hops, self.above.context_hops)

    def expert(self, lr_interval: float) -> ModelNowcaster:
        """The expert that predicts in regime ``lr_interval``."""
        value = _positive(lr_interval)
        if value is None:
            raise ValueError(
                f"{self.name}: lr_interval must be a positive number (the base optimizer's learning rate x steps "
                f"between two states), got {lr_interval!r}"
            )
        return self.below if value < self.split else self.above

    def predict(self, graph: Any, states: torch.Tensor, k: int, *, lr_interval: float | None = None) -> torch.Tensor:
        if lr_interval is None:
            raise ValueError(
                f"{self.name} routes by training regime: pass lr_interval= (the base optimizer's learning rate x steps "
                f"between two states; below {self.split:g} the first expert predicts, otherwise the second)"
            )
        return self.expert(lr_interval).predict(graph, states, k)

    def to(self, device: str | torch.device) -> RegimeRouter:
        """Move both experts' models to ``device`` (in place); returns ``self``."""
        for side in _SIDES:
            getattr(self, side).model.to(device)
        return self

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (both experts) into ``directory``."""
        tensors = {f"{side}.{key}": t for side in _SIDES for key, t in getattr(self, side).model.state_dict().items()}
        meta = {
            "format": ROUTER_FORMAT,
            "version": ROUTER_VERSION,
            "split": self.split,
            **{side: getattr(self, side).model.config.to_dict() for side in _SIDES},
        }
        directory = write_directory(directory, meta, tensors)
        log.info("saved regime router (split %g) to %s", self.split, directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, **kwargs: Any) -> RegimeRouter:
        """Load a directory written by :meth:`save` (safetensors only, no pickle)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        meta = read_directory_config(directory, "regime router")
        if not isinstance(meta, dict) or meta.get("format") != ROUTER_FORMAT:
            raise CheckpointError(f"{config_path} is not a {ROUTER_FORMAT} config")
        if meta.get("version") != ROUTER_VERSION:
            raise CheckpointError(f"{config_path}: unsupported format version {meta.get('version')!r}")
        tensors = read_directory_weights(directory)
        stray = sorted(key for key in tensors if key.partition(".")[0] not in _SIDES)
        if stray:
            raise CheckpointError(f"{weights_path}: entries that belong to neither expert: {', '.join(stray[:5])}")
        models = {}
        for side in _SIDES:
            if not isinstance(meta.get(side), dict):
                raise CheckpointError(f"{config_path} has no '{side}' expert config")
            try:
                config = NiNoConfig.from_dict(meta[side])
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{config_path} ({side}): {exc}") from exc
            state = {key.partition(".")[2]: t for key, t in tensors.items() if key.partition(".")[0] == side}
            model = NiNoModel(config)
            check_state_dict(model, state, f"{directory} ({side} expert)")
            model.load_state_dict(state, strict=True)
            models[side] = model.eval()
        try:
            return cls(models["below"], models["above"], meta.get("split"), **kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{config_path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"RegimeRouter(split={self.split:g}, below={self.below!r}, above={self.above!r})"
