"""Thin per-framework adapters around :class:`earlystop_predict.ForecastMonitor`.

Import the one you need; none is imported here, so no framework loads until asked::

    from earlystop_predict.integrations.keras import KerasForecastCallback
    from earlystop_predict.integrations.keras_tuner import ForecastRandomSearch  # and the others
    from earlystop_predict.integrations.transformers import HFForecastCallback
    from earlystop_predict.integrations.lightning import LightningForecastCallback
    from earlystop_predict.integrations.optuna import ForecastPruner
    from earlystop_predict.integrations.ray import ForecastScheduler
"""
