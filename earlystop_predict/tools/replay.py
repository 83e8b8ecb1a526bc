"""Policy replay: what a stopping policy would have saved and cost on finished runs.

Replay simulates random search over stored full runs. Runs are grouped by
``task`` (each task is its own study). For many shuffled orders of a task's runs,
the runs "train" one after the other; a policy may stop a run at epoch ``e``.
Per order:

- epochs saved = 1 - trained epochs / total epochs (total: every run to its target);
- regret = best final value with no stopping - best final value among the runs the
  policy let finish (``max`` mode; the other way round for ``min``), in points
  (x100) for accuracy-like metrics, in metric units otherwise. When a policy
  finished no run of an order, the best value it saw at any trained epoch counts.

Policies:

- ``none``: every run trains to its target.
- ``threshold``: :class:`~earlystop_predict.policy.stop.StopPolicy` threshold rule
  (``threshold``; None: each task's median final value, an oracle baseline).
- ``incumbent``: :class:`~earlystop_predict.policy.stop.StopPolicy` whose incumbent is the
  best final value among the runs completed so far in this order (the first run
  always completes), as :class:`~earlystop_predict.policy.monitor.ForecastMonitor` does
  with a ledger.
- ``median``: Optuna's ``MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs-1)``
  rule, re-implemented without optuna: with steps ``epoch - 1``, prune when the
  run's best value so far is worse than the median of the completed runs' values at
  that step, once ``n_startup_trials`` runs completed.
- ``asha``: Ray Tune's ``ASHAScheduler(grace_period=min_epochs, reduction_factor=4,
  max_t=<longest target>)`` (asynchronous successive halving, one bracket),
  re-implemented without ray: at each rung epoch ``min_epochs * 4**k`` a run stops
  unless its value there is in the top quarter of the values earlier runs had there.

Forecasts are made once per (run, observed epochs) pair, in large
:meth:`~earlystop_predict.forecast.base.Forecaster.forecast_many` batches, and reused
across orders and policies. Stop decisions are the real ``StopPolicy.decide``; they
are cached per (run, incumbent), using that a higher (``max``) incumbent never
stops a run later.

Example:
    >>> from earlystop_predict.forecast.base import ScriptedForecaster
    >>> recs = [RunRecord(f"r{i}", task="t", epochs=[{"epoch": e, "val_accuracy": a * e / 10}
    ...         for e in range(1, 11)]) for i, a in enumerate([0.9, 0.5, 0.8])]
    >>> fc = ScriptedForecaster(lambda r, m: r.epochs[-1]["val_accuracy"] * m / r.n_epochs)
    >>> res = replay(recs, ["none", "incumbent"], fc, orders=4, seed=0)
    >>> res.summary["none"]["epochs_saved_pct"]
    0.0
"""

from __future__ import annotations

import bisect
import functools
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earlystop_predict.errors import ConfigError, ForecastUnavailableError
from earlystop_predict.forecast.base import QUANTILES, Forecast, Forecaster, qkey
from earlystop_predict.policy.stop import StopPolicy
from earlystop_predict.records.record import RunRecord, is_accuracy_like

POLICIES: tuple[str, ...] = ("incumbent", "threshold", "median", "asha", "none")
FORECAST_POLICIES = frozenset({"incumbent", "threshold"})
MEDIAN_STARTUP_TRIALS = 5
ASHA_REDUCTION_FACTOR = 4  # Ray Tune's default
_NO_STOP = 1 << 30  # "trained to the end" in stop-epoch arithmetic


# ----------------------------------------------------------------------- tasks
@dataclass
class _Task:
    """The runs of one study as arrays; ``values[r, e - 1]`` is the metric at epoch e."""

    name: str
    metric: str
    mode: str
    records: list[RunRecord]
    targets: np.ndarray  # (R,) int, target epoch per run
    values: np.ndarray  # (R, Mmax) float, NaN where missing
    scale: float  # x100 for accuracy-like metrics
    threshold: float | None = None

    @functools.cached_property
    def finals(self) -> np.ndarray:
        """(R,) the metric at each run's target epoch."""
        return self.values[np.arange(len(self.records)), self.targets - 1]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def _target_of(record: RunRecord, target: int | None) -> int:
    if target is not None:
        return int(target)
    planned = record.meta.get("max_epochs") if isinstance(record.meta, dict) else None
    if isinstance(planned, (int, float)) and not isinstance(planned, bool) and planned >= 2:
        return int(planned)
    return record.last_epoch


def build_tasks(records: Iterable[RunRecord], target: int | None = None,
                threshold: float | None = None) -> tuple[list[_Task], list[str]]:
    """Group full runs into studies; return the tasks and why runs were skipped.

    A run is skipped when its target metric at the target epoch is missing or the
    target is < 2.
    """
    groups: dict[tuple[str, str], list[tuple[RunRecord, int]]] = {}
    skipped: list[str] = []
    for rec in records:
        m = _target_of(rec, target)
        if m < 2:
            skipped.append(f"{rec.run_id}: target epoch {m} < 2")
            continue
        key = (rec.task if rec.task is not None else "(no task)", rec.metric)
        groups.setdefault(key, []).append((rec, m))
    tasks = []
    for (name, metric), members in sorted(groups.items()):
        mmax = max(m for _, m in members)
        keep_recs, keep_targets, rows = [], [], []
        for rec, m in members:
            row = np.full(mmax, np.nan)
            epochs = rec.epoch_numbers()
            series = rec.series(metric)
            inside = (epochs >= 1) & (epochs <= mmax)
            row[epochs[inside] - 1] = series[inside]
            if not math.isfinite(row[m - 1]):
                skipped.append(f"{rec.run_id}: no {metric} at target epoch {m} "
                               f"(last epoch {rec.last_epoch})")
                continue
            keep_recs.append(rec)
            keep_targets.append(m)
            rows.append(row)
        if not keep_recs:
            continue
        mode = keep_recs[0].mode or "max"
        tasks.append(_Task(name=name, metric=metric, mode=mode, records=keep_recs,
                           targets=np.asarray(keep_targets, dtype=np.int64),
                           values=np.vstack(rows),
                           scale=100.0 if is_accuracy_like(metric) else 1.0))
    if len({t.name for t in tasks}) < len(tasks):  # one task, several metrics
        for t in tasks:
            t.name = f"{t.name}/{t.metric}"
    for t in tasks:
        t.threshold = float(np.median(t.finals)) if threshold is None else float(threshold)
    return tasks, skipped


# -------------------------------------------------------------------- forecasts
@dataclass
class ForecastTable:
    """Precomputed forecasts of one task: ``get(r, E)`` is run r's forecast after E epochs."""

    keys: list[str]
    mean: np.ndarray  # (R, Mmax) NaN where none
    quantiles: np.ndarray  # (R, Mmax, K)
    models: list[str]
    model_idx: np.ndarray  # (R, Mmax) int, -1 where none
    targets: np.ndarray  # (R,)
    bounds: tuple[float, float] | None = None  # the metric's range, as the forecasts gave it

    def get(self, r: int, epoch: int) -> Forecast | None:
        """The forecast of run ``r`` made after ``epoch`` epochs, None if none was made."""
        k = self.model_idx[r, epoch - 1]
        if k < 0:
            return None
        qs = self.quantiles[r, epoch - 1]
        return Forecast(mean=float(self.mean[r, epoch - 1]),
                        quantiles={key: float(v) for key, v in zip(self.keys, qs, strict=True)
                                   if v == v},
                        model=self.models[k], observed_epochs=epoch,
                        target_epoch=int(self.targets[r]), bounds=self.bounds)


def _prefix(record: RunRecord, epoch: int, epoch_numbers: list[int]) -> RunRecord:
    """The run as it was after ``epoch`` epochs (rows shared, not copied)."""
    n = bisect.bisect_right(epoch_numbers, epoch)
    return RunRecord(run_id=record.run_id, metric=record.metric, mode=record.mode,
                     task=record.task, hparams=record.hparams, meta=record.meta,
                     epochs=record.epochs[:n])


def _forecast_chunk(forecaster: Forecaster, recs: list[RunRecord],
                    targets: list[int]) -> list[Forecast | None]:
    try:
        return list(forecaster.forecast_many(recs, targets))
    except ForecastUnavailableError:
        out: list[Forecast | None] = []
        for rec, t in zip(recs, targets, strict=True):
            try:
                out.append(forecaster.forecast(rec, t))
            except ForecastUnavailableError:
                out.append(None)
        return out


def precompute_forecasts(tasks: Sequence[_Task], forecaster: Forecaster, first_epoch: int,
                         batch_size: int = 4096) -> list[ForecastTable]:
    """Forecast every (run, E) pair, ``first_epoch <= E < target``, in big batches.

    Epochs whose metric is missing/NaN get no forecast (the run diverged there). Each
    batch is stored into arrays as it arrives, so memory stays that of the arrays.
    """
    pairs: list[tuple[int, int, int]] = []
    for ti, task in enumerate(tasks):
        for r, m in enumerate(task.targets):
            for e in range(first_epoch, int(m)):
                if math.isfinite(task.values[r, e - 1]):
                    pairs.append((ti, r, e))
    numbers = [[[int(row["epoch"]) for row in rec.epochs] for rec in task.records]
               for task in tasks]
    keys = [qkey(q) for q in QUANTILES]
    kpos = {k: i for i, k in enumerate(keys)}
    models: list[str] = []
    tables = [ForecastTable(keys=keys, mean=np.full(t.values.shape, np.nan),
                            quantiles=np.full(t.values.shape + (len(keys),), np.nan),
                            models=models, model_idx=np.full(t.values.shape, -1, np.int64),
                            targets=t.targets) for t in tasks]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        recs = [_prefix(tasks[ti].records[r], e, numbers[ti][r]) for ti, r, e in chunk]
        targets = [int(tasks[ti].targets[r]) for ti, r, _ in chunk]
        got = _forecast_chunk(forecaster, recs, targets)
        for (ti, r, e), fc in zip(chunk, got, strict=True):
            if fc is None:
                continue
            tab = tables[ti]
            tab.bounds = tab.bounds or fc.bounds  # one metric per task: one range
            if fc.model not in models:
                models.append(fc.model)
            tab.model_idx[r, e - 1] = models.index(fc.model)
            tab.mean[r, e - 1] = fc.mean
            for k, v in fc.quantiles.items():
                if k not in kpos:  # a level outside QUANTILES: one more column everywhere
                    kpos[k] = len(keys)
                    keys.append(k)
                    for t in tables:
                        t.quantiles = np.concatenate(
                            [t.quantiles, np.full(t.quantiles.shape[:2] + (1,), np.nan)],
                            axis=2)
                tab.quantiles[r, e - 1, kpos[k]] = v
    return tables


# -------------------------------------------------------------- stop decisions
@dataclass
class _StopEpochs:
    """Stop epoch of each run under one StopPolicy, cached per incumbent value.

    For ``max`` mode a higher incumbent makes every forecast at least as poor, so the
    stop epoch never grows with the incumbent; when the nearest cached incumbents below
    and above give the same stop epoch, so does every value between them.
    """

    policy: StopPolicy
    task: _Task
    table: ForecastTable
    first_epoch: int
    sandwich: bool = True
    decide_calls: int = 0
    _none: dict[int, int] = field(default_factory=dict)
    _incs: dict[int, list[float]] = field(default_factory=dict)
    _stops: dict[int, list[int]] = field(default_factory=dict)

    def get(self, r: int, incumbent: float | None) -> int:
        """The epoch run ``r`` stops at (``_NO_STOP`` if it trains to its target)."""
        if incumbent is None:
            if r not in self._none:
                self._none[r] = self._walk(r, None)
            return self._none[r]
        incs = self._incs.setdefault(r, [])
        stops = self._stops.setdefault(r, [])
        i = bisect.bisect_left(incs, incumbent)
        if i < len(incs) and incs[i] == incumbent:
            return stops[i]
        if self.sandwich and 0 < i < len(incs) and stops[i - 1] == stops[i]:
            return stops[i]
        s = self._walk(r, incumbent)
        incs.insert(i, incumbent)
        stops.insert(i, s)
        return s

    def _walk(self, r: int, incumbent: float | None) -> int:
        m = int(self.task.targets[r])
        streak = 0
        for e in range(self.first_epoch, m):
            v = self.task.values[r, e - 1]
            diverged = not math.isfinite(v)
            fc = None if diverged else self.table.get(r, e)
            self.decide_calls += 1
            d = self.policy.decide(fc, epoch=e, poor_streak=streak, incumbent=incumbent,
                                   diverged=diverged)
            if d.stop:
                return e
            streak = streak + 1 if d.poor else 0
        return _NO_STOP


# ------------------------------------------------------------------- simulation
@dataclass
class _OrderResult:
    trained: int
    total: int
    stopped: int
    runs: int
    regret: float
    none_finished: bool
    stops: dict[int, int]


def _regret(task: _Task, order: np.ndarray, stop: dict[int, int]) -> tuple[float, bool]:
    finals = task.finals[order]
    best_all = np.max(finals) if task.mode == "max" else np.min(finals)
    done = [int(r) for r in order if int(r) not in stop]
    if done:
        sel = task.finals[done]
        best_sel = np.max(sel) if task.mode == "max" else np.min(sel)
        none_finished = False
    else:  # nothing finished: the best value seen at any trained epoch
        seen = [task.values[int(r), :stop[int(r)]] for r in order]
        flat = np.concatenate(seen)
        best_sel = np.nanmax(flat) if task.mode == "max" else np.nanmin(flat)
        none_finished = True
    diff = best_all - best_sel if task.mode == "max" else best_sel - best_all
    return float(diff * task.scale), none_finished


def _finish(task: _Task, order: np.ndarray, stop: dict[int, int]) -> _OrderResult:
    total = int(task.targets[order].sum())
    trained = sum(stop.get(int(r), int(task.targets[r])) for r in order)
    regret, none_finished = _regret(task, order, stop)
    return _OrderResult(trained=trained, total=total, stopped=len(stop), runs=len(order),
                        regret=regret, none_finished=none_finished, stops=dict(stop))


def _run_stop_policy(task: _Task, order: np.ndarray, stops: _StopEpochs,
                     use_incumbent: bool) -> _OrderResult:
    stop: dict[int, int] = {}
    incumbent: float | None = None
    for r in order:
        r = int(r)
        s = stops.get(r, incumbent if use_incumbent else None)
        if s != _NO_STOP:
            stop[r] = s
            continue
        final = float(task.finals[r])
        if incumbent is None or task.better(final, incumbent):
            incumbent = final
    return _finish(task, order, stop)


def _run_median(task: _Task, order: np.ndarray, best_so_far: np.ndarray, min_epochs: int,
                n_startup: int) -> _OrderResult:
    stop: dict[int, int] = {}
    completed: list[int] = []
    median: np.ndarray | None = None
    for r in order:
        r = int(r)
        m = int(task.targets[r])
        if len(completed) >= n_startup and m - 1 >= min_epochs:
            if median is None:
                median = _nan_median(task.values[completed])
            b = best_so_far[r, min_epochs - 1:m - 1]
            med = median[min_epochs - 1:m - 1]
            worse = b < med if task.mode == "max" else b > med
            prune = np.isnan(b) | worse
            if prune.any():
                stop[r] = min_epochs + int(np.argmax(prune))
                continue
        completed.append(r)
        median = None
    return _finish(task, order, stop)


def _run_asha(task: _Task, order: np.ndarray, min_epochs: int,
              rf: int = ASHA_REDUCTION_FACTOR) -> _OrderResult:
    """Ray Tune's ASHA rule (``_Bracket.on_result``) over one order: at each rung, the
    cutoff is the ``1 - 1/rf`` percentile of the values recorded there before this
    run; every value reaching a rung is recorded, stopped or not."""
    max_t = int(task.targets.max())
    n_rungs = max(int(np.log(max_t / min_epochs) / np.log(rf) + 1), 0)
    rungs = [min_epochs * rf ** k for k in range(n_rungs)]
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    sign = 1.0 if task.mode == "max" else -1.0  # Ray compares rewards, max-oriented
    stop: dict[int, int] = {}
    for r in order:
        r = int(r)
        end = int(task.targets[r])
        for m in rungs:
            if m > end:
                break
            value = sign * float(task.values[r, m - 1])
            seen = recorded[m]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # only NaN so far
                cutoff = np.nanpercentile(seen, (1 - 1 / rf) * 100) if seen else None
            seen.append(value)
            if cutoff is not None and value < cutoff and m < end:
                stop[r] = m
                break
    return _finish(task, order, stop)


def _nan_median(x: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN (NaN where a column has none): ``np.nanpercentile(x, 50,
    axis=0)``, as Optuna computes it, without its slow per-column fallback."""
    valid = (~np.isnan(x)).sum(axis=0)
    s = np.sort(x, axis=0)  # NaN sorts last
    cols = np.arange(x.shape[1])
    lo = np.maximum(valid - 1, 0) // 2
    hi = np.maximum(valid, 1) // 2
    med = (s[lo, cols] + s[hi, cols]) / 2.0
    return np.where(valid > 0, med, np.nan)


def _best_so_far(task: _Task) -> np.ndarray:
    acc = np.fmax.accumulate if task.mode == "max" else np.fmin.accumulate
    return acc(task.values, axis=1)


# ------------------------------------------------------------------------ result
@dataclass
class ReplayResult:
    """What :func:`replay` found.

    Attributes:
        policies: the policies replayed, in order.
        summary: per policy: ``epochs_saved_pct``, ``mean_regret``, ``max_regret``,
            ``stopped_pct``, ``orders`` (over every task and order).
        per_task: per task, the same dict per policy.
        units: regret units (``"points"`` for accuracy-like metrics).
        info: runs, tasks, skipped runs, forecasts made, seconds spent...
        details: with ``details=True``, per task and policy one dict per order:
            ``order`` (run indices), ``stops`` ({run index: stop epoch}),
            ``trained``, ``total``, ``regret``.
    """

    policies: list[str]
    summary: dict[str, dict[str, float]]
    per_task: dict[str, dict[str, dict[str, float]]]
    units: str
    info: dict[str, Any]
    details: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = {"policies": self.policies, "summary": self.summary,
               "per_task": self.per_task, "units": self.units, "info": self.info}
        if self.details:
            out["details"] = self.details
        return out

    def table(self, per_task: bool = False) -> str:
        """The side-by-side table (and one per task if ``per_task``)."""
        parts = [_format(self.summary, self.policies, self.units)]
        if per_task:
            for name, rows in self.per_task.items():
                parts.append(f"\n{name}\n" + _format(rows, self.policies, self.units))
        return "\n".join(parts)


def _format(rows: dict[str, dict[str, float]], policies: list[str], units: str) -> str:
    u = "pts" if units == "points" else "units"
    head = (f"{'policy':<10} {'epochs saved %':>14} {f'mean regret ({u})':>18} "
            f"{f'max regret ({u})':>17} {'stopped runs %':>14}")
    lines = [head, "-" * len(head)]
    for p in policies:
        s = rows[p]
        lines.append(f"{p:<10} {s['epochs_saved_pct']:>14.1f} {s['mean_regret']:>18.3f} "
                     f"{s['max_regret']:>17.3f} {s['stopped_pct']:>14.1f}")
    return "\n".join(lines)


def _summarise(results: list[_OrderResult]) -> dict[str, float]:
    saved = [1.0 - o.trained / o.total for o in results]
    regrets = [o.regret for o in results]
    return {"epochs_saved_pct": 100.0 * float(np.mean(saved)),
            "mean_regret": float(np.mean(regrets)),
            "max_regret": float(np.max(regrets)),
            "stopped_pct": 100.0 * sum(o.stopped for o in results)
            / sum(o.runs for o in results),
            "orders": len(results),
            "orders_none_finished": sum(o.none_finished for o in results)}


# ------------------------------------------------------------------------ replay
def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(name, f"an integer >= {lo}", value)
    return int(value)


def replay(records: Sequence[RunRecord], policies: Sequence[str] = POLICIES,
           forecaster: Forecaster | None = None, *, target: int | None = None,
           orders: int | Sequence[Sequence[int]] = 50, runs_per_order: int | None = None,
           seed: int = 0, confidence: float = 0.95, min_epochs: int = 3, patience: int = 1,
           threshold: float | None = None, n_startup_trials: int = MEDIAN_STARTUP_TRIALS,
           batch_size: int = 4096, details: bool = False) -> ReplayResult:
    """Replay stopping policies over stored full runs (random search simulation).

    Args:
        records: full runs; grouped into studies by ``task`` (and metric).
        policies: any of ``"incumbent"``, ``"threshold"``, ``"median"``, ``"asha"``,
            ``"none"``. Default all five.
        forecaster: the accModel for ``incumbent``/``threshold`` (unused otherwise).
        target: 1-based target epoch for every run, >= 2. Default: each run's
            ``meta["max_epochs"]``, else its last epoch.
        orders: shuffled orders per task, >= 1; or explicit orders, each a list of
            indices into a task's runs (in input order), used for every task. Default 50.
        runs_per_order: runs drawn (without replacement) per order, >= 1.
            Default: every run of the task. Ignored with explicit orders.
        seed: seed of the orders; the same orders serve every policy. Default 0.
        confidence: StopPolicy confidence, in (0.5, 1). Default 0.95.
        min_epochs: first epoch any policy may stop at, >= 1. Default 3.
        patience: StopPolicy patience, >= 1. Default 1.
        threshold: bar of the ``threshold`` policy. Default: each task's median
            final value.
        n_startup_trials: completed runs before ``median`` prunes, >= 0. Default 5.
        batch_size: pairs per ``forecast_many`` call, >= 1. Default 4096.
        details: keep every order's outcome in ``ReplayResult.details``. Default False.

    Raises:
        ConfigError: an unknown policy, a bad count, or no forecaster where one is needed.
    """
    policies = list(dict.fromkeys(policies))
    for p in policies:
        if p not in POLICIES:
            raise ConfigError("policy", " | ".join(POLICIES), p)
    if not policies:
        raise ConfigError("policies", "at least one of " + ", ".join(POLICIES), policies)
    explicit: list[np.ndarray] | None = None
    if isinstance(orders, (int, np.integer)) and not isinstance(orders, bool):
        orders = _check_int("orders", orders, 1)
    elif isinstance(orders, Sequence) and orders and not isinstance(orders, str):
        explicit = [np.asarray(o, dtype=np.int64).reshape(-1) for o in orders]
        orders = len(explicit)
    else:
        raise ConfigError("orders", "an integer >= 1 or a list of run index lists", orders)
    if runs_per_order is not None:
        runs_per_order = _check_int("runs_per_order", runs_per_order, 1)
    min_epochs = _check_int("min_epochs", min_epochs, 1)
    patience = _check_int("patience", patience, 1)
    n_startup_trials = _check_int("n_startup_trials", n_startup_trials, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    if target is not None:
        target = _check_int("target", target, 2)
    needs_model = FORECAST_POLICIES & set(policies)
    if needs_model and forecaster is None:
        raise ConfigError("forecaster", f"a Forecaster for policies {sorted(needs_model)}",
                          None)
    t0 = time.perf_counter()
    tasks, skipped = build_tasks(records, target=target, threshold=threshold)
    if not tasks:
        raise ConfigError("records", "at least one run that reaches its target epoch",
                          f"{len(records)} runs ({len(skipped)} skipped)")
    # A StopPolicy of each kind per mode (the policies validate their own arguments).
    first_epoch = max(1, min_epochs - patience + 1)
    tables: list[ForecastTable | None] = [None] * len(tasks)
    n_forecasts = 0
    forecast_s = 0.0
    if needs_model:
        t1 = time.perf_counter()
        tables = list(precompute_forecasts(tasks, forecaster,  # type: ignore[arg-type]
                                           first_epoch, batch_size))
        forecast_s = time.perf_counter() - t1
        n_forecasts = int(sum((t.model_idx >= 0).sum() for t in tables))  # type: ignore[union-attr]
    t2 = time.perf_counter()
    results: dict[str, list[_OrderResult]] = {p: [] for p in policies}
    per_task: dict[str, dict[str, dict[str, float]]] = {}
    decide_calls = 0
    detail: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ti, task in enumerate(tasks):
        rng = np.random.default_rng([seed, ti])
        n_runs = len(task.records)
        k = n_runs if runs_per_order is None else min(runs_per_order, n_runs)
        if explicit is not None:
            for o in explicit:
                if o.size == 0 or o.min() < 0 or o.max() >= n_runs or \
                        len(set(o.tolist())) != o.size:
                    raise ConfigError("orders", f"distinct run indices in [0, {n_runs}) "
                                      f"for task {task.name!r}", o.tolist())
            task_orders = explicit
        else:
            task_orders = [rng.permutation(n_runs)[:k] for _ in range(orders)]
        stoppers: dict[str, _StopEpochs] = {}
        for p in needs_model:
            pol = StopPolicy(threshold=task.threshold if p == "threshold" else None,
                             confidence=confidence, min_epochs=min_epochs, patience=patience,
                             mode=task.mode, use_incumbent=p == "incumbent")
            stoppers[p] = _StopEpochs(pol, task, tables[ti], first_epoch)  # type: ignore[arg-type]
        best = _best_so_far(task) if "median" in policies else None
        task_results: dict[str, list[_OrderResult]] = {p: [] for p in policies}
        for order in task_orders:
            for p in policies:
                if p == "none":
                    res = _finish(task, order, {})
                elif p == "median":
                    res = _run_median(task, order, best, min_epochs,  # type: ignore[arg-type]
                                      n_startup_trials)
                elif p == "asha":
                    res = _run_asha(task, order, min_epochs)
                else:
                    res = _run_stop_policy(task, order, stoppers[p], p == "incumbent")
                task_results[p].append(res)
        decide_calls += sum(s.decide_calls for s in stoppers.values())
        per_task[task.name] = {p: _summarise(task_results[p]) for p in policies}
        if details:
            detail[task.name] = {
                p: [{"order": o.tolist(), "stops": res.stops, "trained": res.trained,
                     "total": res.total, "regret": res.regret}
                    for o, res in zip(task_orders, task_results[p], strict=True)]
                for p in policies}
        for p in policies:
            results[p].extend(task_results[p])
    units = "points" if all(t.scale == 100.0 for t in tasks) else "metric units"
    info: dict[str, Any] = {
        "runs": sum(len(t.records) for t in tasks), "tasks": len(tasks),
        "skipped": skipped, "orders": orders, "runs_per_order": runs_per_order,
        "seed": seed, "confidence": confidence, "min_epochs": min_epochs,
        "patience": patience, "threshold": threshold, "forecasts": n_forecasts,
        "forecast_models": list(tables[0].models) if needs_model and tables[0] else [],
        "decide_calls": decide_calls, "forecast_s": round(forecast_s, 3),
        "simulate_s": round(time.perf_counter() - t2, 3),
        "total_s": round(time.perf_counter() - t0, 3),
    }
    return ReplayResult(policies=policies,
                        summary={p: _summarise(results[p]) for p in policies},
                        per_task=per_task, units=units, info=info, details=detail)
