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
* ``or-patience-D-N``: the gain rule at D, or patience N, whichever fires first.

Prints, pooled over every run, epochs saved, mean and p90 regret (points).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402
from search_variants import quantile_table, tables  # noqa: E402
from single_run import lcbench_groups, real_groups  # noqa: E402

MIN_EPOCHS = 3


def _arrays(task, table) -> dict:  # noqa: ANN001 - replay's _Task and ForecastTable
    v = task.values
    first = np.array([row[np.isfinite(row)][0] if np.isfinite(row).any() else np.nan
                      for row in v])
    return {"task": task, "bsf": task.best_so_far, "since": task.since_best,
            "q": quantile_table(table, 0.95), "first": first,
            "epoch": np.arange(1, v.shape[1] + 1)[None, :]}


def gain(a: dict, delta: float, stood: np.ndarray | int = 3) -> np.ndarray:
    """(R, E) where the gain rule fires (max mode: q0.95 < best + delta, best stood)."""
    with np.errstate(invalid="ignore"):
        return (a["q"] < a["bsf"] + delta) & (a["since"] >= stood)


def patience(a: dict, n: int) -> np.ndarray:
    return a["since"] >= n


def learned(a: dict, delta: float, points: float, k: int) -> np.ndarray:
    task = a["task"]
    flat = np.abs(a["bsf"] - a["first"][:, None]) * task.scale < points
    return gain(a, delta) & (~flat | (a["since"] >= k))


RULES = {
    "default": lambda a: gain(a, 0.03),
    **{f"patience-{n}": (lambda a, n=n: patience(a, n)) for n in (5, 10, 15, 20)},
    **{f"rel-{d:g}-{c:g}": (lambda a, d=d, c=c: gain(a, d, np.maximum(3, c * a["epoch"])))
       for d in (0.03, 0.05) for c in (0.2, 0.3, 0.5)},
    **{f"minfrac-{d:g}-{f:g}": (lambda a, d=d, f=f: gain(a, d) & (
        a["epoch"] >= f * a["task"].targets[:, None])) for d in (0.03, 0.05) for f in (0.1, 0.3)},
    **{f"learned-{d:g}-{p:g}-{k}": (lambda a, d=d, p=p, k=k: learned(a, d, p, k))
       for d in (0.03, 0.05) for p in (2, 10) for k in (8, 15)},
    **{f"or-patience-{d:g}-{n}": (lambda a, d=d, n=n: gain(a, d) | patience(a, n))
       for d in (0.02, 0.03) for n in (10, 15)},
}


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


def score(pairs: list) -> dict[str, tuple[float, float, float]]:
    arrays = [_arrays(t, tab) for t, tab in pairs if t.mode == "max"]
    out = {}
    for name, rule in RULES.items():
        got = [replay_rule(a, rule(a)) for a in arrays]
        trained = sum(int(s.sum()) for s, _, _ in got)
        total = sum(int(e.sum()) for _, e, _ in got)
        regret = np.concatenate([r for _, _, r in got])
        out[name] = (100 * (1 - trained / total), float(regret.mean()),
                     float(np.percentile(regret, 90)))
    return out


def _cell(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.1f} % / {v[1]:.3f} / {v[2]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lcbench-limit", type=int, default=300)
    args = ap.parse_args()
    t0 = time.perf_counter()
    real = score(tables(real_groups("auto")))
    lcb = score(tables(lcbench_groups("auto", args.lcbench_limit)))
    print_table("Single-run variants (pooled over runs: saved % / mean regret / p90 regret)",
                ["rule", "real families, out of fold", "held-out LCBench"],
                [[n, _cell(real[n]), _cell(lcb[n])] for n in RULES])
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
