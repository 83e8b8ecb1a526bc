"""The one output-path guard of the CLI: no command overwrites an input or a non-file.

Every command that writes a file (``forecast``, ``rank``, ``ledger export``) or a folder
(``train``, ``report``, ``collect``) checks its output here first:

- ``-`` means standard output (for files), nothing is checked;
- an output that is one of the command's inputs (the same file, through any path or
  link, the ledger included: a ``sqlite:///`` URL names its file, see
  :func:`earlystop_predict.ledger.ledger_file`) is refused;
- a symlink is written *through*: its target is replaced, the link stays a link;
- an existing output that is not a regular file (a directory, ``/dev/null``,
  ``/dev/full``, a FIFO, a socket) is refused for a file output, and an existing
  non-directory for a folder output;
- the file itself is written atomically by :func:`earlystop_predict.records.record.write_jsonl`
  (a temporary file in the same folder, then ``os.replace``), so an interrupted write
  leaves the old file or none, never half of one.

A refusal raises :class:`OutputPathError`, which the CLI reports with exit status 2.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from earlystop_predict.errors import EarlystopPredictError

#: The help of every ``--ledger`` option.
LEDGER_HELP = ("the ledger: an SQLite file, sqlite:///path.db, or "
               "postgresql://user@host:port/database (the 'postgres' extra)")


class OutputPathError(EarlystopPredictError, ValueError):
    """An output path the CLI refuses to write: names the option, the path and why."""

    def __init__(self, arg: str, path: object, problem: str) -> None:
        self.arg = arg
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{arg} {self.path}: {problem}")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _same(a: str, b: str) -> bool:
    """Whether two paths name the same existing file (or resolve to the same path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_inputs(arg: str, path: str, inputs: Iterable[tuple[str, str | None]]) -> None:
    for name, value in inputs:
        if value is None or value == "-" or str(value) in ("bundled", "auto"):
            continue
        if _same(path, str(value)):
            raise OutputPathError(arg, path, f"is the input {name} {value}; refusing to "
                                             "overwrite an input (choose another output)")


def output_file(path: str, inputs: Iterable[tuple[str, str | None]] = (), *,
                arg: str = "--output") -> str | None:
    """The real path to write a file output to, or None for ``-`` (standard output).

    Args:
        path: the output as given on the command line.
        inputs: ``(option, path)`` of each input of the command (None entries ignored).
        arg: the option's name, for the message. Default ``"--output"``.

    Raises:
        OutputPathError: the output is an input, or exists and is not a regular file.
    """
    if path == "-":
        return None
    inputs = list(inputs)
    real = os.path.realpath(path)  # through symlinks: the link survives, its target changes
    _check_inputs(arg, path, inputs)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise OutputPathError(arg, path, f"cannot be inspected ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise OutputPathError(arg, path, f"is {_kind(mode)}; only a regular file (or a new "
                                         "path, or '-' for standard output) is written")
    return real


def output_dir(path: str, inputs: Iterable[tuple[str, str | None]] = (), *,
               arg: str = "--output") -> Path:
    """The folder to write into (created later by the command), checked.

    Args:
        path: the folder as given on the command line.
        inputs: ``(option, path)`` of each input of the command (None entries ignored).
        arg: the option's name, for the message. Default ``"--output"``.

    Raises:
        OutputPathError: the folder is an input, or exists and is not a directory.
    """
    _check_inputs(arg, path, inputs)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return Path(path)
    except OSError as exc:
        raise OutputPathError(arg, path, f"cannot be inspected ({exc.strerror})") from None
    if not stat.S_ISDIR(mode):
        raise OutputPathError(arg, path, f"is {_kind(mode) if not stat.S_ISREG(mode) else 'a file'}"
                                         "; a folder (new or existing) is needed")
    return Path(path)
