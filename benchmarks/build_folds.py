"""Build only the cross-validation fold models that the replay benchmarks need.

Run: python benchmarks/build_folds.py [--output models] [--lstm-epochs 16] [--lgbm-draws 5]

``earlystop-predict train`` writes ``OUTPUT/folds/foldK`` (a model trained without
each group of real families) and then the bundled model on every family, and scores
it. The replay benchmarks (``replay_real.py``, ``single_run.py``, ``search_rules.py``)
need only the folds, next to the bundled model (``models/folds/``, not committed).
This script runs the fold part of :func:`earlystop_predict.training.pipeline.train_bundle`
alone, with the bundled model's settings (from ``models/manifest.json``), so it costs
about three quarters of a full ``train`` (the final fit and the scoring are skipped).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest, write_manifest  # noqa: E402
from earlystop_predict.training import pipeline as pl  # noqa: E402
from earlystop_predict.training.data import LCBenchCurves  # noqa: E402
from earlystop_predict.training.lcbench import (  # noqa: E402
    TEST_TASKS,
    VAL_TASKS,
    load_lcbench,
    train_tasks,
)
from earlystop_predict.training.real import RealCurves, read_runs, usable  # noqa: E402


def main() -> None:
    base = read_manifest(bundled_dir())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=str(bundled_dir()))
    ap.add_argument("--lstm-epochs", type=int, default=int(base["lstm"]["epochs"]))
    ap.add_argument("--lgbm-draws", type=int, default=int(base["lightgbm"]["draws"]))
    ap.add_argument("--seed", type=int, default=int(base.get("seed", 0)))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from earlystop_predict.training.lgbm_train import lgbm_rows
    from earlystop_predict.training.lstm_train import calibration_rows

    t0 = time.time()
    out = Path(args.output)
    data = load_lcbench(None)
    lcb = LCBenchCurves(data)
    tr = np.where(np.isin(data.task_id, train_tasks(data)))[0]
    va = np.where(np.isin(data.task_id, VAL_TASKS))[0]
    records = usable(read_runs(pl.bundled_corpus(), option="--corpus"))
    real = RealCurves.from_records(records)
    rng = np.random.default_rng(args.seed)
    early = np.zeros(len(records), dtype=bool)
    for fam in sorted(set(real.group.tolist())):
        idx = np.where(real.group == fam)[0]
        early[rng.permutation(idx)[:int(round(0.15 * len(idx)))]] = True
    present = set(real.group.tolist())
    folds = [f for f in (tuple(x for x in fold if x in present) for fold in pl.FAMILY_FOLDS)
             if f]
    kw = {"lstm_epochs": args.lstm_epochs, "lgbm_draws": args.lgbm_draws, "seed": args.seed,
          "threads": args.threads, "progress": print}
    rows: dict = {"lstm": {"lcbench": [], "real": []}, "lightgbm": {"lcbench": [], "real": []}}
    fitted_all = []
    for k, fams in enumerate(folds):
        held = np.isin(real.group, list(fams))
        print(f"fold {k + 1}/{len(folds)}: without {', '.join(fams)} ({time.time() - t0:.0f} s)")
        fitted = pl._fit([(lcb, tr), (real, np.repeat(np.where(~held & ~early)[0], 4))],
                         [(lcb, va), (real, np.where(early & ~held)[0])], **kw)
        held_idx = np.where(held)[0]
        rows["lstm"]["real"].append(calibration_rows(fitted.net, real, held_idx))
        rows["lstm"]["lcbench"].append(calibration_rows(fitted.net, lcb, va[k::len(folds)]))
        rows["lightgbm"]["real"].append(lgbm_rows(fitted.lgbm, real, held_idx))
        rows["lightgbm"]["lcbench"].append(lgbm_rows(fitted.lgbm, lcb, va[k::len(folds)]))
        fitted_all.append(fitted)
    for k, (fams, fitted) in enumerate(zip(folds, fitted_all, strict=True)):
        fold_dir = out / "folds" / f"fold{k + 1}"
        artifacts = pl._write(fold_dir, fitted, pl._post(rows["lstm"], skip=k),
                              pl._post(rows["lightgbm"], skip=k))
        write_manifest(fold_dir, {
            "version": _dt.date.today().isoformat(), "artifacts": artifacts,
            "training_data": {"real": {"held_out_families": list(fams)},
                              "held_out_tasks": list(TEST_TASKS)},
            "note": f"cross-validation fold of {out}: trained without {', '.join(fams)}; "
                    "built by benchmarks/build_folds.py"})
    print(f"wrote {len(folds)} folds under {out / 'folds'} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
