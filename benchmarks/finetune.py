"""Fine-tuning on a user's tuning history: error on a new family before and after.

Run: python benchmarks/finetune.py [--family sequence-gru] [--runs 200] [--base bundled]

Takes a family and, as the base, the cross-validation fold model that was trained
without it (``models/folds/``, written by ``earlystop-predict train``; or
``--base DIR``), gives ``--runs`` of the family's runs to ``earlystop-predict train --from``
(which itself keeps 20 % aside for its report and 15 % for early stopping), and
scores base and fine-tuned models on the family's *other* completed runs, which
the fine-tuning never saw: MAE forecasting the final epoch from 10, 20 and 40 %.
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
from earlystop_predict.collect import load_corpus  # noqa: E402
from earlystop_predict.record import write_records  # noqa: E402
from earlystop_predict.training.evaluate import (  # noqa: E402
    completed,
    evaluate_end,
    forecaster_fn,
    last_value_fn,  # noqa: E402
)
from earlystop_predict.training.finetune import fine_tune  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="sequence-gru")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--base", default=None, help="default: the fold model without --family")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    family = args.family
    if args.base is None:
        base = next((str(path) for fams, path in folds("auto") if family in fams), None)
        if base is None:
            sys.exit(f"no fold model trained without {family} in models/folds: run "
                     "`earlystop-predict train --output models` or pass --base")
    else:
        base = args.base
    runs = [r for r in load_corpus(args.corpus) if family_of(r) == family]
    order = np.random.default_rng(args.seed).permutation(len(runs))
    history = [runs[i] for i in order[:args.runs]]
    test = completed([runs[i] for i in order[args.runs:]])
    print(f"family {family}: base {base} (never saw it); {len(history)} runs to fine-tune "
          f"on, {len(test)} completed runs held out for scoring")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "history.jsonl"
        write_records(src, history)
        t0 = time.time()
        fine_tune(src, Path(tmp) / "tuned", base=base, seed=args.seed,
                  progress=lambda s: None)
        seconds = time.time() - t0
        tuned = load_model(Path(tmp) / "tuned")
        base_model = load_model(base)
        rows = []
        for frac in (0.1, 0.2, 0.4):
            b = evaluate_end(forecaster_fn(base_model), test, frac)
            t = evaluate_end(forecaster_fn(tuned), test, frac)
            last = evaluate_end(last_value_fn, test, frac)
            rows.append([f"{int(frac * 100)} %", b["mae"], t["mae"],
                         f"{100 * (1 - t['mae'] / b['mae']):.0f} %", last["mae"],
                         b["mae"] / last["mae"], t["mae"] / last["mae"],
                         b["coverage80"], t["coverage80"]])
    print_table(f"fine-tuning on {len(history)} runs of {family} ({seconds:.0f} s on "
                f"{os.cpu_count()} CPUs)",
                ["observed", "base MAE (pts)", "fine-tuned MAE (pts)", "error cut",
                 "last value MAE", "base / last", "fine-tuned / last", "base cov80 (%)",
                 "fine-tuned cov80 (%)"], rows)


if __name__ == "__main__":
    main()
