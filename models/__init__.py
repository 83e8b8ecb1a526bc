"""Bundled accModel artifacts (LSTM weights, LightGBM models, manifest).

Read them through :func:`earlystop_predict.load_model`; this package holds data only.
"""
