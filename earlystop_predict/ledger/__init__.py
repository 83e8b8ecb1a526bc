"""The run ledger: every run, epoch, forecast and decision in one SQLite file or one
PostgreSQL database (a ``postgresql://`` URL; psycopg is imported only then).

Depends on :mod:`earlystop_predict.records` only.
"""

from earlystop_predict.ledger.errors import LedgerError, LedgerSchemaError, LedgerURLError
from earlystop_predict.ledger.store import Ledger
from earlystop_predict.ledger.target import ledger_file, parse_target

__all__ = ["Ledger", "LedgerError", "LedgerSchemaError", "LedgerURLError", "ledger_file",
           "parse_target"]
