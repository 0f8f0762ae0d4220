"""``neuralgraph`` command line: convert a built-in example model, summarize it, verify it.

Errors are reported on one line (``--debug`` shows the traceback)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from . import registry
from .cli_args import ArgumentParser, add_debug_flag, int_range, plain, positive_int, run_main, seed
from .examples import EXAMPLES, build_example
from .verify import verify


def _inspect(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    model = build_example(args.model)
    start = time.perf_counter()
    graph = registry.convert(model, arch=args.arch, lpe=args.lpe)
    built = time.perf_counter() - start
    _ = graph.edge_index
    start = time.perf_counter()
    pos = graph.pos
    lpe_time = time.perf_counter() - start
    print(f"model '{args.model}' ({type(model).__name__}) -> converter '{graph.arch}'")
    print()
    print(graph.summary())
    if pos is not None:
        print(f"positional encodings: {tuple(pos.shape)} Laplacian eigenvectors ({lpe_time * 1e3:.1f} ms)")
    print(f"graph built in {built * 1e3:.1f} ms")
    if args.no_verify:
        return 0
    print()
    print(f"verifying against the model's outputs ({args.trials} trials, seed {args.seed}) ...")
    report = verify(model, graph, trials=args.trials, seed=args.seed)
    print(report)
    return 0 if report else 1


def _list(_: argparse.Namespace) -> int:
    print("converters:")
    for c in registry.converters():
        aliases = f" (aliases: {', '.join(c.aliases)})" if c.aliases else ""
        print(f"  {c.name}{aliases}: {c.description}")
    print("example models:", ", ".join(EXAMPLES))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``neuralgraph`` argument parser (abbreviated options are refused)."""
    parser = ArgumentParser(prog="neuralgraph", description=plain(__doc__), allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "inspect", help="convert an example model, print its node groups and verify it", allow_abbrev=False,
        description="Convert a built-in example model to its neural graph, print the node groups and verify the graph.",
    )
    p.add_argument("model", nargs="?", default="fm16", choices=sorted(EXAMPLES), help="example model (default fm16)")
    p.add_argument("--arch", default=None, help="converter to use (default: chosen automatically; see 'neuralgraph list')")
    p.add_argument("--lpe", type=int_range(0, 1024), default=8, help="positional-encoding columns, 0 for none (default 8)")
    p.add_argument("--trials", type=positive_int, default=8, help="good and bad permutations to try (default 8)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--no-verify", action="store_true", help="skip the verifier")
    add_debug_flag(p, top=False)
    p.set_defaults(run=_inspect)
    p = sub.add_parser("list", help="list registered converters and example models", allow_abbrev=False)
    add_debug_flag(p, top=False)
    p.set_defaults(run=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_main(args.run, args, prog=f"neuralgraph {args.command}", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
