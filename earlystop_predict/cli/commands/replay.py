"""``earlystop-predict replay``: simulate stopping policies over stored full runs.

Example:
    earlystop-predict replay runs.jsonl --policy incumbent --policy median --orders 50
    earlystop-predict replay runs.jsonl.gz --single-run --policy default --policy patience-5
    earlystop-predict replay runs.db --policy default     # a ledger: stopped runs censored
"""

from __future__ import annotations

import argparse
import json
import sys

from earlystop_predict.cli._inputs import load_runs, readable
from earlystop_predict.errors import ConfigError, ModelArtifactError
from earlystop_predict.forecast.base import Forecaster
from earlystop_predict.policy.stop import DEFAULT_MIN_DELTA
from earlystop_predict.records.record import RunRecord
from earlystop_predict.tools.replay import (
    MAX_TARGET_EPOCH,
    POLICIES,
    POLICY_HELP,
    parse_policy,
    replay,
)

#: Replayed with --single-run and no --policy.
SINGLE_RUN_POLICIES = ("default", "patience-3", "patience-5", "patience-10", "none")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _policy(text: str) -> str:
    try:
        parse_policy(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"invalid policy {text!r} (use {POLICY_HELP})") \
            from None
    return text


def read_runs(path: str) -> list[RunRecord]:
    """The runs of a JSONL file, a gzip corpus (``.jsonl.gz``) or a ledger (an SQLite
    file, or a ``sqlite://`` / ``postgresql://`` URL).

    A ledger is opened without creating anything; its records keep their ``stopped``
    and target epoch, so that replay treats stopped runs as censored.
    """
    from earlystop_predict.ledger.target import is_url

    head = _SQLITE_MAGIC  # a URL names a ledger (or is an error naming it)
    if not is_url(path):
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        from earlystop_predict.ledger import Ledger

        with Ledger(path, readonly=True) as ledger:
            return readable(ledger.records(), path, "replay")
    return [rec for _, rec in load_runs(path, "replay", flag=None)]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``replay``."""
    parser = subparsers.add_parser(
        "replay", help="what stopping policies would have saved and cost",
        description="Simulate random search over stored full runs (each task a study): for "
                    "shuffled orders, runs train one after another and a policy may stop "
                    "them. Prints epochs saved, regret (points for accuracies) and stopped "
                    "runs per policy.")
    parser.add_argument("runs", help="RUN_RECORD.md JSONL of full runs (.jsonl, .jsonl.gz, "
                        "or a ledger: a .db file, sqlite:///path.db or postgresql://... "
                        "URL; its stopped runs are replayed as censored runs)")
    parser.add_argument("--policy", action="append", type=_policy, default=None,
                        help=f"policy to replay, repeatable: {POLICY_HELP} (default "
                        f"{', '.join(POLICIES)}; with --single-run "
                        f"{', '.join(SINGLE_RUN_POLICIES)})")
    parser.add_argument("--single-run", action="store_true",
                        help="score each run alone (no study): regret against the run's "
                        "own best, at its best epoch before the stop")
    parser.add_argument("--min-delta", type=float, default=DEFAULT_MIN_DELTA,
                        help=f"min_delta of the gain policy (default {DEFAULT_MIN_DELTA:g})")
    parser.add_argument("--target", type=int, default=None,
                        help=f"target epoch in [2, {MAX_TARGET_EPOCH}] (default each run's "
                        "meta.max_epochs or last epoch)")
    parser.add_argument("--orders", type=int, default=50,
                        help="shuffled orders per task (default 50)")
    parser.add_argument("--runs-per-order", type=int, default=None,
                        help="runs drawn per order (default all runs of the task)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the orders (default 0)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="StopPolicy confidence in (0.5, 1) (default 0.95)")
    parser.add_argument("--min-epochs", type=int, default=3,
                        help="first epoch a policy may stop at (default 3)")
    parser.add_argument("--patience", type=int, default=1,
                        help="consecutive poor forecasts to stop (default 1)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="bar of the threshold policy, a fraction for accuracies "
                        "(default each task's median final)")
    parser.add_argument("--model", default="auto",
                        help="auto | lstm | lightgbm | a model directory (default auto)")
    parser.add_argument("--per-task", action="store_true", help="also print a table per task")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_run)


def load_forecaster(kind: str) -> Forecaster:
    """``earlystop_predict.load_model(kind)``, with missing model code reported as such."""
    from earlystop_predict import load_model

    try:
        return load_model(kind)
    except ModuleNotFoundError as exc:  # the model modules are not built yet
        if exc.name and exc.name.startswith("earlystop_predict"):
            raise ModelArtifactError(kind, f"model code not available ({exc.name})") from exc
        raise


def _run(args: argparse.Namespace) -> int:
    policies = args.policy or list(SINGLE_RUN_POLICIES if args.single_run else POLICIES)
    records = read_runs(args.runs)
    needs_model = any(parse_policy(p).forecasts for p in policies)
    forecaster = load_forecaster(args.model) if needs_model else None
    result = replay(records, policies, forecaster, target=args.target, orders=args.orders,
                    runs_per_order=args.runs_per_order, seed=args.seed,
                    confidence=args.confidence, min_epochs=args.min_epochs,
                    patience=args.patience, threshold=args.threshold,
                    single_run=args.single_run, min_delta=args.min_delta)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    info = result.info
    if args.single_run:
        print(f"{info['runs']} runs in {info['tasks']} tasks, each replayed alone")
    else:
        print(f"{info['runs']} runs in {info['tasks']} tasks, {info['orders']} orders per task"
              + (f", {info['runs_per_order']} runs per order" if info["runs_per_order"]
                 else ""))
    if info["censored"]:
        print(f"{len(info['censored'])} stopped runs replayed as censored runs (up to their "
              "last epoch)")
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} runs, e.g. {info['skipped'][0]}",
              file=sys.stderr)
    print(result.table(per_task=args.per_task))
    if info["forecasts"]:
        print(f"{info['forecasts']} forecasts ({', '.join(info['forecast_models'])}) in "
              f"{info['forecast_s']:.1f} s; simulation {info['simulate_s']:.1f} s")
    return 0
