"""``earlystop-predict demo``: train a few small networks live, stop the doomed ones.

Example:
    earlystop-predict demo --framework keras --configs 6 --epochs 30
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from earlystop_predict.forecast.base import Forecaster, ScriptedForecaster
from earlystop_predict.records.record import RunRecord
from earlystop_predict.tools.demo import FRAMEWORKS, run_demo


def _best_so_far(record: RunRecord, target_epoch: int) -> Any:
    """Testing hook (``--scripted``): forecast the best value seen, +-0.05; no model needed."""
    values = record.series(record.metric)
    best = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    return best, {0.1: best - 0.05, 0.5: best, 0.9: best + 0.05}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    parser = subparsers.add_parser(
        "demo", help="train small MLPs on digits live and stop the doomed ones",
        description="Train a handful of small MLP configurations (some good, some hopeless: "
                    "tiny or huge learning rate, heavy dropout) on scikit-learn's bundled "
                    "digits with the forecast callback and the bundled model; runs unlikely "
                    "to beat the best finished run of study 'demo' (or to reach --threshold) "
                    "are stopped. Ends with a table of forecasts, stops and epochs saved.")
    parser.add_argument("--framework", choices=FRAMEWORKS, default="keras",
                        help="training framework (default keras)")
    parser.add_argument("--configs", type=int, default=6,
                        help="number of configurations (default 6)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="planned epochs per run, the forecast target (default 30)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="val accuracy a run must be likely to reach, in [0, 1] "
                             "(default none: the incumbent rule only)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="quantile level that must clear the bar, in (0.5, 1) "
                             "(default 0.95)")
    parser.add_argument("--min-epochs", type=int, default=5,
                        help="first epoch a run may be stopped at (default 5)")
    parser.add_argument("--patience", type=int, default=1,
                        help="consecutive poor forecasts to stop (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--ledger", default=None,
                        help="the ledger to keep the runs in: an SQLite file, sqlite:///path.db "
                        "or postgresql://... (default a temporary file)")
    parser.add_argument("--model", default="auto",
                        help="auto | lstm | lightgbm | a model directory (default auto)")
    parser.add_argument("--audit", action="store_true",
                        help="train stopped runs on to the end to show what they reach")
    parser.add_argument("--verbose", "-v", action="count", default=1,
                        help="-v: a line per epoch")
    parser.add_argument("--quiet", "-q", action="store_true", help="print the table only")
    parser.add_argument("--scripted", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    model: str | Forecaster = ScriptedForecaster(_best_so_far) if args.scripted else args.model
    run_demo(args.framework, configs=args.configs, epochs=args.epochs,
             threshold=args.threshold, confidence=args.confidence, min_epochs=args.min_epochs,
             patience=args.patience, seed=args.seed, ledger=args.ledger, model=model,
             audit=args.audit, verbose=0 if args.quiet else args.verbose)
    return 0
