"""Train a small GPT-2 on Tiny Shakespeare with the Hugging Face Trainer, with and without NiNo.

    pip install -e ".[hf]"
    python examples/hf_trainer.py --data ../shared/data/tinyshakespeare/input.txt --out nowcast_results

Both runs start from the same weights and see the same batches; the second adds
``nowcast.hf.NiNoCallback`` (one jump every ``--period`` optimizer steps). Characters are the
tokens (a vocabulary built here from the text: nothing is downloaded); the model is
``GPT2LMHeadModel(GPT2Config(...))`` from its configuration. The validation loss is measured every
``--eval-every`` steps on fixed windows of the last 10 % of the text.

Writes ``<out>/hf_trainer.json`` (settings, curves, steps to ``--target``, jump timings) and
``<out>/hf_trainer.png`` (both validation curves, the target, the jumps), and prints a summary.
Measured results: docs/results/hf_trainer.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", help="Tiny Shakespeare's input.txt, or the folder holding it (default: ../shared/data)")
    parser.add_argument("--out", default="nowcast_results", help="folder for hf_trainer.json / .png (default: nowcast_results)")
    parser.add_argument("--predictor", default="nino", help="what NiNoCallback nowcasts with: nino (the shipped checkpoint), linefit+, a checkpoint path")
    parser.add_argument("--steps", type=int, default=2500, help="optimizer steps per run (default 2500)")
    parser.add_argument("--period", type=int, default=500, help="steps between jumps (default 500: a state every 100 steps)")
    parser.add_argument("--target", type=float, default=2.0, help="validation loss (cross-entropy, nats per character) to reach")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", type=int, default=64, help="context length in characters")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", choices=("trainer", "nino"), help="run one of the two (default: both)")
    args = parser.parse_args(argv)
    for name in ("steps", "period", "eval_every", "batch", "block", "layers", "width", "heads", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not args.lr > 0 or not args.target > 0:
        parser.error("--lr and --target must be positive numbers")
    return args


def read_text(data: str | None) -> str:
    """Tiny Shakespeare's text from ``--data`` (a file or a folder with input.txt), or from the shared data folder."""
    if data is not None:
        path = Path(data)
        path = path / "input.txt" if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(
                f"hf_trainer.py: error: --data {data}: no Tiny Shakespeare text there (expected input.txt of "
                "karpathy/char-rnn, 1,115,394 characters). Pass the file or the folder holding it"
            )
        return path.read_text(encoding="utf-8")
    from nowcast.tasks.data import DataNotFoundError, find_dataset

    try:
        return (find_dataset("tinyshakespeare", ("input.txt",)) / "input.txt").read_text(encoding="utf-8")
    except DataNotFoundError as exc:
        raise SystemExit(f"hf_trainer.py: error: {exc}\nPass --data /path/to/tinyshakespeare/input.txt") from None


class Windows(torch.utils.data.Dataset):
    """Non-overlapping ``block``-character windows of a token tensor (input = labels: a causal LM)."""

    def __init__(self, ids: torch.Tensor, block: int, limit: int | None = None) -> None:
        count = len(ids) // block if limit is None else min(limit, len(ids) // block)
        self.rows = ids[: count * block].view(count, block)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def datasets(text: str, block: int) -> tuple[Windows, Windows, int]:
    chars = sorted(set(text))  # the tokenizer: one id per character
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return Windows(ids[:cut], block), Windows(ids[cut:], block, limit=64), len(chars)


def train_once(args: argparse.Namespace, name: str, data: tuple[Windows, Windows, int], out: Path) -> dict:
    """One Trainer run; returns its validation curve, timings and (with NiNo) the jumps."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from nowcast.hf import NiNoCallback

    train, val, vocab = data
    torch.manual_seed(args.seed)
    config = GPT2Config(vocab_size=vocab, n_positions=args.block, n_embd=args.width, n_layer=args.layers,
                        n_head=args.heads, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    callback = NiNoCallback(args.predictor, period=args.period) if name == "nino" else None
    settings = TrainingArguments(
        str(out / f"hf_trainer_{name}"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=64, learning_rate=args.lr, weight_decay=0.01, lr_scheduler_type="constant_with_warmup",
        warmup_steps=100, eval_strategy="steps", eval_steps=args.eval_every, eval_on_start=True, logging_steps=args.eval_every,
        save_strategy="no", report_to="none", use_cpu=True, seed=args.seed, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=settings, train_dataset=train, eval_dataset=val, callbacks=[callback] if callback else None)
    print(f"\n== {name}: GPT-2 {args.layers}x{args.width}, {sum(p.numel() for p in model.parameters()):,} parameters, {args.steps} steps")
    result = trainer.train()
    history = trainer.state.log_history
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in history if "eval_loss" in e]
    eval_seconds = sum(float(e["eval_runtime"]) for e in history if "eval_runtime" in e)
    run = {
        "name": name, "steps": [s for s, _ in evals], "val_loss": [v for _, v in evals],
        "train_runtime_s": float(result.metrics["train_runtime"]), "eval_runtime_s": eval_seconds,
        "reached": next((s for s, v in evals if v <= args.target), None),
    }
    if callback is not None:
        run["callback_s"] = callback.seconds
        run["jumps"] = callback.jump_log
    return run


def summarize(args: argparse.Namespace, runs: list[dict]) -> list[str]:
    lines = [f"target: validation loss <= {args.target} (eval every {args.eval_every} steps, {args.steps} steps planned)"]
    for run in runs:
        training = run["train_runtime_s"] - run["eval_runtime_s"]
        reached = run["reached"] if run["reached"] is not None else "not reached"
        lines.append(f"{run['name']:8s} steps to target: {reached}; best val loss {min(run['val_loss']):.4f}; "
                     f"training {training:.1f} s (+ {run['eval_runtime_s']:.1f} s evaluation)")
        if "jumps" in run:
            seconds = [j["nino_seconds"] for j in run["jumps"]]
            share = run["callback_s"] / training if training > 0 else float("nan")
            lines.append(f"         {len(seconds)} jumps, {sum(seconds) / max(len(seconds), 1):.2f} s per jump; all callback work "
                         f"{run['callback_s']:.1f} s = {100 * share:.1f} % of the training time")
            for j in run["jumps"]:
                lines.append(f"         step {int(j['step'])}: k={int(j['nino_k'])}, {j['nino_seconds']:.2f} s, loss on the last "
                             f"batch {j.get('nino_loss_before', float('nan')):.4f} -> {j.get('nino_loss_after', float('nan')):.4f}")
    if len(runs) == 2 and all(r["reached"] for r in runs):
        base, nino = runs[0]["reached"], runs[1]["reached"]
        lines.append(f"steps to target: Trainer {base}, Trainer + NiNo {nino} ({100 * (base - nino) / base:+.1f} % fewer with NiNo)")
    return lines


def plot(args: argparse.Namespace, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = {"trainer": "Trainer (AdamW)", "nino": f"Trainer + NiNoCallback({args.predictor!r})"}
    for run in runs:
        line, = ax.plot(run["steps"], run["val_loss"], label=labels[run["name"]])
        if run["reached"] is not None:
            ax.axvline(run["reached"], color=line.get_color(), linestyle=":", linewidth=1)
        for j in run.get("jumps", []):
            ax.plot([j["step"]], [run["val_loss"][run["steps"].index(int(j["step"]))]] if int(j["step"]) in run["steps"] else [],
                    marker="v", color=line.get_color())
    ax.axhline(args.target, color="gray", linestyle="--", linewidth=1, label=f"target {args.target}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (nats / character)")
    ax.set_ylim(top=min(4.5, max(max(r["val_loss"]) for r in runs)))
    ax.set_title(f"GPT-2 {args.layers}x{args.width} on Tiny Shakespeare; jumps every {args.period} steps (▼)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = datasets(read_text(args.data), args.block)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    names = [args.only] if args.only else ["trainer", "nino"]
    runs = [train_once(args, name, data, out) for name in names]
    lines = summarize(args, runs)
    record = {"settings": vars(args), "runs": runs, "summary": lines, "wall_s": time.perf_counter() - started}
    (out / "hf_trainer.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    plot(args, runs, out / "hf_trainer.png")
    print("\n".join(["", *lines, f"wrote {out / 'hf_trainer.json'} and {out / 'hf_trainer.png'}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
