"""Collect parameter trajectories of the base optimizer: the training data of a NiNo meta-model.

:func:`collect_run` trains one run (:class:`nowcast.metatrain.RunSpec`) and saves its snapshots
in the files described in :mod:`nowcast.metatrain.trajectories`; :func:`collect` does that for
every run of a recipe, one after the other or in worker processes
(:mod:`nowcast.metatrain.collection_worker`).

Resuming: :func:`collect` never redoes a finished run; an unfinished one continues from its last
snapshot *exactly*: the model and optimizer states are restored and the seeded batch stream is
fast-forwarded by the number of steps already taken, so the resumed ``params.npy`` is
bit-identical to an uninterrupted run's (same machine, same thread count).
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import neuralgraph

from ..atomic import save_torch_atomic
from ..safe_load import load_torch_file
from ..tasks import get_task
from .recipes import Recipe, RunSpec, get_recipe
from .trajectories import (
    META_FILE,
    PARAMS_FILE,
    RESUME_FILE,
    TRAJECTORY_FORMAT,
    TRAJECTORY_VERSION,
    jsonable,
    model_architecture,
    write_json,
)

__all__ = ["collect", "collect_run"]

log = logging.getLogger(__name__)

WORKER_MODULE = "nowcast.metatrain.collection_worker"


def _optimizer_info(optimizer: torch.optim.Optimizer, lr_mult: float) -> dict[str, Any]:
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return {
        "name": type(optimizer).__name__,
        "lr": group.get("lr"),
        "lr_mult": lr_mult,
        "base_lr": None if group.get("lr") is None else float(group["lr"]) / lr_mult,
        "settings": jsonable(group),
    }


def _flat(model: nn.Module) -> np.ndarray:
    return neuralgraph.flatten_params(model).detach().to(torch.float32).numpy()


# ------------------------------------------------------------------------------------- one run
def collect_run(
    spec: RunSpec,
    out_dir: str | os.PathLike,
    *,
    data: Any = None,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | bool = False,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> Path:
    """Collect (or finish) one run into ``out_dir/<run_id>``; returns that folder.

    Args:
        spec: the run.
        out_dir: parent folder of the run folders.
        data: already loaded task data (else ``task.load_data(data_dir)``).
        progress: True for a tqdm bar, or a function called with the number of steps just done.
        callback: ``callback(step, model)`` after every training step (tests use it to interrupt).

    A finished run (``meta.json`` status ``complete`` or ``diverged``) is returned untouched.
    """
    task = get_task(spec.task)
    run_dir = Path(out_dir) / spec.run_id
    meta_path = run_dir / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("status") in ("complete", "diverged"):
            log.info("%s: already %s (%d snapshots)", spec.run_id, meta["status"], meta["n_snapshots"])
            return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(run_dir):
        return _collect_locked(spec, task, run_dir, data, data_dir, progress, callback)


class _RunLock:
    """An exclusive ``flock`` on ``<run_dir>/lock`` while a process writes the run (released when
    the process ends, however it ends): two processes never write one run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "lock"
        self.handle: Any = None

    def __enter__(self) -> _RunLock:
        self.handle = open(self.path, "a+")
        try:
            import fcntl

            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no protection
            pass
        except OSError:
            self.handle.close()
            raise RuntimeError(f"{self.path.parent} is being collected by another process; wait for it or stop it") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


@dataclass
class _Run:
    """A run being collected: its model and optimizer, the snapshot rows written so far, and its files."""

    spec: RunSpec
    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any
    params: np.ndarray
    info: dict[str, Any]
    history: dict[str, list]
    step: int = 0
    wall: float = 0.0
    start: float = 0.0

    def write_meta(self, status: str) -> None:
        write_json(
            self.run_dir / META_FILE,
            {**self.info, "status": status, "n_snapshots": len(self.history["step"]), "snapshots": self.history, "wall_s": self.wall},
        )

    def snapshot(self, loss: float | None) -> bool:
        """Save the parameters as the next row and the resume state; False (nothing saved) when they are not finite."""
        flat = _flat(self.model)
        if not np.isfinite(flat).all():
            return False
        row = len(self.history["step"])
        self.params[row] = flat
        self.params.flush()
        self.history["step"].append(self.step)
        self.history["loss"].append(loss)
        self.history["metric"].append(float(self.data.evaluate(self.model)))
        state = {
            "spec": jsonable(self.spec.to_dict()),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "history": self.history,
            "wall_s": self.wall + time.perf_counter() - self.start,
        }
        save_torch_atomic(state, self.run_dir / RESUME_FILE)
        return True


def _collect_locked(
    spec: RunSpec,
    task: Any,
    run_dir: Path,
    data: Any,
    data_dir: str | os.PathLike | None,
    progress: Callable[[int], None] | bool,
    callback: Callable[[int, nn.Module], None] | None,
) -> Path:
    meta_path = run_dir / META_FILE
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("status") in ("complete", "diverged"):
        return run_dir  # finished by another process meanwhile
    data = task.load_data(data_dir) if data is None else data
    run = _open_run(spec, task, run_dir, data)
    bar, report = _reporter(progress, spec, run.step)
    run.start = time.perf_counter()
    try:
        status = _train_and_record(run, task, bar, report, callback)
    finally:
        if bar is not None:
            bar.close()
    run.wall += time.perf_counter() - run.start
    run.write_meta(status)
    (run_dir / RESUME_FILE).unlink(missing_ok=True)
    log.info("%s: %s, %d snapshots, %.1f s", spec.run_id, status, len(run.history["step"]), run.wall)
    return run_dir


def _open_run(spec: RunSpec, task: Any, run_dir: Path, data: Any) -> _Run:
    """The run's model and optimizer, fresh or restored from ``resume.pt``, and its open ``params.npy``."""
    steps = spec.resolved_steps()
    params_path, resume_path = run_dir / PARAMS_FILE, run_dir / RESUME_FILE
    model = task.model(spec.seed)
    model.train()
    optimizer = task.make_optimizer(model)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * spec.lr_mult
    arch = model_architecture(model)
    n_rows = steps // spec.every + 1
    history: dict[str, list] = {"step": [], "loss": [], "metric": []}
    step, wall = 0, 0.0

    if resume_path.is_file() and params_path.is_file():
        state = load_torch_file(resume_path, "collection resume checkpoint")
        if state.get("spec") != jsonable(spec.to_dict()):
            raise ValueError(f"{resume_path} belongs to another run ({state.get('spec')}); remove {run_dir} to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, history, wall = int(state["step"]), dict(state["history"]), float(state["wall_s"])
        params = np.lib.format.open_memmap(params_path, mode="r+")
        if params.shape != (n_rows, arch["num_params"]):
            raise ValueError(f"{params_path} has shape {params.shape}, expected {(n_rows, arch['num_params'])}")
        log.info("%s: resuming at step %d (%d snapshots)", spec.run_id, step, len(history["step"]))
    else:
        params = np.lib.format.open_memmap(params_path, mode="w+", dtype=np.float32, shape=(n_rows, arch["num_params"]))
        history = {"step": [], "loss": [], "metric": []}

    info = {
        "format": TRAJECTORY_FORMAT,
        "version": TRAJECTORY_VERSION,
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "task": task.name,
        "seed": spec.seed,
        "lr_mult": spec.lr_mult,
        "steps": steps,
        "every": spec.every,
        "metric_name": task.metric,
        "higher_is_better": task.higher_is_better,
        "architecture": arch,
        "optimizer": _optimizer_info(optimizer, spec.lr_mult),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return _Run(spec, run_dir, model, optimizer, data, params, info, history, step, wall)


def _reporter(progress: Callable[[int], None] | bool, spec: RunSpec, step: int) -> tuple[Any, Callable[[int], None] | None]:
    """A tqdm bar (``progress=True``) and the function told of every step (its ``update``, or ``progress`` itself)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.resolved_steps(), initial=step, desc=spec.run_id, leave=False, mininterval=0.5)
        return bar, bar.update
    if callable(progress):
        if step:
            progress(step)
        return None, progress
    return None, None


def _train_and_record(
    run: _Run, task: Any, bar: Any, report: Callable[[int], None] | None, callback: Callable[[int, nn.Module], None] | None
) -> str:
    """Train from ``run.step`` to the end, saving a snapshot every ``every`` steps; the final status."""
    spec, model, optimizer, data, history = run.spec, run.model, run.optimizer, run.data, run.history
    steps, every = spec.resolved_steps(), spec.every
    status = "running"
    if not history["step"]:
        run.snapshot(None)
        run.write_meta(status)
    batches = data.batches(spec.seed)
    for _ in range(run.step):  # fast-forward the seeded stream to where the run stopped
        next(batches)
    interval_loss, interval_n = 0.0, 0
    while run.step < steps:
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = data.loss(model, batch)
        loss.backward()
        optimizer.step()
        run.step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            log.warning("%s: training loss is %s at step %d; the run stops here (diverged)", spec.run_id, value, run.step)
            return "diverged"
        interval_loss += value
        interval_n += 1
        if callback is not None:
            callback(run.step, model)
        if report is not None:
            report(1)
        if run.step % every == 0:
            if not run.snapshot(interval_loss / max(interval_n, 1)):
                log.warning("%s: parameters are not finite at step %d; the run stops here (diverged)", spec.run_id, run.step)
                return "diverged"
            interval_loss, interval_n = 0.0, 0
            run.write_meta(status)
            if bar is not None:
                bar.set_postfix({task.metric: f"{history['metric'][-1]:.4g}"}, refresh=False)
    return "complete"


# ------------------------------------------------------------------------------------- many runs
def _as_runs(recipe_or_runs: str | Recipe | RunSpec | Iterable[RunSpec]) -> list[RunSpec]:
    if isinstance(recipe_or_runs, (str, Recipe)):
        return list(get_recipe(recipe_or_runs).all_runs)
    if isinstance(recipe_or_runs, RunSpec):
        return [recipe_or_runs]
    runs = list(recipe_or_runs)
    if not all(isinstance(r, RunSpec) for r in runs):
        raise TypeError("collect() takes a recipe name, a Recipe, a RunSpec or a list of RunSpec")
    return runs


def _done(spec: RunSpec, out_dir: Path) -> bool:
    meta = out_dir / spec.run_id / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("status") in ("complete", "diverged")
    except (OSError, json.JSONDecodeError):
        return False


def _steps_done(spec: RunSpec, out_dir: Path) -> int:
    meta = out_dir / spec.run_id / META_FILE
    try:
        snaps = json.loads(meta.read_text())["snapshots"]["step"]
        return int(snaps[-1]) if snaps else 0
    except (OSError, KeyError, IndexError, json.JSONDecodeError):
        return 0


def collect(
    recipe_or_runs: str | Recipe | RunSpec | Iterable[RunSpec],
    out_dir: str | os.PathLike,
    progress: bool = True,
    *,
    workers: int | None = None,
    threads: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Collect every run of a recipe (or a list of :class:`RunSpec`) into ``out_dir``.

    Finished runs are skipped; unfinished ones resume from their last snapshot.

    Args:
        recipe_or_runs: a recipe name (:data:`RECIPES`), a :class:`Recipe`, or run specs.
        out_dir: parent folder of the run folders.
        progress: one tqdm bar over all steps of all runs.
        workers: runs trained at once in separate processes (default: the recipe's, else 1).
            Results do not depend on it (each run is seeded on its own).
        threads: torch threads per run (default: 1 when ``workers > 1``, else unchanged).
        data_dir: where the tasks' datasets are (see :mod:`nowcast.tasks.data`).

    Returns:
        The run folders, in the order of the runs.
    """
    runs = _as_runs(recipe_or_runs)
    if workers is None:
        workers = get_recipe(recipe_or_runs).workers if isinstance(recipe_or_runs, (str, Recipe)) else 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"runs repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    todo = [r for r in runs if not _done(r, out)]
    log.info("collect: %d runs, %d to do, into %s", len(runs), len(todo), out)
    total = sum(r.resolved_steps() for r in todo)
    already = sum(_steps_done(r, out) for r in todo)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=0, desc=f"collect {len(todo)} run(s)", mininterval=1.0, unit="step")
    try:
        if workers <= 1 or len(todo) <= 1:
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                loaded: dict[str, Any] = {}
                for spec in todo:
                    if spec.task not in loaded:
                        loaded = {spec.task: get_task(spec.task).load_data(data_dir)}  # one dataset in memory at a time
                    collect_run(spec, out, data=loaded[spec.task], progress=(bar.update if bar is not None else False))
            finally:
                torch.set_num_threads(before)
        else:
            _collect_parallel(todo, out, workers, threads or 1, data_dir, bar)
    finally:
        if bar is not None:
            bar.close()
    if todo:
        log.info("collect: done (%d steps were already there)", already)
    return [out / i for i in ids]


def _collect_parallel(todo: list[RunSpec], out: Path, workers: int, threads: int, data_dir: Any, bar: Any) -> None:
    """Run ``todo`` in at most ``workers`` child processes (``python -m nowcast.metatrain.collection_worker``), one
    thread each; progress is read from the runs' ``meta.json`` (one update per snapshot).
    A failed run lets the running ones finish, starts no new one, then raises."""
    queue = list(todo)
    running: dict[RunSpec, tuple[subprocess.Popen, Any]] = {}
    shown = {r.run_id: 0 for r in todo}
    failed: list[str] = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def update(spec: RunSpec) -> None:
        done = _steps_done(spec, out)
        if bar is not None and done > shown[spec.run_id]:
            bar.update(done - shown[spec.run_id])
        shown[spec.run_id] = max(shown[spec.run_id], done)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term) if _in_main_thread() else None
    try:
        while queue or running:
            while queue and len(running) < workers and not failed:
                spec = queue.pop(0)
                run_dir = out / spec.run_id
                run_dir.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", WORKER_MODULE, "--run", json.dumps(spec.to_dict()), "--out", str(out), "--threads", str(threads)]
                if data_dir is not None:
                    cmd += ["--data-dir", str(data_dir)]
                log_file = open(run_dir / "worker.log", "a")
                proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
                running[spec] = (proc, log_file)
                log.info("collect: started %s (pid %d)", spec.run_id, running[spec][0].pid)
            if failed and not running:
                break
            time.sleep(1.0)
            for spec, (proc, log_file) in list(running.items()):
                update(spec)
                if proc.poll() is None:
                    continue
                log_file.close()
                del running[spec]
                if proc.returncode != 0:
                    failed.append(f"{spec.run_id} (exit {proc.returncode}, see {out / spec.run_id / 'worker.log'})")
                    log.error("collect: %s failed", failed[-1])
    finally:
        for proc, log_file in running.values():  # interrupted: stop the children (their runs resume later)
            proc.terminate()
            proc.wait()
            log_file.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if failed:
        raise RuntimeError(f"collection failed for {', '.join(failed)}; rerun to retry (finished runs are kept)")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM when the collecting process dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
