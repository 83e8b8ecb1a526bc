"""Typed errors of the ledger: a file or database that cannot be used, a newer schema, a
ledger URL that names no ledger."""

from __future__ import annotations

from earlystop_predict.errors import ConfigError, EarlystopPredictError

SCHEMA_VERSION = 1

#: What ``ledger=`` and ``--ledger`` accept, for messages.
ACCEPTED = ("a file path, sqlite:///relative/path.db, sqlite:////absolute/path.db or "
            "postgresql://user@host:port/database")


class LedgerError(EarlystopPredictError, OSError):
    """The ledger cannot be used: missing, not a ledger, locked too long, corrupt,
    or its database server cannot be reached."""


class LedgerSchemaError(LedgerError):
    """The ledger was written by a newer earlystop_predict (schema version too high)."""

    def __init__(self, path: object, found: int, supported: int = SCHEMA_VERSION) -> None:
        self.path = str(path)
        self.found = found
        self.supported = supported
        super().__init__(f"{self.path}: ledger schema version {found} is newer than the "
                         f"supported version {supported}; upgrade earlystop_predict to read it")


class LedgerURLError(LedgerError, ConfigError):
    """A ``ledger`` argument that looks like a URL but names no ledger: an unknown
    scheme, a malformed URL. A :class:`ConfigError` too (argument ``ledger``)."""

    def __init__(self, url: str, problem: str) -> None:
        self.arg = "ledger"
        self.expected = ACCEPTED
        self.value = url
        self.url = url
        self.problem = problem
        OSError.__init__(self, f"ledger URL {url!r}: {problem} (a ledger is {ACCEPTED})")
