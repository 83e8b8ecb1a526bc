"""Interval calibration: fitted factors give the goal coverage, per observed-fraction bin."""

from __future__ import annotations

import numpy as np
import pytest

from earlystop_predict.forecast import calibration


def _quantiles(center: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    z = np.array([-1.2816, -0.6745, 0.0, 0.6745, 1.2816])
    return center[:, None] + half_width[:, None] * z[None, :]


def test_fit_reaches_goal_coverage_in_every_bin() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    frac = rng.uniform(0, 1, n)
    center = rng.uniform(0.3, 0.7, n)
    # The model's intervals are 2x too narrow early, about right late.
    true_sd = np.where(frac < 0.3, 0.10, 0.05)
    y = center + true_sd * rng.standard_normal(n)
    q = _quantiles(center, np.full(n, 0.05))
    table = calibration.fit(q, y, frac)
    assert table.shape == (len(calibration.EDGES), 2)
    assert table[0, 1] == pytest.approx(2.0, rel=0.1) and table[3, 1] == pytest.approx(1.0, rel=0.1)
    cal = calibration.apply(q, frac, table)
    for lo, hi in zip(calibration.EDGES, [*calibration.EDGES[1:], 9.0], strict=True):
        sel = (frac >= lo) & (frac < hi)
        inner = ((y >= cal[:, 1]) & (y <= cal[:, 3]))[sel].mean()
        outer = ((y >= cal[:, 0]) & (y <= cal[:, 4]))[sel].mean()
        assert inner == pytest.approx(0.5, abs=0.03) and outer == pytest.approx(0.8, abs=0.03)
    assert (np.diff(cal, axis=1) >= 0).all()  # still monotone


def test_as_table_broadcasts_a_pair_and_rejects_garbage() -> None:
    assert calibration.as_table((1.2, 0.9)).tolist() == [[1.2, 0.9]] * len(calibration.EDGES)
    for bad in ([1.0], [[1.0, -1.0]] * 4, [[np.nan, 1.0]] * 4):
        with pytest.raises(ValueError, match="calibration"):
            calibration.as_table(bad)


def test_shrink_pulls_mean_and_quantiles_towards_the_last_value() -> None:
    from earlystop_predict.forecast.calibration import shrink

    mean = np.array([0.8, 0.8])
    q = np.array([[0.6, 0.7, 0.8, 0.85, 0.9]] * 2)
    last = np.array([0.5, 0.5])
    frac = np.array([0.05, 0.6])  # bins 0 and 3
    m, qq = shrink(mean, q, last, frac, np.array([0.0, 1.0, 1.0, 1.0]))
    assert m.tolist() == pytest.approx([0.5, 0.8])
    assert qq[0, 2] == pytest.approx(0.5) and qq[0] - qq[0, 2] == pytest.approx(q[0] - 0.8)
    assert qq[1].tolist() == pytest.approx(q[1].tolist())


def test_fit_shrink_recovers_the_factor_that_fits_held_out_outcomes() -> None:
    from earlystop_predict.forecast.calibration import fit_shrink

    rng = np.random.default_rng(0)
    last = rng.uniform(0.2, 0.8, 4000)
    mean = last + rng.uniform(-0.2, 0.2, 4000)
    y = last + 0.5 * (mean - last) + rng.normal(0, 0.005, 4000)
    frac = rng.uniform(0, 1, 4000)
    assert fit_shrink(mean, last, y, frac) == pytest.approx([0.5] * 4, abs=0.05)


def test_shrink_vector_validates() -> None:
    from earlystop_predict.forecast.calibration import as_shrink

    assert as_shrink(None).tolist() == [1.0] * 4
    assert as_shrink([0.7]).tolist() == [0.7] * 4
    with pytest.raises(ValueError):
        as_shrink([1.0, -1.0, 1.0, 1.0])
