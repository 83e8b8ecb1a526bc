"""``earlystop-predict rank CANDIDATES.jsonl --target M``: order configurations before
training them, by their zero-epoch forecast."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank", help="order candidate configurations by their forecast, before any training",
        description="Read candidate configurations (JSONL objects with 'hparams' and "
                    "optionally 'meta' and 'run_id', as in RUN_RECORD.md; epochs are not "
                    "needed) and write them best first, each with its zero-epoch forecast "
                    "of the metric at the target epoch (mean and quantiles).")
    p.add_argument("candidates", help="candidate configurations, JSONL")
    p.add_argument("--target", type=int, required=True, help="1-based epoch M to forecast")
    p.add_argument("--output", default="-", help="ranked candidates, JSONL (default stdout)")
    p.add_argument("--model", default="bundled", help="bundled | model directory")
    p.set_defaults(func=run)


def read_candidates(path: str) -> list[dict]:
    """The JSON objects of a JSONL file; a bad line raises RecordError naming it."""
    from earlystop_predict.errors import RecordError
    from earlystop_predict.records.record import iter_json_lines

    out = []
    for lineno, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise RecordError("not a JSON object", line=lineno, source=path)
        out.append(obj)
    return out


def run(args: argparse.Namespace) -> int:
    from earlystop_predict.cli._paths import output_file
    from earlystop_predict.errors import RecordError
    from earlystop_predict.forecast.prior import load_prior, rank
    from earlystop_predict.records.record import dumps, write_jsonl

    target = output_file(args.output, [("CANDIDATES", args.candidates),
                                       ("--model", args.model)])
    candidates = read_candidates(args.candidates)
    try:
        rows = rank(candidates, args.target, load_prior(args.model))
    except RecordError as exc:
        raise RecordError(str(exc), source=args.candidates) from None
    if target is None:
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
    else:
        write_jsonl(target, rows)
        print(f"{len(rows)} candidates ranked -> {args.output}", file=sys.stderr)
    return 0
