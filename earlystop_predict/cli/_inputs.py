"""Reading a command's run records, and what one bad run does to a batch.

The rule, for every command that reads RUN_RECORD.md JSONL (plain or ``.jsonl.gz``):
a line that is not UTF-8, not JSON or not a valid record, and (``forecast``) a run the
model cannot forecast, is reported on stderr with the file, the line and the field.
By default the command then writes nothing and exits with status 2: an output is
complete or absent. With ``--skip-invalid`` (``forecast``) the bad runs are left out,
the others processed and written, and the exit status is 0. A file with no run at all
is not an error: the command says so on stderr and exits 0.

Runs read from a ledger (``report --ledger``) are the user's own record of a study:
one that breaks RUN_RECORD.md (a ledger changed by hand, a value a callback could not
make sense of) is named on stderr and left out, and the others are used (exit 0).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from earlystop_predict.errors import EarlystopPredictError, RecordError
from earlystop_predict.records.record import RunRecord, read_valid_records

#: At most this many problems are printed one per line; the rest are counted.
MAX_SHOWN = 20


class InvalidRunsError(EarlystopPredictError, ValueError):
    """Some runs of a batch cannot be used (each already reported): nothing written."""


def check_problems(command: str, problems: Sequence[BaseException], total: int, *,
                   skip_invalid: bool = False, flag: str | None = "--skip-invalid") -> None:
    """Print each problem (up to :data:`MAX_SHOWN`) on stderr.

    Args:
        command: the sub-command, for the messages.
        problems: the errors of the runs that cannot be used.
        total: runs read in all, good and bad.
        skip_invalid: leave the bad runs out and go on. Default False.
        flag: the option that skips bad runs, for the hint (None: no such option).

    Raises:
        InvalidRunsError: there are problems and ``skip_invalid`` is False.
    """
    if not problems:
        return
    word = "skipped" if skip_invalid else "error"
    for exc in problems[:MAX_SHOWN]:
        print(f"earlystop-predict {command}: {word}: {exc}", file=sys.stderr)
    if len(problems) > MAX_SHOWN:
        print(f"earlystop-predict {command}: ... and {len(problems) - MAX_SHOWN} more",
              file=sys.stderr)
    if not skip_invalid:
        hint = f"; {flag} processes the others" if flag else ""
        raise InvalidRunsError(f"{len(problems)} of {total} runs cannot be used (see above); "
                               f"nothing written{hint}")


def load_runs(path: str, command: str, *, skip_invalid: bool = False,
              flag: str | None = "--skip-invalid") -> list[tuple[int, RunRecord]]:
    """The valid runs of ``path`` with their line numbers (see the module's rule).

    Says on stderr when the file holds no run at all.

    Raises:
        InvalidRunsError: some lines are bad and ``skip_invalid`` is False.
        OSError: the file cannot be read.
    """
    good, bad = read_valid_records(path)
    check_problems(command, bad, len(good) + len(bad), skip_invalid=skip_invalid, flag=flag)
    if not good and not bad:
        print(f"earlystop-predict {command}: {path} holds no run records (empty file)",
              file=sys.stderr)
    return good


def readable(records: Sequence[RunRecord], source: str, command: str) -> list[RunRecord]:
    """The records of a ledger that hold epochs and pass validation; each other one that
    holds epochs is named on stderr and left out."""
    out = []
    for rec in records:
        if not rec.epochs:
            continue
        try:
            out.append(rec.validate(source=f"{source}: run {rec.run_id!r}"))
        except RecordError as exc:
            print(f"earlystop-predict {command}: skipped: {exc}", file=sys.stderr)
    return out
