"""nowcast: NiNo parameter nowcasting — the model, its baselines and the optimizer wrapper.

See DESIGN.md sections 4 and 5, ``docs/nino.md`` (the model) and ``docs/nowcast_optimizer.md``
(prediction, baselines, the :class:`NiNo` optimizer wrapper and the command line).
"""

from .baselines import WNN, Linefit, LinefitPlus
from .checkpoint import CheckpointError, load, save
from .config import NiNoConfig
from .model import NiNoEmbedding, NiNoModel
from .optim import NiNo, horizon_schedule
from .predict import (
    GraphPart,
    ModelNowcaster,
    NiNoPredictor,
    Nowcaster,
    WNNPlus,
    as_nowcaster,
    layer_parts,
    predict,
)
from .scaling import LayerScales, param_sizes, scale_states, unscale

__all__ = [
    "CheckpointError",
    "GraphPart",
    "LayerScales",
    "Linefit",
    "LinefitPlus",
    "ModelNowcaster",
    "NiNo",
    "NiNoConfig",
    "NiNoEmbedding",
    "NiNoModel",
    "NiNoPredictor",
    "Nowcaster",
    "WNN",
    "WNNPlus",
    "as_nowcaster",
    "horizon_schedule",
    "layer_parts",
    "load",
    "param_sizes",
    "predict",
    "save",
    "scale_states",
    "unscale",
]
