"""The ``earlystop-predict`` command line.

Each sub-command lives in :mod:`earlystop_predict.cli.commands` as a module exposing
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Errors of the package end the command with exit status 2 and a one-line message;
no partial output file is left behind.
"""

from __future__ import annotations

import argparse
import importlib
import sys
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
    """Entry point: parse ``argv`` and run the sub-command; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (EarlystopPredictError, FileNotFoundError, IsADirectoryError,
            PermissionError) as exc:
        print(f"earlystop-predict {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"earlystop-predict {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
