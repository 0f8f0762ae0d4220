"""nowcast: NiNo parameter nowcasting — the model, its baselines and the optimizer wrapper.

See ``docs/design.md``, ``docs/nino.md`` (the model) and ``docs/nowcast_optimizer.md``
(prediction, baselines, the :class:`NiNo` optimizer wrapper and the command line; :func:`resolve`
turns any predictor spec (a method name, a checkpoint path, a model) into a nowcaster), ``docs/tasks.md``
(tasks, :func:`train` and the steps-to-target comparison :func:`compare`), ``docs/metatraining.md``
(trajectory collection, the meta-training dataset and loop, our own checkpoints).
"""

from .baselines import WNN, Linefit, LinefitPlus
from .benchmark import Comparison, compare
from .checkpoint import CheckpointError, load, save
from .config import NiNoConfig
from .jump_error import JumpErrors, jump_errors
from .metatrain import (
    RECIPES,
    GraphCache,
    MetaDataset,
    MetaTrainConfig,
    MetaTrainResult,
    Recipe,
    RunSpec,
    WindowItem,
    append_evaluation,
    collect_run,
    load_result,
    load_trajectory,
    window_loss,
    write_model_card,
)
from .metatrain import collect as collect_trajectories
from .metatrain import export as export_checkpoint
from .metatrain import metatrain as meta_train  # not `metatrain`: that name is the subpackage
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
from .regime_router import RegimeRouter
from .resolver import resolve
from .scaling import LayerScales, param_sizes, scale_states, unscale
from .training import RunResult, train

__all__ = [
    "append_evaluation",
    "as_nowcaster",
    "CheckpointError",
    "collect_run",
    "collect_trajectories",
    "compare",
    "Comparison",
    "export_checkpoint",
    "GraphCache",
    "GraphPart",
    "JumpErrors",
    "horizon_schedule",
    "jump_errors",
    "layer_parts",
    "LayerScales",
    "Linefit",
    "LinefitPlus",
    "load",
    "load_result",
    "load_trajectory",
    "meta_train",
    "MetaDataset",
    "MetaTrainConfig",
    "MetaTrainResult",
    "Method",
    "METHODS",
    "ModelNowcaster",
    "NiNo",
    "NiNoConfig",
    "NiNoEmbedding",
    "NiNoModel",
    "NiNoPredictor",
    "Nowcaster",
    "param_sizes",
    "predict",
    "RegimeRouter",
    "Recipe",
    "RECIPES",
    "resolve",
    "resolve_method",
    "RunResult",
    "RunSpec",
    "save",
    "scale_states",
    "train",
    "unscale",
    "window_loss",
    "WindowItem",
    "WNN",
    "WNNPlus",
    "write_model_card",
]
