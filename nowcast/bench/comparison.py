"""Steps-to-target comparison of training methods over seeds (the paper's Table 2 quantities).

:func:`compare` runs every method on every seed, :class:`Comparison` holds the runs and gives
the median steps-to-target per method, the reduction relative to the base optimizer
(``100 * (1 - method / adam)``), a printable table, a JSON document and the curves plot.
A run that never reaches the target counts as not reached (None); a median over seeds counts
those as infinitely slow, so a method that misses the target on most seeds has no median.

Stored results are never lost: a result file is rewritten in one step (a temporary file renamed
over it) and merged, never truncated. Each stored run carries its identity: the checkpoint it was
made with (resolved path and sha256 of its model files) and the settings that shape it (the task's
recipe, evaluation interval, planned length, nowcasting period and context). A rerun adds runs or
replaces those with the same method, seed, budget and identity; runs made with another checkpoint
or other settings stay in the file (under ``other_runs``), are never reused for the new ones and
never summarised under their method's name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, write_text_atomic
from ..tasks import Task, get_task
from .methods import Method, resolve_method
from .training import RunResult, train

__all__ = ["Comparison", "checkpoint_digest", "compare", "median_steps", "run_identity"]

log = logging.getLogger(__name__)
BASELINE = "adam"
FORMAT_VERSION = 2
"""Version of the result files: 2 adds ``version``, ``other_runs`` and each run's ``identity``."""


def median_steps(steps: Sequence[int | None]) -> float | None:
    """Median of per-seed steps-to-target, a miss counting as infinitely many steps (None if the median is a miss)."""
    if not steps:
        return None
    values = sorted(math.inf if s is None else float(s) for s in steps)
    n = len(values)
    mid = values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])
    return None if math.isinf(mid) else mid


@dataclass
class Comparison:
    """Runs of several methods on one task.

    ``runs`` are the runs summarised, tabled and plotted; ``other_runs`` are further runs kept
    with them in the same file (other seeds or checkpoints, other settings) and shown nowhere.
    """

    task: str
    metric: str
    target: float
    higher_is_better: bool
    runs: list[RunResult] = field(default_factory=list)
    other_runs: list[RunResult] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.runs))

    def steps_to_target(self, method: str) -> list[int | None]:
        return [r.steps_to_target for r in sorted(self.runs, key=lambda r: r.seed) if r.method == method]

    def median(self, method: str) -> float | None:
        return median_steps(self.steps_to_target(method))

    def reduction(self, method: str, baseline: str = BASELINE) -> float | None:
        """Percent fewer steps than ``baseline`` (median vs median); None when either median is missing."""
        ours, base = self.median(method), self.median(baseline)
        if ours is None or base is None or base == 0:
            return None
        return 100.0 * (1.0 - ours / base)

    def summary(self) -> dict[str, Any]:
        """Per method: per-seed steps-to-target (None = not reached), the median and the reduction vs Adam."""
        out: dict[str, Any] = {}
        for m in self.methods:
            out[m] = {
                "seeds": [r.seed for r in sorted(self.runs, key=lambda r: r.seed) if r.method == m],
                "steps_to_target": self.steps_to_target(m),
                "median": self.median(m),
                "reduction_vs_adam_pct": self.reduction(m) if BASELINE in self.methods else None,
            }
        return out

    def table(self) -> str:
        """A plain-text table: method, steps per seed, median, reduction vs Adam."""
        direction = ">=" if self.higher_is_better else "<="
        lines = [f"task {self.task}: steps to {self.metric} {direction} {self.target:g}"]
        w = max([10] + [len(m) for m in self.methods])
        header = f"{'method':<{w}} {'steps to target (per seed)':<34} {'median':>8} {'vs adam':>9} {'best':>9}"
        lines += [header, "-" * len(header)]
        for m, row in self.summary().items():
            per_seed = " ".join("-" if s is None else str(s) for s in row["steps_to_target"])
            median = "-" if row["median"] is None else f"{row['median']:.0f}"
            red = row["reduction_vs_adam_pct"]
            red_s = "" if m == BASELINE else ("-" if red is None else f"{red:+.1f}%")
            bests = [r.best for r in self.runs if r.method == m]
            best = max(bests) if self.higher_is_better else min(bests)
            lines.append(f"{m:<{w}} {per_seed:<34} {median:>8} {red_s:>9} {best:>9.4g}")
        lines.append("('-' = target not reached; 'vs adam' = fewer steps than Adam, median over seeds)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "target": self.target,
            "higher_is_better": self.higher_is_better,
            "version": FORMAT_VERSION,
            "methods": self.summary(),
            "runs": [_run_to_dict(r) for r in self.runs],
            "other_runs": [_run_to_dict(r) for r in self.other_runs],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, allow_nan=False, default=_json_default)

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write the JSON to ``path`` in one step (this comparison's runs only: :func:`compare` merges)."""
        return write_text_atomic(path, self.dumps())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> Comparison:
        """Read a file written by :meth:`save_json` or :func:`compare` (files written before runs
        carried their identity load too: their runs have none)."""
        d = json.loads(Path(path).read_text())
        runs = [_run_from_dict(r) for r in d.get("runs", [])]
        others = [_run_from_dict(r) for r in d.get("other_runs", [])]
        return cls(d["task"], d["metric"], d["target"], d["higher_is_better"], runs, others)

    @classmethod
    def merge(cls, *parts: Comparison) -> Comparison:
        """One comparison from several of the same task and target (e.g. methods run in parallel
        processes, each writing its own JSON). A (method, seed) pair may appear only once."""
        if not parts:
            raise ValueError("merge needs at least one comparison")
        first = parts[0]
        key = (first.task, first.metric, first.target, first.higher_is_better)
        merged = cls(*key)
        seen: set[tuple[str, int]] = set()
        for part in parts:
            if (part.task, part.metric, part.target, part.higher_is_better) != key:
                raise ValueError(f"cannot merge {part.task} ({part.metric} target {part.target}) into {first.task} ({first.metric} target {first.target})")
            for run in part.runs:
                if (run.method, run.seed) in seen:
                    raise ValueError(f"{run.method} seed {run.seed} appears in more than one comparison")
                seen.add((run.method, run.seed))
                merged.runs.append(run)
            merged.other_runs.extend(part.other_runs)
        return merged

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> Path:
        """Validation metric vs step, one colour per method (one line per seed), jumps marked, target dashed.

        Writes ``path`` (PNG) and a PDF next to it; returns the PNG path.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
        colours = plt.get_cmap("tab10")
        for i, m in enumerate(self.methods):
            colour = colours(i % 10)
            for j, r in enumerate(r for r in self.runs if r.method == m):
                label = f"{m} (median {self.median(m):.0f})" if j == 0 and self.median(m) is not None else (m if j == 0 else None)
                ax.plot(r.steps, _clip(r.values), color=colour, lw=1.3, alpha=0.85, label=label)
                if r.jump_steps:
                    at = [_value_after(r, s) for s in r.jump_steps]
                    ax.scatter(r.jump_steps, _clip(at), color=colour, marker="v", s=18, zorder=3)
                if r.steps_to_target is not None:
                    ax.axvline(r.steps_to_target, color=colour, lw=0.6, ls=":", alpha=0.7)
        ax.axhline(self.target, color="black", lw=1, ls="--", label=f"target {self.target:g}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {self.metric}")
        if self.higher_is_better:
            finite = [v for r in self.runs for v in r.values if math.isfinite(v)]
            top = max(finite + [self.target])
            ax.set_ylim(max(min(finite + [self.target]), self.target - 0.15 * max(abs(self.target), 1e-9)), top + 0.01 * abs(top))
        else:
            ax.set_yscale("log")
            finite = [v for r in self.runs for v in r.values if math.isfinite(v)]
            ax.set_ylim(min(finite + [self.target]) * 0.95, max(self.target * 3, min(max(finite), self.target * 10)))
        ax.set_title(title or f"{self.task}: validation {self.metric} (triangles: nowcast jumps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if self.higher_is_better else "upper right")
        fig.tight_layout()
        for target, fmt in ((path, None), (path.with_suffix(".pdf"), "pdf")):
            with atomic_file(target) as tmp:
                fig.savefig(tmp, format=fmt or (path.suffix.lstrip(".") or "png"))
        plt.close(fig)
        return path


def _json_default(o: Any) -> Any:
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _clip(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _value_after(run: RunResult, step: int) -> float:
    for s, v in zip(run.steps, run.values):
        if s >= step:
            return v
    return math.nan


def _sanitize(run: RunResult) -> RunResult:
    run.values = [v if math.isfinite(v) else 1e308 for v in run.values]  # JSON has no inf/nan
    run.losses = [v if math.isfinite(v) else 1e308 for v in run.losses]
    return run


# ------------------------------------------------------------------ identity of stored runs
_IDENTITY_ATTR = "_stored_identity"
_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunResult))
_MODEL_SUFFIXES = frozenset({".json", ".safetensors", ".pt", ".pth", ".bin"})
_NOT_SETTINGS = frozenset({"callback", "log_loss_every", "eval_every", "period", "ctx"})
_digests: dict[tuple[Any, ...], str] = {}


def identity_of(run: RunResult) -> dict[str, Any] | None:
    """The identity stored with ``run`` (None for runs from files written before identities)."""
    return getattr(run, _IDENTITY_ATTR, None)


def _with_identity(run: RunResult, identity: Mapping[str, Any] | None) -> RunResult:
    setattr(run, _IDENTITY_ATTR, None if identity is None else dict(identity))
    return run


def _run_to_dict(run: RunResult) -> dict[str, Any]:
    d = run.to_dict()
    if identity_of(run) is not None:
        d["identity"] = identity_of(run)
    return d


def _run_from_dict(d: Mapping[str, Any]) -> RunResult:
    d = dict(d)
    identity = d.pop("identity", None)
    unknown = sorted(set(d) - _RUN_FIELDS)
    if unknown:
        log.debug("ignoring unknown run fields %s", ", ".join(unknown))
    run = RunResult.from_dict({k: v for k, v in d.items() if k in _RUN_FIELDS})
    return _with_identity(run, identity if isinstance(identity, Mapping) else None)


def _run_key(run: RunResult) -> tuple[Any, ...]:
    identity = identity_of(run)
    return (run.method, run.seed, run.max_steps, run.checkpoint if identity is None else None,
            None if identity is None else json.dumps(identity, sort_keys=True))


def checkpoint_digest(path: str | os.PathLike) -> str:
    """sha256 over a checkpoint's model files: the file itself, or for a folder every ``.json``,
    ``.safetensors``, ``.pt``, ``.pth`` and ``.bin`` file in it with its relative name (a model
    card or plot appended to later does not change it). Cached per file size and time."""
    root = Path(path).resolve()
    if root.is_file():
        files = [root]
    else:
        files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in _MODEL_SUFFIXES
                       and not any(part.startswith(".") for part in f.relative_to(root).parts))
    stamp = (str(root), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp not in _digests:
        digest = hashlib.sha256()
        for f in files:
            if f != root:
                digest.update(f.relative_to(root).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        _digests[stamp] = digest.hexdigest()
    return _digests[stamp]


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def run_identity(task: Task, method: Method, *, planned: int, stop_at_target: bool = True, **train_kwargs: Any) -> dict[str, Any]:
    """What makes a run of ``method`` on ``task`` comparable to another besides method, seed and
    budget: the checkpoint (resolved path, sha256) and the settings (the task's recipe, evaluation
    interval, stopping at the target; for nowcasting methods the planned length, period and ctx)."""
    recipe = {"name": task.name, "description": task.description, "optimizer": task.optimizer, "metric": task.metric,
              "higher_is_better": task.higher_is_better, "target": task.target}
    if task.extra and _jsonable(task.extra):
        recipe["extra"] = task.extra

    def given(name: str, default: int) -> int:
        return default if train_kwargs.get(name) is None else int(train_kwargs[name])

    settings: dict[str, Any] = {"task": recipe, "eval_every": given("eval_every", task.eval_every), "stop_at_target": bool(stop_at_target)}
    if method.nowcasts:
        settings.update(planned_steps=int(planned), period=given("period", task.period), ctx=given("ctx", 5))
    settings.update({k: v for k, v in sorted(train_kwargs.items()) if k not in _NOT_SETTINGS and _jsonable(v)})
    checkpoint = digest = None
    if method.checkpoint:
        where = Path(method.checkpoint)
        checkpoint = str(where.resolve())
        digest = checkpoint_digest(where) if where.exists() else None
    identity = {"checkpoint": checkpoint, "checkpoint_sha256": digest, "settings": settings}
    return json.loads(json.dumps(identity))  # as it reads back from the file (tuples become lists)


@dataclass
class _Wanted:
    """What one requested method's runs must match in this call."""

    budget: int
    identity: dict[str, Any]
    legacy_ok: bool  # the settings are the defaults that files without identities were made with


class _ResultFile:
    """The JSON of :func:`compare`: re-read and merged with this call's new runs at every write."""

    def __init__(self, path: str | os.PathLike, task: Task, wanted: dict[str, _Wanted]) -> None:
        self.path, self.task, self.wanted = Path(path), task, wanted
        self.fresh: list[RunResult] = []
        self._told: set[tuple[Any, ...]] = set()

    def _same_target(self, run: RunResult) -> bool:
        return (run.metric, run.target, run.higher_is_better) == (self.task.metric, self.task.target, self.task.higher_is_better)

    def read(self) -> tuple[list[RunResult], list[RunResult]]:
        """The stored runs (shown, other). A file that is not a result file is refused, never overwritten."""
        if not self.path.is_file():
            return [], []
        try:
            stored = Comparison.load_json(self.path)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            what = f"no '{err.args[0]}'" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"{self.path} exists but is not a readable comparison result file ({what}): "
                             "move it away or write the results elsewhere") from None
        if stored.task != self.task.name:
            raise ValueError(f"{self.path} holds results of task {stored.task}, not {self.task.name}: choose another file")
        for run in stored.runs + stored.other_runs:
            self._adopt(run)
        return stored.runs, stored.other_runs

    def _adopt(self, run: RunResult) -> None:
        """Give a run from a file without identities this call's identity when nothing it records
        differs (method, budget, target, checkpoint path) and this call uses the default settings."""
        want = self.wanted.get(run.method)
        if identity_of(run) is not None or want is None or not want.legacy_ok:
            return
        if run.max_steps != want.budget or not self._same_target(run):
            return
        recorded = None if run.checkpoint is None else str(Path(run.checkpoint).resolve())
        if recorded != want.identity["checkpoint"]:
            return
        if recorded is not None and _run_key(run) not in self._told:
            self._told.add(_run_key(run))
            log.warning("%s seed %d in %s was stored without the checkpoint's hash; taking it as made with %s",
                        run.method, run.seed, self.path, recorded)
        _with_identity(run, want.identity)

    def find(self, method: str, seed: int) -> RunResult | None:
        """A stored run of ``method`` and ``seed`` with this call's budget and identity."""
        want = self.wanted[method]
        shown, other = self.read()
        for run in shown + other:
            if run.method == method and run.seed == seed and run.max_steps == want.budget and identity_of(run) == want.identity:
                return run
        return None

    def _shown(self, run: RunResult, was_shown: bool, reference: Mapping[str, Any]) -> bool:
        want = self.wanted.get(run.method)
        if want is not None:
            return run.max_steps == want.budget and identity_of(run) == want.identity
        if not was_shown or not self._same_target(run):
            return False
        settings = (identity_of(run) or {}).get("settings", {})
        return all(settings[k] == reference[k] for k in settings.keys() & reference.keys())

    def write(self) -> list[RunResult]:
        """Merge this call's new runs into the file (same key: replaced) and write it; returns every stored run."""
        shown, other = self.read()
        was_shown = {_run_key(r) for r in shown}
        new = {_run_key(r) for r in self.fresh}
        pool = [r for r in shown + other if _run_key(r) not in new] + self.fresh
        # one run per identity (the last: another writer may have stored the same one); runs without identity all stay
        pool = list({(_run_key(r) if identity_of(r) is not None else id(r)): r for r in pool}.values())
        reference: dict[str, Any] = {}
        for want in self.wanted.values():
            reference.update(want.identity["settings"])
        keep, rest = [], []
        for run in pool:
            (keep if self._shown(run, _run_key(run) in was_shown, reference) else rest).append(run)
        order = {m: i for i, m in enumerate(dict.fromkeys([*(r.method for r in shown), *self.wanted, *(r.method for r in keep)]))}
        keep.sort(key=lambda r: (order[r.method], r.seed))
        task = self.task
        text = Comparison(task.name, task.metric, task.target, task.higher_is_better, keep, rest).dumps()
        if not self.path.is_file() or self.path.read_text() != text:
            write_text_atomic(self.path, text)
        return pool


def compare(
    task: str | Task,
    methods: Sequence[str | Method] = ("adam", "linefit+"),
    *,
    seeds: Sequence[int] | int = 3,
    max_steps: int | None = None,
    data_dir: str | os.PathLike | None = None,
    nino_checkpoint: str | os.PathLike | None = None,
    wnn_checkpoint: str | os.PathLike | None = None,
    stop_at_target: bool = True,
    progress: bool = True,
    json_path: str | os.PathLike | None = None,
    resume: bool = True,
    baseline_max_steps: int | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    **train_kwargs: Any,
) -> Comparison:
    """Train ``task`` with every method on every seed; return the :class:`Comparison` of these runs.

    ``seeds`` is a count (seeds ``0..n-1``) or a list. With ``json_path`` every finished run is
    merged into that file at once (written in one step), so a killed comparison loses only the run
    in progress. The file keeps every run stored before: a run with the same method, seed, budget
    and identity (:func:`run_identity`: checkpoint path and hash, settings) is replaced, all others
    stay. With ``resume`` such a stored run is reused instead of trained again. The returned
    comparison's ``runs`` are exactly the requested ones (its ``other_runs``: the rest of the file).

    ``baseline_max_steps`` lets the base optimizer alone (``adam``) train longer than the planned
    ``max_steps`` (which also sets the nowcasters' horizon schedule), so that its steps-to-target
    is measured even when it needs more than the planned length.
    """
    task = get_task(task)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    resolved = [resolve_method(m, nino_checkpoint=nino_checkpoint, wnn_checkpoint=wnn_checkpoint) for m in methods]
    comparison = Comparison(task.name, task.metric, task.target, task.higher_is_better)
    planned = task.max_steps if max_steps is None else int(max_steps)
    baseline_budget = planned if baseline_max_steps is None else int(baseline_max_steps)
    wanted: dict[str, _Wanted] = {}
    for method in resolved:
        identity = run_identity(task, method, planned=planned, stop_at_target=stop_at_target, **train_kwargs)
        defaults = run_identity(task, method, planned=planned)
        wanted[method.name] = _Wanted(planned if method.nowcasts else baseline_budget, identity, identity["settings"] == defaults["settings"])
    store = _ResultFile(json_path, task, wanted) if json_path is not None else None
    if store is not None:
        store.read()  # a file of another task is refused before anything is trained
    data = task.load_data(data_dir)
    for method in resolved:
        want = wanted[method.name]
        for seed in seed_list:
            run = store.find(method.name, seed) if store is not None and resume else None
            if run is not None:
                log.info("%s/%s seed %d: reusing the run stored in %s", task.name, method.name, seed, json_path)
            else:
                run = _sanitize(
                    train(task, method, seed=seed, max_steps=want.budget, data=data, stop_at_target=stop_at_target, progress=progress, **train_kwargs)
                )
                _with_identity(run, want.identity)
                if store is not None:
                    store.fresh.append(run)
                    store.write()
            comparison.runs.append(run)
            if on_run is not None:
                on_run(run)
    if store is not None:
        asked = {_run_key(r) for r in comparison.runs}
        comparison.other_runs = [r for r in store.write() if _run_key(r) not in asked]
    return comparison
