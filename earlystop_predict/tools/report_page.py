"""The report as one page: ``index.html`` beside its fan charts and calibration plot.

The page is self-contained in its folder: the PNGs it shows lie beside it, the
styles and the few lines of script (sorting the table, checking that every
image loaded) are inline; nothing is fetched from the network. It holds the
study's summary (runs, epochs trained and saved, what the stops cost where a
stopped run was audited, i.e. trained on to its target), a table of runs
sortable by final value, forecast error and stop epoch, each run's fan chart
with the bar it was stopped against and the reason, and the calibration plot
with its sample size.

Example:
    >>> from earlystop_predict.records.record import RunRecord
    >>> rec = RunRecord("r", epochs=[{"epoch": e, "val_accuracy": e / 10} for e in (1, 2, 3)])
    >>> s = summarize([rec])
    >>> s.runs, s.epochs_trained, s.epochs_saved
    (1, 3, 0)
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from earlystop_predict.records.record import RunRecord
from earlystop_predict.tools.report import (
    FEW_RUNS,
    RunReport,
    calibration,
    completed_runs,
    evaluate,
    fan_files,
    plot_calibration,
    plot_fan,
    stop_caption,
    stop_epoch_of,
)

PAGE = "index.html"


# ----------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class Audit:
    """A stopped run trained on to its target epoch: what its stop cost."""

    run_id: str
    stopped_epoch: int
    final: float
    beats_best: bool


@dataclass(frozen=True)
class StudySummary:
    """Counts of one set of runs.

    Attributes:
        runs: runs with at least one epoch.
        status: runs per ledger status (``completed``, ``stopped``, ...).
        epochs_trained: epochs trained up to each run's stop (an audit not counted).
        epochs_budget: epochs all runs would have trained to their target epochs.
        epochs_saved: target minus stop epoch, summed over the stopped runs.
        best_completed: the best final value of a run that was not stopped, or None.
        audits: the stopped runs whose record runs on to the target epoch.
        mode: ``"max"`` or ``"min"`` (of the first run).
    """

    runs: int
    status: dict[str, int]
    epochs_trained: int
    epochs_budget: int
    epochs_saved: int
    best_completed: float | None
    audits: tuple[Audit, ...]
    mode: str


def _trained(rec: RunRecord) -> int:
    stop = stop_epoch_of(rec)
    return min(rec.last_epoch, stop) if stop is not None else rec.last_epoch


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def summarize(records: Sequence[RunRecord],
              reports: Sequence[RunReport] | None = None) -> StudySummary:
    """The :class:`StudySummary` of ``records`` (``reports``: their :func:`evaluate`)."""
    records = [r for r in records if r.epochs]
    reports = list(reports) if reports is not None else evaluate(records)
    mode = records[0].mode if records else "max"
    status = Counter(r.status or ("stopped" if r.stopped_epoch is not None else "unknown")
                     for r in reports)
    trained = budget = saved = 0
    for rec, rep in zip(records, reports, strict=True):
        target = rep.target_epoch or rec.last_epoch
        trained += _trained(rec)
        budget += max(target, _trained(rec))
        if rep.stopped_epoch is not None:
            saved += max(0, target - rep.stopped_epoch)
    finals = [rep.realized for rep in reports
              if rep.stopped_epoch is None and rep.realized is not None]
    best = (max(finals) if mode == "max" else min(finals)) if finals else None
    audits = tuple(Audit(rep.run_id, rep.stopped_epoch, rep.realized,
                         best is not None and _better(rep.realized, best, mode))
                   for rep in reports
                   if rep.stopped_epoch is not None and rep.realized is not None)
    return StudySummary(len(records), dict(sorted(status.items())), trained, budget, saved,
                        best, audits, mode)


def audit_text(s: StudySummary) -> str:
    """One sentence: what the audited stops cost."""
    stopped = s.status.get("stopped", 0) + s.status.get("diverged", 0)
    if not s.audits:
        return (f"No stopped run was audited ({stopped} stopped): train stopped runs on to "
                "their target to see what a stop cost (earlystop-predict demo --audit).")
    best = max(a.final for a in s.audits) if s.mode == "max" else min(a.final for a in s.audits)
    wrong = [a for a in s.audits if a.beats_best]
    base = (f"{len(s.audits)} of {stopped} stopped runs audited: the best of them would have "
            f"reached {best:.4g}")
    if s.best_completed is None:
        return base + "; no run completed to compare with."
    if not wrong:
        return (base + f", no better than the best completed run ({s.best_completed:.4g}): "
                "no stop cost the study its best run.")
    regret = max(abs(a.final - s.best_completed) for a in wrong)
    return (base + f"; {len(wrong)} would have beaten the best completed run "
            f"({s.best_completed:.4g}) by up to {regret:.4g}: those stops cost the study "
            "its best run.")


# ----------------------------------------------------------------------------- html
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1180px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em}
.summary{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:.6em;
margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;background:#fafafa}
.card b{display:block;font-size:1.35em}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e3e3e3;padding:.3em .45em;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.id{overflow-wrap:anywhere;min-width:17em;max-width:28em;font-family:ui-monospace,monospace;
font-size:12px}
td.reason{max-width:26em;font-size:12px;color:#555}
th button{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
tr.stopped td.status{color:#b22}
.fan{margin:1.2em 0;padding-top:.6em;border-top:1px solid #eee}
.fan h3{font-size:13px;font-family:ui-monospace,monospace;overflow-wrap:anywhere;margin:.2em 0}
.fan p{margin:.2em 0;font-size:12px;color:#555}
img{max-width:100%;height:auto}
.caveat{color:#b22}
"""

_JS = """
function espSort(th){
  const table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex;
  const dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
  const key=r=>{const v=r.cells[i].dataset.v;return v===undefined||v===''?null:v;};
  const rows=Array.from(body.rows);
  rows.sort((a,b)=>{const x=key(a),y=key(b);
    if(x===null||y===null){return x===null?(y===null?0:1):-1;}
    const nx=Number(x),ny=Number(y);
    return (isNaN(nx)||isNaN(ny)?x.localeCompare(y):nx-ny)*dir;});
  table.querySelectorAll('th').forEach(h=>h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort',dir===1?'ascending':'descending');
  rows.forEach(r=>body.appendChild(r));
}
document.querySelectorAll('th[data-sort] button').forEach(
  b=>b.addEventListener('click',()=>espSort(b.parentElement)));
window.addEventListener('load',()=>{
  const imgs=Array.from(document.images);
  const bad=imgs.filter(i=>!(i.complete&&i.naturalWidth>0));
  document.body.dataset.images=bad.length?'broken '+bad.length+' of '+imgs.length
                                        :'loaded '+imgs.length;
  document.body.dataset.tableTop=
    Math.round(document.getElementById('runs').getBoundingClientRect().top);
});
"""

#: (header, css class, sortable) of the runs table.
_COLUMNS = (("#", "num", True), ("run", "", True), ("status", "", True),
            ("stop epoch", "num", True), ("target", "num", False),
            ("final value", "num", True), ("last value", "num", True),
            ("forecasts", "num", False), ("forecast MAE", "num", True),
            ("80% coverage", "num", True), ("reason", "", False), ("chart", "", False))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: float | int | str | None, cls: str = "", text: str | None = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f'<td class="{cls}" data-v="">–</td>'
    shown = text if text is not None else (f"{value:.4f}" if isinstance(value, float)
                                           else str(value))
    return f'<td class="{cls}" data-v="{_e(value)}">{_e(shown)}</td>'


def _row(i: int, rec: RunRecord, rep: RunReport, fan: str | None) -> str:
    reason = _reason(rec) if rep.stopped_epoch is not None or rep.would_stop_epoch else ""
    status = rep.status or ("stopped" if rep.stopped_epoch is not None else "")
    stop = rep.stopped_epoch if rep.stopped_epoch is not None else rep.would_stop_epoch
    stop_text = None if stop is None else (str(stop) if rep.stopped_epoch is not None
                                           else f"{stop} (would)")
    last = rec.final_value() if rep.stopped_epoch is None else _value_at(rec, rep.stopped_epoch)
    cov = None if rep.coverage80 is None else f"{rep.coverage80:.0%}"
    chart = f'<a href="#fan-{i}">chart</a>' if fan else ""
    cls = ' class="stopped"' if rep.stopped_epoch is not None else ""
    return (f'<tr id="run-{i}"{cls}>' + _cell(i, "num") + _cell(rep.run_id, "id")
            + _cell(status, "status") + _cell(stop, "num", stop_text)
            + _cell(rep.target_epoch, "num") + _cell(rep.realized, "num")
            + _cell(last, "num") + _cell(rep.n_forecasts, "num") + _cell(rep.mae, "num")
            + _cell(rep.coverage80, "num", cov)
            + f'<td class="reason">{_e(reason)}</td><td>{chart}</td></tr>')


def _reason(rec: RunRecord) -> str:
    """The stop's reason, else the first would-stop decision's (a dry run)."""
    if isinstance(rec.stopped, dict) and rec.stopped.get("reason"):
        return str(rec.stopped["reason"])
    return next((str(f.get("reason", "")) for f in rec.forecasts
                 if isinstance(f, dict) and f.get("would_stop")), "")


def _value_at(rec: RunRecord, epoch: int) -> float | None:
    rows = [r for r in rec.epochs if int(r["epoch"]) <= epoch]
    v = rows[-1].get(rec.metric) if rows else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _cards(s: StudySummary, reports: Sequence[RunReport]) -> str:
    pct = 100.0 * s.epochs_saved / s.epochs_budget if s.epochs_budget else 0.0
    scored = [r for r in reports if r.mae is not None]
    n_fc = sum(r.n_forecasts for r in scored)
    mae = (sum(r.mae * r.n_forecasts for r in scored) / n_fc  # type: ignore[operator]
           if n_fc else None)
    status = ", ".join(f"{n} {k}" for k, n in s.status.items())
    cards = [("runs", str(s.runs), status),
             ("epochs trained", f"{s.epochs_trained}", f"of {s.epochs_budget} planned"),
             ("epochs saved", f"{s.epochs_saved}", f"{pct:.0f} % of the plan"),
             ("best completed", "–" if s.best_completed is None else f"{s.best_completed:.4f}",
              "final value of a run not stopped"),
             ("forecast MAE", "–" if mae is None else f"{mae:.4f}",
              f"{n_fc} forecasts of {len(scored)} runs that reached their target")]
    return "".join(f'<div class="card">{_e(k)}<b>{_e(v)}</b>{_e(sub)}</div>'
                   for k, v, sub in cards)


def render_page(records: Sequence[RunRecord], fans: Sequence[str | None], *,
                title: str = "earlystop-predict report", calibration_png: str | None = None) -> str:
    """The page's HTML.

    Args:
        records: the runs, each with at least one epoch.
        fans: per record, its fan chart's file name (relative to the page), None for
            none.
        title: the page's title. Default ``"earlystop-predict report"``.
        calibration_png: the calibration plot's file name, None for none. Default None.
    """
    reports = evaluate(records)
    s = summarize(records, reports)
    head = "".join(
        (f'<th class="{c}" data-sort="1"><button type="button">{_e(h)}</button></th>' if srt
         else f'<th class="{c}">{_e(h)}</th>') for h, c, srt in _COLUMNS)
    rows = "\n".join(_row(i, rec, rep, fan) for i, (rec, rep, fan)
                     in enumerate(zip(records, reports, fans, strict=True), 1))
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<div class="summary">{_cards(s, reports)}</div>',
             f"<p>{_e(audit_text(s))}</p>",
             "<h2>Runs</h2><p>Click a header to sort. Final value: the metric at the target "
             "epoch (a stopped run has one only where it was audited). Forecast MAE and 80 % "
             "coverage: forecasts of the target made along the way, against that value.</p>",
             f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>',
             _calibration_section(records, calibration_png),
             _fan_section(records, fans),
             f"<script>{_JS}</script></body></html>\n"]
    return "\n".join(parts)


def _calibration_section(records: Sequence[RunRecord], png: str | None) -> str:
    if png is None:
        return ""
    cal = calibration(records)
    n_runs = completed_runs(records)
    n = max((v[0] for v in cal.values()), default=0)
    text = (f"{n} forecasts per quantile level from {n_runs} runs that reached their target "
            "epoch (trained to it, or audited).")
    if n_runs < FEW_RUNS:
        text += (f' <span class="caveat">Few runs (fewer than {FEW_RUNS}): the shares are '
                 "noisy and the forecasts of one run are not independent; read the plot "
                 "with care.</span>")
    return (f'<h2>Calibration</h2><p>{text}</p>'
            f'<img src="{_e(png)}" alt="forecast calibration" width="500" height="500">')


def _fan_section(records: Sequence[RunRecord], fans: Sequence[str | None]) -> str:
    out = ["<h2>Fan charts</h2><p>Observed curve, the forecast of the target epoch made "
           "at each epoch (mean, q10-q90 band), the bar each decision compared its quantile "
           "with (threshold or incumbent, as recorded), the stop and the realized value.</p>"]
    for i, (rec, fan) in enumerate(zip(records, fans, strict=True), 1):
        if fan is None:
            continue
        out.append(f'<section class="fan" id="fan-{i}"><h3>{i}. {_e(rec.run_id)}</h3>'
                   f"<p>{_e(stop_caption(rec))} · <a href=\"#run-{i}\">row</a></p>"
                   f'<img src="{_e(fan)}" alt="fan chart of {_e(rec.run_id)}" '
                   f'width="760" height="390"></section>')
    return "\n".join(out)


def write_page(records: Sequence[RunRecord], output_dir: str | os.PathLike[str], *,
               max_fans: int | None = None, title: str = "earlystop-predict report") -> Path:
    """Draw the fan charts and the calibration plot into ``output_dir`` and write
    ``index.html`` beside them (atomically).

    Args:
        records: the runs.
        output_dir: the folder (created).
        max_fans: draw at most this many fan charts, None for all. Default None.
        title: the page's title. Default ``"earlystop-predict report"``.

    Returns:
        The page's path.
    """
    out_dir = Path(output_dir)
    records = [r for r in records if r.epochs]
    drawn = {id(rec): name for rec, name in fan_files(records, max_fans)}
    fans = [drawn.get(id(rec)) for rec in records]
    for rec, name in zip(records, fans, strict=True):
        if name is not None:
            plot_fan(rec, out_dir / name)
    plot_calibration(records, out_dir / "calibration.png")
    text = render_page(records, fans, title=title, calibration_png="calibration.png")
    path = out_dir / PAGE
    fd, tmp = tempfile.mkstemp(prefix=f".{PAGE}.", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
