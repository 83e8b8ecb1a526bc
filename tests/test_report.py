"""The forecast report: numbers by hand, the fan charts and calibration plot, the page
(``index.html``) and its CLI, and the page in headless Chromium.

The browser test needs Debian's ``chromium`` (``.ci/run`` installs it); it skips,
saying so, only where no browser is on the PATH.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import constant, feed

from earlystop_predict.cli import main
from earlystop_predict.ledger import Ledger
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.records.record import RunRecord
from earlystop_predict.tools.report import (
    bars_of,
    calibration,
    evaluate,
    format_table,
    stop_caption,
)
from earlystop_predict.tools.report_page import audit_text, summarize

LONG_ID = "no-name-c6230fde-eb2f-4a66-9d1b-3c1f1c7e0a55-a-run-id-longer-than-any-column"


def _ledger_with_runs(path):
    kept = ForecastMonitor(target_epoch=6, threshold=0.9, min_epochs=2, dry_run=True,
                           model=constant(0.5, width=0.1), ledger=str(path), run_id="kept/1",
                           study="s")
    feed(kept, [0.2, 0.3, 0.4, 0.45, 0.5, 0.55], until_stop=False)
    kept.end()
    cut = ForecastMonitor(target_epoch=6, threshold=0.9, min_epochs=2,
                          model=constant(0.5, width=0.1), ledger=str(path), run_id="cut",
                          study="s")
    feed(cut, [0.2, 0.3, 0.4])
    cut.end()
    kept.ledger.close()
    cut.ledger.close()


def _study(path: Path) -> Path:
    """A study of five runs on target epoch 6: a dry run that completes (0.55), a long
    id that completes (0.8), one stopped by the threshold at 2, one stopped by the
    incumbent (0.8) at 2 and audited (trained on to 0.9, beating it), one diverged at 2."""
    _ledger_with_runs(path)

    def run(run_id, values, *, threshold=None, fc=0.5, audit=()):
        mon = ForecastMonitor(target_epoch=6, threshold=threshold, min_epochs=2,
                              model=constant(fc, width=0.1), ledger=str(path), run_id=run_id,
                              study="s")
        feed(mon, values)
        mon.end()
        for e, v in audit:                   # what `demo --audit` records past the stop
            mon.ledger.log_epoch(run_id, {"epoch": e, "val_accuracy": v})
        mon.ledger.close()

    run(LONG_ID, [0.3, 0.5, 0.6, 0.7, 0.75, 0.8], fc=0.8)
    run("audited", [0.2, 0.3, 0.4], audit=[(3, 0.5), (4, 0.6), (5, 0.8), (6, 0.9)])
    run("nan", [0.3, math.nan, 0.4])
    return path


def test_report_numbers_by_hand(tmp_path):
    _ledger_with_runs(tmp_path / "l.db")
    with Ledger(tmp_path / "l.db") as led:
        records = led.records()
    kept, cut = evaluate(records)
    # Forecasts at epochs 1-5 all say 0.5 [0.4, 0.6]; realized 0.55 at epoch 6.
    assert kept.n_forecasts == 5 and kept.realized == 0.55
    assert kept.mae == pytest.approx(0.05) and kept.coverage80 == 1.0
    assert kept.stop_text == "would@2"
    assert cut.realized is None and cut.mae is None and cut.stop_text == "stopped@2"
    cal = calibration(records)
    assert cal == {0.1: (5, 0.0), 0.5: (5, 0.0), 0.9: (5, 1.0)}
    table = format_table([kept, cut])
    assert "1 of 2 runs reached" in table and "MAE 0.0500" in table


def test_summary_and_what_the_audited_stop_cost_by_hand(tmp_path):
    with Ledger(_study(tmp_path / "l.db")) as led:
        records = led.records()
    s = summarize(records)
    assert s.runs == 5
    assert s.status == {"completed": 2, "diverged": 1, "stopped": 2}
    # Trained: 6 + 2 (cut) + 6 + 2 (audited: the audit's epochs do not count) + 2 (nan).
    assert (s.epochs_trained, s.epochs_budget, s.epochs_saved) == (18, 30, 12)
    assert s.best_completed == 0.8
    (audit,) = s.audits
    assert (audit.run_id, audit.stopped_epoch, audit.final, audit.beats_best) == \
        ("audited", 2, 0.9, True)
    text = audit_text(s)
    assert "1 of 3 stopped runs audited" in text and "1 would have beaten" in text
    assert "by up to 0.1" in text


def test_the_bar_a_run_was_stopped_against_is_read_from_its_reasons():
    rec = RunRecord("r", epochs=[{"epoch": e, "val_accuracy": 0.1} for e in (1, 2, 3)],
                    forecasts=[
                        {"at_epoch": 1, "reason": "forecast q0.95 0.6648 < incumbent 0.9861; "
                                                  "min_epochs 5 not reached"},
                        {"at_epoch": 2, "reason": "forecast q0.95 0.95 >= threshold 0.9; "
                                                  "q0.95 0.95 < incumbent 0.97"},
                        {"at_epoch": 3, "reason": "diverged"}],
                    stopped={"epoch": 3, "reason": "diverged"})
    bars = [(b.at_epoch, b.name, b.value, b.bar) for b in bars_of(rec)]
    assert bars == [(1, "incumbent", 0.6648, 0.9861), (2, "threshold", 0.95, 0.9),
                    (2, "incumbent", 0.95, 0.97)]
    assert stop_caption(rec) == "stopped at epoch 3: diverged"


def test_fan_chart_axis_ticks_legend_bar_and_title(tmp_path):
    pytest.importorskip("matplotlib")
    from earlystop_predict.tools.report import fan_figure

    with Ledger(_study(tmp_path / "l.db")) as led:
        records = {r.run_id: r for r in led.records()}
    fig = fan_figure(records["cut"])                         # stopped at 2 of 6
    fig.canvas.draw()
    (ax,) = fig.axes
    assert ax.get_xlim()[1] >= 6                             # to the target, not the stop
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "threshold 0.9" in labels and "stopped @2" in labels
    renderer = fig.canvas.get_renderer()
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert not legend_box.overlaps(ax.get_window_extent(renderer))   # beside, not on the data
    assert "forecast q0.95" in fig._supxlabel.get_text() and "threshold 0.9" in \
        fig._supxlabel.get_text()

    long_fig = fan_figure(records[LONG_ID])
    assert ax.get_title(loc="left") == "cut"
    assert long_fig.axes[0].get_title(loc="left").replace("\n", "") == LONG_ID   # in full


def test_calibration_plot_gives_its_sample_size_and_a_caveat(tmp_path):
    pytest.importorskip("matplotlib")
    from earlystop_predict.tools.report import calibration_figure

    with Ledger(_study(tmp_path / "l.db")) as led:
        records = led.records()
    fig = calibration_figure(records)
    (ax,) = fig.axes
    # kept/1 (5 forecasts), the long id (5) and the audited run (2) reached epoch 6.
    assert "12 forecasts per level, 3 runs" in ax.get_title()
    assert any("few runs (< 20)" in t.get_text() for t in ax.texts)


# ------------------------------------------------------------------------- the page
class _Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.sortable: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.scripts_with_src = 0
        self._in_body = self._in_th = False
        self._th_sortable = False
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and re.match(r"(?i)^(https?:)?//", a[key]):
                self.external.append(a[key])
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append(a.get("id", ""))
        elif tag == "th":
            self._in_th, self._th_sortable, self._text = True, "data-sort" in a, []
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script" and a.get("src"):
            self.scripts_with_src += 1
        elif tag == "link":
            self.external.append(a.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "th":
            if self._th_sortable:
                self.sortable.append("".join(self._text).strip())
            self._in_th = False

    def handle_data(self, data):
        if self._in_th:
            self._text.append(data)


def _write_report(tmp_path) -> tuple[Path, str]:
    pytest.importorskip("matplotlib")
    db = _study(tmp_path / "l.db")
    out_dir = tmp_path / "report"
    assert main(["report", "--ledger", str(db), "--output-dir", str(out_dir)]) == 0
    return out_dir, (out_dir / "index.html").read_text(encoding="utf-8")


def test_report_cli_writes_pngs_and_prints_the_table(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    db = tmp_path / "l.db"
    _ledger_with_runs(db)
    out_dir = tmp_path / "rep"
    assert main(["report", "--ledger", str(db), "--output-dir", str(out_dir),
                 "--study", "s"]) == 0
    out = capsys.readouterr().out
    assert "kept/1" in out and "stopped@2" in out and "cover80" in out
    assert f"wrote {out_dir / 'index.html'} (2 fan charts" in out
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["calibration.png", "fan_cut.png", "fan_kept_1.png", "index.html"]
    for name in names[:-1]:
        data = (out_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_page_structure(tmp_path, capsys):
    out_dir, text = _write_report(tmp_path)
    printed = capsys.readouterr().out
    assert LONG_ID in printed                                 # the table: ids in full

    page = _Page()
    page.feed(text)
    assert page.rows == [f"run-{i}" for i in range(1, 6)]     # a row per run
    assert {"final value", "forecast MAE", "stop epoch"} <= set(page.sortable)
    assert len(page.images) == 6                              # 5 fan charts, calibration
    for src in page.images:
        assert (out_dir / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert page.external == [] and page.scripts_with_src == 0  # nothing from the network
    assert LONG_ID in text                                    # the full id, never cut
    assert "stopped at epoch 2: forecast q0.95 0.6283 &lt; threshold 0.9" in text  # reason
    assert "1 would have beaten the best completed run" in text
    assert "Few runs (fewer than 20)" in text


def test_report_help_prints_plain_percent(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "80% interval" in out and "%%" not in out


# ------------------------------------------------------------------ headless Chromium
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1200, 900


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless browser on the PATH (" + ", ".join(BROWSERS) + "): install "
                "Debian's chromium (apt-get install chromium; .ci/run does) to test the page")


def _chromium(browser: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--no-default-browser-check", "--disable-extensions", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", f"--window-size={WIDTH},{HEIGHT}",
           "--hide-scrollbars", "--virtual-time-budget=10000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, check=False)


def _console(stderr: str) -> list[str]:
    """The page's console messages (errors and uncaught exceptions among them)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _load(browser: str, tmp_path: Path, page: Path) -> tuple[str, list[str]]:
    proc = _chromium(browser, tmp_path / "profile-dom", page.as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, _console(proc.stderr)


def _body(dom: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", dom)
    assert tag, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


def test_report_page_in_headless_chromium(browser, tmp_path):
    Image = pytest.importorskip("PIL.Image")  # noqa: N806 - comes with matplotlib
    out_dir, _ = _write_report(tmp_path)
    dom, console = _load(browser, tmp_path, out_dir / "index.html")
    assert console == []                                      # no error, no message
    body = _body(dom)
    assert body.get("data-images") == "loaded 6"              # every <img> has pixels
    assert 0 <= int(body["data-table-top"]) < HEIGHT          # the table is on screen

    shot = tmp_path / "shot.png"
    proc = _chromium(browser, tmp_path / "profile-shot", (out_dir / "index.html").as_uri(),
                     f"--screenshot={shot}")
    assert proc.returncode == 0 and _console(proc.stderr) == [], proc.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (WIDTH, HEIGHT)
        gray = img.convert("L")
        dark = sum(gray.histogram()[:128])                    # text and lines
        assert dark > 0.005 * WIDTH * HEIGHT
        assert len(img.convert("RGB").getcolors(WIDTH * HEIGHT)) > 50


def test_the_browser_check_catches_a_broken_page(browser, tmp_path):
    # The check above can fail: a page with a script error and a missing image.
    out_dir, text = _write_report(tmp_path)
    broken = text.replace('src="calibration.png"', 'src="missing.png"').replace(
        "<script>", "<script>console.error('boom');", 1)
    (out_dir / "index.html").write_text(broken, encoding="utf-8")
    dom, console = _load(browser, tmp_path, out_dir / "index.html")
    assert any("boom" in line for line in console)
    assert _body(dom).get("data-images") == "broken 1 of 6"
