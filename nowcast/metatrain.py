"""Meta-training a NiNo model on collected trajectories (:mod:`nowcast.collect`, :mod:`nowcast.metadataset`).

The recipe follows the paper: the model reads a window of ``ctx`` scaled states and predicts
the scaled change for every horizon ``k = 1..seq_len`` at once; the loss is the L1 error over
all unmasked horizons and parameter slots (mean per window, then over the windows of a batch).
AdamW, linear warm-up then cosine decay of the learning rate, gradient clipping at norm 1.
A batch is ``batch`` windows drawn uniformly at random; graphs differ in size, so the windows
are processed one after the other and their gradients accumulated.

Checkpoints (``<work>/checkpoint.pt``, written atomically every ``checkpoint_every`` steps and
read with ``torch.load(weights_only=True)``) hold the model, the optimizer, the schedule state,
the RNG states, the step, the loss history and the NaN counters: :func:`metatrain` called again
on the same work folder continues exactly where the checkpoint left off, so an interrupted and
resumed training ends with the same weights as an uninterrupted one.

NaN / Inf: a batch whose loss or gradient norm is not finite is skipped (no update, a warning,
counted in ``nan_skips``); after ``max_bad_steps`` consecutive skips the last good checkpoint
is reloaded and the learning rate is multiplied by ``lr_backoff`` (counted in ``rollbacks``).

:func:`export` writes the result for users: ``config.json`` + ``model.safetensors``
(:func:`nowcast.save`, loadable with :func:`nowcast.load` / :class:`nowcast.NiNoPredictor`),
``training_curve.png`` and ``MODEL_CARD.md`` (:mod:`nowcast.model_card`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import NiNoConfig
from .jump_error import JumpScore
from .landing_loss import LandingLoss, LandingScore
from .metadataset import MetaDataset, WindowItem
from .model import NiNoModel
from .safe_load import load_torch_file

__all__ = [
    "MetaTrainConfig",
    "MetaTrainResult",
    "baseline_losses",
    "export",
    "lr_at",
    "metatrain",
    "plot_training_curve",
    "window_loss",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
CHECKPOINT_VERSION = 1
HORIZON_WEIGHTINGS = ("window", "target")
SELECTION_METRICS = ("val_loss", "val_jump", "val_landing")
TRAINABLE = ("all", "regime")
_REGIME_FIELDS = ("lr_interval_input", "lr_interval_ceiling", "lr_interval_floor", "regime_adapter")

# an eval loss this close to the no-change loss after warm-up means the model stopped predicting
# (seen at hid 128 with lr 3e-3: gradient norm -> 0, no NaN, so the NaN recovery does not see it)
_COLLAPSE_TOLERANCE = 0.005

# fields that may change between a run and its resumption (they do not change the math)
_RESUMABLE_CHANGES = frozenset({"checkpoint_every", "log_every", "eval_every", "eval_windows"})


@dataclass(frozen=True)
class MetaTrainConfig:
    """Model size and optimisation recipe of a meta-training run.

    Model (a :class:`nowcast.NiNoConfig` with ``gnn=True``, ``wte_pos_enc=False``): ``hid``,
    ``layers``, ``lpe``, ``ctx``, ``seq_len``, ``max_feat_size``, ``lr_interval_input`` (condition
    on each trajectory's learning rate times the steps between its states).

    Optimisation: ``steps`` updates of ``batch`` windows each; AdamW with ``lr``, ``wd`` and
    betas ``(beta1, beta2)``; ``warmup`` steps of linear warm-up, then cosine decay to
    ``lr * min_lr_ratio``; gradient norm clipped at ``clip``; ``horizon_weighting`` says how a
    window's horizons are averaged (:func:`window_loss`); ``seed`` sets the initialisation and the
    window order.

    Bookkeeping: a checkpoint every ``checkpoint_every`` steps, an evaluation of the loss on
    ``eval_windows`` fixed training windows every ``eval_every`` steps (compared with the
    zero-change and Linefit predictions) and, when :func:`metatrain` gets a validation set of
    other trajectories, on ``val_windows`` fixed windows of those and, as
    :class:`nowcast.jump_error.JumpScore`, on the jumps the optimizer wrapper would make along
    them; ``select`` names the one whose lowest value selects the exported weights
    (``val_loss`` or ``val_jump``); a log line every ``log_every`` steps. NaN handling:
    ``max_bad_steps`` consecutive skipped batches trigger a rollback with the learning rate
    multiplied by ``lr_backoff``.

    Landing term: with ``landing_weight > 0`` every window's loss also gets ``landing_weight``
    times the excess task loss of the network its prediction at its farthest recorded horizon
    lands on (:class:`nowcast.landing_loss.LandingLoss`: the task network run on one of the task's
    training batches, minus the loss of the recorded state; it needs the tasks' data). Validation
    then also records ``val_landing``, the same excess at the jumps the wrapper would make along
    the validation runs (:class:`nowcast.landing_loss.LandingScore`), which ``select`` may name.

    The defaults fit a 2-core CPU: at hid 64 one window's forward + backward over all 40
    horizons costs about 20 ms of CPU time on the FM/16 graph (2k edges) and 190-220 ms on the
    Shakespeare GPT graphs (27-33k edges); hid 128 costs 2.5-3x more (``docs/metatraining.md``).
    """

    hid: int = 64
    layers: int = 3
    lpe: int = 8
    ctx: int = 5
    seq_len: int = 40
    max_feat_size: int = 9
    lr_interval_input: bool = False
    lr_interval_ceiling: float | None = None
    lr_interval_floor: float | None = None
    regime_adapter: bool = False
    trainable: str = "all"
    landing_weight: float = 0.0
    steps: int = 8000
    batch: int = 4
    lr: float = 3e-3
    wd: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    warmup: int = 200
    min_lr_ratio: float = 0.01
    clip: float = 1.0
    horizon_weighting: str = "window"
    seed: int = 0
    checkpoint_every: int = 250
    eval_every: int = 500
    eval_windows: int = 32
    val_windows: int = 64
    select: str = "val_loss"
    log_every: int = 50
    max_bad_steps: int = 3
    lr_backoff: float = 0.5

    def __post_init__(self) -> None:
        for name in ("hid", "layers", "ctx", "seq_len", "max_feat_size", "steps", "batch", "checkpoint_every", "eval_every", "log_every", "max_bad_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MetaTrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("lpe", "warmup", "seed", "eval_windows", "val_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"MetaTrainConfig.{name} must be a non-negative integer, got {value!r}")
        if self.select not in SELECTION_METRICS:
            raise ValueError(f"MetaTrainConfig.select must be one of {', '.join(SELECTION_METRICS)}, got {self.select!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"MetaTrainConfig.trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.trainable == "regime" and not self.lr_interval_input:
            raise ValueError("MetaTrainConfig.trainable='regime' trains only the regime parameters (maps and adapter offsets): set lr_interval_input=True")
        self.nino_config()  # validates lr_interval_ceiling / lr_interval_floor
        if self.horizon_weighting not in HORIZON_WEIGHTINGS:
            raise ValueError(f"MetaTrainConfig.horizon_weighting must be one of {', '.join(HORIZON_WEIGHTINGS)}, got {self.horizon_weighting!r}")
        if isinstance(self.landing_weight, bool) or not isinstance(self.landing_weight, (int, float)) or not 0 <= self.landing_weight < math.inf:
            raise ValueError(f"MetaTrainConfig.landing_weight must be a non-negative number, got {self.landing_weight!r}")
        if self.select == "val_landing" and not self.landing_weight:
            raise ValueError("MetaTrainConfig.select='val_landing' scores the landing term: set landing_weight > 0")
        if not (self.lr > 0 and self.clip > 0 and 0 < self.lr_backoff < 1 and 0 <= self.min_lr_ratio <= 1 and self.wd >= 0):
            raise ValueError("MetaTrainConfig: need lr > 0, clip > 0, 0 < lr_backoff < 1, 0 <= min_lr_ratio <= 1, wd >= 0")

    def nino_config(self) -> NiNoConfig:
        """The architecture of the model being trained."""
        return NiNoConfig(
            ctx=self.ctx, hid=self.hid, layers=self.layers, gnn=True, max_feat_size=self.max_feat_size,
            seq_len=self.seq_len, lpe=self.lpe, wte_pos_enc=False, lr_interval_input=self.lr_interval_input,
            lr_interval_ceiling=self.lr_interval_ceiling, lr_interval_floor=self.lr_interval_floor, regime_adapter=self.regime_adapter,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MetaTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MetaTrainConfig fields: {', '.join(unknown)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> MetaTrainConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def lr_at(step: int, config: MetaTrainConfig) -> float:
    """Learning-rate factor (times ``config.lr``) for the update after ``step`` completed steps:
    linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if config.warmup and step < config.warmup:
        return (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------- losses
def window_loss(model: NiNoModel, item: WindowItem, weighting: str = "window") -> torch.Tensor:
    """L1 error of the predicted scaled changes over the window's unmasked horizons and slots.

    ``weighting="window"``: the mean over the window's horizons (every window weighs the same, so a
    window near the end of its trajectory, with a few horizons left, puts all its weight on short
    ones). ``"target"``: the sum over the window's horizons divided by ``seq_len`` (every
    (window, horizon) target weighs the same; far horizons, which only early windows reach, keep
    their share).
    """
    return window_terms(model, item, weighting)[0]


def window_terms(
    model: NiNoModel, item: WindowItem, weighting: str = "window", landing: Callable[[torch.Tensor, int], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`window_loss` and, with ``landing``, ``landing(predicted state [E, F], horizon)`` of
    the prediction at the window's farthest recorded horizon, from one forward pass."""
    if weighting not in HORIZON_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(HORIZON_WEIGHTINGS)}; got {weighting!r}")
    horizons = torch.nonzero(item.horizon_mask).flatten()
    if horizons.numel() == 0:
        raise ValueError(f"window {item.window} has no future snapshot")
    out = model(item.data, (horizons + 1).tolist())  # [E, F, K]: last state + predicted change
    e, f = item.slot_mask.shape
    target = item.target.view(e, f, item.seq_len)[:, :, horizons]
    err = (out - item.last.unsqueeze(-1) - target).abs()
    weight = item.slot_mask.unsqueeze(-1).to(err.dtype)
    n_horizons = horizons.numel() if weighting == "window" else item.seq_len
    l1 = (err * weight).sum() / (weight.sum() * n_horizons)
    return l1, (None if landing is None else landing(out[:, :, -1], int(horizons[-1]) + 1))


@torch.no_grad()
def baseline_losses(item: WindowItem) -> dict[str, float]:
    """The same loss for two predictors that need no training: ``zero`` (no change) and
    ``linefit`` (least-squares line through the ``ctx`` scaled states, extrapolated)."""
    e, f = item.slot_mask.shape
    ctx = item.data.edge_attr.shape[1] // f
    horizons = torch.nonzero(item.horizon_mask).flatten()
    target = item.target.view(e, f, item.seq_len)[:, :, horizons]
    weight = item.slot_mask.unsqueeze(-1).to(target.dtype)
    count = weight.sum() * horizons.numel()
    y = item.data.edge_attr.view(e, f, ctx)
    t = torch.arange(ctx, dtype=y.dtype)
    tc = t - t.mean()
    slope = (y * tc).sum(-1) / tc.square().sum()
    intercept = y.mean(-1)
    future_t = (ctx - 1) + (horizons + 1).to(y.dtype) - t.mean()
    line = intercept.unsqueeze(-1) + slope.unsqueeze(-1) * future_t - y[:, :, -1:]
    return {
        "zero": float((target.abs() * weight).sum() / count),
        "linefit": float(((line - target).abs() * weight).sum() / count),
    }


# ------------------------------------------------------------------------------------- result
@dataclass
class MetaTrainResult:
    """What :func:`metatrain` returns (also read back by :func:`load_result`)."""

    model: NiNoModel
    config: MetaTrainConfig
    step: int
    history: dict[str, list]
    evals: dict[str, list]
    baselines: dict[str, float]
    nan_skips: int
    rollbacks: int
    lr_scale: float
    wall_s: float
    dataset: list[dict[str, Any]]
    work_dir: Path
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    val_dataset: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def selected_model(self) -> NiNoModel:
        """The weights to ship: those with the lowest validation loss when the run had a
        validation set (``best``), otherwise the final ones."""
        if self.best_state is None:
            return self.model
        model = NiNoModel(self.config.nino_config(), edge_chunk=None)
        model.load_state_dict(self.best_state)
        model.eval()
        return model

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10 % of the recorded steps."""
        losses = self.history["loss"]
        tail = losses[-max(1, len(losses) // 10) :]
        return float(sum(tail) / len(tail)) if tail else math.nan


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _check_resumable(saved: Mapping[str, Any], config: MetaTrainConfig, path: Path) -> None:
    mine = config.to_dict()
    defaults = MetaTrainConfig().to_dict()  # fields added later read as their defaults in older checkpoints
    diff = [
        f"{k}: {saved.get(k, defaults[k])!r} -> {v!r}"
        for k, v in mine.items()
        if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v
    ]
    if diff:
        raise ValueError(
            f"{path} was written with another meta-training config ({'; '.join(diff)}): "
            "use another work folder, or pass restart=True (command line: --restart) to start over"
        )


# ------------------------------------------------------------------------------------- training
def _start_from(model: NiNoModel, init_model: NiNoModel) -> None:
    """Copy ``init_model``'s weights into ``model``; regime maps and offsets it lacks start at zero."""
    def architecture(m: NiNoModel) -> dict[str, Any]:
        return {k: v for k, v in m.config.to_dict().items() if k not in _REGIME_FIELDS}

    def regime(m: NiNoModel) -> tuple[Any, ...]:
        return tuple(getattr(m.config, k) for k in _REGIME_FIELDS)

    # an unconditioned model may start any regime variant; a conditioned one only its own
    if architecture(model) != architecture(init_model) or (init_model.config.lr_interval_input and regime(model) != regime(init_model)):
        raise ValueError(f"cannot start meta-training from a model with config {init_model.config}; the recipe builds {model.config}")
    missing, _ = model.load_state_dict(init_model.state_dict(), strict=False)
    with torch.no_grad():
        for name in missing:  # only the regime maps can be missing (the configs agree otherwise)
            model.get_parameter(name).zero_()
    log.info("meta-training starts from the given model's weights%s", f" (zero: {', '.join(missing)})" if missing else "")


def metatrain(
    dataset: MetaDataset | str | os.PathLike,
    work_dir: str | os.PathLike,
    config: MetaTrainConfig | None = None,
    *,
    progress: bool = True,
    restart: bool = False,
    loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    step_callback: Callable[[int, NiNoModel], None] | None = None,
    val_dataset: MetaDataset | None = None,
    init_model: NiNoModel | None = None,
    data_dir: str | os.PathLike | None = None,
) -> MetaTrainResult:
    """Train (or continue training) a NiNo model on ``dataset``.

    Args:
        dataset: a :class:`MetaDataset`, or a folder of collected trajectories.
        work_dir: where ``checkpoint.pt`` and ``history.json`` live; an existing checkpoint is
            resumed (its config must match ``config`` except for bookkeeping fields).
        config: the recipe (default :class:`MetaTrainConfig`).
        progress: tqdm bar.
        restart: ignore (and overwrite) an existing checkpoint.
        loss_hook: ``loss_hook(step, loss) -> loss`` applied to every window's loss before the
            backward pass (fault injection for tests; ``step`` = completed steps).
        step_callback: ``step_callback(step, model)`` after every step (tests use it to interrupt).
        val_dataset: windows of trajectories not trained on; at every evaluation the loss on
            ``config.val_windows`` fixed windows of it (``val_loss``) and the jump error along
            its trajectories (``val_jump``, :class:`nowcast.jump_error.JumpScore`) are recorded,
            and the weights with the lowest ``config.select`` are kept in the checkpoint
            (:meth:`MetaTrainResult.selected_model`).
        init_model: start from these weights instead of a random initialisation (fine-tuning a
            trained checkpoint). Its architecture must be the config's, except that a
            regime-conditioned config may start from an unconditioned model: the regime maps
            then start at zero, so the first predictions are ``init_model``'s. Ignored when a
            checkpoint is resumed.
        data_dir: where the tasks' data live, for the landing term (default: the usual search path).
    """
    config = config or MetaTrainConfig()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if not isinstance(dataset, MetaDataset):
        dataset = MetaDataset(dataset, ctx=config.ctx, seq_len=config.seq_len, max_feat_size=config.max_feat_size, cache_dir=work / "graphs")
    if dataset.ctx != config.ctx or dataset.seq_len != config.seq_len:
        raise ValueError(f"dataset windows have ctx={dataset.ctx}, seq_len={dataset.seq_len}; the config {config.ctx}, {config.seq_len}")
    if len(dataset) == 0:
        raise ValueError("the meta-dataset has no windows: collect longer trajectories (at least ctx + 1 snapshots)")
    ckpt_path = work / CHECKPOINT_FILE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = NiNoModel(config.nino_config(), edge_chunk=None)
    resuming = ckpt_path.is_file() and not restart
    if init_model is not None:
        _start_from(model, init_model)
    elif config.trainable == "regime" and not resuming:
        raise ValueError("MetaTrainConfig.trainable='regime' adapts a trained model: pass init_model (command line: --init-from DIR)")
    model.train()
    if config.trainable == "regime":  # the regime adapter: everything else stays as init_model had it
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(("lr_interval_", "regime_delta.")))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed" in name or "wte" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(config.beta1, config.beta2),
    )
    sampler = torch.Generator().manual_seed(config.seed)
    eval_gen = torch.Generator().manual_seed(config.seed + 1)
    n_eval = min(config.eval_windows, len(dataset))
    eval_ids = torch.randperm(len(dataset), generator=eval_gen)[:n_eval].tolist()
    val_ids: list[int] = []
    if val_dataset is not None:
        if val_dataset.ctx != config.ctx or val_dataset.seq_len != config.seq_len:
            raise ValueError(f"validation windows have ctx={val_dataset.ctx}, seq_len={val_dataset.seq_len}; the config {config.ctx}, {config.seq_len}")
        if len(val_dataset) == 0:
            raise ValueError("the validation set has no windows: collect longer validation trajectories")
        n_val = min(config.val_windows, len(val_dataset))
        val_ids = torch.randperm(len(val_dataset), generator=torch.Generator().manual_seed(config.seed + 2))[:n_val].tolist()
    jump_score = JumpScore(val_dataset) if val_ids else None
    landing = LandingLoss(data_dir=data_dir, seed=config.seed) if config.landing_weight else None
    if landing is not None:  # load every task's data now: a missing dataset fails before any training
        for task in sorted({t.meta["task"] for t in dataset.trajectories}):
            landing.task(task)
    landing_score = LandingScore(val_dataset, landing) if landing is not None and val_ids else None
    for metric, score in (("val_jump", jump_score), ("val_landing", landing_score)):
        if config.select == metric and (score is None or not score.pairs):
            raise ValueError(
                f"select={metric!r} needs validation trajectories long enough for a jump's target to be recorded "
                "(see nowcast.jump_error); use select='val_loss' or longer validation runs"
            )
    n_val_windows = len(val_dataset) if val_dataset is not None else 0

    state: dict[str, Any] = {
        "step": 0,
        "lr_scale": 1.0,
        "consecutive_bad": 0,
        "nan_skips": 0,
        "rollbacks": 0,
        "wall_s": 0.0,
        "history": {"step": [], "loss": [], "lr": [], "grad_norm": []},
        "evals": {
            "step": [], "loss": [], **({"val_loss": [], "val_jump": []} if val_ids else {}),
            **({"val_landing": []} if landing_score is not None else {}),
        },
        "baselines": {},
        "best": None,
    }
    best_state: dict[str, torch.Tensor] | None = None
    if resuming:
        blob = load_torch_file(ckpt_path, "meta-training checkpoint")
        if blob.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{ckpt_path}: unsupported checkpoint version {blob.get('version')!r}")
        _check_resumable(blob["config"], config, ckpt_path)
        if blob.get("n_windows") != len(dataset):
            raise ValueError(
                f"{ckpt_path} was trained on {blob.get('n_windows')} windows, the dataset now has {len(dataset)}: "
                "use another work folder or restart"
            )
        if blob.get("n_val_windows", 0) != n_val_windows:
            raise ValueError(
                f"{ckpt_path} was validated on {blob.get('n_val_windows', 0)} windows, the validation set now has "
                f"{n_val_windows}: use the same validation trajectories, another work folder, or restart"
            )
        best_state = blob.get("best_model")
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        sampler.set_state(blob["rng"]["sampler"])
        torch.set_rng_state(blob["rng"]["torch"])
        state.update({k: blob[k] for k in state if k in blob})
        log.info("resuming meta-training at step %d of %d", state["step"], config.steps)

    def snapshot() -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": config.to_dict(),
            "n_windows": len(dataset),
            "n_val_windows": n_val_windows,
            "model": model.state_dict(),
            **({"best_model": best_state} if best_state is not None else {}),
            "optimizer": optimizer.state_dict(),
            "rng": {"sampler": sampler.get_state(), "torch": torch.get_rng_state()},
            **{k: (v + time.perf_counter() - start if k == "wall_s" else v) for k, v in state.items()},
        }

    def save() -> None:
        nonlocal last_good
        blob = snapshot()
        _atomic_save(blob, ckpt_path)
        last_good = copy.deepcopy({"model": blob["model"], "optimizer": blob["optimizer"]})
        _write_history(work, config, {**state, "wall_s": blob["wall_s"]}, dataset, val_dataset)

    def mean_loss(data: MetaDataset, ids: list[int]) -> float:
        with torch.no_grad():
            return sum(float(window_loss(model, data[i])) for i in ids) / max(1, len(ids))

    def evaluate(done: int) -> None:
        nonlocal best_state
        was = model.training
        model.eval()
        measured = {"loss": mean_loss(dataset, eval_ids) if eval_ids else math.nan}
        if val_ids:
            measured["val_loss"] = mean_loss(val_dataset, val_ids)
            measured["val_jump"] = jump_score(model) if jump_score.pairs else None
        if landing_score is not None:
            measured["val_landing"] = landing_score(model) if landing_score.pairs else None
        model.train(was)
        evals = state["evals"]
        evals["step"].append(done)
        for name, value in measured.items():
            evals[name].append(value)
        zero = state["baselines"].get("zero")
        if done > config.warmup and zero and abs(measured["loss"] - zero) <= _COLLAPSE_TOLERANCE * zero:
            log.warning(
                "meta-training step %d: the model predicts no change (eval loss %.4f, no-change loss %.4f): it has collapsed; "
                "rerun with a lower learning rate (command line: --lr)",
                done, measured["loss"], zero,
            )
        if not val_ids:
            log.info("meta-training step %d: eval loss %.4f", done, evals["loss"][-1])
            return
        now = {name: evals[name][-1] for name in SELECTION_METRICS if name in evals}
        if state["best"] is None or now[config.select] < state["best"][config.select]:
            state["best"] = {"step": done, **now}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log.info(
            "meta-training step %d: eval loss %.4f, validation loss %.4f, validation jump error %s%s (best %s %.4f at step %d)",
            done, evals["loss"][-1], now["val_loss"], "-" if now["val_jump"] is None else f"{now['val_jump']:.4f}",
            "" if now.get("val_landing") is None else f", validation landing excess {now['val_landing']:.4f}",
            config.select, state["best"][config.select], state["best"]["step"],
        )

    start = time.perf_counter()
    last_good: dict[str, Any] | None = None
    if not state["baselines"] and eval_ids:
        sums: dict[str, float] = {}
        for i in eval_ids:
            for k, v in baseline_losses(dataset[i]).items():
                sums[k] = sums.get(k, 0.0) + v
        state["baselines"] = {k: v / len(eval_ids) for k, v in sums.items()}
        log.info("eval windows: zero-change loss %.4f, linefit loss %.4f", state["baselines"]["zero"], state["baselines"]["linefit"])
        for i in val_ids:
            for k, v in baseline_losses(val_dataset[i]).items():
                key = f"val_{k}"
                state["baselines"][key] = state["baselines"].get(key, 0.0) + v / len(val_ids)
    if state["step"] == 0 and (eval_ids or val_ids) and not state["evals"]["step"]:
        evaluate(0)
    save()  # the starting point is always a good checkpoint to roll back to

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=state["step"], desc="meta-train", mininterval=1.0, unit="step")
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        while state["step"] < config.steps:
            step = state["step"]
            lr = config.lr * state["lr_scale"] * lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ids = torch.randint(len(dataset), (config.batch,), generator=sampler).tolist()
            optimizer.zero_grad(set_to_none=True)
            total, landed, finite = 0.0, 0.0, True
            for j, i in enumerate(ids):
                item = dataset[i]
                meta = dataset.trajectories[item.window.traj].meta
                term = None if landing is None else (
                    lambda out, k, item=item, meta=meta, key=step * config.batch + j: landing(item, out, meta, horizon=k, key=key)
                )
                loss, excess = window_terms(model, item, config.horizon_weighting, term)
                if excess is not None:
                    landed += float(excess.detach()) / config.batch
                    loss = loss + config.landing_weight * excess
                loss = loss / config.batch
                if loss_hook is not None:
                    loss = loss_hook(step, loss)
                if not bool(torch.isfinite(loss)):
                    finite = False
                    break
                loss.backward()
                total += float(loss.detach())
            grad_norm = math.nan
            if finite:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.clip))
                finite = math.isfinite(grad_norm)
            state["step"] = step + 1
            if finite:
                optimizer.step()
                state["consecutive_bad"] = 0
                hist = state["history"]
                hist["step"].append(step + 1)
                hist["loss"].append(total)
                hist["lr"].append(lr)
                hist["grad_norm"].append(grad_norm)
                if landing is not None:
                    hist.setdefault("landing", []).append(landed)
            else:
                optimizer.zero_grad(set_to_none=True)
                state["nan_skips"] += 1
                state["consecutive_bad"] += 1
                log.warning(
                    "meta-training step %d: loss or gradient is not finite; update skipped (%d in a row, %d in all)",
                    step + 1, state["consecutive_bad"], state["nan_skips"],
                )
                if state["consecutive_bad"] >= config.max_bad_steps and last_good is not None:
                    model.load_state_dict(last_good["model"])
                    optimizer.load_state_dict(last_good["optimizer"])
                    state["lr_scale"] *= config.lr_backoff
                    state["rollbacks"] += 1
                    state["consecutive_bad"] = 0
                    log.warning(
                        "%d non-finite steps in a row: reloaded the last good checkpoint, learning rate x%g (now x%g)",
                        config.max_bad_steps, config.lr_backoff, state["lr_scale"],
                    )
                    save()
            done = state["step"]
            if (eval_ids or val_ids) and (done % config.eval_every == 0 or done == config.steps):
                evaluate(done)
            if done % config.checkpoint_every == 0 or done == config.steps:
                save()
            if bar is not None:
                bar.update(1)
                if finite and (done % 10 == 0 or done == config.steps):
                    bar.set_postfix({"loss": f"{total:.4f}", "lr": f"{lr:.2e}"}, refresh=False)
            if finite and done % config.log_every == 0:
                log.info("meta-training step %d/%d: loss %.4f, lr %.2e, grad norm %.3f", done, config.steps, total, lr, grad_norm)
            if step_callback is not None:
                step_callback(done, model)
    finally:
        if bar is not None:
            bar.close()
    state["wall_s"] += time.perf_counter() - start
    start = time.perf_counter()
    model.eval()
    return MetaTrainResult(
        model=model, config=config, step=state["step"], history=state["history"], evals=state["evals"],
        baselines=state["baselines"], nan_skips=state["nan_skips"], rollbacks=state["rollbacks"],
        lr_scale=state["lr_scale"], wall_s=state["wall_s"], dataset=dataset.describe(), work_dir=work,
        best=state["best"], best_state=best_state, val_dataset=val_dataset.describe() if val_dataset is not None else [],
    )


def _write_history(
    work: Path, config: MetaTrainConfig, state: Mapping[str, Any], dataset: MetaDataset, val_dataset: MetaDataset | None = None
) -> None:
    payload = {
        "config": config.to_dict(),
        "step": state["step"],
        "nan_skips": state["nan_skips"],
        "rollbacks": state["rollbacks"],
        "lr_scale": state["lr_scale"],
        "wall_s": state["wall_s"],
        "baselines": state["baselines"],
        "evals": state["evals"],
        "history": state["history"],
        "dataset": dataset.describe(),
        "best": state.get("best"),
        "val_dataset": val_dataset.describe() if val_dataset is not None else [],
    }
    tmp = work / (HISTORY_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, default=float) + "\n")
    os.replace(tmp, work / HISTORY_FILE)


def load_result(work_dir: str | os.PathLike) -> MetaTrainResult:
    """The state of a meta-training run from its work folder's checkpoint (finished or not)."""
    work = Path(work_dir)
    blob = load_torch_file(work / CHECKPOINT_FILE, "meta-training checkpoint")
    config = MetaTrainConfig.from_dict(blob["config"])
    model = NiNoModel(config.nino_config(), edge_chunk=None)
    model.load_state_dict(blob["model"])
    model.eval()
    dataset, val_dataset = [], []
    if (work / HISTORY_FILE).is_file():
        history = json.loads((work / HISTORY_FILE).read_text())
        dataset, val_dataset = history.get("dataset", []), history.get("val_dataset", [])
    return MetaTrainResult(
        model=model, config=config, step=int(blob["step"]), history=blob["history"], evals=blob["evals"],
        baselines=blob["baselines"], nan_skips=int(blob["nan_skips"]), rollbacks=int(blob["rollbacks"]),
        lr_scale=float(blob["lr_scale"]), wall_s=float(blob["wall_s"]), dataset=dataset, work_dir=work,
        best=blob.get("best"), best_state=blob.get("best_model"), val_dataset=val_dataset,
    )


# ------------------------------------------------------------------------------------- outputs
def plot_training_curve(result: MetaTrainResult, path: str | os.PathLike) -> Path:
    """Training loss (raw and smoothed), evaluation loss, the zero-change / Linefit losses on the
    same windows, and the learning rate; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    hist = result.history
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    steps = np.asarray(hist["step"], dtype=float)
    losses = np.asarray(hist["loss"], dtype=float)
    if len(losses):
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="training loss (batch)")
        width = max(1, len(losses) // 50)
        if width > 1:
            smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
            ax.plot(steps[width - 1 :], smooth, color="tab:blue", lw=1.6, label=f"training loss ({width}-step mean)")
    if result.evals["step"]:
        ax.plot(result.evals["step"], result.evals["loss"], "o-", color="tab:red", ms=3, label="loss on fixed eval windows")
    if result.evals.get("val_loss"):
        ax.plot(result.evals["step"], result.evals["val_loss"], "s-", color="tab:orange", ms=3, label="loss on validation trajectories")
        if result.best is not None:
            ax.plot([result.best["step"]], [result.best["val_loss"]], "*", color="k", ms=10, label=f"selected (step {result.best['step']})")
    if result.evals.get("val_jump"):
        ax_jump = ax.twinx()
        ax_jump.plot(result.evals["step"], result.evals["val_jump"], "^--", color="tab:brown", ms=3, lw=1)
        ax_jump.set_ylabel("validation jump error (x no change)", color="tab:brown")
    colors = {"zero": "gray", "linefit": "tab:green"}
    for name, value in result.baselines.items():
        ax.axhline(value, ls=":" if name.startswith("val_") else "--", color=colors.get(name.removeprefix("val_"), "k"), lw=1, label=f"{name} predictor ({value:.3f})")
    ax.set_yscale("log")
    ax.set_ylabel("L1 on scaled changes")
    ax.set_title(f"NiNo meta-training (hid {result.config.hid}, {result.step} steps)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if len(steps):
        ax_lr.plot(steps, hist["lr"], color="tab:purple")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("meta-training step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def export(
    result: MetaTrainResult,
    out_dir: str | os.PathLike,
    *,
    recipe: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (the selected model), ``training_curve.png``, ``MODEL_CARD.md``: all or none."""
    from .atomic import atomic_directory
    from .model_card import write_model_card

    out = Path(out_dir)
    if result.best is not None:
        log.info("exporting the weights of step %d (lowest %s: %.4f)", result.best["step"], result.config.select, result.best[result.config.select])
    with atomic_directory(out) as tmp:
        result.selected_model().save(tmp)
        plot_training_curve(result, tmp / "training_curve.png")
        write_model_card(tmp / "MODEL_CARD.md", result, recipe=recipe, timings=timings, curve="training_curve.png")
    log.info("exported the meta-trained NiNo model to %s", out)
    return out
