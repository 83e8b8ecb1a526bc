"""earlystop_predict: stop doomed training runs early by forecasting where they end.

Example:
    >>> import earlystop_predict as esp
    >>> model = esp.load_model()          # bundled LSTM, LightGBM fallback
    >>> rec = esp.RunRecord("r", epochs=[{"epoch": 1, "val_accuracy": 0.4}])
    >>> fc = model.forecast(rec, target_epoch=50)
"""

from .errors import (
    ConfigError,
    EarlystopPredictError,
    ForecastUnavailableError,
    MetricNotFoundError,
    MissingExtraError,
    ModelArtifactError,
    RecordError,
)
from .forecaster import Forecast, Forecaster, ScriptedForecaster, load_model
from .monitor import ForecastMonitor
from .policy import Decision, StopPolicy
from .record import RunRecord, read_records, write_records

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "Decision", "EarlystopPredictError", "Forecast", "ForecastMonitor",
    "ForecastUnavailableError", "Forecaster", "MetricNotFoundError", "MissingExtraError",
    "ModelArtifactError", "RecordError", "RunRecord", "ScriptedForecaster", "StopPolicy",
    "load_model", "read_records", "write_records", "__version__",
]
