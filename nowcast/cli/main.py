"""The ``nowcast`` command line: ``step`` (:mod:`nowcast.cli.step`), ``compare`` and ``tasks``
(:mod:`nowcast.cli.compare`), ``collect``, ``metatrain``, ``build-checkpoint`` and ``model-card``
(:mod:`nowcast.cli.metatrain`). Counts, numbers and paths are checked while parsing (see
:mod:`neuralgraph.cli_args`); errors are reported on one line, ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from neuralgraph.cli_args import ArgumentParser, add_debug_flag, run_main

from .compare import add_parsers as add_compare_parsers
from .metatrain import add_parsers as add_metatrain_parsers
from .step import add_parser as add_step_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``nowcast`` argument parser with every sub-command (abbreviated options are refused)."""
    parser = ArgumentParser(
        prog="nowcast", allow_abbrev=False,
        description="NiNo parameter nowcasting: jump saved checkpoints (step), compare methods on tasks (compare, tasks), "
        "build NiNo checkpoints (collect, metatrain, build-checkpoint, model-card). Errors are reported on one line; "
        "--debug shows the traceback.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_step_parser(sub)
    add_compare_parsers(sub)
    add_metatrain_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_main(args.run, args, prog=f"nowcast {args.command}", debug=args.debug, kept=getattr(args, "kept", None))


if __name__ == "__main__":
    sys.exit(main())
