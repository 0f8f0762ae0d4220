"""``analysis`` command line: the symmetry experiment, graph drawings, trajectory PCA.

    analysis symmetry --arch gpt2 --width 16 --heads 4 [--kv-heads N] [--n 1000] [--seed 0] [--out DIR]
    analysis draw MODEL --kind adjacency|graph|lpe [--out DIR]
    analysis pca [--steps 600] [--period 100] [--checkpoint PATH] [--embed] [--out DIR]

Every command prints a small table and the paths of the PNG and PDF figures it wrote. Errors are
reported on one line; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import neuralgraph
import nowcast
from neuralgraph import edge_types as et
from neuralgraph import registry
from neuralgraph.cli_args import (
    ArgumentParser,
    add_debug_flag,
    existing_path,
    int_range,
    output_dir,
    plain,
    positive_float,
    positive_int,
    run_main,
    seed,
)
from neuralgraph.examples import EXAMPLES, FMConvNet

from . import draw
from . import trajectories as tr
from .draw import GraphvizNotFoundError
from .symmetry import symmetry_experiment

DEFAULT_OUT = "analysis_figures"


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    print("\n".join(lines))


def _print_figure(figure: Any) -> None:
    for path in getattr(figure, "paths", (figure,)):
        print(f"wrote {path}")


# ------------------------------------------------------------------------------------ symmetry
def _symmetry(args: argparse.Namespace) -> int:
    result = symmetry_experiment(
        args.arch, width=args.width, heads=args.heads, kv_heads=args.kv_heads, n=args.n, seed=args.seed,
        out_dir=args.out,
    )
    print(result.table())
    figure = getattr(result, "figure", None)
    if figure is not None:
        figure = Path(figure)
        print(f"wrote {figure}")
        for sibling in (figure.with_suffix(".png"), figure.with_suffix(".pdf")):
            if sibling != figure and sibling.exists():
                print(f"wrote {sibling}")
    return 0


# ------------------------------------------------------------------------------------ draw
def _example_graph(name: str, seed: int, naive: bool):
    """The graph of a built-in example model or of a registered converter's random example."""
    import random

    import torch

    torch.manual_seed(seed)
    if name in EXAMPLES:
        return registry.convert(EXAMPLES[name](), naive=naive)
    converter = registry.get_converter(name)  # raises, listing what is supported
    if converter.example is None:
        with_examples = [c.name for c in registry.converters() if c.example is not None]
        raise ValueError(
            f"converter '{converter.name}' has no registered example model; choose one of "
            f"{', '.join([*EXAMPLES, *with_examples])}"
        )
    model = converter.example(random.Random(seed))
    return registry.convert(model, arch=converter.name, naive=naive)


def _draw(args: argparse.Namespace) -> int:
    graph = _example_graph(args.model, args.seed, args.naive)
    out = Path(args.out) / f"{args.model}{'_naive' if args.naive else ''}_{args.kind}"
    cap = {} if args.max_nodes is None else {"max_nodes": args.max_nodes}
    start = time.perf_counter()
    if args.kind == "adjacency":
        figure = draw.draw_adjacency(graph, out, **cap)
    elif args.kind == "graph":
        figure = draw.draw_graph(graph, out, prog=args.prog, **cap)
    else:
        figure = draw.draw_lpe(graph, out, seed=args.seed, **cap)
    took = time.perf_counter() - start
    print(f"model '{args.model}' -> {graph.arch} graph: {graph.num_nodes} nodes, {graph.num_edges} edges, "
          f"{graph.num_params} parameters")

    rows = [("edge type", "id", "edges")]
    rows += [(et.name(t), str(t), str(n)) for t, n in graph.edge_type_counts().items()]
    _print_table(rows)
    details = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figure.info.items() if k != "edge_types"
    )
    print(f"{args.kind} drawing ({details}) in {took:.1f} s")
    _print_figure(figure)
    return 0


# ------------------------------------------------------------------------------------ pca
def _digits(seed: int):
    """scikit-learn's 8x8 digits as float tensors: (x_train, y_train, x_val, y_val)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    x, y = x[order], y[order]
    x = (x - x.mean()) / x.std()
    split = int(0.8 * len(y))
    return x[:split], y[:split], x[split:], y[split:]


def _train(model, optimizer, data, steps: int, batch: int, seed: int, recorder) -> tuple[float, float]:
    """Train with cross-entropy on the same batches for every run; returns (last loss, val accuracy)."""
    import torch
    import torch.nn.functional as F

    x_train, y_train, x_val, y_val = data
    gen = torch.Generator().manual_seed(seed)
    recorder.record(0, model)
    loss_value = float("nan")
    for step in range(1, steps + 1):
        idx = torch.randint(len(y_train), (batch,), generator=gen)
        optimizer.zero_grad()
        if getattr(optimizer, "need_grads", True):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            loss_value = float(loss.detach())
        optimizer.step()
        recorder(step, model, optimizer, loss=loss_value)
    with torch.no_grad():
        accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
    return loss_value, accuracy


def _random_nino(seed: int, hid: int = 32):
    """A random NiNo GNN with PyTorch's default layer initialisation: the published init
    (N(0, 0.02)) gives embeddings of order 1e-7, too small to look at."""
    import torch

    torch.manual_seed(seed)
    model = nowcast.NiNoModel(nowcast.NiNoConfig(hid=hid, wte_pos_enc=False))
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model.eval()


def _checkpoint_model(predictor: Any, args: argparse.Namespace):
    """The NiNoModel of ``--checkpoint`` whose graph embeddings ``--embed`` plots (for a regime
    router, the expert of this run's regime: Adam lr x period / ctx)."""
    if hasattr(predictor, "expert"):  # nowcast.RegimeRouter
        predictor = predictor.expert(args.lr * args.period / predictor.ctx)
    model = getattr(predictor, "model", None)
    if model is None:
        raise ValueError(f"--embed needs a NiNo / WNN+ model, and {args.checkpoint} gives {predictor.name}")
    return model


def _pca(args: argparse.Namespace) -> int:
    import copy

    import torch

    if args.period % 5:
        raise ValueError(f"--period must be a multiple of ctx=5, got {args.period}")
    if args.threads:
        torch.set_num_threads(args.threads)  # tiny models: more threads only add synchronisation
    torch.manual_seed(args.seed)
    data = _digits(args.seed)
    channels = {"fm16": (16, 32, 32), "fm32": (32, 64, 64)}[args.model]
    initial = FMConvNet(channels)
    # the checkpoint is read (and the embedding model chosen) before any training, so a bad one fails at once
    predictor = nowcast.resolve(args.checkpoint if args.checkpoint else args.predictor)
    meta = _checkpoint_model(predictor, args) if args.embed and args.checkpoint else None
    label = f"Adam + {Path(args.checkpoint).stem if args.checkpoint else args.predictor}"
    rows = [("run", "snapshots", "jumps", "last loss", "val acc")]
    runs = []
    start = time.perf_counter()
    for name in ("Adam", label):
        model = copy.deepcopy(initial)
        opt: Any = torch.optim.Adam(model.parameters(), lr=args.lr)
        if name != "Adam":
            opt = nowcast.NiNo(opt, model, predictor, period=args.period, max_train_steps=args.steps)
        rec = tr.TrajectoryRecorder(name, every=args.every)
        loss, acc = _train(model, opt, data, args.steps, args.batch, args.seed, rec)
        runs.append(rec.trajectory())
        rows.append((name, str(len(rec)), str(len(rec.jump_steps)), f"{loss:.4f}", f"{100 * acc:.1f}%"))
    took = time.perf_counter() - start
    out = Path(args.out)
    figure = tr.plot_trajectories(
        runs, out / "pca_trajectories", baseline="Adam",
        title=f"FM/{channels[0]}-style convnet on digits 8x8: {args.steps} steps",
    )
    print(f"{args.steps} steps of {args.model} on scikit-learn digits (8x8), Adam lr {args.lr}, nowcast period "
          f"{args.period}, snapshots every {args.every} steps ({took:.1f} s)")
    _print_table(rows)
    ratio = figure.info["explained_variance_ratio"]
    print(f"PCA fitted on Adam: PC1 {100 * ratio[0]:.1f}%, PC2 {100 * ratio[1]:.1f}% of its variance")
    _print_figure(figure)
    if args.embed:
        graph = neuralgraph.convert(initial)
        if meta is None:
            meta = _random_nino(args.seed)
        windows = len(runs[0]) - meta.config.ctx + 1
        stride = max(1, -(-windows // 60))  # about 60 windows per run
        embeddings = [tr.embedding_trajectory(meta, graph, run, stride=stride) for run in runs]
        kind = f"checkpoint {Path(args.checkpoint).name}" if args.checkpoint else "random NiNo (hid 32)"
        figure = tr.plot_embeddings(embeddings, out / "pca_embeddings", baseline="Adam",
                                    title=f"graph embeddings, {kind}")
        print(f"graph embeddings of {len(embeddings[0])} windows per run ({kind})")
        _print_figure(figure)
    return 0


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    """The ``analysis`` argument parser (abbreviated options are refused)."""
    parser = ArgumentParser(
        prog="analysis", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "symmetry", help="good vs bad neuron permutations: graph-embedding separability (naive vs correct graph)",
        allow_abbrev=False,
    )
    p.add_argument("--arch", default="gpt2", help="attention architecture (default gpt2)")
    p.add_argument("--width", type=positive_int, default=16, help="model width (default 16)")
    p.add_argument("--heads", type=positive_int, default=4, help="attention heads (default 4)")
    p.add_argument("--kv-heads", type=positive_int, default=None, help="key/value heads (grouped-query attention)")
    p.add_argument("--n", type=int_range(2), default=1000, help="permuted models per class, at least 2 (default 1000)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=output_dir, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    add_debug_flag(p, top=False)
    p.set_defaults(run=_symmetry)

    p = sub.add_parser("draw", help="draw an example model's neural graph", allow_abbrev=False)
    p.add_argument("model", help="an example model (fm16, fm32, mlp) or a converter with an example (gpt2, llama, ...)")
    p.add_argument("--kind", choices=("adjacency", "graph", "lpe"), default="adjacency",
                   help="adjacency matrix, graphviz drawing, or t-SNE of positional encodings (default adjacency)")
    p.add_argument("--naive", action="store_true", help="the naive graph (attention models)")
    p.add_argument("--prog", default="dot", help="graphviz layout program for --kind graph (default dot)")
    p.add_argument("--max-nodes", type=positive_int, default=None,
                   help="node cap, at least 1 (defaults: adjacency 2000 (cropped), graph 600 (error), lpe 3000 (sampled))")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=output_dir, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    add_debug_flag(p, top=False)
    p.set_defaults(run=_draw)

    p = sub.add_parser(
        "pca", help="train a small convnet with Adam and with nowcasting, plot both trajectories' PCA", allow_abbrev=False,
    )
    p.add_argument("--model", choices=("fm16", "fm32"), default="fm16", help="convnet channels (default fm16)")
    p.add_argument("--steps", type=positive_int, default=600, help="training steps (default 600)")
    p.add_argument("--period", type=positive_int, default=100, help="steps between nowcast jumps, a multiple of 5 (default 100)")
    p.add_argument("--every", type=positive_int, default=5, help="snapshot interval in steps (default 5)")
    p.add_argument("--lr", type=positive_float, default=6e-3, help="Adam learning rate (default 6e-3, the paper's FM setting)")
    p.add_argument("--batch", type=positive_int, default=128, help="batch size (default 128)")
    p.add_argument("--predictor", choices=("linefit", "linefit+"), default="linefit+",
                   help="nowcasting baseline when no --checkpoint is given (default linefit+)")
    p.add_argument("--checkpoint", type=existing_path, default=None, help="a NiNo / WNN+ checkpoint to nowcast with instead")
    p.add_argument("--embed", action="store_true",
                   help="also plot graph embeddings (the checkpoint's model, or a random NiNo)")
    p.add_argument("--threads", type=int_range(0, 1024), default=1,
                   help="torch CPU threads (default 1: fastest for these tiny models; 0 keeps torch's setting)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=output_dir, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    add_debug_flag(p, top=False)
    p.set_defaults(run=_pca)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    return run_main(args.run, args, prog=f"analysis {args.command}", debug=args.debug, expected=(GraphvizNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
