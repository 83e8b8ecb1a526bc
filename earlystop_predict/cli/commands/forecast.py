"""``earlystop-predict forecast RUNS.jsonl --target M --output OUT.jsonl``."""

from __future__ import annotations

import argparse
import sys


def _prefixes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    from earlystop_predict.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("--observed", "comma-separated positive integers", text) from None
    if not values or min(values) < 1:
        raise ConfigError("--observed", "comma-separated positive integers", text)
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forecast", help="forecast each run's metric at a target epoch",
        description="Read run records (RUN_RECORD.md JSONL) and write one forecast per run "
                    "(and per observed prefix length with --observed), made from the epochs "
                    "the run holds.")
    p.add_argument("runs", help="run records, JSONL")
    p.add_argument("--target", type=int, required=True, help="1-based epoch M to forecast")
    p.add_argument("--output", required=True, help="forecasts, JSONL ('-' for stdout)")
    p.add_argument("--model", default="auto",
                   help="auto (LSTM, LightGBM fallback) | lstm | lightgbm | model directory")
    p.add_argument("--observed", default=None,
                   help="also forecast from these prefix lengths, e.g. 5,10,20 "
                        "(default: all epochs each run holds)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from earlystop_predict.errors import ConfigError
    from earlystop_predict.forecast.compose import load_model
    from earlystop_predict.records.record import dumps, read_records, write_jsonl

    if args.target < 2:
        raise ConfigError("--target", "an integer >= 2", args.target)
    prefixes = _prefixes(args.observed)
    records = read_records(args.runs)
    queries = []
    for rec in records:
        lengths = [rec.n_epochs] if prefixes is None else \
            [n for n in prefixes if n <= rec.n_epochs]
        queries.extend(rec if n == rec.n_epochs else rec.truncated(n) for n in lengths)
    model = load_model(args.model)
    forecasts = model.forecast_many(queries, args.target) if queries else []
    rows = [{"run_id": rec.run_id, **fc.to_dict()} for rec, fc in zip(queries, forecasts, strict=False)]
    if args.output == "-":
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
    else:
        write_jsonl(args.output, rows)
        print(f"{len(rows)} forecasts for {len(records)} runs -> {args.output}",
              file=sys.stderr)
    return 0
