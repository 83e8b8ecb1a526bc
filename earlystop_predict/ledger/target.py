"""Where a ledger lives: a file path or a database URL, parsed into a :class:`Target`.

Accepted (the ``ledger=`` argument of every adapter and ``--ledger`` of the CLI):

- a file path (``runs.db``, ``/data/runs.db``, a :class:`os.PathLike`): an SQLite file,
  as always; ``:memory:`` an in-memory SQLite database;
- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy's
  spelling, so an Optuna storage URL can be reused); ``sqlite://`` alone in memory;
- ``postgresql://user:password@host:port/database?options`` (also ``postgres://``),
  handed to libpq as it is: every libpq URI parameter (``sslmode``,
  ``options=-csearch_path%3Dmy_schema``...) works. A ``+driver`` suffix
  (``postgresql+psycopg://``, SQLAlchemy's) is dropped.

Anything else of the form ``scheme://...`` is a :class:`LedgerURLError`, never a path:
a ``sqlite:///runs.db`` once created a folder named ``sqlite:``.

Example:
    >>> parse_target("sqlite:////tmp/runs.db")
    Target(kind='sqlite', location='/tmp/runs.db', shown='/tmp/runs.db')
    >>> parse_target("postgresql://me:secret@db:5432/esp").shown
    'postgresql://me:***@db:5432/esp'
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from earlystop_predict.ledger.errors import LedgerURLError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class Target(NamedTuple):
    """A parsed ledger location.

    Attributes:
        kind: ``"sqlite"`` or ``"postgres"``.
        location: the SQLite file (or ``":memory:"``), or the libpq URL.
        shown: the location as messages print it (a password replaced by ``***``).
    """

    kind: str
    location: str
    shown: str


def is_url(target: object) -> bool:
    """Whether ``target`` is a string of the form ``scheme://...`` (a URL, not a path)."""
    return isinstance(target, str) and _SCHEME.match(target) is not None


def parse_target(target: str | os.PathLike[str]) -> Target:
    """The ledger ``target`` names: an SQLite file or a PostgreSQL database.

    Args:
        target: a file path, ``:memory:``, or a ``sqlite://`` / ``postgresql://`` URL.

    Raises:
        LedgerURLError: a URL of another scheme, or a malformed one (names it).
    """
    if not isinstance(target, str):
        path = os.fspath(target)
        return Target("sqlite", path, path)
    match = _SCHEME.match(target)
    if match is None:
        return Target("sqlite", target, target)
    scheme = match.group(1).lower().split("+", 1)[0]
    rest = target[match.end():]
    if scheme == "sqlite":
        return _sqlite(target, rest)
    if scheme in ("postgresql", "postgres"):
        return _postgres(target, rest)
    raise LedgerURLError(redact(target), f"unsupported scheme {match.group(1)!r}")


def _sqlite(url: str, rest: str) -> Target:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    if "?" in rest or "#" in rest:
        raise LedgerURLError(url, "a sqlite URL takes no query or fragment")
    if rest in ("", "/:memory:"):
        return Target("sqlite", ":memory:", url)
    if not rest.startswith("/"):
        raise LedgerURLError(url, "a sqlite URL has no host: write sqlite:///relative.db "
                                  "or sqlite:////absolute/path.db")
    path = unquote(rest[1:])
    if not path or path.endswith("/"):
        raise LedgerURLError(url, "no file named after sqlite:///")
    return Target("sqlite", path, path)


def _postgres(url: str, rest: str) -> Target:
    """A libpq URL (``postgresql://...``), checked for what urllib can check."""
    location = "postgresql://" + rest
    shown = redact(url)
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise LedgerURLError(shown, f"malformed URL ({exc})") from None
    if parts.fragment:
        raise LedgerURLError(shown, "a postgresql URL takes no fragment")
    if parts.path.count("/") > 1:
        raise LedgerURLError(shown, "the path must be one database name (a schema goes in "
                                    "?options=-csearch_path%3Dname)")
    return Target("postgres", location, shown)


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/@:?#]*):[^/@?#]*@", r"\1:***@", url)


def ledger_file(target: str | os.PathLike[str]) -> str | None:
    """The file a ledger target is stored in; None for a database server or memory.

    Raises:
        LedgerURLError: as :func:`parse_target`.
    """
    parsed = parse_target(target)
    if parsed.kind != "sqlite" or parsed.location == ":memory:":
        return None
    return parsed.location
