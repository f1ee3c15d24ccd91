"""The careful path of every text reader: the fast parse failed, find the bad records.

The readers parse a block of thousands of records with one vectorized pyarrow call.
When that call fails (or returns another number of rows than records went in), one bad
record must not cost the good ones, and every bad one must be named with its line:

1. each record is checked in Python by the reader's ``check`` (a reason, or None);
   bad ones are recorded as skips, in line order;
2. the good ones are parsed again in one call;
3. if pyarrow still refuses, the records are bisected: a half that parses is kept, a
   single record that does not is a skip with the reader's reason for the error.

So a clean block costs one call, and a block with k bad records about k * log2(n)
extra calls on small pieces. Records stay in input order. The zeek_tsv, zeek_json,
nfdump JSON and CSV-family readers (Zeek-field CSV, CICFlowMeter, nfdump CSV,
binetflow) all go through :func:`sift`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import pyarrow as pa

#: What a reader's ``read`` may raise for input it cannot parse.
READ_ERRORS: tuple[type[BaseException], ...] = (pa.ArrowException, ValueError, TypeError)

Read = Callable[[Sequence[bytes]], pa.Table]


def line_text(raw: bytes) -> tuple[str, str | None]:
    """A raw line as text without its final ``\r``, and why it is bad as a text line (not
    UTF-8, a stray carriage return inside) or None: the careful paths' first check."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "", "not UTF-8"
    text = text.removesuffix("\r")
    return text, "stray carriage return in line" if "\r" in text else None


def read_fast(read: Callable[[], pa.Table], rows: int) -> pa.Table | None:
    """The fast path: one parse, kept only if it yields exactly ``rows`` rows."""
    try:
        table = read()
    except READ_ERRORS:
        return None
    return table if table.num_rows == rows else None


def sift(
    records: Sequence[bytes],
    lines: Sequence[int] | np.ndarray,
    *,
    check: Callable[[bytes], str | None],
    read: Read,
    skip: Callable[[int, str], None],
    reason: Callable[[BaseException], str] | None = None,
    malformed: str = "malformed line",
) -> tuple[pa.Table | None, np.ndarray]:
    """The good records of a block as one table, and their line numbers.

    ``records`` are the block's records without their line end (a trailing ``\\r`` is
    removed before parsing; ``check`` sees the record as it was); ``lines`` their
    numbers. ``check`` names what is wrong with one record (None: looks fine);
    ``read`` parses a list of records (raising one of :data:`READ_ERRORS` when it
    cannot); ``skip(line, reason)`` records a bad one; ``reason`` turns the error of a
    single record pyarrow refuses into a skip reason (default ``malformed``, which is
    also the reason when a single record gives other than one row).
    Returns ``(None, empty)`` when no record is good.
    """
    good: list[bytes] = []
    good_lines: list[int] = []
    for raw, line in zip(records, np.asarray(lines).tolist(), strict=True):
        why = check(raw)
        if why is None:
            good.append(raw.removesuffix(b"\r"))
            good_lines.append(int(line))
        else:
            skip(int(line), why)
    if not good:
        return None, np.empty(0, dtype=np.int64)
    table = read_fast(partial(read, good), len(good))
    if table is not None:
        return table, np.asarray(good_lines, dtype=np.int64)
    tables: list[pa.Table] = []
    kept: list[int] = []
    _bisect(good, good_lines, read, skip, reason, malformed, tables, kept)
    if not tables:
        return None, np.empty(0, dtype=np.int64)
    return pa.concat_tables(tables), np.asarray(kept, dtype=np.int64)


def _bisect(
    records: list[bytes],
    lines: list[int],
    read: Read,
    skip: Callable[[int, str], None],
    reason: Callable[[BaseException], str] | None,
    malformed: str,
    tables: list[pa.Table],
    kept: list[int],
) -> None:
    """Keep the largest parsable halves; a single record that fails is a skip."""
    if len(records) == 1:
        try:
            table = read(records)
        except READ_ERRORS as exc:
            skip(lines[0], reason(exc) if reason is not None else malformed)
            return
        if table.num_rows != 1:
            skip(lines[0], malformed)
            return
        tables.append(table)
        kept.append(lines[0])
        return
    mid = len(records) // 2
    for a, b in ((0, mid), (mid, len(records))):
        table = read_fast(partial(read, records[a:b]), b - a)
        if table is not None:
            tables.append(table)
            kept.extend(lines[a:b])
        else:
            _bisect(records[a:b], lines[a:b], read, skip, reason, malformed, tables, kept)
