"""``earlystop-predict collect``: train a random search of small models, keep the curves.

Example:
    earlystop-predict collect --output corpus --families digits-mlp,wine --runs 40 \\
        --seed 0 --workers 2 --min-epochs 20 --max-epochs 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from earlystop_predict.cli._paths import output_dir
from earlystop_predict.errors import ConfigError
from earlystop_predict.tools.collect.families import FAMILIES
from earlystop_predict.tools.collect.run import FRAMEWORK_CHOICES, CollectOptions, collect


def _families(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(FAMILIES)
    return names


def _pin(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``collect``."""
    parser = subparsers.add_parser(
        "collect", help="train a random search of small models and keep their curves",
        description="Draw runs of a random search (optimizer, log-uniform learning rate, "
                    "momentum, weight decay, batch size, width, depth, dropout, schedule, "
                    "warm-up, epochs) over small models on data shipped offline, train each "
                    "through earlystop_predict's own callback (dry run, ledger "
                    "DIR/ledger.db) and append every finished run to DIR/runs.jsonl.gz. "
                    "Resumable: re-running skips finished runs. Ends with DIR/DATASHEET.md.")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--families", type=_families, default=list(FAMILIES),
                        help="comma-separated families, or 'all' (default all: "
                             + ",".join(FAMILIES) + ")")
    parser.add_argument("--runs", type=int, default=100,
                        help="total runs of the search in DIR, finished ones skipped "
                             "(default 100)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the search: run ids and configs derive from "
                             "(seed, index) (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="training processes, one thread each (default: CPUs available; "
                             "1 trains in this process)")
    parser.add_argument("--framework", choices=FRAMEWORK_CHOICES, default="auto",
                        help="framework of the non-HF families; auto draws lightning or "
                             "keras per run among those installed (default auto); text-hf "
                             "always uses the HF Trainer")
    parser.add_argument("--min-epochs", type=int, default=20,
                        help="fewest planned epochs of a run, >= 2 (default 20)")
    parser.add_argument("--max-epochs", type=int, default=100,
                        help="most planned epochs of a run (default 100)")
    parser.add_argument("--forecaster", default="scripted",
                        help="scripted (a constant, default: no model needed) | auto | lstm "
                             "| lightgbm | a model directory")
    parser.add_argument("--set", dest="pins", type=_pin, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="pin a drawn value in every run, repeatable "
                             "(e.g. --set learning_rate=10 --set optimizer=sgd); "
                             "changes the run ids")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    output_dir(args.output)
    pins = dict(args.pins)
    if len(pins) != len(args.pins):
        raise ConfigError("--set", "each key once", [k for k, _ in args.pins])
    opts = CollectOptions(args.output, families=tuple(args.families), runs=args.runs,
                          seed=args.seed, workers=args.workers, framework=args.framework,
                          min_epochs=args.min_epochs, max_epochs=args.max_epochs,
                          forecaster=args.forecaster, pins=pins, progress=not args.quiet)
    summary = collect(opts)
    out = sys.stderr
    print(f"collect: {summary.trained} runs trained ({summary.diverged} diverged, "
          f"{len(summary.failed)} failed), {summary.skipped} already in the corpus, "
          f"{summary.total} in the search, {summary.seconds:.0f} s", file=out)
    for name, secs in sorted(summary.seconds_by_family.items()):
        print(f"  {name:<14} {len(secs):>4} runs  median {statistics.median(secs):6.2f} s/run"
              f"  mean {statistics.mean(secs):6.2f} s/run", file=out)
    print(f"corpus: {summary.corpus}; datasheet: {opts.directory / 'DATASHEET.md'}", file=out)
    if summary.failed:
        print(f"failed runs (see {opts.directory / 'errors.log'}; re-run to retry): "
              + ", ".join(summary.failed[:10]) + (" ..." if len(summary.failed) > 10 else ""),
              file=out)
        return 1
    return 0
