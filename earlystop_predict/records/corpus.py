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
import sys
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from earlystop_predict.errors import RecordError
from earlystop_predict.records.record import RunRecord, dumps

CORPUS_NAME = "runs.jsonl.gz"
"""The corpus file's name in a collection directory."""


def _members(path: str | os.PathLike[str]) -> tuple[list[bytes], int, int]:
    """``(decompressed members, end of the last complete member, file size)``.

    Reading stops at the first member that is torn (a kill while appending) or
    not gzip; everything before it is returned.
    """
    data = Path(path).read_bytes()
    view = memoryview(data)
    out: list[bytes] = []
    pos = good = 0
    chunk = 1 << 16
    while pos < len(data):
        dec = zlib.decompressobj(31)
        parts: list[bytes] = []
        p = pos
        try:
            while not dec.eof and p < len(data):
                piece = view[p:p + chunk]
                parts.append(dec.decompress(piece))
                p += len(piece)
        except zlib.error:
            break
        if not dec.eof:
            break
        pos = p - len(dec.unused_data)
        out.append(b"".join(parts))
        good = pos
    return out, good, len(data)


def corpus_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the corpus (gzip, or plain JSONL), intact members only."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        members, good, size = _members(path)
        if good < size:
            print(f"earlystop-predict: {path}: ignoring {size - good} bytes of a torn last "
                  "record", file=sys.stderr)
        text = b"".join(members).decode("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield lineno, line


def iter_corpus(path: str | os.PathLike[str], *, validate: bool = True) -> Iterator[RunRecord]:
    """Yield the records of a corpus file (``runs.jsonl.gz``; plain JSONL also read).

    A torn last record (the collector was killed while appending) is skipped with a
    note on stderr; any other damage raises.

    Raises:
        RecordError: a line is not JSON or breaks RUN_RECORD.md (names the line).
        FileNotFoundError: no such file.
    """
    for lineno, line in corpus_lines(path):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"not valid JSON ({exc.msg})", line=lineno,
                              source=str(path)) from None
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
