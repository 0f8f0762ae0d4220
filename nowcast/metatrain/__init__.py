"""Meta-training our own NiNo checkpoints, from the base optimizer's trajectories to a shipped folder.

The stages, each in its own module:

- :mod:`~nowcast.metatrain.recipes`: what to collect and how to train on it (:class:`RunSpec`,
  :class:`Recipe`, :data:`RECIPES`);
- :mod:`~nowcast.metatrain.collection`: train the tasks with their base optimizer and save the
  parameters every few steps (:func:`collect`, :func:`collect_run`; the files are described in
  :mod:`~nowcast.metatrain.trajectories`, parallel runs use
  :mod:`~nowcast.metatrain.collection_worker`);
- :mod:`~nowcast.metatrain.dataset`: windows of those trajectories, laid out as inference feeds
  the model (:class:`MetaDataset`);
- :mod:`~nowcast.metatrain.config` and :mod:`~nowcast.metatrain.losses`: the settings of a run
  (:class:`MetaTrainConfig`) and its loss (:func:`window_loss`);
- :mod:`~nowcast.metatrain.training`: the resumable training loop (:func:`metatrain`), which
  checkpoints into its work folder (:mod:`~nowcast.metatrain.work_folder`, :func:`load_result`);
- :mod:`~nowcast.metatrain.outputs` and :mod:`~nowcast.metatrain.model_card`: the checkpoint
  folder for users (:func:`export`) and its ``MODEL_CARD.md``;
- :mod:`~nowcast.cli.metatrain`: ``nowcast collect``, ``metatrain``, ``build-checkpoint`` and
  ``model-card``.

See ``docs/metatraining.md``.
"""

from .collection import collect, collect_run
from .config import MetaTrainConfig, lr_at
from .dataset import GraphCache, GraphInfo, MetaDataset, Window, WindowItem, arch_key, find_trajectories
from .losses import baseline_losses, window_loss
from .model_card import append_evaluation, evaluation_table, write_model_card, write_router_card
from .outputs import export, plot_training_curve
from .recipes import RECIPES, Recipe, Route, RunSpec, get_recipe
from .training import metatrain
from .trajectories import META_FILE, Trajectory, load_trajectory, model_architecture
from .work_folder import CHECKPOINT_FILE, HISTORY_FILE, MetaTrainResult, load_result

__all__ = [
    "append_evaluation",
    "arch_key",
    "baseline_losses",
    "CHECKPOINT_FILE",
    "collect",
    "collect_run",
    "evaluation_table",
    "export",
    "find_trajectories",
    "get_recipe",
    "GraphCache",
    "GraphInfo",
    "HISTORY_FILE",
    "load_result",
    "load_trajectory",
    "lr_at",
    "META_FILE",
    "metatrain",
    "MetaDataset",
    "MetaTrainConfig",
    "MetaTrainResult",
    "model_architecture",
    "plot_training_curve",
    "Recipe",
    "RECIPES",
    "Route",
    "RunSpec",
    "Trajectory",
    "Window",
    "WindowItem",
    "window_loss",
    "write_model_card",
    "write_router_card",
]
