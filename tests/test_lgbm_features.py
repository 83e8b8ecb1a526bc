"""The LightGBM features of one run (a callback's forecast, the hot path) are the batch
path's, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from earlystop_predict.forecast import lgbm
from earlystop_predict.records.record import RunRecord


def _random_record(rng: np.random.Generator, i: int) -> RunRecord:
    n = int(rng.choice([1, 2, 3, 4, 6, 7, 12, 40]))
    loss = bool(rng.random() < 0.3)
    metric, mode = ("val_loss", "min") if loss else ("val_accuracy", "max")
    gaps = rng.random() < 0.5
    rows = []
    for e in range(1, n + 1):
        row: dict = {"epoch": e}
        for name, scale in ((metric, 1.0), ("val_loss", 2.0), ("train_accuracy", 1.0),
                            ("train_loss", 2.0)):
            if name in row or (name != metric and rng.random() < 0.2):
                continue  # a metric the run does not record this epoch
            if gaps and rng.random() < 0.3:
                row[name] = float("nan") if rng.random() < 0.5 else None
            else:
                row[name] = float(rng.random() * scale)
        rows.append(row)
    hp = {"learning_rate": float(10 ** rng.uniform(-5, -1)), "optimizer": "adam"} \
        if rng.random() < 0.7 else {}
    meta = {"max_epochs": int(n + rng.integers(0, 50))} if rng.random() < 0.6 else {}
    return RunRecord(f"r{i}", metric=metric, mode=mode, epochs=rows, hparams=hp, meta=meta)


@pytest.mark.parametrize("aux", [False, True])
def test_one_run_matches_the_batch_path(aux):
    rng = np.random.default_rng(0)
    records = [_random_record(rng, i) for i in range(400)]
    long = RunRecord("long", epochs=[{"epoch": e, "val_accuracy": 0.5} for e in range(1, 61)])
    checked = 0
    for rec in records:
        kind = lgbm.metric_kind(rec)
        if kind is None:
            continue
        target = rec.n_epochs + int(rng.integers(1, 30))
        one = lgbm.record_matrix([rec], [target], [kind], aux=aux)
        batch = lgbm.record_matrix([rec, long], [target, 60], [kind, 0], aux=aux)[:1]
        assert one.shape == batch.shape
        np.testing.assert_allclose(one, batch, rtol=1e-12, atol=1e-15, equal_nan=True,
                                   err_msg=f"{rec.run_id}: {rec.epochs}")
        checked += 1
    assert checked > 300


def test_a_run_with_no_finite_value_of_its_metric():
    rec = RunRecord("r", epochs=[{"epoch": 1, "val_accuracy": None},
                                 {"epoch": 2, "val_accuracy": float("nan")}])
    one = lgbm.record_matrix([rec], [10], [0], aux=True)
    batch = lgbm.record_matrix([rec, rec], [10, 10], [0, 0], aux=True)[:1]
    np.testing.assert_allclose(one, batch, equal_nan=True)
