"""The accModels: forecasts of a run's metric at a target epoch, as a distribution.

:mod:`.base` (Forecast, Forecaster, ScriptedForecaster) is what every model builds on;
:mod:`.lstm`, :mod:`.lgbm` and :mod:`.prior` are the models; :mod:`.compose` chooses
and blends them and holds :func:`load_model`; :mod:`.artifacts` reads model
directories; :mod:`.calibration` maps raw quantiles to calibrated ones.
Depends on :mod:`earlystop_predict.records` only.
"""

from earlystop_predict.forecast.base import (
    QKEYS,
    QUANTILES,
    Forecast,
    Forecaster,
    ScriptedForecaster,
    forecasts_from_arrays,
    observed_forecast,
    qkey,
)
from earlystop_predict.forecast.compose import (
    AutoForecaster,
    BlendForecaster,
    StrictForecaster,
    load_model,
)

__all__ = ["QKEYS", "QUANTILES", "AutoForecaster", "BlendForecaster", "Forecast", "Forecaster",
           "ScriptedForecaster", "StrictForecaster", "forecasts_from_arrays", "load_model",
           "observed_forecast", "qkey"]
