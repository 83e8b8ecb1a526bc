"""Single-run rules tried against patience and not kept: the frontier the forecasts allow.

Run: python benchmarks/single_run_variants.py [--lcbench-limit 300]

The same single-run replay as ``single_run.py`` (each family of the real corpus with the
fold model that never saw it, ``models/folds/``; the held-out LCBench tasks with the
bundled model; best weights restored, so a run's regret is its best over all its epochs
less its best up to the stop), but the rules are variants of the gain rule decided here
on the replay's forecast tables (``precompute_forecasts``), vectorised, not through
``StopPolicy``. The ``default`` and ``patience-N`` rows re-implement ``single_run.py``'s
rules and agree with it to the digit (they are the check that this script replays as
it does). Variants, each at a few settings:

* ``rel-D-C``: the gain rule at ``min_delta`` D, the best stood ``max(3, C x epoch)``
  epochs (a patience that grows with the run);
* ``minfrac-D-F``: the gain rule at D, never before F of the target epoch;
* ``learned-D-L-K``: the gain rule at D, and a run whose best is within L points of its
  first value (it has not left chance) stops only once its best has stood K epochs;
* ``or-patience-D-N``: the gain rule at D, or patience N, whichever fires first;
* ``flatpat-D-L-K``: the gain rule at D, or a run within L points of its first value
  (not yet off chance, where a forecast of a family never seen often over-forecasts)
  stopped once its best has stood K epochs, whatever its forecast;
* ``regret-model-T``: no hand-made rule at all but one learned for this very score: a
  LightGBM model of the 0.8 quantile of the points a run loses if it stops now (its
  best over all its epochs less its best so far), from the epoch, the fraction of the
  target, the best's gain on the first value, the last value and the since-best count,
  the forecast's 0.05, 0.5 and 0.95 quantiles over the best, the epoch-to-epoch noise
  and the recent gains; it stops once that quantile is under T points (and the best has
  stood 3 epochs). On the real families it is fitted on the other 11 families (leave one
  family out, each family weighted alike), on LCBench on all 12 real families: a
  learned rule that never saw the runs it stops. If it lands on the gain rule's line
  too, the limit is what the forecasts and the curve so far tell, not the rule's shape.

Prints, pooled over every run, epochs saved, mean and p90 regret (points).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402
from search_variants import quantile_table, tables  # noqa: E402
from single_run import lcbench_groups, real_groups  # noqa: E402

MIN_EPOCHS = 3


def _arrays(task, table) -> dict:  # noqa: ANN001 - replay's _Task and ForecastTable
    v = task.values
    return {"task": task, "table": table, "bsf": task.best_so_far, "since": task.since_best,
            "q": quantile_table(table, 0.95), "first": task.firsts,
            "epoch": np.arange(1, v.shape[1] + 1)[None, :]}


def gain(a: dict, delta: float, stood: np.ndarray | int = 3) -> np.ndarray:
    """(R, E) where the gain rule fires (max mode: q0.95 < best + delta, best stood)."""
    with np.errstate(invalid="ignore"):
        return (a["q"] < a["bsf"] + delta) & (a["since"] >= stood)


def patience(a: dict, n: int) -> np.ndarray:
    return a["since"] >= n


def _flat(a: dict, points: float) -> np.ndarray:
    """(R, E) the run's best is still within ``points`` of its first value."""
    return np.abs(a["bsf"] - a["first"][:, None]) * a["task"].scale < points


def learned(a: dict, delta: float, points: float, k: int) -> np.ndarray:
    return gain(a, delta) & (~_flat(a, points) | (a["since"] >= k))


def flat_patience(a: dict, delta: float, points: float, k: int) -> np.ndarray:
    return gain(a, delta) | (_flat(a, points) & (a["since"] >= k))


RULES = {
    "default": lambda a: gain(a, 0.03),
    **{f"patience-{n}": (lambda a, n=n: patience(a, n)) for n in (5, 10, 15, 20)},
    **{f"rel-{d:g}-{c:g}": (lambda a, d=d, c=c: gain(a, d, np.maximum(3, c * a["epoch"])))
       for d in (0.03, 0.05) for c in (0.2, 0.3, 0.5)},
    **{f"minfrac-{d:g}-{f:g}": (lambda a, d=d, f=f: gain(a, d) & (
        a["epoch"] >= f * a["task"].targets[:, None])) for d in (0.03, 0.05) for f in (0.1, 0.3)},
    **{f"learned-{d:g}-{p:g}-{k}": (lambda a, d=d, p=p, k=k: learned(a, d, p, k))
       for d in (0.03, 0.05) for p in (2, 10) for k in (8, 15)},
    **{f"flatpat-{d:g}-{p:g}-{k}": (lambda a, d=d, p=p, k=k: flat_patience(a, d, p, k))
       for d, p, k in ((0.02, 2, 8), (0.02, 2, 12), (0.03, 2, 12))},
    **{f"or-patience-{d:g}-{n}": (lambda a, d=d, n=n: gain(a, d) | patience(a, n))
       for d in (0.02, 0.03) for n in (10, 15)},
}


#: ``regret-model-T``'s thresholds (points) and the quantile it models.
REGRET_MODEL_T = (0.1, 0.3, 0.5, 0.75, 1.0)
REGRET_MODEL_Q = 0.8


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[:, k:] = x[:, :x.shape[1] - k]
    return out


def regret_features(a: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, E, F) features, (R, E) points lost by a stop now, (R, E) rows to learn from."""
    task = a["task"]
    sc = task.scale
    v, bsf = task.values * sc, a["bsf"] * sc
    shape = v.shape
    ep = np.broadcast_to(a["epoch"], shape).astype(float)
    tgt = np.broadcast_to(task.targets[:, None], shape).astype(float)
    d = np.diff(v, axis=1, prepend=np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: NaN noise
        noise = np.nanstd(np.stack([_lag(d, k) for k in range(5)]), axis=0)
    q = {k: quantile_table(a["table"], k) * sc for k in (0.05, 0.5, 0.95)}
    x = np.stack([ep, ep / tgt, tgt, bsf - a["first"][:, None] * sc, v - bsf,
                  a["since"].astype(float), q[0.05] - bsf, q[0.5] - bsf, q[0.95] - bsf,
                  noise, bsf - _lag(bsf, 3), bsf - _lag(bsf, 10), v - _lag(v, 5)], axis=-1)
    lost = task.kept[:, None] * sc - bsf
    rows = (ep >= MIN_EPOCHS) & (ep < task.ends[:, None]) & np.isfinite(v)
    return x, lost, rows


def fit_regret_model(arrays: list[dict]):  # noqa: ANN201 - a LightGBM booster
    """The 0.8 quantile of the points lost by a stop now, on ``arrays``' runs (each task
    weighted alike)."""
    import lightgbm as lgb

    parts = [regret_features(a) for a in arrays]
    x = np.concatenate([f[r] for f, _, r in parts])
    y = np.concatenate([lost[r] for _, lost, r in parts])
    w = np.concatenate([np.full(int(r.sum()), 1e4 / max(1, int(r.sum()))) for *_, r in parts])
    params = {"objective": "quantile", "alpha": REGRET_MODEL_Q, "verbose": -1,
              "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 200,
              "feature_fraction": 0.8, "num_threads": 2, "seed": 0, "deterministic": True}
    return lgb.train(params, lgb.Dataset(x, y, weight=w), 300)


def regret_model_scores(arrays: list[dict], train: list[dict] | None = None
                        ) -> list[np.ndarray]:
    """Per task of ``arrays``, (R, E) the modelled points lost by a stop now: from a
    model fitted on ``train``, or (None) on the other tasks of ``arrays`` (leave one out)."""
    models = [fit_regret_model(train)] * len(arrays) if train is not None else [
        fit_regret_model(arrays[:i] + arrays[i + 1:]) for i in range(len(arrays))]
    out = []
    for a, m in zip(arrays, models, strict=True):
        x = regret_features(a)[0]
        out.append(m.predict(x.reshape(-1, x.shape[-1]), num_threads=2).reshape(x.shape[:2]))
    return out


def replay_rule(a: dict, fires: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(trained epochs, replayable epochs, regret in points) per run of one task."""
    task = a["task"]
    ends = task.ends.astype(int)
    e = a["epoch"]
    ok = fires & (e >= MIN_EPOCHS) & (e < ends[:, None]) & np.isfinite(task.values)
    stop = np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, ends)
    rows = np.arange(len(ends))
    regret = np.abs(task.kept - a["bsf"][rows, stop - 1]) * task.scale
    return stop, ends, regret


def _pooled(got: list) -> tuple[float, float, float]:
    trained = sum(int(s.sum()) for s, _, _ in got)
    total = sum(int(e.sum()) for _, e, _ in got)
    regret = np.concatenate([r for _, _, r in got])
    return (100 * (1 - trained / total), float(regret.mean()),
            float(np.percentile(regret, 90)))


def arrays_of(pairs: list) -> list[dict]:
    return [_arrays(t, tab) for t, tab in pairs if t.mode == "max"]


def score(arrays: list[dict], train: list[dict] | None = None
          ) -> dict[str, tuple[float, float, float]]:
    """Per rule: pooled saved %, mean and p90 regret; ``regret-model-T`` fitted on
    ``train`` (None: leave one task of ``arrays`` out)."""
    out = {name: _pooled([replay_rule(a, rule(a)) for a in arrays])
           for name, rule in RULES.items()}
    scores = regret_model_scores(arrays, train)
    for t in REGRET_MODEL_T:
        out[f"regret-model-{t:g}"] = _pooled(
            [replay_rule(a, (s < t) & (a["since"] >= 3)) for a, s in zip(arrays, scores,
                                                                           strict=True)])
    return out


def _cell(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.1f} % / {v[1]:.3f} / {v[2]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lcbench-limit", type=int, default=300)
    args = ap.parse_args()
    t0 = time.perf_counter()
    real_arrays = arrays_of(tables(real_groups("auto")))
    real = score(real_arrays)
    lcb = score(arrays_of(tables(lcbench_groups("auto", args.lcbench_limit))), real_arrays)
    print_table("Single-run variants (pooled over runs: saved % / mean regret / p90 regret)",
                ["rule", "real families, out of fold", "held-out LCBench"],
                [[n, _cell(real[n]), _cell(lcb[n])] for n in real])
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
