"""``neuralgraph`` command line: convert a built-in example model, summarize it, verify it."""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from . import registry
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuralgraph", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="convert an example model, print its node groups and verify it")
    p.add_argument("model", nargs="?", default="fm16", choices=sorted(EXAMPLES), help="example model (default fm16)")
    p.add_argument("--arch", default=None, help="converter to use (default: chosen automatically)")
    p.add_argument("--lpe", type=int, default=8, help="positional-encoding columns (default 8)")
    p.add_argument("--trials", type=int, default=8, help="good and bad permutations to try (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-verify", action="store_true", help="skip the verifier")
    p.set_defaults(run=_inspect)
    p = sub.add_parser("list", help="list registered converters and example models")
    p.set_defaults(run=_list)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except Exception as err:  # command-line tool: say what went wrong, no traceback
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
