"""The ``earlystop-predict`` command line: :mod:`.main` parses, :mod:`.commands` holds one
module per sub-command."""

from earlystop_predict.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
