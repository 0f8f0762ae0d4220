"""Meta-training a NiNo model on windows of collected trajectories (:func:`metatrain`).

The recipe follows the paper: the model reads a window of ``ctx`` scaled states and predicts
the scaled change for every horizon ``k = 1..seq_len`` at once; the loss is the L1 error over
all unmasked horizons and parameter slots (mean per window, then over the windows of a batch;
:mod:`nowcast.metatrain.losses`). AdamW, linear warm-up then cosine decay of the learning rate,
gradient clipping at norm 1. A batch is ``batch`` windows drawn uniformly at random; graphs
differ in size, so the windows are processed one after the other and their gradients accumulated.

A run checkpoints into its work folder (:mod:`nowcast.metatrain.work_folder`) every
``checkpoint_every`` steps: :func:`metatrain` called again on the same folder continues exactly
where the checkpoint left off, so an interrupted and resumed training ends with the same weights
as an uninterrupted one.

NaN / Inf: a batch whose loss or gradient norm is not finite is skipped (no update, a warning,
counted in ``nan_skips``); after ``max_bad_steps`` consecutive skips the last good checkpoint
is reloaded and the learning rate is multiplied by ``lr_backoff`` (counted in ``rollbacks``).

The stages of a run: the windows (:func:`_training_windows`), the model (:func:`_initial_model`)
and its optimizer (:func:`_optimizer`), what each evaluation measures (:func:`_scoring`), then
:class:`_MetaTraining` resumes, evaluates the starting point and runs the steps.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .jump_error import JumpScore
from ..model import NiNoModel
from .config import SELECTION_METRICS, MetaTrainConfig, lr_at
from .dataset import MetaDataset
from .losses import baseline_losses, window_loss
from .work_folder import CHECKPOINT_FILE, CHECKPOINT_VERSION, MetaTrainResult, atomic_save, read_checkpoint, write_history

__all__ = ["metatrain"]

log = logging.getLogger(__name__)

# an eval loss this close to the no-change loss after warm-up means the model stopped predicting
# (seen at hid 128 with lr 3e-3: gradient norm -> 0, no NaN, so the NaN recovery does not see it)
_COLLAPSE_TOLERANCE = 0.005


def _start_from(model: NiNoModel, init_model: NiNoModel) -> None:
    """Copy ``init_model``'s weights into ``model`` (same architecture)."""
    if model.config != init_model.config:
        raise ValueError(f"cannot start meta-training from a model with config {init_model.config}; the recipe builds {model.config}")
    model.load_state_dict(init_model.state_dict())
    log.info("meta-training starts from the given model's weights")


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
            its trajectories (``val_jump``, :class:`nowcast.metatrain.jump_error.JumpScore`) are recorded,
            and the weights with the lowest ``config.select`` are kept in the checkpoint
            (:meth:`MetaTrainResult.selected_model`).
        init_model: start from these weights instead of a random initialisation (fine-tuning a
            trained checkpoint). Its architecture must be the config's. Ignored when a
            checkpoint is resumed.
    """
    config = config or MetaTrainConfig()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dataset = _training_windows(dataset, config, work)
    ckpt_path = work / CHECKPOINT_FILE
    resuming = ckpt_path.is_file() and not restart
    model = _initial_model(config, init_model)
    optimizer = _optimizer(model, config)
    sampler = torch.Generator().manual_seed(config.seed)
    scoring = _scoring(config, dataset, val_dataset)
    run = _MetaTraining(config, work, dataset, val_dataset, model, optimizer, sampler, scoring)
    if resuming:
        run.resume(ckpt_path)
    run.begin()
    run.train(progress, loss_hook, step_callback)
    return run.result()


def _training_windows(dataset: MetaDataset | str | os.PathLike, config: MetaTrainConfig, work: Path) -> MetaDataset:
    """``dataset`` as a :class:`MetaDataset` (a folder is read with the config's window shape), checked to fit the config."""
    if not isinstance(dataset, MetaDataset):
        dataset = MetaDataset(dataset, ctx=config.ctx, seq_len=config.seq_len, max_feat_size=config.max_feat_size, cache_dir=work / "graphs")
    if dataset.ctx != config.ctx or dataset.seq_len != config.seq_len:
        raise ValueError(f"dataset windows have ctx={dataset.ctx}, seq_len={dataset.seq_len}; the config {config.ctx}, {config.seq_len}")
    if len(dataset) == 0:
        raise ValueError("the meta-dataset has no windows: collect longer trajectories (at least ctx + 1 snapshots)")
    return dataset


def _initial_model(config: MetaTrainConfig, init_model: NiNoModel | None) -> NiNoModel:
    """The model before training: seeded from ``config.seed`` (the global RNG is left as it was) or
    copied from ``init_model``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = NiNoModel(config.nino_config(), edge_chunk=None)
    if init_model is not None:
        _start_from(model, init_model)
    model.train()
    return model


def _optimizer(model: NiNoModel, config: MetaTrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, weight decay on matrices only (not on embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed" in name or "wte" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(config.beta1, config.beta2),
    )


@dataclass
class _Scoring:
    """What every evaluation measures: the loss on fixed training windows (``eval_ids``) and fixed
    validation windows (``val_ids``) and the jump error along the validation runs."""

    eval_ids: list[int]
    val_ids: list[int]
    jump_score: JumpScore | None


def _scoring(config: MetaTrainConfig, dataset: MetaDataset, val_dataset: MetaDataset | None) -> _Scoring:
    """Draw the fixed evaluation windows and set up the scorers, failing early on a validation set
    that cannot score what ``config.select`` names."""
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
    if config.select == "val_jump" and (jump_score is None or not jump_score.pairs):
        raise ValueError(
            "select='val_jump' needs validation trajectories long enough for a jump's target to be recorded "
            "(see nowcast.metatrain.jump_error); use select='val_loss' or longer validation runs"
        )
    return _Scoring(eval_ids, val_ids, jump_score)


class _MetaTraining:
    """A meta-training run in progress: the model, its optimizer and window sampler, the
    bookkeeping the checkpoint holds (``state``), and the stages of the loop."""

    def __init__(
        self,
        config: MetaTrainConfig,
        work: Path,
        dataset: MetaDataset,
        val_dataset: MetaDataset | None,
        model: NiNoModel,
        optimizer: torch.optim.Optimizer,
        sampler: torch.Generator,
        scoring: _Scoring,
    ) -> None:
        self.config, self.work, self.dataset, self.val_dataset = config, work, dataset, val_dataset
        self.model, self.optimizer, self.sampler, self.scoring = model, optimizer, sampler, scoring
        self.n_val_windows = len(val_dataset) if val_dataset is not None else 0
        self.state: dict[str, Any] = {
            "step": 0,
            "lr_scale": 1.0,
            "consecutive_bad": 0,
            "nan_skips": 0,
            "rollbacks": 0,
            "wall_s": 0.0,
            "history": {"step": [], "loss": [], "lr": [], "grad_norm": []},
            "evals": {
                "step": [], "loss": [], **({"val_loss": [], "val_jump": []} if scoring.val_ids else {}),
            },
            "baselines": {},
            "best": None,
        }
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_good: dict[str, Any] | None = None
        self.start = 0.0

    # -------------------------------------------------------------------------- checkpoints
    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``: weights, optimizer, RNG states and bookkeeping."""
        blob = read_checkpoint(path, self.config, len(self.dataset), self.n_val_windows)
        self.best_state = blob.get("best_model")
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.sampler.set_state(blob["rng"]["sampler"])
        torch.set_rng_state(blob["rng"]["torch"])
        self.state.update({k: blob[k] for k in self.state if k in blob})
        log.info("resuming meta-training at step %d of %d", self.state["step"], self.config.steps)

    def snapshot(self) -> dict[str, Any]:
        """Everything the checkpoint holds, as of now."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "n_windows": len(self.dataset),
            "n_val_windows": self.n_val_windows,
            "model": self.model.state_dict(),
            **({"best_model": self.best_state} if self.best_state is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"sampler": self.sampler.get_state(), "torch": torch.get_rng_state()},
            **{k: (v + time.perf_counter() - self.start if k == "wall_s" else v) for k, v in self.state.items()},
        }

    def save(self) -> None:
        """Write the checkpoint and ``history.json``; the saved weights become the rollback point."""
        blob = self.snapshot()
        atomic_save(blob, self.work / CHECKPOINT_FILE)
        self.last_good = copy.deepcopy({"model": blob["model"], "optimizer": blob["optimizer"]})
        write_history(self.work, self.config, {**self.state, "wall_s": blob["wall_s"]}, self.dataset, self.val_dataset)

    # -------------------------------------------------------------------------- evaluation
    def begin(self) -> None:
        """Start the clock, measure the no-change and Linefit baselines once, evaluate the starting
        point of a new run and checkpoint it (the first point to roll back to)."""
        self.start = time.perf_counter()
        self.last_good = None
        eval_ids, val_ids = self.scoring.eval_ids, self.scoring.val_ids
        state = self.state
        if not state["baselines"] and eval_ids:
            sums: dict[str, float] = {}
            for i in eval_ids:
                for k, v in baseline_losses(self.dataset[i]).items():
                    sums[k] = sums.get(k, 0.0) + v
            state["baselines"] = {k: v / len(eval_ids) for k, v in sums.items()}
            log.info("eval windows: zero-change loss %.4f, linefit loss %.4f", state["baselines"]["zero"], state["baselines"]["linefit"])
            for i in val_ids:
                for k, v in baseline_losses(self.val_dataset[i]).items():
                    key = f"val_{k}"
                    state["baselines"][key] = state["baselines"].get(key, 0.0) + v / len(val_ids)
        if state["step"] == 0 and (eval_ids or val_ids) and not state["evals"]["step"]:
            self.evaluate(0)
        self.save()  # the starting point is always a good checkpoint to roll back to

    def _mean_loss(self, data: MetaDataset, ids: list[int]) -> float:
        with torch.no_grad():
            return sum(float(window_loss(self.model, data[i])) for i in ids) / max(1, len(ids))

    def _measure(self) -> dict[str, float | None]:
        """The evaluation metrics of the current weights (in eval mode)."""
        model, scoring = self.model, self.scoring
        was = model.training
        model.eval()
        measured: dict[str, float | None] = {"loss": self._mean_loss(self.dataset, scoring.eval_ids) if scoring.eval_ids else math.nan}
        if scoring.val_ids:
            measured["val_loss"] = self._mean_loss(self.val_dataset, scoring.val_ids)
            measured["val_jump"] = scoring.jump_score(model) if scoring.jump_score.pairs else None
        model.train(was)
        return measured

    def evaluate(self, done: int) -> None:
        """Record the metrics after ``done`` steps, warn of a collapse to no change, and keep the
        weights when they are the best on ``config.select`` so far."""
        config, state = self.config, self.state
        measured = self._measure()
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
        if not self.scoring.val_ids:
            log.info("meta-training step %d: eval loss %.4f", done, evals["loss"][-1])
            return
        now = {name: evals[name][-1] for name in SELECTION_METRICS if name in evals}
        if state["best"] is None or now[config.select] < state["best"][config.select]:
            state["best"] = {"step": done, **now}
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        log.info(
            "meta-training step %d: eval loss %.4f, validation loss %.4f, validation jump error %s (best %s %.4f at step %d)",
            done, evals["loss"][-1], now["val_loss"], "-" if now["val_jump"] is None else f"{now['val_jump']:.4f}",
            config.select, state["best"][config.select], state["best"]["step"],
        )

    # -------------------------------------------------------------------------- steps
    def train(
        self,
        progress: bool,
        loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None,
        step_callback: Callable[[int, NiNoModel], None] | None,
    ) -> None:
        """Run the steps left, evaluating every ``eval_every`` and checkpointing every ``checkpoint_every``."""
        config, state = self.config, self.state
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, initial=state["step"], desc="meta-train", mininterval=1.0, unit="step")
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            while state["step"] < config.steps:
                step = state["step"]
                lr = config.lr * state["lr_scale"] * lr_at(step, config)
                total, grad_norm = self._step(step, lr, params, loss_hook)
                finite = math.isfinite(grad_norm)
                state["step"] = step + 1
                if finite:
                    self._record(step, lr, total, grad_norm)
                else:
                    self._skip(step)
                done = state["step"]
                if (self.scoring.eval_ids or self.scoring.val_ids) and (done % config.eval_every == 0 or done == config.steps):
                    self.evaluate(done)
                if done % config.checkpoint_every == 0 or done == config.steps:
                    self.save()
                if bar is not None:
                    bar.update(1)
                    if finite and (done % 10 == 0 or done == config.steps):
                        bar.set_postfix({"loss": f"{total:.4f}", "lr": f"{lr:.2e}"}, refresh=False)
                if finite and done % config.log_every == 0:
                    log.info("meta-training step %d/%d: loss %.4f, lr %.2e, grad norm %.3f", done, config.steps, total, lr, grad_norm)
                if step_callback is not None:
                    step_callback(done, self.model)
        finally:
            if bar is not None:
                bar.close()
        state["wall_s"] += time.perf_counter() - self.start

    def _step(
        self, step: int, lr: float, params: list[torch.nn.Parameter], loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None
    ) -> tuple[float, float]:
        """Accumulate the gradients of one batch of windows and clip them: the batch loss and the
        gradient norm (NaN when the loss or the gradient is not finite)."""
        config, dataset = self.config, self.dataset
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ids = torch.randint(len(dataset), (config.batch,), generator=self.sampler).tolist()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i in ids:
            loss = window_loss(self.model, dataset[i], config.horizon_weighting) / config.batch
            if loss_hook is not None:
                loss = loss_hook(step, loss)
            if not bool(torch.isfinite(loss)):
                return total, math.nan
            loss.backward()
            total += float(loss.detach())
        return total, float(torch.nn.utils.clip_grad_norm_(params, config.clip))

    def _record(self, step: int, lr: float, total: float, grad_norm: float) -> None:
        """Apply the update of a finite batch and add it to the history."""
        self.optimizer.step()
        self.state["consecutive_bad"] = 0
        hist = self.state["history"]
        hist["step"].append(step + 1)
        hist["loss"].append(total)
        hist["lr"].append(lr)
        hist["grad_norm"].append(grad_norm)

    def _skip(self, step: int) -> None:
        """Drop a non-finite batch; after ``max_bad_steps`` in a row, roll back to the last good
        checkpoint with a smaller learning rate."""
        config, state = self.config, self.state
        self.optimizer.zero_grad(set_to_none=True)
        state["nan_skips"] += 1
        state["consecutive_bad"] += 1
        log.warning(
            "meta-training step %d: loss or gradient is not finite; update skipped (%d in a row, %d in all)",
            step + 1, state["consecutive_bad"], state["nan_skips"],
        )
        if state["consecutive_bad"] >= config.max_bad_steps and self.last_good is not None:
            self.model.load_state_dict(self.last_good["model"])
            self.optimizer.load_state_dict(self.last_good["optimizer"])
            state["lr_scale"] *= config.lr_backoff
            state["rollbacks"] += 1
            state["consecutive_bad"] = 0
            log.warning(
                "%d non-finite steps in a row: reloaded the last good checkpoint, learning rate x%g (now x%g)",
                config.max_bad_steps, config.lr_backoff, state["lr_scale"],
            )
            self.save()

    def result(self) -> MetaTrainResult:
        """The run as it stands, the model in eval mode."""
        state, dataset, val_dataset = self.state, self.dataset, self.val_dataset
        self.model.eval()
        return MetaTrainResult(
            model=self.model, config=self.config, step=state["step"], history=state["history"], evals=state["evals"],
            baselines=state["baselines"], nan_skips=state["nan_skips"], rollbacks=state["rollbacks"],
            lr_scale=state["lr_scale"], wall_s=state["wall_s"], dataset=dataset.describe(), work_dir=self.work,
            best=state["best"], best_state=self.best_state, val_dataset=val_dataset.describe() if val_dataset is not None else [],
        )
