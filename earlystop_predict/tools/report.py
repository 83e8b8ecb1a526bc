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
import textwrap
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
    """The per-run table plus an overall line (forecast-weighted); run ids in full."""
    w = max([28, *(len(r.run_id) for r in reports)])
    head = (f"{'run_id':<{w}} {'target':>6} {'realized':>9} {'n fc':>5} {'MAE':>8} "
            f"{'cover80':>8} {'stopped':>11} {'epoch':>6}")
    lines = [head, "-" * len(head)]

    def f(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    for r in reports:
        lines.append(f"{r.run_id:<{w}} {f(r.target_epoch, 'd'):>6} {f(r.realized, '.4f'):>9} "
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

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Write the PNG atomically: the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the page's images from a server
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: A bar compared in a decision reason: ``q0.95 0.2 < threshold 0.9`` (policy/stop.py).
_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_BAR_RE = re.compile(rf"q(?P<level>{_NUMBER}) (?P<value>{_NUMBER}) (?:<=|>=|<|>) "
                     rf"(?P<name>threshold|incumbent) (?P<bar>{_NUMBER})")


@dataclass(frozen=True)
class Bar:
    """What one decision compared: the forecast quantile with the bar it had to clear."""

    at_epoch: int
    name: str
    level: float
    value: float
    bar: float


def bars_of(record: RunRecord) -> list[Bar]:
    """The bars (threshold, incumbent) each recorded decision compared, parsed from
    its ``reason``; decisions without a comparison (no forecast, diverged) give none."""
    out = []
    for f in record.forecasts:
        if not isinstance(f, dict) or finite_or_none(f.get("at_epoch")) is None:
            continue
        for m in _BAR_RE.finditer(str(f.get("reason") or "")):
            level, value = finite_or_none(m["level"]), finite_or_none(m["value"])
            bar = finite_or_none(m["bar"])
            if level is not None and value is not None and bar is not None:
                out.append(Bar(int(f["at_epoch"]), m["name"], level, value, bar))
    return out


def stop_epoch_of(record: RunRecord) -> int | None:
    """The epoch the run was stopped at, None if it was not."""
    stop = record.stopped.get("epoch") if isinstance(record.stopped, dict) else None
    return int(stop) if finite_or_none(stop) is not None else None


def stop_caption(record: RunRecord) -> str:
    """``stopped at epoch 5: forecast q0.95 0.2 < threshold 0.9``, ``would stop...``
    (dry run), or the run's status."""
    stop = stop_epoch_of(record)
    if stop is not None:
        return f"stopped at epoch {stop}: {record.stopped.get('reason', '')}"
    would = next((f for f in record.forecasts if isinstance(f, dict) and f.get("would_stop")
                  and finite_or_none(f.get("at_epoch")) is not None), None)
    if would is not None:
        return f"dry run, would stop at epoch {int(would['at_epoch'])}: {would.get('reason', '')}"
    status = record.extra.get("status")
    return str(status) if isinstance(status, str) and status else "not stopped"


def _draw_bars(ax: Any, record: RunRecord, target: int | None) -> None:
    """The bars the decisions compared (a step line each, carried on faintly to the
    target epoch) and the quantile each decision compared with them."""
    bars = bars_of(record)
    for name, color in (("threshold", "C3"), ("incumbent", "C1")):
        mine = [b for b in bars if b.name == name]
        if not mine:
            continue
        x = [b.at_epoch for b in mine]
        ax.step([x[0] - 0.5, *x, x[-1] + 0.5], [mine[0].bar, *(b.bar for b in mine),
                                                mine[-1].bar],
                where="mid", color=color, ls="--", lw=1.2, label=f"{name} {mine[-1].bar:.4g}")
        if target is not None and target > x[-1]:
            ax.plot([x[-1] + 0.5, target], [mine[-1].bar] * 2, color=color, ls="--", lw=1,
                    alpha=0.35)
    compared = {b.at_epoch: b for b in bars}
    if compared:
        level = next(iter(compared.values())).level
        ax.plot(list(compared), [b.value for b in compared.values()], ls="none", marker="v",
                ms=4, color="C4", label=f"q{level:g} (compared)")


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=True,
                                    break_on_hyphens=False)) or text


def plot_fan(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Write the :func:`fan_figure` of one run as a PNG.

    Args:
        record: the run, with its ``forecasts``.
        path: the PNG file to write.
    """
    return _save(fan_figure(record), Path(path))


def fan_figure(record: RunRecord) -> Any:
    """Fan chart of one run: observed curve, forecast mean with q10-q90 band per epoch
    the forecast was made at, the bar each decision compared (threshold, incumbent),
    the stop and its reason, the realized value at the target epoch.

    The x-axis runs to the target epoch (not the stop), with integer ticks; the
    legend sits beside the plot, never on the data; the full run id is the title.

    Args:
        record: the run, with its ``forecasts``.

    Returns:
        The matplotlib ``Figure`` (Agg canvas).
    """
    require("matplotlib", extra="report")
    from matplotlib.ticker import MaxNLocator

    fig = _figure(7.6, 3.9)
    ax = fig.add_subplot(1, 1, 1)
    target = target_epoch_of(record)
    stop = stop_epoch_of(record)
    _draw_observed(ax, record, stop)
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
    _draw_bars(ax, record, target)
    realized = realized_value(record, target) if target is not None else None
    if realized is not None:
        ax.plot([target], [realized], marker="*", color="C2", ms=11, ls="none",
                label=f"realized {realized:.4g}")
    if stop is not None:
        ax.axvline(float(stop), color="C3", ls=":", lw=1.2, label=f"stopped @{stop}")
    last = max([record.last_epoch, target or 0, *(p.at_epoch for p in points)])
    ax.set_xlim(0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))
    ax.set_xlabel("epoch (forecasts: the epoch they were made at)")
    ax.set_ylabel(record.metric)
    ax.set_title(_wrap(record.run_id, 70), fontsize=9, loc="left")
    fig.supxlabel(_wrap(stop_caption(record), 120), fontsize=7, x=0.01, ha="left",
                  color="C3" if stop is not None else "0.3")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              frameon=False)
    ax.grid(alpha=0.3)
    return fig


def _draw_observed(ax: Any, record: RunRecord, stop: int | None) -> None:
    """The observed curve; epochs after the stop (an audit trained on) dashed."""
    ep = record.epoch_numbers()
    values = record.series(record.metric)
    if stop is None or not (ep > stop).any():
        ax.plot(ep, values, color="black", lw=1.5, label="observed")
        return
    ax.plot(ep[ep <= stop], values[ep <= stop], color="black", lw=1.5, label="observed")
    ax.plot(ep[ep >= stop], values[ep >= stop], color="0.45", lw=1.2, ls="--",
            label="audit (trained on)")


def completed_runs(records: Iterable[RunRecord]) -> int:
    """How many runs reached their target epoch (trained to it, or audited) with at
    least one forecast of it: the runs the calibration plot rests on."""
    return sum(1 for r in evaluate(records) if r.reached and r.n_forecasts)


#: Fewer runs than this reached their target: the calibration plot says to read it
#: with care.
FEW_RUNS = 20


def plot_calibration(records: Iterable[RunRecord], path: str | os.PathLike[str]) -> Path:
    """Write the :func:`calibration_figure` of ``records`` as a PNG at ``path``."""
    return _save(calibration_figure(records), Path(path))


def calibration_figure(records: Iterable[RunRecord]) -> Any:
    """Calibration plot: nominal quantile level vs share of realized values below it,
    titled with its sample size; where fewer than :data:`FEW_RUNS` runs reached their
    target it carries a caveat. Returns the matplotlib ``Figure``."""
    records = list(records)
    cal = calibration(records)
    n_runs = completed_runs(records)
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="ideal")
    if cal:
        levels = list(cal)
        ax.plot(levels, [cal[lv][1] for lv in levels], marker="o", color="C0", label="model")
        ns = sorted({cal[lv][0] for lv in levels})
        n_text = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        sub = f"{n_text} forecasts per level, {n_runs} runs that reached their target"
    else:
        ax.text(0.5, 0.5, "no forecast of a reached target", ha="center", fontsize=8)
        sub = "no run reached its target with forecasts"
    if n_runs < FEW_RUNS:
        ax.text(0.97, 0.03, f"few runs (< {FEW_RUNS}) reached their target:\nread with care",
                ha="right", va="bottom", fontsize=8, color="C3", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal quantile level")
    ax.set_ylabel("share of realized values <= quantile")
    ax.set_title(f"forecast calibration\n{sub}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def _safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80] or "run"


def fan_files(records: Sequence[RunRecord],
              max_fans: int | None = None) -> list[tuple[RunRecord, str]]:
    """Each run with epochs and the file name of its fan chart (``fan_<run_id>.png``,
    made unique), at most ``max_fans`` of them (None: all)."""
    out = []
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
        out.append((rec, f"fan_{name}.png"))
    return out


def write_plots(records: Sequence[RunRecord], output_dir: str | os.PathLike[str],
                max_fans: int | None = None) -> list[Path]:
    """A fan chart per run (``fan_<run_id>.png``) and ``calibration.png`` in ``output_dir``.

    Args:
        records: the runs.
        output_dir: folder for the PNGs (created).
        max_fans: draw at most this many fan charts, None for all. Default None.
    """
    out_dir = Path(output_dir)
    paths = [plot_fan(rec, out_dir / name) for rec, name in fan_files(records, max_fans)]
    paths.append(plot_calibration(records, out_dir / "calibration.png"))
    return paths
