"""The real-run corpus on disk: a multi-member gzip JSONL file of RUN_RECORD.md records.

Every finished run is one complete gzip member, appended, flushed and fsync'ed
(:func:`append_record`); a member torn by a kill is skipped on read and cut off by
:func:`repair_corpus`. The collector (:mod:`earlystop_predict.tools.collect`) writes
it; training (:mod:`earlystop_predict.training.real`) and the CLI read it.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from earlystop_predict.errors import RecordError
from earlystop_predict.records.gz import _members, gzip_lines
from earlystop_predict.records.record import RunRecord, dumps, parse_json_line

CORPUS_NAME = "runs.jsonl.gz"
"""The corpus file's name in a collection directory."""


def corpus_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the corpus (gzip, or plain JSONL), intact members only.

    Raises:
        RecordError: a line is not UTF-8 (names the file and the line).
    """
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    raw = gzip_lines(path) if gz else enumerate(Path(path).read_bytes().splitlines(), 1)
    for lineno, line in raw:
        if not line.strip():
            continue
        try:
            yield lineno, line.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("not UTF-8 text", line=lineno, source=str(path)) from None


def iter_corpus(path: str | os.PathLike[str], *, validate: bool = True) -> Iterator[RunRecord]:
    """Yield the records of a corpus file (``runs.jsonl.gz``; plain JSONL also read).

    A torn last record (the collector was killed while appending) is skipped with a
    note on stderr; any other damage raises.

    Raises:
        RecordError: a line is not JSON or breaks RUN_RECORD.md (names the line).
        FileNotFoundError: no such file.
    """
    for lineno, line in corpus_lines(path):
        data = parse_json_line(line, line=lineno, source=str(path))
        yield RunRecord.from_dict(data, line=lineno, source=str(path), validate=validate)


def load_corpus(path: str | os.PathLike[str]) -> list[RunRecord]:
    """All records of a corpus file written by :func:`collect` (validated).

    Args:
        path: ``DIR/runs.jsonl.gz`` (or a plain JSONL file of records).

    Example:
        >>> records = load_corpus("corpus/runs.jsonl.gz")   # doctest: +SKIP
    """
    return list(iter_corpus(path))


def append_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one record as a complete gzip member; flushed and fsync'ed before returning."""
    line = (dumps(dict(record)) + "\n").encode("utf-8")
    with open(path, "ab") as raw:
        with gzip.GzipFile(fileobj=raw, mode="ab", mtime=0) as gz:
            gz.write(line)
        raw.flush()
        os.fsync(raw.fileno())


def repair_corpus(path: str | os.PathLike[str]) -> int:
    """Cut a torn last member off the corpus; return the bytes removed (0 if intact)."""
    if not Path(path).exists():
        return 0
    _, good, size = _members(path)
    if good < size:
        with open(path, "r+b") as fh:
            fh.truncate(good)
            fh.flush()
            os.fsync(fh.fileno())
    return size - good


def finished_ids(path: str | os.PathLike[str]) -> set[str]:
    """Run ids of the records in the corpus (none if there is no file yet)."""
    if not Path(path).exists():
        return set()
    out = set()
    for _, line in corpus_lines(path):
        try:
            out.add(str(json.loads(line)["run_id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out
