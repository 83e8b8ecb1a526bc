"""Shared pieces of the benchmark scripts: the pow3 baseline and table printing."""

from __future__ import annotations

import warnings

import numpy as np


def pow3_predict(values: np.ndarray, target: int) -> float:
    """Fit y(t) = c - a * t**(-alpha) to the observed epochs (scipy) and extrapolate.

    The classic parametric baseline of learning-curve extrapolation (Domhan et al.
    2015). Falls back to the last value when the fit fails or has too few points.
    """
    from scipy.optimize import curve_fit

    y = np.asarray(values, dtype=float)
    t = np.arange(1, len(y) + 1, dtype=float)
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(y) < 3:
        return float(y[-1]) if len(y) else float("nan")

    def f(x: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
        return c - a * np.power(x, -alpha)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, _ = curve_fit(f, t, y, p0=(y[-1], max(y[-1] - y[0], 1e-3), 0.5),
                             bounds=([0.0, -1.0, 0.0], [1.0, 2.0, 3.0]), maxfev=2000)
        return float(np.clip(f(np.array([float(target)]), *p)[0], 0.0, 1.0))
    except (RuntimeError, ValueError):
        return float(y[-1])


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A plain Markdown table (copy-paste into the README)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = [f"{c:.3f}" if isinstance(c, float) else str(c) for c in row]
        print("| " + " | ".join(cells) + " |")


def lstm_alone(path):  # noqa: ANN001, ANN201 - a Forecaster
    """A model directory's LSTM with its LightGBM fallback but no ensemble (the served
    ``auto`` before the two were averaged): the LSTM's half of ours, for comparison."""
    from earlystop_predict.forecast.artifacts import read_manifest
    from earlystop_predict.forecast.compose import AutoForecaster
    from earlystop_predict.forecast.lgbm import LGBMForecaster
    from earlystop_predict.forecast.lstm import LSTMForecaster

    manifest = read_manifest(path)
    return AutoForecaster(LSTMForecaster.from_dir(path, manifest),
                          LGBMForecaster.from_dir(path, manifest), lstm_weight=1.0)


def model_dir(model: str):  # noqa: ANN201 - pathlib.Path
    """The directory of a ``--model`` argument ("auto"/"bundled"...: the bundled one)."""
    from pathlib import Path

    from earlystop_predict.forecast.artifacts import bundled_dir

    return bundled_dir() if model in ("auto", "lstm", "lightgbm", "bundled") else Path(model)


def folds(model: str) -> list[tuple[list[str], object]]:
    """(families, directory) of each cross-validation fold model of a model directory
    that ``earlystop-predict train`` wrote (``OUTPUT/folds/``; empty if none is there)."""
    from earlystop_predict.forecast.artifacts import read_manifest

    base = model_dir(model)
    out = []
    for fold in read_manifest(base).get("folds") or []:
        path = base / fold["dir"]
        if (path / "manifest.json").is_file():
            out.append((list(fold["families"]), path))
    return out
