"""Policy replay: what a stopping policy would have saved and cost on finished runs.

Replay simulates random search over stored full runs. Runs are grouped by
``task`` (each task is its own study). For many shuffled orders of a task's runs,
the runs "train" one after the other; a policy may stop a run at epoch ``e``.
With ``single_run=True`` each run is replayed alone instead (no study: the gain
rule, patience, ``default``).

What a run yields is its best value up to where it stopped (the best weights or
checkpoint kept: Keras ``restore_best_weights``, HF ``load_best_model_at_end``), or
up to its target when it trains to the end. Per order (search):

- epochs saved = 1 - trained epochs / total epochs (total: every run to its end);
- regret = the best any run yields untouched - the best the runs yield as the
  policy trained them (``max`` mode; the other way round for ``min``), in points
  (x100) for accuracy-like metrics, in metric units otherwise.

Per run (single run): epochs saved pooled over runs; regret = the run's best over all
its epochs - its best up to the stop.

**Censored runs.** A run that was stopped before its target (a ledger's stopped
runs) is kept, not skipped: it is replayed up to its last recorded epoch, which
counts as its end. A policy may stop it earlier (scored as any run), or let it run
to that end (it then trains what it trained, and yields its best so far: nothing is
assumed of the epochs never trained). It still counts in the incumbent and the
ranking of the other runs, with what it reached.

Policies:

- ``none``: every run trains to its target.
- ``threshold``: :class:`~earlystop_predict.policy.stop.StopPolicy` threshold rule
  (``threshold``; None: each task's median final value, an oracle baseline).
- ``incumbent``: :class:`~earlystop_predict.policy.stop.StopPolicy` whose incumbent is the
  best value any earlier run of this order yielded (stopped runs included; the first
  run always completes).
- ``gain`` / ``gain-<min_delta>`` / ``gain-<min_delta>-<k>``: the gain rule alone (no
  threshold, no incumbent), with ``gain_patience`` k (default: StopPolicy's; ``-0``: the
  forecast alone decides).
- ``default``: ``StopPolicy()`` with the callbacks' defaults: the incumbent rule in a
  study, the gain rule (``min_delta="auto"``) always, and in a study ``keep_top``
  (``DEFAULT_KEEP_TOP``): a run whose best so far is in that top fraction of what the
  order's earlier runs had reached by the same epoch (each up to its stop) is not
  stopped by the incumbent or the gain rule; a run still within ``flat_delta`` of its
  first value is judged by ASHA's rung rule against the order's earlier runs (each up
  to its stop), not by its forecast, and the incumbent rule credits a climbing run
  (``climb_credit``).
- ``keep-top-<fraction>``: the default with ``StopPolicy(keep_top=fraction)`` (search
  only); ``keep-top-0``: the default without ``keep_top``.
- ``previous``: the previous release's default (search only): ``keep_top``, no
  ``flat_delta``, no ``climb_credit``.
- ``patience-<N>``: Keras ``EarlyStopping(patience=N, restore_best_weights=True)``
  (:func:`patience_stop`); HF ``EarlyStoppingCallback`` and Lightning
  ``EarlyStopping`` count the same way.
- ``median``: Optuna's ``MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs-1)``
  rule, re-implemented without optuna: with steps ``epoch - 1``, prune when the
  run's best value so far is worse than the median of the completed runs' values at
  that step, once ``n_startup_trials`` runs completed.
- ``hyperband``: Ray Tune's asynchronous HyperBand, ``AsyncHyperBandScheduler(brackets=3,
  grace_period=min_epochs, reduction_factor=4, max_t=<longest target>)``: three ASHA
  brackets whose first rungs are ``min_epochs * 4**s``; each run joins one at random with
  Ray's chances (:func:`hyperband_brackets`; the draw is seeded by the order).
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
from earlystop_predict.forecast.study import MAX_STUDY_RUNS, MIN_STUDY_RUNS, StudyContext
from earlystop_predict.policy.stop import (
    CLIMB_WINDOW,
    DEFAULT_MIN_DELTA,
    RUNG_FACTOR,
    StopPolicy,
)
from earlystop_predict.records.features import canonical_metric
from earlystop_predict.records.record import RunRecord, default_mode, is_accuracy_like

#: The policies replayed when none is named (``gain``, ``gain-X``, ``patience-N`` and
#: ``default`` are accepted too).
POLICIES: tuple[str, ...] = ("incumbent", "threshold", "median", "asha", "none")
#: Also accepted (not replayed unless named).
EXTRA_POLICIES = ("hyperband", "default-study", "previous")
FORECAST_POLICIES = frozenset({"incumbent", "threshold", "gain", "default", "keep-top",
                               "default-study", "previous"})
STUDY_POLICIES = frozenset({"incumbent", "threshold", "median", "asha", "keep-top",
                            "hyperband", "previous"})
POLICY_HELP = ("incumbent | threshold | median | asha | hyperband | none | gain | "
               "default-study | previous | "
               "gain-<min_delta> | "
               "gain-<min_delta>-<gain_patience> | patience-<N> | default | keep-top-<fraction>")
#: A target epoch beyond this is refused (a record's ``meta.max_epochs`` of 1e9...).
MAX_TARGET_EPOCH = 100_000
#: Replay arrays of one task, runs x epochs x (quantiles + 3), at most this many cells.
MAX_CELLS = 200_000_000
MEDIAN_STARTUP_TRIALS = 5
ASHA_REDUCTION_FACTOR = 4  # Ray Tune's default
HYPERBAND_BRACKETS = 3  # AsyncHyperBandScheduler(brackets=3): ASHA and two later starts
_NO_STOP = 1 << 30  # "trained to the end" in stop-epoch arithmetic


# ----------------------------------------------------------------------- tasks
@dataclass
class _Task:
    """The runs of one study as arrays; ``values[r, e - 1]`` is the metric at epoch e.

    ``targets`` is the epoch each run forecasts (its planned last epoch); ``ends`` is
    the last epoch it can be replayed to: its target, or for a censored run (one that
    was stopped before it, as a ledger records it) its last epoch with a value.
    """

    name: str
    metric: str
    mode: str
    records: list[RunRecord]
    targets: np.ndarray  # (R,) int, target epoch per run
    values: np.ndarray  # (R, Emax) float, NaN where missing
    scale: float  # x100 for accuracy-like metrics
    threshold: float | None = None
    ends: np.ndarray | None = None  # (R,) int, last replayable epoch (default: targets)

    def __post_init__(self) -> None:
        if self.ends is None:
            self.ends = self.targets.copy()

    @functools.cached_property
    def finals(self) -> np.ndarray:
        """(R,) the metric at each run's last replayable epoch (its target, if reached)."""
        return self.values[np.arange(len(self.records)), self.ends - 1]

    @functools.cached_property
    def best_so_far(self) -> np.ndarray:
        """(R, Emax) the best value up to each epoch (NaN before the first value)."""
        acc = np.fmax.accumulate if self.mode == "max" else np.fmin.accumulate
        return acc(self.values, axis=1)

    @functools.cached_property
    def since_best(self) -> np.ndarray:
        """(R, Emax) epochs since the last strict improvement of the best value (the
        monitor's ``best_epoch``), -1 before the first value."""
        v, best = self.values, self.best_so_far
        prev = np.concatenate([np.full((v.shape[0], 1), np.nan), best[:, :-1]], axis=1)
        with np.errstate(invalid="ignore"):
            better = v > prev if self.mode == "max" else v < prev
        improved = np.isfinite(v) & (better | np.isnan(prev))
        idx = np.arange(v.shape[1])
        last = np.maximum.accumulate(np.where(improved, idx, -1), axis=1)
        return np.where(last >= 0, idx - last, -1)

    @functools.cached_property
    def kept(self) -> np.ndarray:
        """(R,) what a run trained to its end yields: its best value (best weights kept)."""
        return self.best_so_far[np.arange(len(self.records)), self.ends - 1]

    @functools.cached_property
    def firsts(self) -> np.ndarray:
        """(R,) each run's first finite value (NaN for none): ``flat_delta``'s start."""
        ok = np.isfinite(self.values)
        idx = ok.argmax(axis=1)
        out = self.values[np.arange(len(self.records)), idx]
        return np.where(ok.any(axis=1), out, np.nan)

    @functools.cached_property
    def climbs(self) -> np.ndarray:
        """(R, Emax) the best's gain per epoch over the last ``CLIMB_WINDOW`` epochs, in
        the better direction (NaN where unknown): ``climb_credit``'s ``climb``."""
        b, k = self.best_so_far, CLIMB_WINDOW
        out = np.full(b.shape, np.nan)
        if b.shape[1] > k:
            gain = b[:, k:] - b[:, :-k]
            out[:, k:] = (gain if self.mode == "max" else -gain) / k
        return out

    @functools.cached_property
    def censored(self) -> np.ndarray:
        """(R,) the run was stopped before its target (scored up to its last epoch)."""
        return self.ends < self.targets

    def value_at(self, r: int, stop: int) -> float:
        """What run ``r`` yields when it stops at ``stop`` (its best value up to there)."""
        return float(self.best_so_far[r, min(int(stop), int(self.ends[r])) - 1])

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def _planned(record: RunRecord) -> Any:
    meta = record.meta if isinstance(record.meta, dict) else {}
    extra = getattr(record, "extra", None) or {}
    return meta.get("max_epochs", extra.get("target_epoch"))


def _target_of(record: RunRecord, target: int | None) -> int:
    if target is not None:
        return int(target)
    planned = _planned(record)
    if isinstance(planned, (int, float)) and not isinstance(planned, bool) and planned >= 2 \
            and math.isfinite(planned):
        return int(min(planned, MAX_TARGET_EPOCH + 1))
    return record.last_epoch


def _series(record: RunRecord, metric: str) -> np.ndarray:
    """The run's ``metric`` per epoch row, under whatever alias it was logged as
    (``val_acc`` for ``val_accuracy``...)."""
    values = record.series(metric)
    if np.isfinite(values).any():
        return values
    canon = canonical_metric(metric)
    keys = dict.fromkeys(k for row in record.epochs for k in row)
    for key in keys:
        if key != metric and canonical_metric(key) == canon:
            alias = record.series(key)
            if np.isfinite(alias).any():
                return alias
    return values


def _end_of(record: RunRecord, target: int, epochs: np.ndarray,
            series: np.ndarray) -> tuple[int | None, str]:
    """The last replayable epoch of a run (None: skip it, with why)."""
    at_target = series[epochs == target]
    if at_target.size and math.isfinite(at_target[-1]):
        return target, ""
    why = f"{record.run_id}: no {record.metric} at target epoch {target} " \
          f"(last epoch {record.last_epoch})"
    ok = np.isfinite(series) & (epochs >= 1) & (epochs < target)
    if record.stopped is None or not ok.any():
        return None, why
    end = int(epochs[ok].max())
    return (end, "") if end >= 1 else (None, why)


def _group(records: Iterable[RunRecord], target: int | None, skipped: list[str]
           ) -> dict[tuple[str, str], list[tuple[RunRecord, int, int, np.ndarray]]]:
    """Runs by (task, canonical metric): (record, target, end, series) each."""
    groups: dict[tuple[str, str], list[tuple[RunRecord, int, int, np.ndarray]]] = {}
    for rec in records:
        m = _target_of(rec, target)
        if m < 2:
            skipped.append(f"{rec.run_id}: target epoch {m} < 2")
            continue
        if m > MAX_TARGET_EPOCH:
            skipped.append(f"{rec.run_id}: target epoch {m} > {MAX_TARGET_EPOCH}")
            continue
        series = _series(rec, rec.metric)
        end, why = _end_of(rec, m, rec.epoch_numbers(), series)
        if end is None:
            skipped.append(why)
            continue
        key = (rec.task if rec.task is not None else "(no task)", canonical_metric(rec.metric))
        groups.setdefault(key, []).append((rec, m, end, series))
    return groups


def _check_size(name: str, runs: int, width: int) -> None:
    cells = runs * width * (len(QUANTILES) + 3)
    if cells > MAX_CELLS:
        raise ConfigError("records", f"at most {MAX_CELLS:,} replay cells (runs x epochs x "
                          f"{len(QUANTILES) + 3}); pass --target or fewer runs",
                          f"task {name!r}: {runs} runs x {width} epochs")


def _make_task(name: str, metric: str,
               members: list[tuple[RunRecord, int, int, np.ndarray]]) -> _Task:
    width = max(end for _, _, end, _ in members)
    _check_size(name, len(members), width)
    rows = []
    for rec, _, _, series in members:
        row = np.full(width, np.nan)
        epochs = rec.epoch_numbers()
        inside = (epochs >= 1) & (epochs <= width)
        row[epochs[inside] - 1] = series[inside]
        rows.append(row)
    recs = [m[0] for m in members]
    return _Task(name=name, metric=metric, mode=recs[0].mode or default_mode(metric),
                 records=recs, targets=np.asarray([m[1] for m in members], dtype=np.int64),
                 values=np.vstack(rows), scale=100.0 if is_accuracy_like(metric) else 1.0,
                 ends=np.asarray([m[2] for m in members], dtype=np.int64))


def build_tasks(records: Iterable[RunRecord], target: int | None = None,
                threshold: float | None = None) -> tuple[list[_Task], list[str]]:
    """Group full runs into studies; return the tasks and why runs were skipped.

    A run is skipped when its target metric at the target epoch is missing (unless it
    was stopped: then it is a censored run, replayed up to its last epoch) or the
    target is < 2 or > :data:`MAX_TARGET_EPOCH`.

    Raises:
        ConfigError: a task is too large to replay (:data:`MAX_CELLS`).
    """
    skipped: list[str] = []
    groups = _group(records, target, skipped)
    tasks = [_make_task(name, metric, members)
             for (name, metric), members in sorted(groups.items())]
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


def _pairs(tasks: Sequence[_Task], first_epoch: int) -> list[tuple[int, int, int]]:
    """(task, run, E) for every epoch E with a value, ``first_epoch <= E < end``."""
    pairs: list[tuple[int, int, int]] = []
    for ti, task in enumerate(tasks):
        for r, m in enumerate(task.ends):
            pairs.extend((ti, r, e) for e in range(first_epoch, int(m))
                         if math.isfinite(task.values[r, e - 1]))
    return pairs


def _empty_tables(tasks: Sequence[_Task], keys: list[str]) -> list[ForecastTable]:
    models: list[str] = []  # one list shared by every table
    return [ForecastTable(keys=keys, mean=np.full(t.values.shape, np.nan),
                          quantiles=np.full(t.values.shape + (len(keys),), np.nan),
                          models=models, model_idx=np.full(t.values.shape, -1, np.int64),
                          targets=t.targets) for t in tasks]


def _key_column(tables: list[ForecastTable], kpos: dict[str, int], key: str) -> int:
    """The column of quantile ``key``; a level outside QUANTILES adds one everywhere."""
    if key not in kpos:
        keys = tables[0].keys
        kpos[key] = len(keys)
        keys.append(key)
        for t in tables:
            t.quantiles = np.concatenate(
                [t.quantiles, np.full(t.quantiles.shape[:2] + (1,), np.nan)], axis=2)
    return kpos[key]


def _store(tables: list[ForecastTable], kpos: dict[str, int], ti: int, r: int, e: int,
           fc: Forecast) -> None:
    tab = tables[ti]
    tab.bounds = tab.bounds or fc.bounds  # one metric per task: one range
    models = tab.models
    if fc.model not in models:
        models.append(fc.model)
    tab.model_idx[r, e - 1] = models.index(fc.model)
    tab.mean[r, e - 1] = fc.mean
    for k, v in fc.quantiles.items():
        col = _key_column(tables, kpos, k)  # may grow every table's array: first
        tab.quantiles[r, e - 1, col] = v


def precompute_forecasts(tasks: Sequence[_Task], forecaster: Forecaster, first_epoch: int,
                         batch_size: int = 4096) -> list[ForecastTable]:
    """Forecast every (run, E) pair, ``first_epoch <= E < end``, in big batches.

    Epochs whose metric is missing/NaN get no forecast (the run diverged there). Each
    batch is stored into arrays as it arrives, so memory stays that of the arrays.
    """
    pairs = _pairs(tasks, first_epoch)
    numbers = [[[int(row["epoch"]) for row in rec.epochs] for rec in task.records]
               for task in tasks]
    keys = [qkey(q) for q in QUANTILES]
    kpos = {k: i for i, k in enumerate(keys)}
    tables = _empty_tables(tasks, keys)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        recs = [_prefix(tasks[ti].records[r], e, numbers[ti][r]) for ti, r, e in chunk]
        targets = [int(tasks[ti].targets[r]) for ti, r, _ in chunk]
        got = _forecast_chunk(forecaster, recs, targets)
        for (ti, r, e), fc in zip(chunk, got, strict=True):
            if fc is not None:
                _store(tables, kpos, ti, r, e, fc)
    return tables


# -------------------------------------------------------------- stop decisions
@dataclass
class _StopEpochs:
    """Stop epoch of each run under one StopPolicy, cached per incumbent value.

    For ``max`` mode a higher incumbent makes every forecast at least as poor, so the
    stop epoch never grows with the incumbent; when the nearest cached incumbents below
    and above give the same stop epoch, so does every value between them. The gain
    rule's ``best`` is the run's own best so far, the same for every incumbent.
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
        """The epoch run ``r`` stops at (``_NO_STOP`` if it trains to its end)."""
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

    def _walk(self, r: int, incumbent: float | None, cutoffs: np.ndarray | None = None,
              study: StudyContext | None = None, rungs: np.ndarray | None = None) -> int:
        """Run ``r``'s stop epoch; ``cutoffs[e - 1]``: ``keep_top``'s peer cutoff;
        ``study``: the finished runs that correct its forecasts; ``rungs[e - 1]``: the
        top quarter's cutoff of the earlier runs' values at epoch e (``flat_delta``)."""
        streak = 0
        best = self.task.best_so_far[r]
        since = self.task.since_best[r]
        first, climb = self.task.firsts[r], self.task.climbs[r]
        flat = self.policy.flat_delta is not None
        for e in range(self.first_epoch, int(self.task.ends[r])):
            v = self.task.values[r, e - 1]
            diverged = not math.isfinite(v)
            fc = None if diverged else self.table.get(r, e)
            if study is not None and fc is not None:
                fc = study.correct(e, int(self.task.targets[r]), float(v), fc)
            self.decide_calls += 1
            d = self.policy.decide(fc, epoch=e, poor_streak=streak, incumbent=incumbent,
                                   diverged=diverged, best=float(best[e - 1]),
                                   since_best=int(since[e - 1]) if since[e - 1] >= 0 else None,
                                   peer_cutoff=_cutoff_at(cutoffs, e),
                                   first=None if math.isnan(first) else float(first),
                                   climb=None if math.isnan(climb[e - 1]) else float(climb[e - 1]),
                                   rung_cutoff=_cutoff_at(rungs, e) if flat else None,
                                   value=None if diverged else float(v))
            if d.stop:
                return e
            streak = streak + 1 if d.poor else 0
        return _NO_STOP


def _cutoff_at(cutoffs: np.ndarray | None, e: int) -> float | None:
    if cutoffs is None or e > cutoffs.size or not math.isfinite(cutoffs[e - 1]):
        return None
    return float(cutoffs[e - 1])


def _nan_quantile(x: np.ndarray, q: float) -> np.ndarray:
    """Column ``q`` quantiles ignoring NaN, linearly interpolated (``np.nanquantile``,
    as :func:`~earlystop_predict.policy.stop.top_cutoff` takes them); NaN where a column
    has none."""
    valid = (~np.isnan(x)).sum(axis=0)
    s = np.sort(x, axis=0)  # NaN sorts last
    cols = np.arange(x.shape[1])
    top = np.maximum(valid - 1, 0)
    pos = q * top
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, top)
    got = s[lo, cols] + (s[hi, cols] - s[lo, cols]) * (pos - lo)
    return np.where(valid > 0, got, np.nan)


def patience_stop(values: np.ndarray, end: int, patience: int, mode: str = "max") -> int:
    """Where Keras ``EarlyStopping(patience=N, min_delta=0)`` stops a run (1-based epoch;
    ``_NO_STOP`` when it trains to ``end``).

    As ``keras.callbacks.EarlyStopping.on_epoch_end``: ``wait`` counts epochs since the
    last strict improvement of the best value (NaN never improves) and the run stops
    once ``wait >= patience`` after its first epoch, so patience 0 and 1 stop alike.
    HF ``EarlyStoppingCallback(early_stopping_patience=N)`` and Lightning
    ``EarlyStopping(patience=N)`` count the same way.

    Args:
        values: the metric per epoch (index e - 1), NaN where missing.
        end: the last epoch the run can train, >= 1.
        patience: epochs without improvement tolerated, >= 0.
        mode: ``"max"`` or ``"min"``. Default ``"max"``.
    """
    best = -math.inf if mode == "max" else math.inf
    wait = 0
    for e in range(1, end):
        v = float(values[e - 1])
        wait += 1
        if v > best if mode == "max" else v < best:
            best, wait = v, 0
            continue
        if wait >= patience and e > 1:
            return e
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
    """Points lost: the best any run of the order yields untouched against the best the
    runs yield as the policy trained them (each run its best value up to its stop)."""
    pick = np.max if task.mode == "max" else np.min
    best_all = pick(task.kept[order])
    got = pick([task.value_at(int(r), stop.get(int(r), _NO_STOP)) for r in order])
    diff = best_all - got if task.mode == "max" else got - best_all
    return float(diff * task.scale), all(int(r) in stop for r in order)


def _finish(task: _Task, order: np.ndarray, stop: dict[int, int]) -> _OrderResult:
    total = int(task.ends[order].sum())
    trained = sum(stop.get(int(r), int(task.ends[r])) for r in order)
    regret, none_finished = _regret(task, order, stop)
    return _OrderResult(trained=trained, total=total, stopped=len(stop), runs=len(order),
                        regret=regret, none_finished=none_finished, stops=dict(stop))


def _run_stop_policy(task: _Task, order: np.ndarray, stops: _StopEpochs,
                     use_incumbent: bool) -> _OrderResult:
    """One order under a StopPolicy; the incumbent is the best value any earlier run
    yielded, stopped runs included (a stopped run is censored evidence)."""
    stop: dict[int, int] = {}
    incumbent: float | None = None
    for r in order:
        r = int(r)
        s = stops.get(r, incumbent if use_incumbent else None)
        if s != _NO_STOP:
            stop[r] = s
        value = task.value_at(r, s)
        if math.isfinite(value) and (incumbent is None or task.better(value, incumbent)):
            incumbent = value
    return _finish(task, order, stop)


def _study_curve(task: _Task, table: ForecastTable, r: int) -> tuple[Any, ...]:
    """A finished run as :meth:`StudyContext.from_curves` takes it, from the table."""
    n = int(task.ends[r]) - 1
    lo, hi = table.keys.index(qkey(0.1)), table.keys.index(qkey(0.9))
    half = (table.quantiles[r, :n, hi] - table.quantiles[r, :n, lo]) / 2
    return task.values[r, :n], table.mean[r, :n], half, float(task.values[r, n])


def _run_walked(task: _Task, order: np.ndarray, stops: _StopEpochs, *,
                study: bool = False) -> _OrderResult:
    """One order as the callbacks run a study, walked run by run (no cache across
    orders): the incumbent is the best any earlier run yielded; with the policy's
    ``keep_top``, a run is never stopped while its best so far is in the top fraction
    of what the earlier runs had reached by the same epoch (each seen up to where it
    stopped); with ``study``, each run's forecasts are corrected by the runs that
    finished before it (:class:`StudyContext`, the most recent :data:`MAX_STUDY_RUNS`),
    as with a ledger."""
    keep = stops.policy.keep_top
    q = None if keep is None else (1.0 - keep if task.mode == "max" else keep)
    quarter = 1.0 / RUNG_FACTOR
    rq = None if stops.policy.flat_delta is None else (
        1.0 - quarter if task.mode == "max" else quarter)
    seen = np.full((len(order), task.values.shape[1]), np.nan)  # best so far
    raw = np.full_like(seen, np.nan) if rq is not None else None  # the values (rungs)
    stop: dict[int, int] = {}
    incumbent: float | None = None
    done: list[tuple[Any, ...]] = []
    context: StudyContext | None = None
    for i, r in enumerate(int(x) for x in order):
        if study and context is None and len(done) >= MIN_STUDY_RUNS:
            context = StudyContext.from_curves(done[-MAX_STUDY_RUNS:])
        cutoffs = rungs = None
        if i and q is not None:
            cutoffs = _nan_quantile(seen[:i], q)
        if i and raw is not None:
            rungs = _nan_quantile(raw[:i], rq)
        s = stops._walk(r, incumbent, cutoffs, study=context, rungs=rungs)
        if s != _NO_STOP:
            stop[r] = s
        elif study and not task.censored[r]:
            done.append(_study_curve(task, stops.table, r))
            context = None
        trained = min(s, int(task.ends[r]))
        seen[i, :trained] = task.best_so_far[r, :trained]
        if raw is not None:
            raw[i, :trained] = task.values[r, :trained]
        value = task.value_at(r, s)
        if math.isfinite(value) and (incumbent is None or task.better(value, incumbent)):
            incumbent = value
    return _finish(task, order, stop)


def _run_median(task: _Task, order: np.ndarray, min_epochs: int,
                n_startup: int) -> _OrderResult:
    stop: dict[int, int] = {}
    completed: list[int] = []
    median: np.ndarray | None = None
    best_so_far = task.best_so_far
    for r in order:
        r = int(r)
        m = int(task.ends[r])
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


def _asha_rungs(task: _Task, min_epochs: int, rf: int) -> list[int]:
    max_t = int(task.targets.max())
    n_rungs = max(int(np.log(max_t / min_epochs) / np.log(rf) + 1), 0)
    return [min_epochs * rf ** k for k in range(n_rungs)]


def _run_asha(task: _Task, order: np.ndarray, min_epochs: int,
              rf: int = ASHA_REDUCTION_FACTOR) -> _OrderResult:
    """Ray Tune's ASHA rule (``_Bracket.on_result``) over one order: at each rung, the
    cutoff is the ``1 - 1/rf`` percentile of the values recorded there before this
    run; every value reaching a rung is recorded, stopped or not."""
    rungs = _asha_rungs(task, min_epochs, rf)
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    stop: dict[int, int] = {}
    for r in order:
        s = _rung_stop(task, int(r), rungs, recorded, rf)
        if s is not None:
            stop[int(r)] = s
    return _finish(task, order, stop)


def _rung_stop(task: _Task, r: int, rungs: list[int], recorded: dict[int, list[float]],
               rf: int) -> int | None:
    """Where ASHA's rungs stop run ``r`` (``_Bracket.on_result``): at the first rung
    whose value is below the ``1 - 1/rf`` percentile of the values recorded there
    before it; every value reaching a rung is recorded. None: it trains to its end."""
    sign = 1.0 if task.mode == "max" else -1.0  # Ray compares rewards, max-oriented
    end = int(task.ends[r])
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
            return m
    return None


def hyperband_brackets(max_t: int, min_t: int, n_brackets: int = HYPERBAND_BRACKETS,
                       rf: int = ASHA_REDUCTION_FACTOR) -> tuple[list[list[int]], np.ndarray]:
    """Ray Tune's ``AsyncHyperBandScheduler(brackets=n)``: each bracket's rung epochs
    (bracket s starts at ``min_t * rf**s``; ``_Bracket.__init__``) and the chance a new
    trial joins each (``on_trial_add``: ``e ** (rungs - most rungs)``, normalised)."""
    rungs = []
    for s_ in range(n_brackets):
        n = int(np.log(max_t / min_t) / np.log(rf) - s_ + 1)
        rungs.append([min_t * rf ** (k + s_) for k in range(max(n, 0))])
    sizes = np.array([len(r) for r in rungs], dtype=float)
    probs = np.e ** (sizes - sizes.max())
    return rungs, probs / probs.sum()


def _run_hyperband(task: _Task, order: np.ndarray, min_epochs: int,
                   n_brackets: int = HYPERBAND_BRACKETS,
                   rf: int = ASHA_REDUCTION_FACTOR) -> _OrderResult:
    """Ray Tune's asynchronous HyperBand (``AsyncHyperBandScheduler(brackets=3,
    grace_period=min_epochs, reduction_factor=4)``) over one order: each run joins one
    bracket at random (Ray's chances, drawn from a generator seeded by the order), and
    its bracket's rungs judge it as ASHA's do (``_Bracket.on_result``)."""
    rungs, probs = hyperband_brackets(int(task.targets.max()), min_epochs, n_brackets, rf)
    rng = np.random.default_rng([int(x) for x in order[:32]])
    recorded: list[dict[int, list[float]]] = [{m: [] for m in b} for b in rungs]
    stop: dict[int, int] = {}
    for r in (int(x) for x in order):
        b = int(rng.choice(len(rungs), p=probs))
        s = _rung_stop(task, r, rungs[b], recorded[b], rf)
        if s is not None:
            stop[r] = s
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
    return task.best_so_far


# ------------------------------------------------------------------------ result
@dataclass
class ReplayResult:
    """What :func:`replay` found.

    Attributes:
        policies: the policies replayed, in order.
        summary: per policy: ``epochs_saved_pct``, ``mean_regret``, ``p90_regret``,
            ``max_regret``, ``stopped_pct``, and ``orders`` (search: over every task and
            order) or ``runs`` (single runs: over every run).
        per_task: per task, the same dict per policy.
        units: regret units (``"points"`` for accuracy-like metrics).
        info: runs, tasks, skipped and censored runs, forecasts made, seconds spent...
        details: with ``details=True``, per task and policy one dict per order:
            ``order`` (run indices), ``stops`` ({run index: stop epoch}),
            ``trained``, ``total``, ``regret`` (single runs: one dict per run).
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
    w = max([10, *map(len, policies)])
    head = (f"{'policy':<{w}} {'epochs saved %':>14} {f'mean regret ({u})':>18} "
            f"{f'p90 regret ({u})':>17} {f'max regret ({u})':>17} {'stopped runs %':>14}")
    lines = [head, "-" * len(head)]
    for p in policies:
        s = rows[p]
        lines.append(f"{p:<{w}} {s['epochs_saved_pct']:>14.1f} {s['mean_regret']:>18.3f} "
                     f"{s['p90_regret']:>17.3f} {s['max_regret']:>17.3f} "
                     f"{s['stopped_pct']:>14.1f}")
    return "\n".join(lines)


def _summarise(results: list[_OrderResult]) -> dict[str, float]:
    saved = [1.0 - o.trained / o.total for o in results]
    regrets = [o.regret for o in results]
    return {"epochs_saved_pct": 100.0 * float(np.mean(saved)),
            "mean_regret": float(np.mean(regrets)),
            "p90_regret": float(np.percentile(regrets, 90)),
            "max_regret": float(np.max(regrets)),
            "stopped_pct": 100.0 * sum(o.stopped for o in results)
            / sum(o.runs for o in results),
            "orders": len(results),
            "orders_none_finished": sum(o.none_finished for o in results)}


@dataclass
class _RunResult:
    """One run replayed alone (single-run mode)."""

    run: int
    stop: int
    trained: int
    total: int
    regret: float


def _summarise_runs(results: list[_RunResult]) -> dict[str, float]:
    regrets = [o.regret for o in results]
    return {"epochs_saved_pct": 100.0 * (1.0 - sum(o.trained for o in results)
                                          / sum(o.total for o in results)),
            "mean_regret": float(np.mean(regrets)),
            "p90_regret": float(np.percentile(regrets, 90)),
            "max_regret": float(np.max(regrets)),
            "stopped_pct": 100.0 * sum(o.stop != _NO_STOP for o in results) / len(results),
            "runs": len(results)}


# ------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class _Rule:
    """A parsed policy name: ``kind`` and its parameter (``gain-0.005``, ``patience-3``)."""

    name: str
    kind: str
    param: float | None = None
    gain_patience: int | None = None  # ``gain-<min_delta>-<k>``; None: StopPolicy's default

    @property
    def forecasts(self) -> bool:
        return self.kind in FORECAST_POLICIES


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_policy(name: str) -> _Rule:
    """Read a policy name (see :func:`replay`).

    Raises:
        ConfigError: an unknown name or a bad parameter.
    """
    if not isinstance(name, str):
        raise ConfigError("policy", POLICY_HELP, name)
    if name in POLICIES or name in (*EXTRA_POLICIES, "gain", "default"):
        return _Rule(name, name)
    if name.startswith("keep-top-") and _is_float(name[9:]) and 0 <= float(name[9:]) <= 1:
        return _Rule(name, "keep-top", float(name[9:]))
    kind, _, arg = name.partition("-")
    k = ""
    if kind == "gain" and "-" in arg and not _is_float(arg):  # 1e-05 is one number
        arg, _, k = arg.rpartition("-")  # gain-<min_delta>-<gain_patience>
    try:
        value = float(arg) if kind == "gain" else int(arg) if kind == "patience" else None
        wait = int(k) if k else None
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0 or (wait is not None
                                                                   and wait < 0):
        raise ConfigError("policy", POLICY_HELP, name)
    return _Rule(name, kind, value, wait)


def _stop_policy(rule: _Rule, task: _Task, cfg: _Config) -> StopPolicy:
    """The StopPolicy a forecast rule replays for one task."""
    common = {"confidence": cfg.confidence, "min_epochs": cfg.min_epochs,
              "patience": cfg.patience, "mode": task.mode}
    if rule.kind in ("default", "default-study"):
        return StopPolicy(**common)  # what the callbacks use: their defaults
    if rule.kind == "keep-top":  # keep-top-0: the default without keep_top
        return StopPolicy(keep_top=rule.param or None, **common)
    if rule.kind == "previous":
        return StopPolicy(flat_delta=None, climb_credit=None, **common)
    alone = {"keep_top": None, "flat_delta": None, "climb_credit": None}
    if rule.kind == "gain":
        delta = cfg.min_delta if rule.param is None else rule.param
        wait = {} if rule.gain_patience is None else {"gain_patience": rule.gain_patience}
        return StopPolicy(use_incumbent=False, min_delta=delta, **alone, **wait, **common)
    return StopPolicy(threshold=task.threshold if rule.kind == "threshold" else None,
                      use_incumbent=rule.kind == "incumbent", min_delta=None, **alone,
                      **common)


# ------------------------------------------------------------------------ replay
def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo \
            or (hi is not None and value > hi):
        span = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise ConfigError(name, span, value)
    return int(value)


@dataclass
class _Config:
    """The checked arguments of :func:`replay`."""

    rules: list[_Rule]
    orders: int
    explicit: list[np.ndarray] | None
    runs_per_order: int | None
    seed: int
    confidence: float
    min_epochs: int
    patience: int
    threshold: float | None
    n_startup_trials: int
    batch_size: int
    target: int | None
    min_delta: float
    single_run: bool

    @property
    def first_epoch(self) -> int:
        return max(1, self.min_epochs - self.patience + 1)

    @property
    def forecast_rules(self) -> list[_Rule]:
        return [r for r in self.rules if r.forecasts]


def _parse_orders(orders: Any) -> tuple[int, list[np.ndarray] | None]:
    if isinstance(orders, (int, np.integer)) and not isinstance(orders, bool):
        return _check_int("orders", orders, 1), None
    if isinstance(orders, Sequence) and orders and not isinstance(orders, str):
        explicit = [np.asarray(o, dtype=np.int64).reshape(-1) for o in orders]
        return len(explicit), explicit
    raise ConfigError("orders", "an integer >= 1 or a list of run index lists", orders)


def _parse_rules(policies: Sequence[str], single_run: bool) -> list[_Rule]:
    rules = [parse_policy(p) for p in dict.fromkeys(policies)]
    if not rules:
        raise ConfigError("policies", "at least one of " + POLICY_HELP, list(policies))
    if single_run:
        for r in rules:
            if r.kind in STUDY_POLICIES:
                raise ConfigError("policy", f"a single-run policy ({r.kind} compares the runs "
                                  "of a study: not with single_run)", r.name)
    return rules


def _check_threshold(threshold: float | None, tasks: list[_Task]) -> None:
    """A threshold above 1 for an accuracy-like metric is a percent: refuse it."""
    if threshold is None:
        return
    if not (_is_real(threshold) and math.isfinite(threshold)):
        raise ConfigError("threshold", "a finite number or None", threshold)
    for t in tasks:
        if t.scale == 100.0 and not 0.0 <= threshold <= 1.0:
            raise ConfigError("threshold", f"a fraction in [0, 1] for {t.metric} (accuracy "
                              f"is a fraction: 0.85, not 85)", threshold)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and \
        not isinstance(value, bool)


def _task_orders(task: _Task, ti: int, cfg: _Config) -> list[np.ndarray]:
    n_runs = len(task.records)
    if cfg.explicit is None:
        rng = np.random.default_rng([cfg.seed, ti])
        k = n_runs if cfg.runs_per_order is None else min(cfg.runs_per_order, n_runs)
        return [rng.permutation(n_runs)[:k] for _ in range(cfg.orders)]
    for o in cfg.explicit:
        if o.size == 0 or o.min() < 0 or o.max() >= n_runs or len(set(o.tolist())) != o.size:
            raise ConfigError("orders", f"distinct run indices in [0, {n_runs}) "
                              f"for task {task.name!r}", o.tolist())
    return cfg.explicit


def _patience_stops(task: _Task, patience: int) -> list[int]:
    return [patience_stop(task.values[r], int(task.ends[r]), patience, task.mode)
            for r in range(len(task.records))]


def _search_one(rule: _Rule, task: _Task, order: np.ndarray, cfg: _Config,
                stoppers: dict[str, _StopEpochs], fixed: dict[str, list[int]]) -> _OrderResult:
    if rule.kind == "none":
        return _finish(task, order, {})
    if rule.kind == "median":
        return _run_median(task, order, cfg.min_epochs, cfg.n_startup_trials)
    if rule.kind == "asha":
        return _run_asha(task, order, cfg.min_epochs)
    if rule.kind == "hyperband":
        return _run_hyperband(task, order, cfg.min_epochs)
    if rule.kind == "patience":
        stops = fixed[rule.name]
        return _finish(task, order, {int(r): stops[int(r)] for r in order
                                     if stops[int(r)] != _NO_STOP})
    stops = stoppers[rule.name]
    if rule.kind == "default-study" or stops.policy.uses_peers:
        return _run_walked(task, order, stops, study=rule.kind == "default-study")
    return _run_stop_policy(task, order, stops,
                            rule.kind in ("incumbent", "default", "keep-top"))


def _order_details(orders: list[np.ndarray], results: list[_OrderResult]) -> list[dict]:
    return [{"order": o.tolist(), "stops": res.stops, "trained": res.trained,
             "total": res.total, "regret": res.regret}
            for o, res in zip(orders, results, strict=True)]


def _run_details(results: list[_RunResult]) -> list[dict]:
    return [{"run": o.run, "stop": None if o.stop == _NO_STOP else o.stop,
             "trained": o.trained, "total": o.total, "regret": o.regret} for o in results]


def _single_one(task: _Task, r: int, stop: int) -> _RunResult:
    end = int(task.ends[r])
    got = task.value_at(r, stop)
    diff = task.kept[r] - got if task.mode == "max" else got - task.kept[r]
    return _RunResult(run=r, stop=stop, trained=min(stop, end), total=end,
                      regret=float(diff * task.scale))


@dataclass
class _Outcome:
    """Per task and rule: the summary and (optionally) the details."""

    summary: dict[str, dict[str, float]]
    details: dict[str, list[dict[str, Any]]]
    pooled: dict[str, list[Any]]
    decide_calls: int


def _simulate(task: _Task, ti: int, table: ForecastTable | None, cfg: _Config) -> _Outcome:
    stoppers = {r.name: _StopEpochs(_stop_policy(r, task, cfg), task, table, cfg.first_epoch)
                for r in cfg.forecast_rules}  # type: ignore[arg-type]
    fixed = {r.name: _patience_stops(task, int(r.param or 0))
             for r in cfg.rules if r.kind == "patience"}
    out = _Outcome({}, {}, {}, 0)
    if cfg.single_run:
        for rule in cfg.rules:
            stops = fixed.get(rule.name) or [
                _NO_STOP if rule.kind == "none" else stoppers[rule.name].get(r, None)
                for r in range(len(task.records))]
            res = [_single_one(task, r, s) for r, s in enumerate(stops)]
            out.summary[rule.name] = _summarise_runs(res)
            out.details[rule.name] = _run_details(res)
            out.pooled[rule.name] = res
    else:
        orders = _task_orders(task, ti, cfg)
        for rule in cfg.rules:
            res = [_search_one(rule, task, o, cfg, stoppers, fixed) for o in orders]
            out.summary[rule.name] = _summarise(res)
            out.details[rule.name] = _order_details(orders, res)
            out.pooled[rule.name] = res
    out.decide_calls = sum(s.decide_calls for s in stoppers.values())
    return out


def _config(policies: Sequence[str], forecaster: Forecaster | None, **kw: Any) -> _Config:
    single_run = bool(kw["single_run"])
    rules = _parse_rules(policies, single_run)
    orders, explicit = _parse_orders(kw["orders"])
    rpo = kw["runs_per_order"]
    target = kw["target"]
    min_delta = kw["min_delta"]
    if not (_is_real(min_delta) and 0 <= min_delta < math.inf):
        raise ConfigError("min_delta", "a finite number >= 0", min_delta)
    cfg = _Config(
        rules=rules, orders=orders, explicit=explicit,
        runs_per_order=None if rpo is None else _check_int("runs_per_order", rpo, 1),
        seed=kw["seed"], confidence=kw["confidence"],
        min_epochs=_check_int("min_epochs", kw["min_epochs"], 1),
        patience=_check_int("patience", kw["patience"], 1), threshold=kw["threshold"],
        n_startup_trials=_check_int("n_startup_trials", kw["n_startup_trials"], 0),
        batch_size=_check_int("batch_size", kw["batch_size"], 1),
        target=None if target is None else _check_int("target", target, 2, MAX_TARGET_EPOCH),
        min_delta=float(min_delta), single_run=single_run)
    needs = sorted({r.kind for r in cfg.forecast_rules})
    if needs and forecaster is None:
        raise ConfigError("forecaster", f"a Forecaster for policies {needs}", None)
    return cfg


def replay(records: Sequence[RunRecord], policies: Sequence[str] = POLICIES,
           forecaster: Forecaster | None = None, *, target: int | None = None,
           orders: int | Sequence[Sequence[int]] = 50, runs_per_order: int | None = None,
           seed: int = 0, confidence: float = 0.95, min_epochs: int = 3, patience: int = 1,
           threshold: float | None = None, n_startup_trials: int = MEDIAN_STARTUP_TRIALS,
           batch_size: int = 4096, details: bool = False, single_run: bool = False,
           min_delta: float = DEFAULT_MIN_DELTA) -> ReplayResult:
    """Replay stopping policies over stored runs: a random search, or each run alone.

    Args:
        records: full runs (and stopped runs, replayed as censored runs up to their
            last epoch); grouped into studies by ``task`` (and metric).
        policies: any of ``"incumbent"``, ``"threshold"``, ``"median"``, ``"asha"``,
            ``"none"``, ``"gain"`` (or ``"gain-<min_delta>"``), ``"patience-<N>"``
            (Keras ``EarlyStopping(patience=N, restore_best_weights=True)``) and
            ``"default"`` (what the callbacks do with their defaults). Default the
            first five.
        forecaster: the accModel for the forecast policies (unused otherwise).
        target: 1-based target epoch for every run, in [2, MAX_TARGET_EPOCH]. Default:
            each run's ``meta["max_epochs"]`` (or the ledger's target), else its last epoch.
        orders: shuffled orders per task, >= 1; or explicit orders, each a list of
            indices into a task's runs (in input order), used for every task. Default 50.
            Unused with ``single_run``.
        runs_per_order: runs drawn (without replacement) per order, >= 1.
            Default: every run of the task. Ignored with explicit orders.
        seed: seed of the orders; the same orders serve every policy. Default 0.
        confidence: StopPolicy confidence, in (0.5, 1). Default 0.95.
        min_epochs: first epoch any policy may stop at, >= 1. Default 3.
        patience: StopPolicy patience, >= 1. Default 1.
        threshold: bar of the ``threshold`` policy (a fraction for accuracies).
            Default: each task's median final value.
        n_startup_trials: completed runs before ``median`` prunes, >= 0. Default 5.
        batch_size: pairs per ``forecast_many`` call, >= 1. Default 4096.
        details: keep every order's (or run's) outcome in ``ReplayResult.details``.
            Default False.
        single_run: score each run alone (no study): regret is the points a run loses
            against its own best over all its epochs, at its best epoch before the stop.
            Default False.
        min_delta: the ``gain`` policy's min_delta, >= 0. Default
            :data:`~earlystop_predict.policy.stop.DEFAULT_MIN_DELTA`.

    Raises:
        ConfigError: an unknown policy, a bad count, a percent threshold for an
            accuracy, a study policy with ``single_run``, a record too large to replay,
            or no forecaster where one is needed.
    """
    cfg = _config(policies, forecaster, orders=orders, runs_per_order=runs_per_order,
                  seed=seed, confidence=confidence, min_epochs=min_epochs, patience=patience,
                  threshold=threshold, n_startup_trials=n_startup_trials,
                  batch_size=batch_size, target=target, min_delta=min_delta,
                  single_run=single_run)
    t0 = time.perf_counter()
    tasks, skipped = build_tasks(records, target=cfg.target, threshold=threshold)
    if not tasks:
        raise ConfigError("records", "at least one run that reaches its target epoch",
                          f"{len(records)} runs ({len(skipped)} skipped)")
    _check_threshold(threshold, tasks)
    tables: list[ForecastTable | None] = [None] * len(tasks)
    if cfg.forecast_rules:
        tables = list(precompute_forecasts(tasks, forecaster,  # type: ignore[arg-type]
                                           cfg.first_epoch, cfg.batch_size))
    forecast_s = time.perf_counter() - t0
    return _collect(tasks, tables, cfg, skipped, details,
                    (t0, forecast_s, time.perf_counter()))


def _collect(tasks: list[_Task], tables: list[ForecastTable | None], cfg: _Config,
             skipped: list[str], details: bool, clock: tuple[float, float, float]
             ) -> ReplayResult:
    names = [r.name for r in cfg.rules]
    pooled: dict[str, list[Any]] = {p: [] for p in names}
    per_task: dict[str, dict[str, dict[str, float]]] = {}
    detail: dict[str, dict[str, list[dict[str, Any]]]] = {}
    decide_calls = 0
    for ti, task in enumerate(tasks):
        out = _simulate(task, ti, tables[ti], cfg)
        per_task[task.name] = out.summary
        if details:
            detail[task.name] = out.details
        for p in names:
            pooled[p].extend(out.pooled[p])
        decide_calls += out.decide_calls
    summarise = _summarise_runs if cfg.single_run else _summarise
    info = _info(tasks, tables, cfg, skipped, decide_calls, clock)
    units = "points" if all(t.scale == 100.0 for t in tasks) else "metric units"
    return ReplayResult(policies=names, summary={p: summarise(pooled[p]) for p in names},
                        per_task=per_task, units=units, info=info, details=detail)


def _info(tasks: list[_Task], tables: list[ForecastTable | None], cfg: _Config,
          skipped: list[str], decide_calls: int, clock: tuple[float, float, float]
          ) -> dict[str, Any]:
    t0, forecast_s, t2 = clock
    made = [t for t in tables if t is not None]
    return {
        "runs": sum(len(t.records) for t in tasks), "tasks": len(tasks),
        "mode": "single-run" if cfg.single_run else "search",
        "skipped": skipped,
        "censored": [t.records[r].run_id for t in tasks for r in np.where(t.censored)[0]],
        "orders": 0 if cfg.single_run else cfg.orders, "runs_per_order": cfg.runs_per_order,
        "seed": cfg.seed, "confidence": cfg.confidence, "min_epochs": cfg.min_epochs,
        "patience": cfg.patience, "threshold": cfg.threshold, "min_delta": cfg.min_delta,
        "default_min_delta": DEFAULT_MIN_DELTA,
        "forecasts": int(sum((t.model_idx >= 0).sum() for t in made)),
        "forecast_models": list(made[0].models) if made else [],
        "decide_calls": decide_calls, "forecast_s": round(forecast_s, 3),
        "simulate_s": round(time.perf_counter() - t2, 3),
        "total_s": round(time.perf_counter() - t0, 3),
    }
