"""The ``earlystop-predict`` command line.

Each sub-command lives in :mod:`earlystop_predict.cli.commands` as a module exposing
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Errors of the input end the command with exit status 2 and a one-line message; a bug
with status 1 and a one-line message (see :func:`main`); no partial output file is
left behind (outputs are checked by :mod:`earlystop_predict.cli._paths` and written
atomically).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from earlystop_predict.errors import EarlystopPredictError

COMMANDS = ("forecast", "train", "rank", "ledger", "report", "replay", "demo", "collect")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    from earlystop_predict import __version__

    parser = argparse.ArgumentParser(
        prog="earlystop-predict",
        description="Forecast where training runs will end; stop the doomed ones early.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the sub-command; return the exit status.

    Exit status: 0 done; 2 bad input or usage (a one-line message on stderr naming the
    file, line and field where it can: a package error, an OS error, text that is not
    UTF-8, data nested too deeply, out of memory); 1 an internal error (a bug: one line
    on stderr, the traceback only with ``ESP_TRACEBACK=1``); 130 interrupted. No Python
    traceback reaches a user otherwise.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"earlystop-predict {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"earlystop-predict {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, never a traceback unless asked for
        if os.environ.get("ESP_TRACEBACK"):
            traceback.print_exc()
        print(f"earlystop-predict {args.command}: internal error: {type(exc).__name__}: "
              f"{exc} (a bug; please report it; ESP_TRACEBACK=1 prints the traceback)",
              file=sys.stderr)
        return 1


#: Exceptions that are the input's fault, reported with exit status 2.
USER_ERRORS = (EarlystopPredictError, OSError, UnicodeError, RecursionError, MemoryError)


def _describe(exc: BaseException) -> str:
    """The message of a user error (its type where the text alone says too little)."""
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process"
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'the input is too large'})"
    if isinstance(exc, EarlystopPredictError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
