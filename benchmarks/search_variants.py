"""Search rules tried against ASHA: why the default is what it is.

Run: python benchmarks/search_variants.py [--orders 20] [--runs-per-order 100]
     [--lcbench-limit 300] [--only default,conformal] [--grid]

The same replayed random search as ``search_rules.py`` (each family of the real corpus
with the fold model that never saw it, ``models/folds/``; the held-out LCBench tasks
with the bundled model), but the rules are variants of the default decided here, on
the replay's forecast tables (``precompute_forecasts``), not through ``StopPolicy``.
``default`` re-implements the callbacks' default in a study (the incumbent rule at
``confidence`` 0.95 with ``climb_credit`` 0.05, the gain rule at ``min_delta`` 0.001
beside an incumbent and 0.03 before one, best stood 3 epochs, ``keep_top`` 0.15,
``flat_delta`` 0.05), ``previous`` the previous release's (no ``flat_delta``, no
``climb_credit``), ``before`` the one before it (no ``keep_top``): they make the same
stops as ``replay --policy default``, ``previous`` and ``keep-top-0`` of that release
on the same orders (checked order by order); the orders here are drawn per task over
all tasks, so the figures differ from ``search_rules.py``'s by the draw. ASHA is
replay's own (``ASHAScheduler(grace_period=3, reduction_factor=4)``). Prints the mean
over the real families and over the LCBench tasks of epochs saved and regret (points).

``--grid`` scores ``flat_delta`` x ``climb_credit`` x ``keep_top`` x ``confidence`` and
which setting issue 13's criterion picks: on all twelve real families (how the
defaults were chosen), on the first seven, and leave-one-family-out (each family with
the setting picked on the other eleven).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from statistics import NormalDist  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402
from single_run import lcbench_groups, real_groups  # noqa: E402

from earlystop_predict.policy.stop import (  # noqa: E402
    DEFAULT_CLIMB_CREDIT,
    DEFAULT_FLAT_DELTA,
    DEFAULT_KEEP_TOP,
)
from earlystop_predict.tools import replay as rp  # noqa: E402

ASHA_RUNGS = (3, 12, 48)
#: The callbacks' default in a study (StopPolicy's DEFAULT_KEEP_TOP, DEFAULT_FLAT_DELTA,
#: DEFAULT_CLIMB_CREDIT) and the previous release's.
DEFAULT = {"keep_top": DEFAULT_KEEP_TOP, "flat": DEFAULT_FLAT_DELTA,
           "climb": DEFAULT_CLIMB_CREDIT}
PREVIOUS = {"keep_top": DEFAULT_KEEP_TOP}
#: name: (what it is, the rule's settings). Keys: ``conf`` (the quantile compared),
#: ``inc`` ("yield": the best value an earlier run yielded, as the callbacks; "last":
#: its value at its last epoch), ``patience`` (poor forecasts in a row), ``at``
#: (epochs where a stop may happen), ``keep_top``; ``rung``: ASHA's rungs, ranked by
#: ``score`` ("value", as ASHA; "mean": the forecast's mean), ``veto``: a rung stop is
#: vetoed while the forecast's ``veto`` quantile is above the incumbent; ``keep_q``:
#: ``keep_top`` vetoes only where the forecast's ``keep_q`` quantile reaches the incumbent.
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("the callbacks' default: the incumbent and gain rules, keep_top 0.15, "
                "flat_delta 0.05 (a run within 5 points of its first value judged by "
                "ASHA's rungs), climb_credit 0.05", DEFAULT),
    "previous": ("the previous release's default: keep_top 0.15, no flat_delta, no "
                 "climb_credit (the variants from conformal on change it)", PREVIOUS),
    "flat-only": ("previous + flat_delta 0.05", {**PREVIOUS, "flat": 0.05}),
    "climb-only": ("previous + climb_credit 0.05", {**PREVIOUS, "climb": 0.05}),
    "flat-and-poor": ("default, a flat run stopped at a rung only where its forecast is "
                      "poor too", {**DEFAULT, "flat_and_poor": True}),
    "keep-veto-q0.99": ("default, keep_top vetoes a stop only where the forecast's q0.99 "
                        "plus the climb credit still reaches the incumbent",
                        {**DEFAULT, "keep_q": 0.99}),
    **{f"rung-gate-q{g:g}": (f"default, and a run that is not flat is stopped at a rung "
                             f"where its value is under the rung's cutoff and its "
                             f"forecast's q{g:g} under the incumbent", {**DEFAULT, "gate_q": g})
       for g in (0.5, 0.75, 0.9)},
    **{f"rung-gate-q{g:g}-cut{c:g}": (f"rung-gate-q{g:g}, the value under the rung's "
                                      f"{c:g} quantile", {**DEFAULT, "gate_q": g, "gate_cut": c})
       for g in (0.5, 0.75) for c in (0.25, 0.5)},
    "lcbench-pick": ("confidence 0.85, keep_top 0.15, flat_delta 0.1, no climb_credit: the "
                     "setting that meets issue 13's 88 % at 0.2 on LCBench",
                     {"conf": 0.85, "keep_top": 0.15, "flat": 0.1, "climb": 0.0}),
    "before": ("two releases ago: the incumbent and gain rules alone (the variants "
               "below up to confidence-0.9 change it)", {}),
    "keep-top-0.25": ("before, a run in the study's top quarter at this epoch kept",
                      {"keep_top": 0.25}),
    "rung-mean": ("ASHA's rungs ranked by the forecast's mean, not the value",
                  {"rung": True, "score": "mean"}),
    "asha-veto": ("ASHA, a stop vetoed while the forecast's q0.95 is above the incumbent",
                  {"rung": True, "score": "value", "veto": 0.95}),
    "at-rungs": ("before, stops only at ASHA's rung epochs", {"at": ASHA_RUNGS}),
    "at-rungs-top-0.1": ("before at ASHA's rung epochs, keep_top 0.1",
                         {"at": ASHA_RUNGS, "keep_top": 0.1}),
    "patience-2": ("before, two poor forecasts in a row", {"patience": 2}),
    "patience-3": ("before, three poor forecasts in a row", {"patience": 3}),
    "incumbent-last": ("before, the incumbent an earlier run's last value, not its best",
                       {"inc": "last"}),
    "confidence-0.9": ("before at confidence 0.9", {"conf": 0.9}),
    "conformal": ("previous, the q0.95 shifted by the study's own miss: by the 0.95 "
                  "quantile of (final - q0.95) over the forecasts of its runs that trained "
                  "to the end (from 5 such runs)", {**PREVIOUS, "conformal": "free"}),
    "conformal-up": ("conformal, the shift never below 0 (only ever more cautious)",
                     {**PREVIOUS, "conformal": "up"}),
    "conformal-no-keep": ("conformal, no keep_top", {"conformal": "free"}),
    "conformal-0.99": ("conformal, the shift the 0.99 quantile of the misses",
                       {**PREVIOUS, "conformal": "free", "level": 0.99}),
    "conformal-0.99-no-keep": ("conformal-0.99, no keep_top",
                               {"conformal": "free", "level": 0.99}),
    "conformal-max-no-keep": ("conformal, the shift the largest miss, no keep_top",
                              {"conformal": "free", "level": 1.0}),
}


def quantile_table(table: rp.ForecastTable, q: float) -> np.ndarray:
    """(R, E) the ``q`` quantile of every stored forecast, as ``Forecast.quantile``
    takes it (linear inside the stored levels, a normal tail beyond, within bounds)."""
    levels = [float(k) for k in table.keys]
    qs = table.quantiles
    if q in levels:
        return qs[:, :, levels.index(q)]
    med = qs[:, :, levels.index(0.5)]
    edge_q = levels[-1] if q > 0.5 else levels[0]
    edge = qs[:, :, levels.index(edge_q)]
    z = NormalDist()
    out = med + (edge - med) * z.inv_cdf(q) / z.inv_cdf(edge_q)
    if table.bounds is not None:
        out = np.clip(out, table.bounds[0], table.bounds[1])
    return out


def _yielded(task: rp._Task, r: int, stop: int | None, kind: str) -> float:
    if kind == "yield":
        return task.value_at(r, stop or rp._NO_STOP)
    return float(task.values[r, min(stop or int(task.ends[r]), int(task.ends[r])) - 1])


def forecast_rule(task: rp._Task, q: np.ndarray, order: np.ndarray, rule: dict,
                  q_keep: np.ndarray | None = None, q_gate: np.ndarray | None = None
                  ) -> rp._OrderResult:
    """One order under a variant of the default (max mode). ``flat``: a run within that
    of its first value is judged by ASHA's rungs against the earlier runs' values there
    (``flat_delta``; ``flat_and_poor``: and its forecast must be poor too); ``climb``:
    the incumbent rule's ``climb_credit``; ``q_keep``: ``keep_top`` vetoes a stop only
    where this quantile of the forecast (plus the credit) still reaches the incumbent;
    ``q_gate``: a run that is not flat is stopped at a rung too where its value there is
    under the rung's cutoff and this quantile of its forecast under the incumbent."""
    bsf, since = task.best_so_far, task.since_best
    at, patience, keep = rule.get("at"), rule.get("patience", 1), rule.get("keep_top")
    flat_delta, credit = rule.get("flat"), rule.get("climb") or 0.0
    firsts, climbs = task.firsts, task.climbs
    rungs = set(rp._asha_rungs(task, 3, rp.ASHA_REDUCTION_FACTOR))
    stop: dict[int, int] = {}
    incumbent: float | None = None
    seen = np.full((len(order), task.values.shape[1]), np.nan)  # best so far
    raw = np.full_like(seen, np.nan)  # the values, for the rungs
    misses: list[np.ndarray] = []  # final - q of the forecasts of runs trained to the end
    conformal = rule.get("conformal")
    for i, r in enumerate(int(x) for x in order):
        end, s, streak = int(task.ends[r]), None, 0
        shift = 0.0
        if conformal and len(misses) >= 5:
            shift = float(np.quantile(np.concatenate(misses), rule.get("level", 0.95)))
            shift = max(shift, 0.0) if conformal == "up" else shift
        keep_cut = rung_cut = None
        if i and keep:
            keep_cut = rp._nan_quantile(seen[:i], 1 - keep)
        if i and flat_delta is not None:
            rung_cut = rp._nan_quantile(raw[:i], 0.75)
        gate_cut = rung_cut if not rule.get("gate_cut") or not i else \
            rp._nan_quantile(raw[:i], rule["gate_cut"])
        for e in range(3, end):
            if not math.isfinite(task.values[r, e - 1]):
                s = e
                break
            flat = rung_cut is not None and math.isfinite(rung_cut[e - 1]) and \
                bsf[r, e - 1] - firsts[r] < flat_delta
            if flat and not rule.get("flat_and_poor"):
                if e in rungs and task.values[r, e - 1] < rung_cut[e - 1]:
                    s = e
                    break
                continue
            if q_gate is not None and e in rungs and incumbent is not None and \
                    gate_cut is not None and task.values[r, e - 1] < gate_cut[e - 1] and \
                    q_gate[r, e - 1] < incumbent:
                s = e
                break
            v = q[r, e - 1] + shift
            if not math.isfinite(v):
                continue
            c = climbs[r, e - 1]
            margin = credit * c * (task.targets[r] - e) if credit and c > 0 else 0.0
            delta = 0.001 if incumbent is not None else 0.03
            poor = (incumbent is not None and v + margin < incumbent) or \
                (since[r, e - 1] >= 3 and v < bsf[r, e - 1] + delta)
            hopeless = q_keep is not None and incumbent is not None and \
                q_keep[r, e - 1] + margin < incumbent
            if poor and keep_cut is not None and math.isfinite(keep_cut[e - 1]) \
                    and not hopeless:
                poor = not bsf[r, e - 1] >= keep_cut[e - 1]
            if flat:  # flat_and_poor: at a rung, below its cutoff and a poor forecast
                if poor and e in rungs and task.values[r, e - 1] < rung_cut[e - 1]:
                    s = e
                    break
                continue
            streak = streak + 1 if poor else 0
            if streak >= patience and (at is None or e in at):
                s = e
                break
        if s is not None:
            stop[r] = s
        elif conformal:
            fq = q[r, 2:end - 1]
            fq = fq[np.isfinite(fq)]
            if fq.size:
                misses.append(task.values[r, end - 1] - fq)
        trained = min(s or end, end)
        seen[i, :trained] = bsf[r, :trained]
        raw[i, :trained] = task.values[r, :trained]
        value = _yielded(task, r, s, rule.get("inc", "yield"))
        if math.isfinite(value) and (incumbent is None or value > incumbent):
            incumbent = value
    return rp._finish(task, order, stop)


def rung_rule(task: rp._Task, table: rp.ForecastTable, q: np.ndarray, order: np.ndarray,
              rule: dict) -> rp._OrderResult:
    """ASHA's rungs (reduction factor 4), ranked by the value or the forecast's mean; a
    stop optionally vetoed by the forecast."""
    rungs = rp._asha_rungs(task, 3, rp.ASHA_REDUCTION_FACTOR)
    score = task.values if rule["score"] == "value" else table.mean
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    stop: dict[int, int] = {}
    incumbent: float | None = None
    for r in (int(x) for x in order):
        end, s = int(task.ends[r]), None
        for m in rungs:
            if m > end:
                break
            v = score[r, m - 1]
            v = v if math.isfinite(v) else task.values[r, m - 1]
            cut = np.nanpercentile(recorded[m], 75) if recorded[m] else None
            recorded[m].append(v)
            vetoed = rule.get("veto") and incumbent is not None and q[r, m - 1] >= incumbent
            if cut is not None and v < cut and m < end and not vetoed:
                s = m
                break
        if s is not None:
            stop[r] = s
        value = task.value_at(r, s or rp._NO_STOP)
        if math.isfinite(value) and (incumbent is None or value > incumbent):
            incumbent = value
    return rp._finish(task, order, stop)


def tables(groups: list) -> list[tuple[rp._Task, rp.ForecastTable]]:
    out = []
    for recs, model in groups:
        tasks, _ = rp.build_tasks(recs)
        out += list(zip(tasks, rp.precompute_forecasts(tasks, model, 3), strict=True))
    return out


def score(pairs: list, orders: int, rpo: int) -> dict[str, tuple[float, float]]:
    """Per rule: mean over the tasks of (epochs saved %, mean regret)."""
    res = per_task(pairs, {n: rule for n, (_, rule) in VARIANTS.items()}, orders, rpo)
    return {n: _mean(rows, sorted(rows)) for n, rows in res.items()}


#: The grid ``--grid`` scores: flat_delta (None: off), climb_credit, keep_top, confidence.
GRID = [{"flat": f, "climb": c, "keep_top": k, "conf": q}
        for f in (None, 0.02, 0.05, 0.1) for c in (0.0, 0.05, 0.1) for k in (0.1, 0.15)
        for q in (0.95, 0.9)]
#: The first seven corpus families (``keep_top`` was chosen on them, session 8).
FIRST_SEVEN = ("breast-cancer", "digits-cnn", "digits-mlp", "sequence-gru", "synthetic",
               "text-hf", "wine")


def _grid_name(g: dict) -> str:
    return f"flat {g['flat']}, climb {g['climb']}, keep_top {g['keep_top']}, q{g['conf']}"


def per_task(pairs: list, rules: dict[str, dict], orders: int, rpo: int
             ) -> dict[str, dict[str, tuple[float, float]]]:
    """Per rule and task: (epochs saved %, mean regret), with ASHA's as ``asha``."""
    cfg = rp._config(["none"], None, orders=orders, runs_per_order=rpo, seed=0,
                     confidence=0.95, min_epochs=3, patience=1, threshold=None,
                     n_startup_trials=5, batch_size=4096, target=None, min_delta=0.03,
                     single_run=False)
    out: dict[str, dict[str, tuple[float, float]]] = {n: {} for n in ("asha", *rules)}
    for ti, (task, table) in enumerate(pairs):
        if task.mode != "max":
            continue
        ords = rp._task_orders(task, ti, cfg)
        qs: dict[float, np.ndarray] = {}
        s = rp._summarise([rp._run_asha(task, o, 3) for o in ords])
        out["asha"][task.name] = (s["epochs_saved_pct"], s["mean_regret"])
        for name, rule in rules.items():
            conf = rule.get("conf", 0.95)
            q = qs.setdefault(conf, quantile_table(table, conf))
            kq = rule.get("keep_q")
            q_keep = qs.setdefault(kq, quantile_table(table, kq)) if kq else None
            gq = rule.get("gate_q")
            q_gate = qs.setdefault(gq, quantile_table(table, gq)) if gq else None
            s = rp._summarise([rung_rule(task, table, q, o, rule) if rule.get("rung")
                               else forecast_rule(task, q, o, rule, q_keep, q_gate)
                               for o in ords])
            out[name][task.name] = (s["epochs_saved_pct"], s["mean_regret"])
    return out


def _mean(res: dict[str, tuple[float, float]], tasks: list[str]) -> tuple[float, float]:
    return (float(np.mean([res[t][0] for t in tasks])),
            float(np.mean([res[t][1] for t in tasks])))


def select(res: dict[str, dict[str, tuple[float, float]]], tasks: list[str]) -> str:
    """Issue 13's criterion on ``tasks``: the most epochs saved among the settings that
    save more than ASHA at at most half its regret; where none does, the lowest regret
    among those that save more than ASHA."""
    saved_a, regret_a = _mean(res["asha"], tasks)
    names = [n for n in res if n != "asha"]
    more = [n for n in names if _mean(res[n], tasks)[0] > saved_a] or names
    half = [n for n in more if _mean(res[n], tasks)[1] <= 0.5 * regret_a]
    if half:
        return max(half, key=lambda n: _mean(res[n], tasks)[0])
    return min(more, key=lambda n: _mean(res[n], tasks)[1])


def grid(args: argparse.Namespace) -> None:
    """Score ``GRID`` and say which setting issue 13's criterion picks: on all the real
    families, on the first seven, and leave-one-family-out (each family scored with the
    setting picked on the other eleven: what the choice is worth on a family it did
    not see)."""
    rules = {_grid_name(g): g for g in GRID}
    real = per_task(tables(real_groups("auto")), rules, args.orders, args.runs_per_order)
    lcb = per_task(tables(lcbench_groups("auto", args.lcbench_limit)), rules, args.orders,
                   args.runs_per_order)
    fams = sorted(real["asha"])
    first = [f for f in fams if f in FIRST_SEVEN]
    new = [f for f in fams if f not in FIRST_SEVEN]
    lt = sorted(lcb["asha"])

    def cells(n: str) -> list[str]:
        return [f"{a:.1f} % / {b:.3f}" for a, b in (
            _mean(real[n], fams), _mean(real[n], first), _mean(real[n], new),
            _mean(lcb[n], lt))]

    print_table("Search grid (saved / regret in points, mean over tasks)",
                ["rule", "real families", "first seven", "five new", "held-out LCBench"],
                [[n, *cells(n)] for n in ("asha", *rules)])
    rows = []
    for label, on in (("all 12 real families", fams), ("the first seven", first)):
        n = select(real, on)
        rows.append([f"picked on {label}", n, *cells(n)])
    picks = {f: select(real, [g for g in fams if g != f]) for f in fams}
    lofo = (float(np.mean([real[picks[f]][f][0] for f in fams])),
            float(np.mean([real[picks[f]][f][1] for f in fams])))
    rows.append(["leave one family out", f"{len(set(picks.values()))} settings picked",
                 f"{lofo[0]:.1f} % / {lofo[1]:.3f}", "", "", ""])
    rows.append(["ASHA (Ray Tune)", "", *cells("asha")])
    print_table("Issue 13's criterion (more saved than ASHA at at most half its regret)",
                ["selection", "setting", "real families", "first seven", "five new",
                 "held-out LCBench"], rows)


def misses(pairs: list, q: float = 0.85) -> list[list[object]]:
    """Per task: the share of (run, epoch 3-9) forecasts whose q quantile the run's final
    value exceeds, over all runs and over the best fifth (the runs a study sees finish):
    what a confidence adapted to the study's evidence would go by."""
    rows = []
    for task, table in pairs:
        if task.mode != "max":
            continue
        above = task.finals[:, None] > quantile_table(table, q)[:, 2:9]
        best = task.finals >= np.quantile(task.finals, 0.8)
        rows.append([task.name, float(above.mean()), float(above[best].mean())])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--runs-per-order", type=int, default=100)
    ap.add_argument("--lcbench-limit", type=int, default=300)
    ap.add_argument("--only", default=None,
                    help="comma-separated variants to score (default: all)")
    ap.add_argument("--grid", action="store_true",
                    help="score the flat_delta x climb_credit x keep_top x confidence grid "
                         "and the selection instead (about 15 minutes)")
    ap.add_argument("--misses", action="store_true",
                    help="print per task how often finals exceed the forecasts' q0.85 at "
                         "epochs 3-9 instead")
    args = ap.parse_args()
    if args.misses:
        rows = misses(tables(real_groups("auto"))) + misses(
            tables(lcbench_groups("auto", args.lcbench_limit)))
        print_table("Finals above the forecast's q0.85 at epochs 3-9 (share of forecasts)",
                    ["task", "all runs", "best fifth of runs"], rows)
        return
    if args.grid:
        t0 = time.perf_counter()
        grid(args)
        print(f"\n{time.perf_counter() - t0:.0f} s")
        return
    if args.only:
        keep = set(args.only.split(","))
        for name in [n for n in VARIANTS if n not in keep]:
            del VARIANTS[name]
    t0 = time.perf_counter()
    real = score(tables(real_groups("auto")), args.orders, args.runs_per_order)
    lcb = score(tables(lcbench_groups("auto", args.lcbench_limit)), args.orders,
                args.runs_per_order)
    names = {"asha": "ASHA (Ray Tune)", **{k: f"{k}: {v[0]}" for k, v in VARIANTS.items()}}
    print_table(f"Search variants ({args.orders} orders x {args.runs_per_order} runs; "
                "mean over tasks, saved / regret in points)",
                ["rule", "real families, out of fold", "held-out LCBench"],
                [[names[n], f"{real[n][0]:.1f} % / {real[n][1]:.3f}",
                  f"{lcb[n][0]:.1f} % / {lcb[n][1]:.3f}"] for n in names])
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
