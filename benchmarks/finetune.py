"""Fine-tuning on a user's tuning history: error on a new family before and after.

Run: python benchmarks/finetune.py [--family all|NAME] [--runs 200] [--base DIR]

For each family (default: every family of the cross-validation folds with enough
runs) takes, as the base, the fold model that was trained without it (``models/folds/``, written by ``earlystop-predict train``; or
``--base DIR``), gives ``--runs`` of the family's runs to ``earlystop-predict train --from``
(which itself keeps 20 % aside for its report and 15 % for early stopping and the
blend weight), and scores the base, the fine-tuned LSTM alone and the directory as
served (the LSTM blended with the history model) on the family's *other*
completed runs, which the fine-tuning never saw: MAE forecasting the final epoch
from 10, 20 and 40 %.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, print_table  # noqa: E402
from real_curves import CORPUS  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.forecast.compose import BlendForecaster  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.records.record import write_records  # noqa: E402
from earlystop_predict.training.evaluate import (  # noqa: E402
    completed,
    evaluate_end,
    forecaster_fn,
    last_value_fn,  # noqa: E402
)
from earlystop_predict.training.finetune import fine_tune  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402


def run_family(family: str, base: str, runs_all: list, n_runs: int,
               seed: int) -> list[list[object]]:
    """Fine-tune ``base`` on ``n_runs`` runs of ``family``; rows scoring base and
    fine-tuned on the family's other completed runs."""
    runs = [r for r in runs_all if family_of(r) == family]
    order = np.random.default_rng(seed).permutation(len(runs))
    history = [runs[i] for i in order[:n_runs]]
    test = completed([runs[i] for i in order[n_runs:]])
    print(f"family {family}: base {base} (never saw it); {len(history)} runs to fine-tune "
          f"on, {len(test)} completed runs held out for scoring")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "history.jsonl"
        write_records(src, history)
        t0 = time.time()
        fine_tune(src, Path(tmp) / "tuned", base=base, seed=seed, progress=lambda s: None)
        seconds = time.time() - t0
        tuned = load_model(Path(tmp) / "tuned")
        weight = tuned.weight if isinstance(tuned, BlendForecaster) else 1.0
        alone = tuned.primary if isinstance(tuned, BlendForecaster) else tuned
        base_model = load_model(base)
        rows = []
        for frac in (0.1, 0.2, 0.4):
            b = evaluate_end(forecaster_fn(base_model), test, frac)
            a = evaluate_end(forecaster_fn(alone), test, frac)
            t = evaluate_end(forecaster_fn(tuned), test, frac)
            last = evaluate_end(last_value_fn, test, frac)
            rows.append([family, len(test), f"{int(frac * 100)} %", b["mae"], a["mae"],
                         f"{100 * (1 - a['mae'] / b['mae']):.0f} %", t["mae"],
                         f"{100 * (1 - t['mae'] / b['mae']):.0f} %", weight,
                         t["mae"] / last["mae"], b["coverage80"], t["coverage80"],
                         f"{seconds:.0f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="all", help="a family, or all (default)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--base", default=None, help="default: the fold model without the family")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs = load_corpus(args.corpus)
    plan = folds("auto")
    families = sorted({f for fams, _ in plan for f in fams}) if args.family == "all" \
        else [args.family]
    rows = []
    for family in families:
        n = sum(family_of(r) == family for r in runs)
        if n < args.runs + 30:
            print(f"family {family}: {n} runs, fewer than --runs + 30: skipped")
            continue
        base = args.base or next((str(p) for fams, p in plan if family in fams), None)
        if base is None:
            sys.exit(f"no fold model trained without {family} in models/folds: run "
                     "`earlystop-predict train --output models` or pass --base")
        rows += run_family(family, base, runs, args.runs, args.seed)
    print_table(f"fine-tuning on {args.runs} runs of a family the base never saw "
                f"({os.cpu_count()} CPUs)",
                ["family", "test runs", "observed", "base MAE (pts)",
                 "fine-tuned LSTM alone MAE", "its cut", "served (blend) MAE", "error cut",
                 "LSTM weight", "served / last value", "base cov80 (%)", "served cov80 (%)",
                 "seconds"], rows)


if __name__ == "__main__":
    main()
