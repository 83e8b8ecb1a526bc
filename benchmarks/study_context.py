"""Study-aware forecasts on real curves: a study's finished runs as context.

Run: python benchmarks/study_context.py [--contexts 5,10,20,40] [--seeds 2]

Each family of the real corpus (``models/corpus``) is scored with the fold model
that never saw it (``models/folds/``, ``build_folds.py``); a family collected after
the bundled model was trained (in no fold of its manifest) is scored by the bundled
model itself, which never saw it either. A run's final epoch is
forecast from its first 10, 20 and 40 % of epochs, alone ("no context") and as a
member of a study whose other finished runs are K runs of the same family drawn at
random (``StudyContext``: the guarded gain correction of
``earlystop_predict.forecast.study``). MAE as a multiple of last value's MAE (lower
is better), and the 0.1-0.9 coverage, per family and pooled.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, print_table  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.forecast.study import StudyContext  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.training.evaluate import completed  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "models" / "corpus" / "runs.jsonl.gz"
FRACS = (0.1, 0.2, 0.4)


def _score(fcs, truth, fam, fams, base_err):
    """Per family and pooled: MAE / last value's MAE, and 0.1-0.9 coverage (%)."""
    mean = np.array([fc.mean for fc in fcs])
    cov = np.array([fc.quantiles["0.1"] <= t <= fc.quantiles["0.9"]
                    for fc, t in zip(fcs, truth, strict=True)])
    err = np.abs(mean - truth)
    out = {f: err[fam == f].mean() / base_err[fam == f].mean() for f in fams}
    out["pooled"] = err.mean() / base_err.mean()
    out["cov"] = 100 * cov.mean()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--contexts", default="5,10,20,40")
    ap.add_argument("--seeds", type=int, default=2, help="context draws per run")
    ap.add_argument("--guard", type=float, default=0.95, help="StudyContext's guard")
    args = ap.parse_args()
    plan = folds("auto")
    if not plan:
        raise SystemExit("no fold models in models/folds (python benchmarks/build_folds.py)")
    runs = completed(load_corpus(args.corpus))
    fam = np.array([family_of(r) for r in runs])
    model_of = {f: load_model(path) for fams, path in plan for f in fams}
    bundled = load_model("auto")
    for f in sorted(set(fam.tolist()) - set(model_of)):  # collected after the bundle
        model_of[f] = bundled
    keep = np.array([f in model_of for f in fam])
    runs = [r for r, k in zip(runs, keep, strict=True) if k]
    fam = fam[keep]
    fams = sorted(set(fam.tolist()))
    ctx_all = {f: StudyContext(model_of[f], [r for r, g in zip(runs, fam, strict=True) if g == f],
                               max_runs=None, guard=args.guard) for f in fams}
    sizes = [int(k) for k in args.contexts.split(",")]
    print(f"{len(runs)} completed real runs, {len(fams)} families, each scored by the fold "
          f"model that never saw it; contexts drawn {args.seeds}x per run")
    for frac in FRACS:
        pre = [r.truncated(max(1, round(frac * r.n_epochs))) for r in runs]
        truth = np.array([r.series(r.metric)[-1] for r in runs])
        base_err = np.abs(np.array([p.series(p.metric)[-1] for p in pre]) - truth)
        plain = [None] * len(runs)
        for f in fams:
            idx = np.where(fam == f)[0]
            for i, fc in zip(idx, model_of[f].forecast_many([pre[i] for i in idx],
                                                            [runs[i].n_epochs for i in idx]),
                             strict=True):
                plain[i] = fc
        rows = [["no context", *[_score(plain, truth, fam, fams, base_err)[c]
                                 for c in [*fams, "pooled", "cov"]]]]
        for k in sizes:
            scores = []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                fcs = []
                for i, r in enumerate(runs):
                    pool = [x.run_id for x, g in zip(runs, fam, strict=True)
                            if g == fam[i] and x.run_id != r.run_id]
                    ids = rng.choice(pool, size=min(k, len(pool)), replace=False)
                    fix = ctx_all[fam[i]].subset(ids.tolist()).correction(pre[i].n_epochs,
                                                                           r.n_epochs)
                    last = float(pre[i].series(r.metric)[-1])
                    fcs.append(fix.apply(plain[i], last) if fix is not None else plain[i])
                scores.append(_score(fcs, truth, fam, fams, base_err))
            rows.append([f"{k} finished runs", *[float(np.mean([s[c] for s in scores]))
                                                 for c in [*fams, "pooled", "cov"]]])
        print_table(f"{int(frac * 100)} % observed: MAE / last value's MAE",
                    ["context", *fams, "pooled", "cov 0.1-0.9 (%)"], rows)


if __name__ == "__main__":
    main()
