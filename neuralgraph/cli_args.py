"""Shared pieces of the project's command lines (``neuralgraph``, ``nowcast``, ``analysis`` and the
scripts in ``benchmarks/``): an argument parser that refuses abbreviated options and reports
errors on one line, argparse ``type=`` checks for counts, numbers and paths, and :func:`run_main`,
which turns expected errors and Ctrl-C into a one-line message and an exit status.

Every check here runs while the command line is parsed, so bad input is refused before any work
starts, with a message that says what was given and what is accepted.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import NeuralGraphError

__all__ = [
    "ArgumentParser",
    "EXPECTED_ERRORS",
    "add_debug_flag",
    "comma_list",
    "existing_dir",
    "existing_file",
    "existing_path",
    "int_range",
    "nonnegative_float",
    "nonnegative_int",
    "output_dir",
    "plain",
    "positive_float",
    "positive_int",
    "run_main",
    "seed",
    "thread_count",
    "torch_device",
]

EXIT_ERROR = 2
"""Exit status for bad input and other expected errors (argparse uses it too)."""
EXIT_UNEXPECTED = 1
"""Exit status for an error the command did not expect (a bug, or a failure outside its control)."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, what shells report)."""

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, NeuralGraphError)
"""Errors a command raises on purpose for bad input or missing files; they are reported on one
line without a traceback. ``nowcast``'s input and checkpoint errors and missing datasets are
subclasses of these (``ValueError`` and ``FileNotFoundError``)."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with prefix abbreviations off (``--seed`` is never taken for
    ``--seeds``) and errors on one line: ``PROG: error: MESSAGE (see PROG --help)``, exit status 2.

    Sub-parsers made with ``add_subparsers().add_parser`` are of this class too.
    """

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """Parse like argparse, but name an unknown ``--option`` first (argparse may instead
        complain about the value after it, taken for a positional argument)."""
        argv = sys.argv[1:] if args is None else list(args)
        known = _long_options(self)
        for token in argv:
            if token == "--":
                break
            if token.startswith("--") and token.split("=", 1)[0] not in known:
                name = token.split("=", 1)[0]
                close = sorted(option for option in known if option.startswith(name))
                hint = f" (did you mean {' or '.join(close[:3])}? options are not abbreviated)" if close else ""
                self.error(f"unrecognized option {name!r}{hint}")
        return super().parse_args(argv, namespace)


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--option`` of ``parser`` and of its sub-commands."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(option for option in action.option_strings if option.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                found |= _long_options(sub)
    return found


def add_debug_flag(parser: argparse.ArgumentParser, *, top: bool = True) -> None:
    """Add ``--debug`` (show the traceback of an error). On sub-parsers (``top=False``) the flag
    is accepted after the sub-command too, without resetting a ``--debug`` given before it."""
    kwargs: dict[str, Any] = {"default": False} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback", **kwargs)


# ------------------------------------------------------------------------------ help text
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``")
_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")


def plain(text: str | None) -> str | None:
    """``text`` without reStructuredText markup (roles such as ``:func:`x```, double and single
    backticks), for ``--help`` output."""
    if text is None:
        return None
    text = _ROLE.sub(lambda m: m.group(1), text)
    text = _LITERAL.sub(lambda m: m.group(1), text)
    return _INTERPRETED.sub(lambda m: m.group(1), text)


# ------------------------------------------------------------------------------ type= checks
def int_range(low: int, high: int | None = None, *, what: str | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` accepting whole numbers from ``low`` to ``high`` (inclusive)."""
    if what is None:
        what = f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high}"

    def check(text: str) -> int:
        try:
            value = int(text.strip())
        except (ValueError, AttributeError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    check.__name__ = what
    return check


positive_int = int_range(1, what="a whole number >= 1")
"""Counts, steps, sizes: 1, 2, 3, ..."""
nonnegative_int = int_range(0, what="a whole number >= 0")
"""Indices, offsets, counts where 0 means none."""
seed = int_range(0, 2**32 - 1, what="a seed: a whole number from 0 to 4294967295")
"""Random seeds (the range numpy and torch both accept)."""
thread_count = int_range(1, 1024, what="a number of threads from 1 to 1024")
"""torch CPU threads."""


def _float(low: float, *, strict: bool, what: str) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    check.__name__ = what
    return check


positive_float = _float(0.0, strict=True, what="a finite number > 0")
nonnegative_float = _float(0.0, strict=False, what="a finite number >= 0")


def comma_list(item: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """An argparse ``type=`` for a comma-separated, non-empty list whose items pass ``item``
    (itself a ``type=`` check); ``what`` names the items in the message."""

    def check(text: str) -> list:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        values = []
        for part in parts:
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}; {part!r}: {err}") from None
        return values

    check.__name__ = f"list of {what}"
    return check


def existing_path(text: str) -> str:
    """A file or folder that exists."""
    if not text or not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist (expected an existing file or folder)")
    return text


def existing_dir(text: str) -> str:
    """A folder that exists."""
    if not text or not Path(text).exists():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return text


def existing_file(text: str) -> str:
    """A file that exists."""
    if not text or not Path(text).exists():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return text


def output_dir(text: str) -> str:
    """A folder to write into: it may not exist yet, but it may not be a file."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder name, got ''")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    if any(parent.exists() and not parent.is_dir() for parent in path.parents):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be created: a part of it is a file")
    return text


def torch_device(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu or cuda:0, got {text!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise argparse.ArgumentTypeError(f"device {text!r} is not available here ({count} CUDA device(s)); use cpu")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"device {text!r} is not available here; use cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or mps, got {text!r}")
    return text


# ------------------------------------------------------------------------------ running a command
def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _message(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return _one_line(text) or type(err).__name__


def run_main(
    func: Callable[[argparse.Namespace], int | None],
    args: argparse.Namespace,
    *,
    prog: str,
    debug: bool = False,
    expected: tuple[type[BaseException], ...] = (),
    kept: str | Callable[[argparse.Namespace], str] | None = None,
) -> int:
    """Run ``func(args)`` and return its exit status, reporting failures on one line of stderr.

    - an expected error (:data:`EXPECTED_ERRORS` plus ``expected``): ``PROG: error: MESSAGE``,
      status 2;
    - Ctrl-C: ``PROG: interrupted; KEPT`` where ``kept`` (text, or a function of ``args``) says
      what was saved and how to continue, status 130;
    - any other exception: its type and message and a hint to rerun with ``--debug``, status 1.

    With ``debug`` the exception propagates with its traceback.
    """
    try:
        status = func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        note = kept(args) if callable(kept) else kept
        print(f"{prog}: interrupted; {note or 'nothing was saved'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (*EXPECTED_ERRORS, *expected) as err:
        if debug:
            raise
        print(f"{prog}: error: {_message(err)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:
        if debug:
            raise
        print(f"{prog}: error: {type(err).__name__}: {_message(err)} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED
    return 0 if status is None else int(status)
