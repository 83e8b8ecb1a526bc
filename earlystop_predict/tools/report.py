"""Forecast-versus-realized report of recorded runs: a table, fan charts, calibration.

For each run that reached its target epoch, the forecasts made along the way
(RUN_RECORD.md ``forecasts``) are compared with the value realized at the target
epoch: mean absolute error of the forecast mean, coverage of the 80% interval
(q0.1 to q0.9). Plots need the ``report`` extra (matplotlib); they are drawn with
the Agg canvas, never touching the global pyplot state.

Example:
    >>> from earlystop_predict.records.record import RunRecord
    >>> rec = RunRecord("r", epochs=[{"epoch": e, "val_accuracy": e / 10} for e in (1, 2, 3)],
    ...                 forecasts=[{"at_epoch": 1, "target_epoch": 3, "mean": 0.25,
    ...                             "quantiles": {"0.1": 0.2, "0.9": 0.35}}])
    >>> rows = evaluate([rec])
    >>> round(rows[0].mae, 3), rows[0].coverage80
    (0.05, 1.0)
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from earlystop_predict._imports import require
from earlystop_predict.records.record import RunRecord, finite_or_none


def target_epoch_of(record: RunRecord) -> int | None:
    """The run's target epoch: the ledger's, else its forecasts', else ``meta.max_epochs``."""
    t = record.extra.get("target_epoch")
    if isinstance(t, int) and not isinstance(t, bool) and t >= 1:
        return t
    targets = Counter(int(f["target_epoch"]) for f in record.forecasts
                      if isinstance(f, dict) and finite_or_none(f.get("target_epoch")) is not None)
    if targets:
        return targets.most_common(1)[0][0]
    planned = finite_or_none(record.meta.get("max_epochs"))
    return int(planned) if planned is not None and planned >= 1 else None


def realized_value(record: RunRecord, epoch: int) -> float | None:
    """The target metric at ``epoch``, None if the run has no such epoch row."""
    for row in record.epochs:
        if int(row["epoch"]) == epoch:
            return finite_or_none(row.get(record.metric))
    return None


@dataclass(frozen=True)
class ForecastPoint:
    """One forecast of the target epoch, made after ``at_epoch`` epochs."""

    at_epoch: int
    mean: float
    quantiles: dict[float, float]

    def q(self, level: float) -> float | None:
        """The stored quantile at ``level``, None if it was not stored."""
        for lv, v in self.quantiles.items():
            if abs(lv - level) < 1e-9:
                return v
        return None


def forecast_points(record: RunRecord, target_epoch: int) -> list[ForecastPoint]:
    """The run's forecasts of ``target_epoch`` made before it, in epoch order."""
    out = []
    for f in record.forecasts:
        if not isinstance(f, dict):
            continue
        at, mean = finite_or_none(f.get("at_epoch")), finite_or_none(f.get("mean"))
        if at is None or mean is None or finite_or_none(f.get("target_epoch")) != target_epoch:
            continue
        if at >= target_epoch:
            continue
        qs = {}
        for k, v in (f.get("quantiles") or {}).items():
            lv, fv = finite_or_none(k), finite_or_none(v)
            if lv is not None and fv is not None:
                qs[lv] = fv
        out.append(ForecastPoint(int(at), mean, dict(sorted(qs.items()))))
    return sorted(out, key=lambda p: p.at_epoch)


@dataclass(frozen=True)
class RunReport:
    """Forecast error of one run (``mae``/``coverage80`` None where not measurable)."""

    run_id: str
    metric: str
    target_epoch: int | None
    realized: float | None
    n_forecasts: int
    mae: float | None
    coverage80: float | None
    stopped_epoch: int | None
    would_stop_epoch: int | None
    last_epoch: int
    status: str | None

    @property
    def reached(self) -> bool:
        """The run holds its target epoch's value."""
        return self.realized is not None

    @property
    def stop_text(self) -> str:
        """``stopped@9``, ``would@9`` (dry run), or ``-``."""
        if self.stopped_epoch is not None:
            return f"stopped@{self.stopped_epoch}"
        if self.would_stop_epoch is not None:
            return f"would@{self.would_stop_epoch}"
        return "-"


def evaluate(records: Iterable[RunRecord]) -> list[RunReport]:
    """One :class:`RunReport` per record, in input order."""
    out = []
    for rec in records:
        target = target_epoch_of(rec)
        realized = realized_value(rec, target) if target is not None else None
        points = forecast_points(rec, target) if target is not None else []
        mae = cov = None
        if realized is not None and points:
            mae = float(np.mean([abs(p.mean - realized) for p in points]))
            inside = [p.q(0.1) <= realized <= p.q(0.9) for p in points  # type: ignore[operator]
                      if p.q(0.1) is not None and p.q(0.9) is not None]
            cov = float(np.mean(inside)) if inside else None
        stopped = rec.stopped.get("epoch") if isinstance(rec.stopped, dict) else None
        would = next((int(f["at_epoch"]) for f in rec.forecasts if isinstance(f, dict)
                      and f.get("would_stop") and finite_or_none(f.get("at_epoch")) is not None), None)
        status = rec.extra.get("status")
        out.append(RunReport(run_id=rec.run_id, metric=rec.metric, target_epoch=target,
                             realized=realized, n_forecasts=len(points), mae=mae,
                             coverage80=cov,
                             stopped_epoch=int(stopped) if finite_or_none(stopped) is not None else None,
                             would_stop_epoch=would, last_epoch=rec.last_epoch,
                             status=status if isinstance(status, str) else None))
    return out


def calibration(records: Iterable[RunRecord]) -> dict[float, tuple[int, float]]:
    """Per stored quantile level q: (n, share of forecasts whose realized value <= q).

    Only runs that reached their target epoch count. A calibrated model has
    share close to q at every level.
    """
    hits: dict[float, list[bool]] = {}
    for rec in records:
        target = target_epoch_of(rec)
        realized = realized_value(rec, target) if target is not None else None
        if realized is None:
            continue
        for p in forecast_points(rec, target):  # type: ignore[arg-type]
            for lv, v in p.quantiles.items():
                hits.setdefault(lv, []).append(realized <= v)
    return {lv: (len(h), float(np.mean(h))) for lv, h in sorted(hits.items())}


def format_table(reports: Sequence[RunReport]) -> str:
    """The per-run table plus an overall line (forecast-weighted)."""
    head = (f"{'run_id':<28} {'target':>6} {'realized':>9} {'n fc':>5} {'MAE':>8} "
            f"{'cover80':>8} {'stopped':>11} {'epoch':>6}")
    lines = [head, "-" * len(head)]

    def f(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    for r in reports:
        rid = r.run_id if len(r.run_id) <= 28 else r.run_id[:27] + "~"
        lines.append(f"{rid:<28} {f(r.target_epoch, 'd'):>6} {f(r.realized, '.4f'):>9} "
                     f"{r.n_forecasts:>5d} {f(r.mae, '.4f'):>8} {f(r.coverage80, '.0%'):>8} "
                     f"{r.stop_text:>11} {r.last_epoch:>6d}")
    scored = [r for r in reports if r.mae is not None]
    n_fc = sum(r.n_forecasts for r in scored)
    if scored and n_fc:
        mae = sum(r.mae * r.n_forecasts for r in scored) / n_fc  # type: ignore[operator]
        cov_rows = [r for r in scored if r.coverage80 is not None]
        n_cov = sum(r.n_forecasts for r in cov_rows)
        cov = (sum(r.coverage80 * r.n_forecasts for r in cov_rows) / n_cov  # type: ignore[operator]
               if n_cov else None)
        lines.append("-" * len(head))
        lines.append(f"{len(scored)} of {len(reports)} runs reached their target epoch with "
                     f"forecasts: MAE {mae:.4f}, 80% interval coverage "
                     f"{f(cov, '.1%')} over {n_fc} forecasts")
    else:
        lines.append(f"no run of {len(reports)} reached its target epoch with forecasts")
    return "\n".join(lines)


# -------------------------------------------------------------------------- plots
def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    require("matplotlib", extra="report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Write the PNG atomically: the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_fan(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Fan chart of one run: observed curve, forecast mean with q10-q90 band per epoch
    the forecast was made at, the realized value at the target epoch.

    Args:
        record: the run, with its ``forecasts``.
        path: the PNG file to write.
    """
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ep = record.epoch_numbers()
    ax.plot(ep, record.series(record.metric), color="black", lw=1.5, label="observed")
    target = target_epoch_of(record)
    points = forecast_points(record, target) if target is not None else []
    if points:
        at = np.array([p.at_epoch for p in points])
        ax.plot(at, [p.mean for p in points], color="C0", marker=".",
                label=f"forecast of epoch {target}")
        for lo, hi, alpha, name in ((0.1, 0.9, 0.2, "q10-q90"), (0.25, 0.75, 0.35, "q25-q75")):
            los = [p.q(lo) for p in points]
            his = [p.q(hi) for p in points]
            if all(v is not None for v in los + his):
                ax.fill_between(at, los, his, color="C0", alpha=alpha, lw=0, label=name)
    realized = realized_value(record, target) if target is not None else None
    if realized is not None:
        ax.axhline(realized, color="C2", ls="--", lw=1, label=f"realized {realized:.4g}")
        ax.plot([target], [realized], marker="*", color="C2", ms=10)
    if isinstance(record.stopped, dict) and finite_or_none(record.stopped.get("epoch")) is not None:
        ax.axvline(float(record.stopped["epoch"]), color="C3", ls=":", lw=1, label="stopped")
    ax.set_xlabel("epoch (forecasts: epoch made at)")
    ax.set_ylabel(record.metric)
    ax.set_title(f"{record.run_id}: {record.metric} forecast of epoch {target}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_calibration(records: Iterable[RunRecord], path: str | os.PathLike[str]) -> Path:
    """Calibration plot: nominal quantile level vs share of realized values below it."""
    cal = calibration(records)
    fig = _figure(4.8, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="ideal")
    if cal:
        levels = list(cal)
        ax.plot(levels, [cal[lv][1] for lv in levels], marker="o", color="C0", label="model")
        for lv in levels:
            ax.annotate(f"n={cal[lv][0]}", (lv, cal[lv][1]), fontsize=6,
                        textcoords="offset points", xytext=(4, -8))
    else:
        ax.text(0.5, 0.5, "no forecast of a reached target", ha="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal quantile level")
    ax.set_ylabel("empirical P(realized <= quantile)")
    ax.set_title("forecast calibration", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def _safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80] or "run"


def write_plots(records: Sequence[RunRecord], output_dir: str | os.PathLike[str],
                max_fans: int | None = None) -> list[Path]:
    """A fan chart per run (``fan_<run_id>.png``) and ``calibration.png`` in ``output_dir``.

    Args:
        records: the runs.
        output_dir: folder for the PNGs (created).
        max_fans: draw at most this many fan charts, None for all. Default None.
    """
    out_dir = Path(output_dir)
    paths = []
    used: set[str] = set()
    for rec in records[:max_fans] if max_fans is not None else records:
        if not rec.epochs:
            continue
        name = _safe_name(rec.run_id)
        base, i = name, 1
        while name in used:
            i += 1
            name = f"{base}-{i}"
        used.add(name)
        paths.append(plot_fan(rec, out_dir / f"fan_{name}.png"))
    paths.append(plot_calibration(records, out_dir / "calibration.png"))
    return paths
