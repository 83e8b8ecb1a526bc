"""Build only the cross-validation fold models that the replay benchmarks need.

Run: python benchmarks/build_folds.py [--output models] [--corpus PATH] [--lstm-epochs 16]
     [--lgbm-draws 5]

``earlystop-predict train`` writes ``OUTPUT/folds/foldK`` (a model trained without
each group of real families) and then the bundled model on every family, and scores
it. The replay benchmarks (``replay_real.py``, ``single_run.py``, ``search_rules.py``)
need only the folds, next to the bundled model (``models/folds/``, not committed).
This script runs the fold part of :func:`earlystop_predict.training.pipeline.train_bundle`
alone, with the bundled model's settings (from ``models/manifest.json``), so it costs
about three quarters of a full ``train`` (the final fit and its scoring are skipped).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest  # noqa: E402
from earlystop_predict.training import pipeline as pl  # noqa: E402
from earlystop_predict.training.data import LCBenchCurves  # noqa: E402
from earlystop_predict.training.lcbench import VAL_TASKS, load_lcbench, train_tasks  # noqa: E402


def main() -> None:
    base = read_manifest(bundled_dir())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=str(bundled_dir()))
    ap.add_argument("--corpus", default="bundled",
                    help="real runs (default: models/corpus/runs.jsonl.gz); a snapshot "
                         "lets the folds build while `collect` appends to the corpus")
    ap.add_argument("--lstm-epochs", type=int, default=int(base["lstm"]["epochs"]))
    ap.add_argument("--lgbm-draws", type=int, default=int(base["lightgbm"]["draws"]))
    ap.add_argument("--seed", type=int, default=int(base.get("seed", 0)))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.output)
    data = load_lcbench(None)
    lcb = LCBenchCurves(data)
    tr = np.where(np.isin(data.task_id, train_tasks(data)))[0]
    va = np.where(np.isin(data.task_id, VAL_TASKS))[0]
    real, records, early, folds, _ = pl._real_split(
        args.corpus, pl.FAMILY_FOLDS, val_fraction=0.15, real_weight=4, seed=args.seed)
    kw = {"lstm_epochs": args.lstm_epochs, "lgbm_draws": args.lgbm_draws, "seed": args.seed,
          "threads": args.threads, "progress": print}
    rows: dict = {"lstm": {"lcbench": [], "real": []}, "lightgbm": {"lcbench": [], "real": []}}
    pl._cross_validate(out, (lcb, tr, va), (real, records, early), folds, rows,
                       real_weight=4, kw=kw)  # the fold part of train_bundle, as it runs there
    print(f"wrote {len(folds)} folds under {out / 'folds'} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
