"""Shared fixtures and helpers of the test suite.

Helpers here are framework-free: tests that need a framework import it themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.records.record import RunRecord

REPO_ROOT = Path(__file__).resolve().parents[1]


def curve(values: Iterable[float], metric: str = "val_accuracy",
          **extra: Iterable[Any]) -> list[dict[str, Any]]:
    """Epoch rows ``[{"epoch": 1, metric: v1, ...}, ...]`` from a list of values.

    Args:
        values: the target metric per epoch, epoch 1 first.
        metric: name of the target metric. Default ``"val_accuracy"``.
        **extra: other metrics, one list each, as long as ``values``.
    """
    values = list(values)
    rows = [{"epoch": i + 1, metric: v} for i, v in enumerate(values)]
    for name, series in extra.items():
        for row, v in zip(rows, series, strict=True):
            row[name] = v
    return rows


def make_record(run_id: str = "run-1", values: Iterable[float] = (0.3, 0.5, 0.6),
                **kwargs: Any) -> RunRecord:
    """A small valid :class:`RunRecord` with the given target values."""
    kwargs.setdefault("task", "unit")
    kwargs.setdefault("hparams", {"learning_rate": 0.01, "batch_size": 64, "optimizer": "sgd"})
    kwargs.setdefault("meta", {"train_size": 1000, "num_classes": 10, "max_epochs": 20})
    metric = kwargs.pop("metric", "val_accuracy")
    return RunRecord(run_id=run_id, metric=metric, epochs=curve(values, metric), **kwargs)


def constant(value: float, width: float = 0.0) -> ScriptedForecaster:
    """A forecaster that always forecasts ``value`` (quantiles ``value +- width``)."""

    def fn(rec: RunRecord, target: int) -> Any:
        if not width:
            return value
        return value, {0.1: value - width, 0.5: value, 0.9: value + width}

    return ScriptedForecaster(fn)


def by_epoch(values: Mapping[int, float], default: float = 1.0) -> ScriptedForecaster:
    """A forecaster whose answer depends on the last epoch held (``default`` elsewhere)."""
    return ScriptedForecaster(lambda rec, target: values.get(rec.last_epoch, default))


def feed(mon: ForecastMonitor, values: Iterable[float], *, start: int = 1,
         until_stop: bool = True, **extra: Iterable[Any]) -> list[Any]:
    """Call ``mon.update`` once per value; return the decisions (stop at the first stop).

    Args:
        mon: the monitor, begun or not.
        values: the target metric per epoch.
        start: 1-based epoch of the first value. Default 1.
        until_stop: return after the first decision that stops. Default True.
        **extra: other metrics, one list each, as long as ``values``.
    """
    decisions = []
    extra_lists = {k: list(v) for k, v in extra.items()}
    for i, value in enumerate(values):
        metrics = {mon.monitor: value, **{k: v[i] for k, v in extra_lists.items()}}
        decision = mon.update(start + i, metrics)
        decisions.append(decision)
        if until_stop and decision.stop:
            break
    return decisions


def run_python(code: str, *, cwd: str | os.PathLike[str] | None = None,
               env: Mapping[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment; capture its output.

    Args:
        code: Python source run with ``python -c``.
        cwd: working directory. Default: the repository root.
        env: extra environment variables, over a copy of the current one.
        timeout: seconds before the child is killed. Default 120.
    """
    full_env = dict(os.environ)
    full_env.pop("PYTHONPATH", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], cwd=str(cwd or REPO_ROOT),
                          env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def write_lines(path: Path, lines: Iterable[Any]) -> Path:
    """Write JSONL: dicts are dumped with ``json.dumps``, strings written as they are."""
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line if isinstance(line, str) else json.dumps(line))
            fh.write("\n")
    return path


@pytest.fixture
def record() -> RunRecord:
    """A small valid run record."""
    return make_record()


@pytest.fixture
def monitor_factory() -> Callable[..., ForecastMonitor]:
    """Build a ledger-free :class:`ForecastMonitor` with test defaults.

    Defaults: ``target_epoch=20``, ``threshold=0.9``, ``min_epochs=3``,
    ``model=constant(0.5)``, ``ledger=None``, ``run_id="run-1"``.
    """

    def make(**kwargs: Any) -> ForecastMonitor:
        kwargs.setdefault("target_epoch", 20)
        kwargs.setdefault("threshold", 0.9)
        kwargs.setdefault("min_epochs", 3)
        kwargs.setdefault("model", constant(0.5))
        kwargs.setdefault("ledger", None)
        kwargs.setdefault("run_id", "run-1")
        return ForecastMonitor(**kwargs)

    return make


def blended_model_dir(directory: Path, weight: float = 0.5) -> Path:
    """A copy of the bundled model directory with a history model grown on 30 small
    synthetic runs and served blended at ``weight``: what ``train --from`` writes,
    without training an LSTM."""
    import shutil

    import numpy as np

    from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest, sha256_file
    from earlystop_predict.training.lgbm_train import train_history

    shutil.copytree(bundled_dir(), directory, ignore=shutil.ignore_patterns("__*", "folds",
                                                                            "corpus"))
    rng = np.random.default_rng(0)
    runs = []
    for i in range(30):
        top, rate = rng.uniform(0.4, 0.95), rng.uniform(0.1, 0.5)
        acc = top * (1 - np.exp(-rate * np.arange(1, 21)))
        runs.append(RunRecord(f"h{i}", epochs=[
            {"epoch": e + 1, "val_accuracy": float(a), "val_loss": float(2 - 2 * a),
             "train_accuracy": float(min(1.0, a + 0.05))} for e, a in enumerate(acc)],
            hparams={"learning_rate": float(rng.uniform(1e-3, 1e-1))},
            meta={"max_epochs": 20}))
    train_history(runs, seed=0, threads=1).save(directory / "history.txt.gz")
    manifest = read_manifest(directory)
    manifest["artifacts"]["history"] = {"file": "history.txt.gz",
                                        "sha256": sha256_file(directory / "history.txt.gz")}
    manifest["blend"] = {"weight": weight, "rule": "test"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


# --------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_server() -> Iterable[Any]:
    """A PostgreSQL server for the session (:mod:`pgserver`): started on 127.0.0.1 and a
    free port, stopped at the end even when a test fails; the test skips, saying why,
    where none can start (``ESP_TEST_POSTGRES_URL`` names an existing one instead)."""
    import pgserver

    try:
        server = pgserver.connect_or_start()
    except pgserver.Unavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger location for each backend: a new SQLite file (in a folder not created
    yet), and a fresh PostgreSQL database's URL (skipped where no server starts)."""
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "ledger.db")
    return request.getfixturevalue("postgres_url")
