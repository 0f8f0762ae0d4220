"""Steps-to-target comparison of training methods over seeds (the paper's Table 2 quantities).

:func:`compare` runs every method on every seed, :class:`Comparison` holds the runs and gives
the median steps-to-target per method, the reduction relative to the base optimizer
(``100 * (1 - method / adam)``), a printable table, a JSON document and the curves plot.
A run that never reaches the target counts as not reached (None); a median over seeds counts
those as infinitely slow, so a method that misses the target on most seeds has no median.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .methods import Method, resolve_method
from .tasks import Task, get_task
from .training import RunResult, train

__all__ = ["Comparison", "compare", "median_steps"]

log = logging.getLogger(__name__)
BASELINE = "adam"


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
    """Runs of several methods on one task."""

    task: str
    metric: str
    target: float
    higher_is_better: bool
    runs: list[RunResult] = field(default_factory=list)

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
            "methods": self.summary(),
            "runs": [r.to_dict() for r in self.runs],
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False, default=_json_default))
        tmp.replace(path)
        return path

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> Comparison:
        d = json.loads(Path(path).read_text())
        runs = [RunResult.from_dict(r) for r in d.get("runs", [])]
        return cls(d["task"], d["metric"], d["target"], d["higher_is_better"], runs)

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
        fig.savefig(path)
        fig.savefig(path.with_suffix(".pdf"))
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
    """Train ``task`` with every method on every seed; return the :class:`Comparison`.

    ``seeds`` is a count (seeds ``0..n-1``) or a list. With ``json_path`` the JSON is rewritten
    after every run, and (``resume``) runs already in an existing file for the same task, method,
    seed and ``max_steps`` are reused instead of trained again.

    ``baseline_max_steps`` lets the base optimizer alone (``adam``) train longer than the planned
    ``max_steps`` (which also sets the nowcasters' horizon schedule), so that its steps-to-target
    is measured even when it needs more than the planned length.
    """
    task = get_task(task)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    resolved = [resolve_method(m, nino_checkpoint=nino_checkpoint, wnn_checkpoint=wnn_checkpoint) for m in methods]
    comparison = Comparison(task.name, task.metric, task.target, task.higher_is_better)
    done: dict[tuple[str, int], RunResult] = {}
    planned = task.max_steps if max_steps is None else int(max_steps)
    baseline_budget = planned if baseline_max_steps is None else int(baseline_max_steps)
    if json_path is not None and resume and Path(json_path).is_file():
        try:
            old = Comparison.load_json(json_path)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("ignoring unreadable %s: %s", json_path, err)
        else:
            if old.task == task.name and old.target == task.target:
                done = {
                    (r.method, r.seed): r
                    for r in old.runs
                    if r.max_steps == (baseline_budget if r.method == BASELINE else planned)
                }
    data = task.load_data(data_dir)
    for method in resolved:
        for seed in seed_list:
            run = done.get((method.name, seed))
            if run is not None:
                log.info("%s/%s seed %d: reusing the run stored in %s", task.name, method.name, seed, json_path)
            else:
                budget = planned if method.nowcasts else baseline_budget
                run = _sanitize(
                    train(task, method, seed=seed, max_steps=budget, data=data, stop_at_target=stop_at_target, progress=progress, **train_kwargs)
                )
            comparison.runs.append(run)
            if on_run is not None:
                on_run(run)
            if json_path is not None:
                comparison.save_json(json_path)
    return comparison
