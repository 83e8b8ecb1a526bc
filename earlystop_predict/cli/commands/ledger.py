"""``earlystop-predict ledger``: export or list the runs of a ledger (an SQLite file or a
PostgreSQL database, by URL).

Example:
    earlystop-predict ledger export --ledger runs.db --format jsonl --output runs.jsonl
    earlystop-predict ledger list --ledger runs.db --study mnist
    earlystop-predict ledger export --ledger postgresql://esp@db:5432/esp --output runs.jsonl
"""

from __future__ import annotations

import argparse
import sys

from earlystop_predict.cli._paths import LEDGER_HELP, output_file
from earlystop_predict.ledger import Ledger, ledger_file
from earlystop_predict.records.record import dumps, finite_or_none, write_records


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ledger export`` and ``ledger list``."""
    parser = subparsers.add_parser("ledger", help="export or list the runs of a ledger",
                                   description="Export or list the runs of a ledger: an SQLite "
                                               "file or a database URL.")
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION")
    sub.required = True

    exp = sub.add_parser("export", help="write the runs as RUN_RECORD.md JSONL",
                         description="Write the ledger's runs (with forecasts and stops) as "
                                     "RUN_RECORD.md JSON Lines, atomically.")
    exp.add_argument("--ledger", required=True, help=LEDGER_HELP)
    exp.add_argument("--format", choices=["jsonl"], default="jsonl",
                     help="output format (default jsonl)")
    exp.add_argument("--output", required=True, help="the file to write ('-' for stdout)")
    exp.add_argument("--study", default=None, help="only the runs of this study")
    exp.add_argument("--include-empty", action="store_true",
                     help="also write runs that logged no epoch (not valid records)")
    exp.set_defaults(func=_export)

    lst = sub.add_parser("list", help="one line per run: status, epochs, final value",
                         description="List the ledger's runs.")
    lst.add_argument("--ledger", required=True, help=LEDGER_HELP)
    lst.add_argument("--study", default=None, help="only the runs of this study")
    lst.set_defaults(func=_list)


def _export(args: argparse.Namespace) -> int:
    target = output_file(args.output, [("--ledger", ledger_file(args.ledger))])
    with Ledger(args.ledger, readonly=True) as led:
        records = led.records(study=args.study)
    keep = [r for r in records if r.epochs or args.include_empty]
    if target is None:
        for rec in keep:
            sys.stdout.write(dumps(rec.to_dict()) + "\n")
    else:
        write_records(target, keep)
    skipped = len(records) - len(keep)
    note = f" ({skipped} runs without epochs left out)" if skipped else ""
    print(f"exported {len(keep)} runs to {args.output}{note}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    with Ledger(args.ledger, readonly=True) as led:
        runs = led.runs(study=args.study)
    head = (f"{'run_id':<28} {'study':<16} {'status':<10} {'epochs':>6} {'target':>6} "
            f"{'final':>8} stop")
    print(head)
    print("-" * len(head))
    for r in runs:
        value = finite_or_none(r["final_value"])
        final = f"{value:.4f}" if value is not None else "-"
        stop = (f"@{r['stopped'].get('epoch')}: {r['stopped'].get('reason', '')}"
                if isinstance(r["stopped"], dict) else "")
        target = r["target_epoch"] if r["target_epoch"] is not None else "-"
        print(f"{str(r['run_id'])[:28]:<28} {str(r['study'] or '-')[:16]:<16} "
              f"{str(r['status']):<10} {r['n_epochs']:>6} {str(target):>6} {final:>8} {stop}")
    print(f"{len(runs)} runs")
    return 0
