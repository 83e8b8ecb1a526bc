"""``earlystop-predict report``: one page (``index.html``) of the runs, their forecasts
and stops, beside a fan chart per run and a calibration plot; the table printed too.

Example:
    earlystop-predict report --ledger runs.db --output-dir report/
"""

from __future__ import annotations

import argparse

from earlystop_predict.cli._inputs import load_runs, readable
from earlystop_predict.cli._paths import LEDGER_HELP, output_dir
from earlystop_predict.errors import ConfigError
from earlystop_predict.ledger import Ledger, ledger_file
from earlystop_predict.tools.report import evaluate, fan_files, format_table
from earlystop_predict.tools.report_page import write_page


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``."""
    parser = subparsers.add_parser(
        "report", help="a report page: runs, forecast error, fan charts, calibration",
        description="Print forecast-versus-realized error per run (MAE of the forecast mean "
                    "at the target epoch, 80% interval coverage) and write OUTPUT_DIR/"
                    "index.html: the study's summary (runs, epochs trained and saved, what "
                    "audited stops cost), a sortable table of runs, a fan chart per run with "
                    "the bar it was stopped against, and the calibration plot. The page "
                    "needs no network: its PNGs lie beside it (needs the 'report' extra: "
                    "matplotlib).")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--ledger", help=LEDGER_HELP)
    src.add_argument("--runs", help="a RUN_RECORD.md JSONL file (e.g. a ledger export)")
    parser.add_argument("--output-dir", default="esp_report",
                        help="folder for index.html and its PNGs (default ./esp_report)")
    parser.add_argument("--study", default=None, help="only the runs of this study")
    parser.add_argument("--max-fans", type=int, default=None,
                        help="draw at most this many fan charts (default all)")
    parser.add_argument("--title", default="earlystop-predict report",
                        help="the page's title (default 'earlystop-predict report')")
    parser.add_argument("--no-plots", action="store_true",
                        help="print the table only (no page, no PNGs)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.max_fans is not None and args.max_fans < 0:
        raise ConfigError("--max-fans", "an integer >= 0", args.max_fans)
    if not args.no_plots:
        ledger = ledger_file(args.ledger) if args.ledger is not None else None
        output_dir(args.output_dir, [("--ledger", ledger), ("--runs", args.runs)],
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
        page = write_page(records, args.output_dir, max_fans=args.max_fans, title=args.title)
        n_fans = len(fan_files(records, args.max_fans))
        print(f"wrote {page} ({n_fans} fan charts, calibration.png beside it)")
    return 0
