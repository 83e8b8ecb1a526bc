"""``earlystop-predict replay``: simulate stopping policies over stored full runs.

Example:
    earlystop-predict replay runs.jsonl --policy incumbent --policy median --orders 50
"""

from __future__ import annotations

import argparse
import json
import sys

from earlystop_predict.cli._inputs import load_runs
from earlystop_predict.errors import ModelArtifactError
from earlystop_predict.forecast.base import Forecaster
from earlystop_predict.tools.replay import FORECAST_POLICIES, POLICIES, replay


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``replay``."""
    parser = subparsers.add_parser(
        "replay", help="what stopping policies would have saved and cost",
        description="Simulate random search over stored full runs (each task a study): for "
                    "shuffled orders, runs train one after another and a policy may stop "
                    "them. Prints epochs saved, regret (points for accuracies) and stopped "
                    "runs per policy.")
    parser.add_argument("runs", help="RUN_RECORD.md JSONL (plain or .jsonl.gz) of full runs")
    parser.add_argument("--policy", action="append", choices=POLICIES, default=None,
                        help="policy to replay, repeatable (default all)")
    parser.add_argument("--target", type=int, default=None,
                        help="target epoch (default each run's meta.max_epochs or last epoch)")
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
                        help="bar of the threshold policy (default each task's median final)")
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
    policies = args.policy or list(POLICIES)
    records = [rec for _, rec in load_runs(args.runs, "replay", flag=None)]
    forecaster = load_forecaster(args.model) if FORECAST_POLICIES & set(policies) else None
    result = replay(records, policies, forecaster, target=args.target, orders=args.orders,
                    runs_per_order=args.runs_per_order, seed=args.seed,
                    confidence=args.confidence, min_epochs=args.min_epochs,
                    patience=args.patience, threshold=args.threshold)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    info = result.info
    print(f"{info['runs']} runs in {info['tasks']} tasks, {info['orders']} orders per task"
          + (f", {info['runs_per_order']} runs per order" if info["runs_per_order"] else ""))
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} runs, e.g. {info['skipped'][0]}",
              file=sys.stderr)
    print(result.table(per_task=args.per_task))
    if info["forecasts"]:
        print(f"{info['forecasts']} forecasts ({', '.join(info['forecast_models'])}) in "
              f"{info['forecast_s']:.1f} s; simulation {info['simulate_s']:.1f} s")
    return 0
