"""What the command-line entry points (trainer.py, infer.py, scripts/serve.sh) share.

Known mistakes (missing data, a misspelt config key, no saved model, a wrong item_count) carry
messages that say what to do, so they are shown as one line on stderr, with a non-zero exit
code; the traceback only with --debug or MIND_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from recdata.formats import DataFormatError

from mind.checkpoint import CheckpointError
from mind.config import ConfigError

DEBUG_ENV = "MIND_DEBUG"
# The errors whose message is the whole story; anything else is a bug and keeps its traceback.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, CheckpointError, DataFormatError, FileNotFoundError)
EXIT_KNOWN = 2


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of known errors too (or set {DEBUG_ENV}=1)")


def debug_wanted(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def explain(exc: BaseException, debug: bool) -> str:
    """The error's one-line message; its traceback goes to stderr first when debug."""
    if debug:
        traceback.print_exception(exc)
    return one_line(exc)


def report(prog: str, exc: BaseException, debug: bool) -> int:
    """Print a known error as `prog: message` on stderr; returns the exit code."""
    print(f"{prog}: {explain(exc, debug)}", file=sys.stderr, flush=True)
    return EXIT_KNOWN


def run(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None,
        known: tuple[type[BaseException], ...] = KNOWN_ERRORS) -> int:
    """main(argv), with the errors in `known` reported by `report`."""
    try:
        return main(argv)
    except known as exc:
        return report(prog, exc, debug_wanted(argv))


def pyplot():
    """matplotlib's pyplot on a file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
