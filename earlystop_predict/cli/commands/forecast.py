"""``earlystop-predict forecast RUNS.jsonl --target M --output OUT.jsonl``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


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
                    "the run holds. A run that is not a valid record, or that the model cannot "
                    "forecast, is reported with its file, line and field; then nothing is "
                    "written (exit 2) unless --skip-invalid is given.")
    p.add_argument("runs", help="run records, JSONL (plain or .jsonl.gz)")
    p.add_argument("--target", type=int, required=True, help="1-based epoch M to forecast")
    p.add_argument("--output", required=True, help="forecasts, JSONL ('-' for stdout)")
    p.add_argument("--model", default="auto",
                   help="auto (LSTM, LightGBM fallback) | lstm | lightgbm | model directory")
    p.add_argument("--observed", default=None,
                   help="also forecast from these prefix lengths, e.g. 5,10,20 "
                        "(default: all epochs each run holds)")
    p.add_argument("--context", default=None, metavar="STUDY.jsonl",
                   help="forecast each run as a member of the study whose other runs are in "
                        "this file (run records, complete or partly observed; a `ledger "
                        "export` is one): its finished runs correct the model where that "
                        "beats it on them (the last 60 finished runs of the file); such forecasts say model \"<model>+study\" and, "
                        "in reason, from how many runs")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out (and report) runs that are not valid records or cannot "
                        "be forecast, write the others, exit 0 (default: write nothing and "
                        "exit 2 if any run is bad)")
    p.set_defaults(func=run)


def _queries(runs: list[tuple[int, Any]], prefixes: list[int] | None
             ) -> list[tuple[int, Any]]:
    """``(line, record or prefix)`` of each forecast to make."""
    out = []
    for line, rec in runs:
        lengths = [rec.n_epochs] if prefixes is None else \
            [n for n in prefixes if n <= rec.n_epochs]
        out.extend((line, rec if n == rec.n_epochs else rec.truncated(n)) for n in lengths)
    return out


def _forecast_each(model: Any, queries: list[tuple[int, Any]], target: int, source: str,
                   problems: list) -> list[tuple[Any, Any]]:
    """Forecast the queries in one batch; if the batch fails, one by one, so a run the
    model refuses is reported (run id, file, line) and the others are still forecast."""
    from earlystop_predict.errors import RecordError

    records = [rec for _, rec in queries]
    try:
        return list(zip(records, model.forecast_many(records, target), strict=True))
    except Exception:  # noqa: BLE001 - isolated below, run by run
        pass
    out = []
    for line, rec in queries:
        try:
            out.append((rec, model.forecast(rec, target)))
        except Exception as exc:  # noqa: BLE001 - reported with the run and its line
            problems.append(RecordError(f"run {rec.run_id!r} ({rec.n_epochs} epochs): cannot "
                                        f"be forecast: {type(exc).__name__}: {exc}",
                                        line=line, source=source))
    return out


def _with_context(model: Any, args: argparse.Namespace, queries: list[tuple[int, Any]],
                  problems: list) -> list[tuple[Any, Any]]:
    """Each run forecast by the model corrected on the context's finished runs (its own
    record left out of its context)."""
    from earlystop_predict.cli._inputs import load_runs
    from earlystop_predict.forecast.study import StudyContext, StudyForecaster

    context = StudyContext(model, [rec for _, rec in load_runs(args.context, "forecast")])
    done = []
    for run_id in dict.fromkeys(rec.run_id for _, rec in queries):
        mine = [(line, rec) for line, rec in queries if rec.run_id == run_id]
        own = context.subset(i for i in context.run_ids if i != run_id)
        done += _forecast_each(StudyForecaster(model, own), mine, args.target, args.runs,
                               problems)
    return done


def run(args: argparse.Namespace) -> int:
    from earlystop_predict.cli._inputs import check_problems, load_runs
    from earlystop_predict.cli._paths import output_file
    from earlystop_predict.errors import ConfigError
    from earlystop_predict.forecast.compose import load_model
    from earlystop_predict.records.record import dumps, write_jsonl

    if args.target < 2:
        raise ConfigError("--target", "an integer >= 2", args.target)
    prefixes = _prefixes(args.observed)
    inputs = [("RUNS", args.runs), ("--model", args.model)]
    target = output_file(args.output, inputs + [("--context", args.context)] * bool(args.context))
    runs = load_runs(args.runs, "forecast", skip_invalid=args.skip_invalid)
    queries = _queries(runs, prefixes)
    done: list[tuple[Any, Any]] = []
    problems: list[Exception] = []
    if queries:
        model = load_model(args.model)
        if args.context:
            done = _with_context(model, args, queries, problems)
        else:
            done = _forecast_each(model, queries, args.target, args.runs, problems)
    check_problems("forecast", problems, len(queries), skip_invalid=args.skip_invalid)
    rows = [{"run_id": rec.run_id, **fc.to_dict()} for rec, fc in done]
    if target is None:
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
    else:
        write_jsonl(target, rows)
        print(f"{len(rows)} forecasts for {len(runs)} runs -> {args.output}",
              file=sys.stderr)
    return 0
