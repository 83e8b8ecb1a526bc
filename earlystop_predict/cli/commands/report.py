"""``earlystop-predict report``: forecast-versus-realized table, fan charts, calibration.

Example:
    earlystop-predict report --ledger runs.db --output-dir report/
"""

from __future__ import annotations

import argparse

from earlystop_predict.cli._inputs import load_runs, readable
from earlystop_predict.cli._paths import output_dir
from earlystop_predict.errors import ConfigError
from earlystop_predict.ledger import Ledger
from earlystop_predict.tools.report import evaluate, format_table, write_plots


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``."""
    parser = subparsers.add_parser(
        "report", help="forecast error per run, fan charts and calibration",
        description="Print forecast-versus-realized error per run (MAE of the forecast mean "
                    "at the target epoch, 80%% interval coverage) and write a fan chart per "
                    "run and a calibration plot (needs the 'report' extra: matplotlib).")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--ledger", help="the SQLite ledger file")
    src.add_argument("--runs", help="a RUN_RECORD.md JSONL file (e.g. a ledger export)")
    parser.add_argument("--output-dir", default="esp_report",
                        help="folder for the PNGs (default ./esp_report)")
    parser.add_argument("--study", default=None, help="only the runs of this study")
    parser.add_argument("--max-fans", type=int, default=None,
                        help="draw at most this many fan charts (default all)")
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.max_fans is not None and args.max_fans < 0:
        raise ConfigError("--max-fans", "an integer >= 0", args.max_fans)
    if not args.no_plots:
        output_dir(args.output_dir, [("--ledger", args.ledger), ("--runs", args.runs)],
                   arg="--output-dir")
    if args.ledger is not None:
        with Ledger(args.ledger, readonly=True) as led:
            records = readable(led.records(study=args.study), args.ledger, "report")
    else:
        records = [r for _, r in load_runs(args.runs, "report", flag=None)
                   if args.study is None or r.extra.get("study") == args.study]
    records = [r for r in records if r.epochs]
    print(format_table(evaluate(records)))
    if not args.no_plots:
        paths = write_plots(records, args.output_dir, max_fans=args.max_fans)
        print(f"wrote {len(paths)} plots to {args.output_dir}")
    return 0
