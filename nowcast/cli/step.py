"""``nowcast step``: jump saved checkpoints offline. It predicts future parameters from the last
``ctx`` checkpoints or stacked states and writes them in the input's format
(:data:`STEP_DESCRIPTION` is its ``--help``)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

import neuralgraph
from neuralgraph.cli_args import (
    add_debug_flag,
    existing_path,
    int_range,
    nonnegative_int,
    positive_int,
    torch_device,
)
from neuralgraph.params import all_finite

from ..nowcasters import resolve
from ..optim import horizon_schedule
from ..predict import predict
from ..safe_load import load_torch_file

__all__ = ["STEP_DESCRIPTION", "InputError", "add_parser"]

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
STATE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class InputError(ValueError):
    """Inputs that are missing, malformed or incompatible with each other."""


# ------------------------------------------------------------------------------ checkpoints
def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _natural_key(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


def _checkpoint_dirs(inputs: list[Path]) -> list[Path]:
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path} does not exist")
    if len(inputs) == 1 and inputs[0].is_dir() and not _is_checkpoint(inputs[0]):
        found = sorted((d for d in inputs[0].iterdir() if _is_checkpoint(d)), key=_natural_key)
        if not found:
            raise InputError(
                f"{inputs[0]} holds no checkpoints: expected sub-directories written by save_pretrained "
                "(each with config.json and model.safetensors or pytorch_model.bin)"
            )
        return found
    for path in inputs:
        if not _is_checkpoint(path):
            raise InputError(f"{path} is not a save_pretrained checkpoint directory (no config.json)")
    return inputs


def _load_hf(directory: Path):
    """The model saved in ``directory``, with its weights, offline."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - transformers is a test dependency
        raise InputError("reading save_pretrained checkpoints needs the 'transformers' package") from exc
    transformers.utils.logging.disable_progress_bar()
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise InputError(f"{directory} has no weights ({' / '.join(WEIGHT_FILES)})")
    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # transformers raises several types for a bad config
        raise InputError(f"cannot read {directory / 'config.json'}: {exc}") from exc
    names = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, names[0], None) if names else None
    if cls is None:
        cls = transformers.AutoModelForCausalLM
    try:
        model, info = cls.from_pretrained(directory, local_files_only=True, output_loading_info=True)
    except Exception as exc:
        raise InputError(f"cannot load the checkpoint in {directory}: {exc}") from exc
    problems = {key: info.get(key) for key in ("missing_keys", "mismatched_keys") if info.get(key)}
    if problems:
        detail = "; ".join(f"{key}: {sorted(map(str, value))[:5]}" for key, value in problems.items())
        raise InputError(f"{directory} does not hold all weights of its {type(model).__name__} ({detail})")
    return model


def _layout(model) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def _read_checkpoints(dirs: list[Path], ctx: int):
    if len(dirs) < ctx:
        raise InputError(f"need at least ctx={ctx} checkpoints, found {len(dirs)}: {', '.join(map(str, dirs))}")
    dirs = dirs[-ctx:]
    states, model, layout = [], None, None
    for directory in dirs:
        model = _load_hf(directory)
        here = _layout(model)
        if layout is None:
            layout = here
        elif here != layout:
            diff = next((f"{a} vs {b}" for a, b in zip(layout, here) if a != b), f"{len(layout)} vs {len(here)} tensors")
            raise InputError(f"{directory} is incompatible with {dirs[0]}: parameters differ ({diff})")
        states.append(neuralgraph.flatten_params(model))
        log.info("read %s (%d parameters)", directory, states[-1].numel())
    return dirs, model, torch.stack(states, dim=1)


def _write_checkpoint(model, theta: torch.Tensor, source: Path, out: Path) -> None:
    neuralgraph.load_params(model, theta.to(next(model.parameters()).dtype))
    model.save_pretrained(out, safe_serialization=True)
    weight_like = set(WEIGHT_FILES)
    for item in source.iterdir():
        if item.is_file() and item.name not in weight_like and not (out / item.name).exists():
            if item.name.startswith(("model-", "pytorch_model-")) or item.suffix in (".safetensors", ".bin", ".pt", ".pth"):
                continue
            shutil.copy2(item, out / item.name)


# ------------------------------------------------------------------------------ states files
def _read_states_file(path: Path) -> tuple[dict[str, Any], dict[str, str] | None]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return dict(load_file(str(path))), meta
    blob = load_torch_file(path, "torch file of stacked states", InputError)
    if isinstance(blob, torch.Tensor):
        blob = {"states": blob}
    if not isinstance(blob, dict):
        raise InputError(f"{path} holds a {type(blob).__name__}; expected a dict with 'states' [P, T]")
    return blob, None


def _graph_from_spec(blob: dict[str, Any], meta: dict[str, str] | None, config_path: Path | None, arch: str | None):
    if config_path is not None:
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(config_path, local_files_only=True)
        except Exception as exc:
            raise InputError(f"cannot read the Hugging Face config {config_path}: {exc}") from exc
        names = list(getattr(config, "architectures", None) or [])
        cls = getattr(transformers, names[0], None) if names else None
        cls = cls or transformers.AutoModelForCausalLM
        with torch.device("meta"):
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
        return neuralgraph.convert(model, arch=arch)
    params = blob.get("params")
    spec_arch = arch or blob.get("arch")
    spec_config = blob.get("config")
    if meta is not None:
        params = json.loads(meta["params"]) if "params" in meta else params
        spec_arch = arch or meta.get("arch")
        spec_config = json.loads(meta["config"]) if "config" in meta else spec_config
    if params is None or spec_arch is None:
        return None
    pairs = [(str(name), tuple(int(s) for s in shape)) for name, shape in params]
    return neuralgraph.convert(pairs, arch=spec_arch, config=spec_config)


def _write_states_file(path: Path, blob: dict[str, Any], meta: dict[str, str] | None, theta: torch.Tensor, info: dict) -> None:
    out = dict(blob)
    out["states"] = theta.unsqueeze(1).contiguous()
    if meta is not None or path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {key: value.contiguous() for key, value in out.items() if isinstance(value, torch.Tensor)}
        save_file(tensors, str(path), metadata={**(meta or {}), "nowcast": json.dumps(info)})
    else:
        out["nowcast"] = info
        torch.save(out, path)


# ------------------------------------------------------------------------------ the step command
def _resolve_k(args: argparse.Namespace, seq_len: int) -> int:
    if args.k is not None:
        return args.k
    if args.step is None or args.max_train_steps is None:
        raise InputError("give the horizon with --k, or --step and --max-train-steps (and --period) to use the schedule")
    if args.max_train_steps // args.period > MAX_JUMPS:
        raise InputError(
            f"--max-train-steps {args.max_train_steps} with --period {args.period} makes {args.max_train_steps // args.period:,} jumps; "
            f"at most {MAX_JUMPS:,} are accepted (check both numbers)"
        )
    schedule = horizon_schedule(args.max_train_steps, args.period, seq_len)
    return schedule[min(args.step // args.period, len(schedule) - 1)]


def _step(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite and (out.is_file() or any(out.iterdir())):
        raise InputError(f"{out} exists; choose another --out or pass --overwrite")
    blocked = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise InputError(f"cannot write {out}: {blocked} is a file, not a folder")
    # every form nowcast.resolve accepts: linefit, linefit+, nino, wnn+, nino@PATH, a checkpoint file or folder
    predictor = resolve(args.predictor, device=args.device)
    fixed = getattr(predictor, "ctx", None)
    if args.ctx is not None and fixed is not None and args.ctx != fixed:
        raise InputError(f"predictor {predictor.name} reads ctx={fixed} states, not --ctx {args.ctx}")
    ctx = fixed or args.ctx or 5
    k = _resolve_k(args, int(getattr(predictor, "seq_len", 40)))
    lr_interval = args.lr_interval
    if lr_interval is not None and not 0 < lr_interval < float("inf"):
        raise InputError(f"--lr-interval must be a positive number, got {lr_interval}")
    if getattr(predictor, "uses_lr_interval", False) and lr_interval is None:
        raise InputError(
            f"{args.predictor} is conditioned on the training regime: pass --lr-interval, the learning rate times "
            "the steps between two input checkpoints (e.g. 1e-3 x 200 = 0.2)"
        )
    inputs = [Path(p) for p in args.inputs]

    if len(inputs) == 1 and inputs[0].is_file():
        if inputs[0].suffix not in STATE_SUFFIXES:
            raise InputError(f"{inputs[0]}: a states file must end in {', '.join(STATE_SUFFIXES)}")
        blob, meta = _read_states_file(inputs[0])
        states = blob.get("states")
        if not isinstance(states, torch.Tensor) or states.ndim != 2 or not states.is_floating_point():
            raise InputError(f"{inputs[0]}: 'states' must be a floating-point [P, T] tensor")
        if states.shape[1] < ctx:
            raise InputError(f"{inputs[0]} holds {states.shape[1]} states; need at least ctx={ctx}")
        graph = None
        if predictor.needs_graph or args.per_block:
            graph = _graph_from_spec(blob, meta, Path(args.config) if args.config else None, args.arch)
            if graph is None:
                raise InputError(
                    f"predictor {predictor.name} needs the network's graph: store 'params' ((name, shape) list) and "
                    "'arch' in the states file, or pass --config with a Hugging Face config"
                )
            if graph.num_params != states.shape[0]:
                raise InputError(f"{inputs[0]} has {states.shape[0]} parameters per state, its network has {graph.num_params}")
        theta = predict(graph, states[:, -ctx:], k, predictor, per_block=args.per_block, lr_interval=lr_interval)
        source = str(inputs[0])
        info = {"predictor": predictor.name, "k": k, "source": source}
        if not all_finite(theta):
            raise InputError(f"the {predictor.name} prediction contains NaN/Inf; nothing written")
        if out.suffix != inputs[0].suffix:
            log.warning("writing %s in the input's format (%s)", out, inputs[0].suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_states_file(out, blob, meta, theta, info)
    else:
        dirs, model, states = _read_checkpoints(_checkpoint_dirs(inputs), ctx)
        graph = neuralgraph.convert(model) if (predictor.needs_graph or args.per_block) else None
        theta = predict(graph, states, k, predictor, per_block=args.per_block, lr_interval=lr_interval)
        if not all_finite(theta):
            raise InputError(f"the {predictor.name} prediction contains NaN/Inf; nothing written")
        _write_checkpoint(model, theta, dirs[-1], out)
        source = ", ".join(str(d) for d in dirs)
    print(f"{predictor.name} k={k}: predicted {theta.numel()} parameters from {source}")
    print(f"wrote {out}")
    return 0


STEP_DESCRIPTION = """\
Predict future parameters from saved checkpoints and write them, offline.

    nowcast step CHECKPOINTS... --predictor P (--k K | --step S --max-train-steps N) --out OUT

Inputs (oldest first; the last ctx states are used):

- a directory whose sub-directories are save_pretrained checkpoints (config.json plus
  model.safetensors or pytorch_model.bin, sharded or not), ordered by the numbers in their
  names (checkpoint-200, checkpoint-400, ...); or several such checkpoint directories, in the
  order given. The output is a new save_pretrained directory (config and safetensors, plus the
  other small files of the last checkpoint, such as tokenizer files).
- a file of stacked states (.pt or .pth, read with weights_only=True, or .safetensors) holding
  'states' [P, T] (column t = state t, oldest first), and for predictors that need the graph
  either 'params' (a list of (name, shape)) with 'arch' (a registered converter) and optionally
  'config' (a dict), or --config pointing at a Hugging Face config. The output has the same
  format with 'states' [P, 1] = the prediction.

Predictors: linefit, linefit+, nino or wnn+ (their default checkpoints), nino@PATH, or a NiNo /
WNN+ checkpoint (a published .pt file, a folder written by nowcast.save, or a regime-router
folder such as checkpoints/nino-cpu-routed).
"""

MAX_JUMPS = 1_000_000
"""Most jumps a horizon schedule may have (--max-train-steps / --period); more is a typo."""


def _kept_step(args: argparse.Namespace) -> str:
    return f"{args.out} is written last: unless it was reported as written, rerun the command (with --overwrite if it exists)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``step`` on the ``nowcast`` command line."""
    p = sub.add_parser(
        "step",
        help="predict future parameters from the last ctx checkpoints and write them",
        description=STEP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("inputs", nargs="+", help="a directory of checkpoint sub-directories, several checkpoint directories, or a states file")
    p.add_argument("--out", required=True, help="output directory (checkpoints) or file (states)")
    p.add_argument("--predictor", required=True, help="'linefit', 'linefit+', 'nino', 'wnn+', nino@PATH, or a NiNo / WNN+ / routed checkpoint path")
    p.add_argument("--k", type=positive_int, default=None, help="horizon in state intervals (the spacing of the inputs)")
    p.add_argument("--step", type=nonnegative_int, default=None, help="training step of the last input (to use the horizon schedule)")
    p.add_argument("--max-train-steps", type=positive_int, default=None, help="planned training length (horizon schedule)")
    p.add_argument("--period", type=positive_int, default=1000, help="steps between jumps (horizon schedule, default 1000)")
    p.add_argument("--ctx", type=int_range(2), default=None, help="states used by the baselines (default 5; NiNo models fix their own)")
    p.add_argument("--per-block", action="store_true", help="predict one transformer block at a time")
    p.add_argument(
        "--lr-interval", type=float, default=None,
        help="learning rate x steps between two inputs, a number > 0 (required by regime-routed checkpoints)",
    )
    p.add_argument("--config", type=existing_path, default=None, help="Hugging Face config (dir or config.json) describing a states file's network")
    p.add_argument("--arch", default=None, help="converter name for the graph (default: chosen automatically)")
    p.add_argument("--device", type=torch_device, default=None, help="device for the NiNo model (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out")
    add_debug_flag(p, top=False)
    p.set_defaults(run=_step, kept=_kept_step)
