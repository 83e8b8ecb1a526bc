"""The LSTM's run cache: one step per new epoch, answers equal to the full pass.

A callback forecasts the same run after every epoch; the LSTM keeps each run's
recurrence state (by run id) and steps only the epochs added since the last call.
Whatever the run does between calls (missing values, a resume that trims or replays
epochs, changed hyperparameters, another run under the same id), every forecast must
equal the one a fresh pass over the whole sequence gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from earlystop_predict import load_model
from earlystop_predict.forecast.lstm import LSTMForecaster
from earlystop_predict.records.record import RunRecord

TARGET = 110


@pytest.fixture(scope="module")
def models() -> tuple[LSTMForecaster, LSTMForecaster]:
    lstm = load_model("lstm").inner
    return LSTMForecaster(lstm.weights), LSTMForecaster(lstm.weights, cache_size=0)


def rows(seed: int, n: int = 100, holes: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    acc = np.clip(0.3 + 0.5 * (1 - np.exp(-np.arange(1, n + 1) / (4 + 3 * seed)))
                  + rng.normal(0, 0.01, n), 0, 1)
    out = [{"epoch": e + 1, "val_accuracy": float(a), "val_loss": float(2 - 2 * a)}
           for e, a in enumerate(acc)]
    if holes:  # missing values, the first ones included: forward fill and masks carry over
        for e in (0, 1, 7, 8, 9, 40):
            out[e]["val_accuracy"] = None
        for e in range(0, n, 3):
            out[e]["train_accuracy"] = float(acc[e]) + 0.02
    return out


def same(a, b) -> None:  # noqa: ANN001
    assert a.model == b.model == "lstm"
    assert a.mean == pytest.approx(b.mean, abs=1e-6)
    assert a.quantiles == pytest.approx(b.quantiles, abs=1e-6)


@pytest.mark.parametrize("seed,holes,meta", [(0, False, {"max_epochs": TARGET}),
                                             (1, True, {}), (2, True, {"max_epochs": 80}),
                                             (3, False, {})])
def test_epoch_by_epoch_equals_the_full_pass(models, seed, holes, meta) -> None:
    cached, full = models
    rec = RunRecord(run_id=f"grow-{seed}", hparams={"lr": 0.01 * (seed + 1)}, meta=meta)
    for row in rows(seed, holes=holes):
        rec.epochs.append(row)
        same(cached.forecast(rec, TARGET), full.forecast(rec, TARGET))
    assert len(cached.cache) >= 1


def test_resume_that_trims_and_replays_epochs(models) -> None:
    cached, full = models
    base = rows(4, n=30)
    rec = RunRecord(run_id="resumed", hparams={"lr": 0.02}, meta={"max_epochs": 60})
    for row in base[:20]:
        rec.epochs.append(row)
        cached.forecast(rec, 60)
    # Resumed from epoch 12's checkpoint: epochs 13.. replayed with other values.
    rec.epochs = [dict(r) for r in base[:12]]
    for e in range(12, 30):
        rec.epochs.append({**base[e], "val_accuracy": base[e]["val_accuracy"] * 0.9})
        same(cached.forecast(rec, 60), full.forecast(rec, 60))
    # The last row changed in place (a replayed epoch of the same number) and a skip of
    # several epochs between two calls.
    rec.epochs[-1] = {**rec.epochs[-1], "val_accuracy": 0.1}
    same(cached.forecast(rec, 60), full.forecast(rec, 60))
    rec.epochs += [{"epoch": 31 + k, "val_accuracy": 0.5} for k in range(5)]
    same(cached.forecast(rec, 60), full.forecast(rec, 60))


def test_changed_hparams_target_or_run_under_the_same_id(models) -> None:
    cached, full = models
    rec = RunRecord(run_id="same-id", hparams={"lr": 0.01}, epochs=rows(5, n=10))
    same(cached.forecast(rec, 40), full.forecast(rec, 40))
    rec.hparams["lr"] = 0.1
    same(cached.forecast(rec, 40), full.forecast(rec, 40))
    same(cached.forecast(rec, 50), full.forecast(rec, 50))  # planned epochs = the target
    other = RunRecord(run_id="same-id", hparams={"lr": 0.1}, epochs=rows(6, n=12))
    same(cached.forecast(other, 40), full.forecast(other, 40))
    # A batch neither reads nor disturbs the cache, and equals single calls.
    recs = [RunRecord(run_id=f"b{i}", epochs=rows(i, n=5 + i)) for i in range(4)]
    for a, b in zip(cached.forecast_many(recs, 40), [full.forecast(r, 40) for r in recs],
                    strict=True):
        same(a, b)


def test_cache_is_bounded(models) -> None:
    small = LSTMForecaster(models[0].weights, cache_size=3)
    for i in range(10):
        small.forecast(RunRecord(run_id=f"r{i}", epochs=rows(i, n=4)), 20)
    assert len(small.cache) == 3


def test_quantile_levels_parsed_once_and_forecast_unchanged(models) -> None:
    from dataclasses import replace

    fc = models[0].forecast(RunRecord(run_id="q", epochs=rows(7, n=6)), 30)
    before = fc.to_dict()
    assert fc.quantile(0.5) == fc.quantiles["0.5"] and fc.quantile(0.1) == fc.quantiles["0.1"]
    assert fc.__dict__["_levels"][0] == (0.1, 0.25, 0.5, 0.75, 0.9)  # cached as floats
    assert fc.to_dict() == before and "_levels" not in before
    assert replace(fc) == fc  # equality and replace see the fields only
    # Keys in any order and spelling still sort by level.
    from earlystop_predict.forecast.base import Forecast

    odd = Forecast(mean=0.5, quantiles={"0.9": 0.9, "0.10": 0.1, "0.5": 0.5}, model="x")
    assert odd.quantile(0.3) == pytest.approx(0.3) and odd.quantile(0.9) == 0.9


def test_a_forecaster_with_a_warm_cache_pickles_and_serves_the_same():
    # Regression: Ray Tune pickles its scheduler, and with it the forecaster; the run
    # cache's lock made that fail ("cannot pickle '_thread.lock' object").
    import pickle

    from earlystop_predict import RunRecord, load_model

    model = load_model("lstm")
    rec = RunRecord("r", epochs=[{"epoch": e, "val_accuracy": 0.3 + 0.02 * e}
                                 for e in range(1, 8)])
    before = model.forecast(rec, 30)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.forecast(rec, 30).mean == pytest.approx(before.mean, abs=1e-6)
