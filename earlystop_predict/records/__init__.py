"""Run records (RUN_RECORD.md): the one data shape every part reads and writes.

:mod:`.record` holds :class:`RunRecord`, its validation and JSONL I/O; :mod:`.corpus`
the gzip corpus files; :mod:`.features` the canonical names and encodings the
accModels read. Imports nothing else of the package but :mod:`earlystop_predict.errors`.
"""

from earlystop_predict.records.record import RunRecord, read_records, write_records

__all__ = ["RunRecord", "read_records", "write_records"]
