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


def _booster(rng: np.random.Generator):
    import lightgbm as lgb

    x = rng.normal(size=(400, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values are routed, as in the features
    y = np.nan_to_num(x[:, 0]) * 2 + np.sin(np.nan_to_num(x[:, 1]))
    return lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1,
                      "min_data_in_leaf": 5}, lgb.Dataset(x, y), 40), x


def test_the_fast_single_row_path_predicts_what_booster_predict_does():
    import copy
    import pickle

    rng = np.random.default_rng(1)
    booster, x = _booster(rng)
    rows = lgbm.RowPredictor(booster)
    assert rows._config is not None  # the fast path is in use
    want = booster.predict(x, num_threads=1)
    got = np.array([rows(x[i:i + 1])[0] for i in range(len(x))])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(rows(x[:7]), want[:7])  # several rows: Booster.predict
    for other in (pickle.loads(pickle.dumps(rows)), copy.deepcopy(rows)):
        assert other._config is not None and other._config.value != rows._config.value
        np.testing.assert_array_equal(other(x[3:4]), want[3:4])


def test_the_fast_path_serves_threads_one_at_a_time():
    from concurrent.futures import ThreadPoolExecutor

    booster, x = _booster(np.random.default_rng(2))
    rows = lgbm.RowPredictor(booster)
    want = booster.predict(x, num_threads=1)

    def work(k: int) -> bool:
        idx = np.random.default_rng(k).integers(0, len(x), 300)
        return all(rows(x[i:i + 1])[0] == want[i] for i in idx)

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(8)))


def test_a_booster_without_the_fast_api_is_asked_through_predict():
    class Gain:  # a stand-in booster (no LightGBM handle)
        def predict(self, x, num_threads=1):
            return np.full(len(x), 0.25)

    rows = lgbm.RowPredictor(Gain())
    assert rows._config is None
    np.testing.assert_array_equal(rows(np.zeros((1, 3))), [0.25])


def test_a_multi_output_booster_is_asked_through_predict():
    """A multiclass booster gives several values a row: the fast path's one-value buffer
    would be overrun, so it is not used (an artifact of any objective must not crash)."""
    import lightgbm as lgb

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 4))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(x, rng.integers(0, 3, 300)), 5)
    rows = lgbm.RowPredictor(booster)
    assert rows._config is None
    np.testing.assert_array_equal(rows(x[:1]), booster.predict(x[:1], num_threads=1))


def test_the_fallback_forecasts_one_run_as_it_does_in_a_batch():
    """The bundled LightGBM fallback's forecast of one run (the fast path) is the one it
    makes of the same run in a batch (Booster.predict), quantile for quantile."""
    from earlystop_predict import load_model

    model = load_model("lightgbm")
    rng = np.random.default_rng(3)
    recs = [RunRecord(f"r{i}", epochs=[{"epoch": e, "val_accuracy": float(v)}
                                       for e, v in enumerate(np.sort(rng.random(n)), 1)],
                      hparams={"learning_rate": 1e-3}, meta={"max_epochs": 50})
            for i, n in enumerate((3, 8, 20))]
    batch = model.forecast_many(recs, [50] * len(recs))
    for rec, b in zip(recs, batch, strict=True):
        one = model.forecast(rec, 50)
        assert one.quantiles == b.quantiles and one.mean == b.mean
