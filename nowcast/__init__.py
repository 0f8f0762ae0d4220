"""nowcast: NiNo parameter nowcasting — predict where training is going and jump there.

For users: :func:`predict` (one nowcast of a parameter history), :class:`NiNo` (an optimizer
wrapper that jumps every ``period`` steps), :func:`load` / :func:`resolve` (a checkpoint, a method
name or a model, as a nowcaster), the baselines, and :func:`compare` / :func:`train` (steps to a
target on the benchmark tasks). The layout: :mod:`nowcast.model` (the NiNo network and its
checkpoint format), :mod:`nowcast.nowcasters` (everything that predicts, and the one resolver),
:mod:`nowcast.bench` and :mod:`nowcast.tasks` (the comparison), :mod:`nowcast.metatrain`
(trajectory collection and meta-training of our own checkpoints), :mod:`nowcast.cli`,
:mod:`nowcast.distributed` (one prediction for all ranks under DDP) and :mod:`nowcast.hf` (the
Hugging Face ``Trainer`` callback; needs the ``hf`` extra and is not imported here).
Docs: ``docs/nino.md`` (the model), ``docs/nowcast_optimizer.md`` (prediction and the wrapper),
``docs/trainer.md`` (the Trainer callback and distributed training),
``docs/tasks.md`` (tasks and the comparison), ``docs/metatraining.md``.
"""

from .bench import Comparison, RunResult, compare, train
from .errors import CheckpointError
from .model import NiNoConfig, NiNoModel
from .model import save_model as save
from .nowcasters import WNN, Linefit, LinefitPlus, NiNoPredictor, Nowcaster, RegimeRouter, WNNPlus, resolve
from .nowcasters import load_checkpoint as load
from .optim import NiNo, horizon_schedule
from .predict import predict

__all__ = [
    "CheckpointError",
    "Comparison",
    "Linefit",
    "LinefitPlus",
    "NiNo",
    "NiNoConfig",
    "NiNoModel",
    "NiNoPredictor",
    "Nowcaster",
    "RegimeRouter",
    "RunResult",
    "WNN",
    "WNNPlus",
    "compare",
    "horizon_schedule",
    "load",
    "predict",
    "resolve",
    "save",
    "train",
]
