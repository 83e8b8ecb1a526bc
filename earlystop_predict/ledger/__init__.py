"""The run ledger: every run, epoch, forecast and decision in one SQLite file.

Depends on :mod:`earlystop_predict.records` only.
"""

from earlystop_predict.ledger.store import Ledger

__all__ = ["Ledger"]
