"""The demo (``earlystop-predict demo``) on real tiny training, with a scripted forecaster.

The forecaster forecasts the best accuracy seen so far (q0.9 = best + 0.1): a
good run (>= 0.9 by epoch 3 on digits) is never short of the incumbent, a
hopeless one (<= 0.2) always is, so the stops are known.
"""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from earlystop_predict.cli import main  # noqa: E402
from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.tools.demo import (  # noqa: E402
    BASE_CONFIGS,
    load_data,
    make_configs,
    run_demo,
    spark,
)

# adam (good), tiny-lr (hopeless), sgd (good)
CONFIGS = BASE_CONFIGS[:3]


def best_so_far():
    def fn(rec, target):
        best = float(np.nanmax(rec.series(rec.metric)))
        return best, {0.1: best - 0.1, 0.5: best, 0.9: best + 0.1}

    return ScriptedForecaster(fn)


@pytest.mark.parametrize("framework", ["keras", "lightning"])
def test_demo_stops_the_hopeless_run_at_the_first_rung(framework, tmp_path):
    pytest.importorskip("keras" if framework == "keras" else "lightning")
    out = io.StringIO()
    report = run_demo(framework, configs=CONFIGS, epochs=6, min_epochs=3, seed=0,
                      model=best_so_far(), ledger=tmp_path / "demo.db", out=out)

    good, hopeless, good2 = report.runs
    assert good.stopped is None and good.epochs_run == 6
    assert good.final_value == pytest.approx(good.last_value) and good.last_value > 0.8
    # It sits at chance (flat): ASHA's rung rule against the first run stops it at 3.
    assert hopeless.stopped["epoch"] == 3
    v = hopeless.values[-1]  # its value at the rung (epoch 3) against the good run's there
    assert f"rung 3: {v:.4g} below the study's top quarter" in hopeless.stopped["reason"]
    assert hopeless.final_value is None                       # no audit
    assert hopeless.forecast is not None and hopeless.forecast_epoch == 3
    assert hopeless.forecast.mean == pytest.approx(max(hopeless.values))
    assert good2.stopped is None
    assert report.epochs_saved == 3 and report.epochs_budget == 18

    text = out.getvalue()
    assert "[2/3] tiny-lr" in text and "STOPPED: flat: best" in text
    table = text[text.index("#  run"):]
    assert "tiny-lr" in table and "ep 3" in table
    assert "epochs trained 15 of 18: 3 saved" in table

    runs = {r["run_id"]: r for r in Ledger(tmp_path / "demo.db").runs(study="demo")}
    assert len(runs) == 3
    assert runs[hopeless.run_id]["status"] == "stopped"
    assert runs[good.run_id]["status"] == "completed"


@pytest.mark.parametrize("framework", ["keras", "lightning"])
def test_demo_audit_trains_stopped_runs_to_the_end_and_records_it(framework, tmp_path):
    pytest.importorskip("keras" if framework == "keras" else "lightning")
    report = run_demo(framework, configs=CONFIGS[:2], epochs=6, min_epochs=3,
                      model=best_so_far(), audit=True, out=io.StringIO(), verbose=0,
                      ledger=tmp_path / "demo.db")
    hopeless = report.runs[1]
    assert hopeless.stopped["epoch"] == 3 and hopeless.epochs_run == 3
    assert hopeless.final_value is not None and 0.0 <= hopeless.final_value < 0.5
    assert report.epochs_saved == 3                         # audits do not count

    # The audit's epochs are in the ledger after the stop; the run stays stopped.
    rec = next(r for r in Ledger(tmp_path / "demo.db").records()
               if r.run_id == hopeless.run_id)
    assert [r["epoch"] for r in rec.epochs] == [1, 2, 3, 4, 5, 6]
    assert rec.epochs[-1]["val_accuracy"] == pytest.approx(hopeless.final_value)
    assert rec.stopped["epoch"] == 3 and rec.extra["status"] == "stopped"
    assert [f["at_epoch"] for f in rec.forecasts] == [1, 2, 3]   # nothing forecast after
    from earlystop_predict.tools.report_page import summarize

    (audit,) = summarize(Ledger(tmp_path / "demo.db").records()).audits
    assert audit.run_id == hopeless.run_id and audit.beats_best is False


def _demo_subprocess(framework: str, tmp_path) -> subprocess.CompletedProcess[str]:
    """``earlystop-predict demo`` in a fresh interpreter, stdout and stderr piped, with
    no TF_CPP_MIN_LOG_LEVEL set: what a user piping the demo to a file sees."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    code = ("import sys; from earlystop_predict.cli import main; sys.exit(main(["
            f"'demo', '--framework', '{framework}', '--scripted', '--configs', '2', "
            "'--epochs', '4', '--min-epochs', '2', '--ledger', sys.argv[1]]))")
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "l.db")], env=env,
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("framework", ["keras", "lightning"])
def test_piped_demo_prints_each_epoch_and_no_framework_noise(framework, tmp_path):
    pytest.importorskip("keras" if framework == "keras" else "lightning")
    proc = _demo_subprocess(framework, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = proc.stdout + proc.stderr
    for noise in ("oneDNN", "absl", "port.cc", "I0000"):
        assert noise not in both, both[:3000]
    lines = proc.stdout.splitlines()
    # A plain line per epoch of each run (no live \r display), then the run's line.
    for epoch in range(1, 5):
        assert any(re.match(rf"\s+\[1/2\] adam\s+ep\s+{epoch}/4 val \d\.\d{{3}}  "
                            r"forecast@4 ", line) for line in lines), proc.stdout
    assert not any("\r" in line or "\x1b[" in line for line in lines)
    assert any(line.startswith("[1/2] adam") and line.endswith("completed") for line in lines)
    assert lines.index(next(x for x in lines if x.startswith("#  run"))) > 8   # table last


def test_cli_demo_scripted(capsys, tmp_path):
    pytest.importorskip("keras")
    code = main(["demo", "--scripted", "--configs", "2", "--epochs", "4", "--min-epochs", "2",
                 "--ledger", str(tmp_path / "l.db"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("#  run") and "epochs trained" in out
    assert len(Ledger(tmp_path / "l.db").runs(study="demo")) == 2


def test_cli_demo_bad_epochs_is_a_one_line_error(capsys):
    assert main(["demo", "--scripted", "--epochs", "1", "-q"]) == 2
    assert "epochs must be an integer >= 2, got 1" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_live_on_a_terminal_and_plain_lines_elsewhere():
    from earlystop_predict.policy.monitor import ForecastMonitor
    from earlystop_predict.tools.demo import Progress

    def run(out, verbose=1):
        mon = ForecastMonitor(target_epoch=4, model=best_so_far(), min_epochs=2)
        progress = Progress(out, 1, 4, verbose)
        progress.start(0, CONFIGS[0])
        for e, v in enumerate([0.5, 0.7, 0.8, 0.9], 1):
            mon.update(e, {"val_accuracy": v})
            progress.epoch(mon)
        progress.finish(mon)
        return out.getvalue()

    piped = run(io.StringIO()).splitlines()
    assert [line.split("ep")[1].split()[0] for line in piped[:4]] == ["1/4", "2/4", "3/4",
                                                                        "4/4"]
    assert all(line.startswith("   [1/1] adam") for line in piped[:4])
    assert piped[4].startswith("[1/1] adam") and piped[4].endswith("completed")
    assert "\r" not in "".join(piped)
    live = run(_Terminal())
    assert live.count("\r") == 5 and live.count("\n") == 1      # one line, redrawn
    assert run(_Terminal(), verbose=2).count("\n") == 5          # -v: plain lines anyway
    assert run(io.StringIO(), verbose=0) == ""


def test_make_configs_and_data():
    assert make_configs(3) == list(BASE_CONFIGS[:3])
    many = make_configs(9, seed=1)
    assert len(many) == 9 and len({c.name for c in many}) == 9
    assert {c.expect for c in BASE_CONFIGS} == {"good", "hopeless"}
    with pytest.raises(ConfigError):
        make_configs(0)
    data = load_data(0)
    assert data.x_train.shape == (1437, 64) and data.x_val.shape == (360, 64)
    assert set(np.unique(data.y_train)) == set(range(10))
    assert spark([0.0, 0.5, 1.0, math.nan]) == "▁▅█·"
