"""What a ledger costs per backend: an SQLite file beside PostgreSQL (loopback), and no
ledger as the baseline.

For each backend: milliseconds per ``ForecastMonitor.update()`` of a 30-epoch run with a
constant scripted forecaster (the ledger's write is all that differs from the baseline),
per ``Ledger`` call (open, ``start_run``, ``log_epoch``, ``finish_run``, ``best_value``
over the study), the seconds to read every run back (``records()``, what ``ledger export``
does), and the epochs per second that 3 writer processes reach together on one ledger.

PostgreSQL: ``--postgres URL`` (a database the user may write), else a throwaway server
is started as the tests start one (tests/pgserver.py: initdb in /tmp, 127.0.0.1), and
the row is left out, saying why, where none can start.

Usage:
    .venv/bin/python benchmarks/ledger_backends.py [--runs 40] [--epochs 30] [--postgres URL]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from earlystop_predict import ForecastMonitor, ScriptedForecaster  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.records.record import RunRecord  # noqa: E402

_WRITER = textwrap.dedent("""
    import sys, time
    from earlystop_predict.ledger import Ledger
    from earlystop_predict.records.record import RunRecord
    url, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with Ledger(url) as led:
        led.start_run(RunRecord(name), study="w", target_epoch=n)
        while time.time() < go:
            time.sleep(0.002)
        for e in range(1, n + 1):
            led.log_epoch(name, {"epoch": e, "val_accuracy": e / n})
""")


def _ms(samples: list[float]) -> str:
    a = np.asarray(samples) * 1000
    return f"{np.median(a):7.2f} {np.percentile(a, 95):7.2f}"


def _monitor_runs(target: str | None, runs: int, epochs: int) -> list[float]:
    """Seconds per update() over ``runs`` runs (one study, a constant forecast)."""
    out = []
    for i in range(runs):
        mon = ForecastMonitor(target_epoch=epochs, model=ScriptedForecaster(lambda r, t: 0.99),
                              ledger=target, run_id=f"bench-{i}", study="bench",
                              min_delta=None)
        mon.begin()
        for e in range(1, epochs + 1):
            t = time.perf_counter()
            mon.update(e, {"val_accuracy": 0.5 + 0.4 * e / epochs, "val_loss": 1.0 / e})
            out.append(time.perf_counter() - t)
        mon.end()
    return out


def _calls(target: str, runs: int, epochs: int) -> dict[str, Any]:
    """Seconds per Ledger call, and for records() of every run."""
    times: dict[str, list[float]] = {k: [] for k in ("open", "start", "log", "finish", "best")}

    def timed(key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        times[key].append(time.perf_counter() - t)
        return out

    for i in range(runs):
        led = timed("open", Ledger, target)
        run_id = f"call-{i}"
        timed("start", led.start_run, RunRecord(run_id), study="calls", target_epoch=epochs)
        for e in range(1, epochs + 1):
            timed("log", led.log_epoch, run_id, {"epoch": e, "val_accuracy": e / epochs})
        timed("finish", led.finish_run, run_id, final_value=0.9, final_epoch=epochs)
        timed("best", led.best_value, "calls", "val_accuracy", "max")
        led.close()
    with Ledger(target, readonly=True) as led:
        t = time.perf_counter()
        n = len(led.records())
        times["records"] = [time.perf_counter() - t]
    times["n_records"] = n
    return times


def _writers(target: str, n_proc: int = 3, epochs: int = 300) -> float:
    """Epochs per second of ``n_proc`` processes writing one ledger at once."""
    Ledger(target).close()
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, target, f"p{i}", str(epochs),
                               str(go)], cwd=str(REPO)) for i in range(n_proc)]
    for p in procs:
        if p.wait(timeout=600) != 0:
            raise RuntimeError("a writer failed")
    return n_proc * epochs / (time.time() - go)


def _postgres(url: str | None) -> tuple[str | None, Any, str]:
    if url:
        return url, None, "given"
    try:
        import pgserver

        server = pgserver.start()
    except Exception as exc:  # noqa: BLE001 - the reason is printed
        return None, None, f"left out: {exc}"
    return server.new_database(), server, "loopback, fsync off"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--postgres", default=None, help="a postgresql:// database to use")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="esp-bench-"))
    pg, server, pg_note = _postgres(args.postgres)
    cases = [("none", None, "baseline"), ("sqlite", str(tmp / "runs.db"), "file, WAL")]
    cases.append(("postgres", pg, pg_note))
    print(f"{args.runs} runs x {args.epochs} epochs; ms p50 p95")
    print(f"{'backend':<9} {'update()':>15} {'open':>15} {'start_run':>15} "
          f"{'log_epoch':>15} {'finish_run':>15} {'best_value':>15} {'records':>9} "
          f"{'3 writers':>10}  note")
    try:
        for name, target, note in cases:
            if name != "none" and target is None:
                print(f"{name:<9} {note}")
                continue
            upd = _monitor_runs(target, args.runs, args.epochs)
            if target is None:
                print(f"{name:<9} {_ms(upd)}  {'-':>15} {'-':>15} {'-':>15} {'-':>15} "
                      f"{'-':>15} {'-':>9} {'-':>10}  {note}")
                continue
            c = _calls(target, args.runs, args.epochs)
            rate = _writers(target if name != "sqlite" else str(tmp / "writers.db"))
            print(f"{name:<9} {_ms(upd)} {_ms(c['open'])} {_ms(c['start'])} {_ms(c['log'])} "
                  f"{_ms(c['finish'])} {_ms(c['best'])} {c['records'][0]:8.3f}s "
                  f"{rate:7.0f}/s  {note}; records() of {c['n_records']} runs")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
