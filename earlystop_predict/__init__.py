"""earlystop_predict: stop doomed training runs early by forecasting where they end.

Example:
    >>> import earlystop_predict as esp
    >>> model = esp.load_model()          # bundled LSTM and LightGBM averaged
    >>> rec = esp.RunRecord("r", epochs=[{"epoch": 1, "val_accuracy": 0.4}])
    >>> fc = model.forecast(rec, target_epoch=50)
"""

from earlystop_predict import _compat
from earlystop_predict.errors import (
    ConfigError,
    EarlystopPredictError,
    ForecastUnavailableError,
    MetricNotFoundError,
    MissingExtraError,
    ModelArtifactError,
    RecordError,
)
from earlystop_predict.forecast.base import Forecast, Forecaster, ScriptedForecaster
from earlystop_predict.forecast.compose import load_model
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.policy.stop import Decision, StopPolicy
from earlystop_predict.records.record import RunRecord, read_records, write_records

__version__ = "0.1.0"

_compat.install()

__all__ = [
    "ConfigError", "Decision", "EarlystopPredictError", "Forecast", "ForecastMonitor",
    "ForecastUnavailableError", "Forecaster", "MetricNotFoundError", "MissingExtraError",
    "ModelArtifactError", "RecordError", "RunRecord", "ScriptedForecaster", "StopPolicy",
    "load_model", "read_records", "write_records", "__version__",
]
