"""When to stop: :class:`StopPolicy` decides (pure), :class:`ForecastMonitor` keeps a run's
state, asks the forecaster, applies the policy and writes the ledger.

Adapters talk to the monitor only. Depends on :mod:`earlystop_predict.forecast`,
:mod:`earlystop_predict.ledger` and :mod:`earlystop_predict.records`.
"""

from earlystop_predict.policy.monitor import STATE_VERSION, ForecastMonitor
from earlystop_predict.policy.stop import (
    DEFAULT_MIN_DELTA,
    LOG_KEYS,
    STUDY_MIN_DELTA,
    Decision,
    StopPolicy,
)

__all__ = ["DEFAULT_MIN_DELTA", "LOG_KEYS", "STATE_VERSION", "STUDY_MIN_DELTA", "Decision",
           "ForecastMonitor", "StopPolicy"]
