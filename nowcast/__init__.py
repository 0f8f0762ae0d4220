"""nowcast: NiNo parameter nowcasting — the model, its baselines and the optimizer wrapper.

See DESIGN.md sections 4 and 5, ``docs/nino.md`` (the model) and ``docs/nowcast_optimizer.md``
(prediction, baselines, the :class:`NiNo` optimizer wrapper and the command line), ``docs/tasks.md``
(tasks, :func:`train` and the steps-to-target comparison :func:`compare`).
"""

from .baselines import WNN, Linefit, LinefitPlus
from .benchmark import Comparison, compare
from .checkpoint import CheckpointError, load, save
from .config import NiNoConfig
from .methods import METHODS, Method, resolve_method
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
from .training import RunResult, train

__all__ = [
    "CheckpointError",
    "Comparison",
    "GraphPart",
    "LayerScales",
    "Linefit",
    "LinefitPlus",
    "METHODS",
    "Method",
    "ModelNowcaster",
    "NiNo",
    "NiNoConfig",
    "NiNoEmbedding",
    "NiNoModel",
    "NiNoPredictor",
    "Nowcaster",
    "RunResult",
    "WNN",
    "WNNPlus",
    "as_nowcaster",
    "compare",
    "horizon_schedule",
    "layer_parts",
    "load",
    "param_sizes",
    "predict",
    "resolve_method",
    "save",
    "scale_states",
    "train",
    "unscale",
]
