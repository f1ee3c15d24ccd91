"""nfdump JSON (``nfdump_json``) -> canonical flow batches.

``-o json`` (one pretty-printed array, streamed record by record, never the whole
output in memory; a record is the lines from a ``{`` to a ``}`` at the start of a line,
as nfdump writes them) and ``-o ndjson`` (one object per line); IPv4 and IPv6 keys
(``src4_addr``/``src6_addr``). nfcapd files are read as ``nfdump -o json`` through
this parser (:mod:`zeekml.sources.nfcapd`). A block of records is parsed with one
``pyarrow.json`` call; bad records are found by :func:`zeekml.sources.sift.sift`. The
mapping to the canonical table is :mod:`zeekml.sources.nfdump_map`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from zeekml import defaults
from zeekml.errors import StateError
from zeekml.sources.lines import LineParser
from zeekml.sources.nfdump_map import BIG, canonical_frame
from zeekml.sources.sift import read_fast, sift
from zeekml.sources.skips import SkipLog
from zeekml.sources.values import Rejects, bool_mask, column_text

#: JSON keys read, with their types (everything else is ignored)
JSON_FIELDS: dict[str, pa.DataType] = {
    "first": pa.string(), "last": pa.string(), "proto": pa.int64(),
    "src4_addr": pa.string(), "dst4_addr": pa.string(),
    "src6_addr": pa.string(), "dst6_addr": pa.string(),
    "src_port": pa.int64(), "dst_port": pa.int64(),
    "icmp_type": pa.int64(), "icmp_code": pa.int64(),
    "in_packets": pa.int64(), "in_bytes": pa.int64(),
    "out_packets": pa.int64(), "out_bytes": pa.int64(), "tcp_flags": pa.string(),
}  # fmt: skip
_JSON_SCHEMA = pa.schema(list(JSON_FIELDS.items()))
_JSON_INTS = {  # key -> (role, max)
    "proto": ("proto", 255), "src_port": ("sport", 65535), "dst_port": ("dport", 65535),
    "icmp_type": ("icmp_type", 255), "icmp_code": ("icmp_code", 255),
    "in_packets": ("in_pkts", BIG), "in_bytes": ("in_bytes", BIG),
    "out_packets": ("out_pkts", BIG), "out_bytes": ("out_bytes", BIG),
}  # fmt: skip
#: longest JSON record kept while waiting for its end; a longer one is dropped and counted
MAX_RECORD = 1 << 20
_FRAMING = {b"", b"[", b"]", b",", b"No matching flows"}


class NfdumpJsonParser(LineParser):
    """Incremental nfdump ``-o json`` (array) and ``-o ndjson`` parser (FlowParser).

    The array is consumed record by record: ``consumed`` and ``line_no`` stop before a
    record that is not complete yet. ``record_numbers=True`` (nfcapd through nfdump)
    numbers rows by record index instead of text line.
    """

    format = "nfdump_json"

    def __init__(
        self, path: str, skips: Any = None, *, batch_rows: int = defaults.BATCH_ROWS, record_numbers: bool = False
    ) -> None:
        super().__init__(path, skips, batch_rows=batch_rows)
        self.record_numbers = record_numbers
        self.records = 0
        self._mode: str | None = None  # "array" (pretty-printed) or "lines" (ndjson)
        self._pending = b""
        self._pending_lines = 0

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["mode"] = self._mode
        state["records"] = self.records
        return state

    def _set_state_extra(self, state: dict[str, Any]) -> None:
        mode, records = state.get("mode"), state.get("records", 0)
        if mode not in (None, "array", "lines"):
            raise StateError(f"{self.path}: parser state has a bad JSON mode")
        if not isinstance(records, int) or isinstance(records, bool) or records < 0:
            raise StateError(f"{self.path}: parser state has a bad record count")
        self._mode, self.records, self._pending, self._pending_lines = mode, records, b"", 0

    def close(self) -> list[pd.DataFrame]:
        out = super().close()
        rest, self._pending = self._pending, b""
        if rest:
            self.consumed += len(rest)
            first = self.line_no + 1
            self.line_no += self._pending_lines
            leftover = [r.strip() for r in rest.split(b"\n")]
            if any(r not in _FRAMING for r in leftover):
                self.skips.add(self.path, first, "truncated JSON record at end of input")
        return out

    # -- parsing -------------------------------------------------------------------------
    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        if self._mode is None:
            for line in block.split(b"\n"):
                s = line.strip()
                if s:
                    self._mode = "lines" if s.startswith(b"{") and len(s) > 1 else "array"
                    break
            if self._mode is None:
                return []
        if self._mode == "lines":
            return self._lines(block, first_line)
        return self._array(block, first_line)

    def _lines(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        starts, ends = self._line_spans(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        firsts = arr[np.minimum(starts, len(arr) - 1)]
        lengths = ends - starts
        blank = (lengths == 0) | ((lengths == 1) & (firsts == 13))
        rec = np.flatnonzero(~blank)
        out: list[pd.DataFrame] = []
        for j in range(0, len(rec), self.batch_rows):
            idx = rec[j : j + self.batch_rows]
            run = block[int(starts[idx[0]]) : int(ends[idx[-1]]) + 1]
            lines = (idx + first_line).astype(np.int64)
            table = read_fast(partial(_read_json, run), len(idx)) if b"\r" not in run else None
            if table is None:
                texts = [block[int(starts[i]) : int(ends[i])] for i in idx.tolist()]
                table, lines = self._careful(texts, lines)
            self._emit(table, lines, out)
        return out

    def _array(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        old = len(self._pending)
        if self._pending:  # line_no excludes pending lines, so first_line is the first of them
            block = self._pending + block
        starts, ends = self._line_spans(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        firsts = np.where(ends > starts, arr[np.minimum(starts, len(arr) - 1)], 10)
        closers = np.flatnonzero(firsts == ord("}"))
        cut_line = int(closers[-1]) + 1 if len(closers) else 0
        cut = int(ends[cut_line - 1]) + 1 if cut_line else 0
        rest = block[cut:]
        if len(rest) > MAX_RECORD:
            self.skips.add(self.path, first_line + cut_line, f"JSON record longer than {MAX_RECORD} bytes")
            rest = b""
        # what is not complete yet is not consumed yet
        self._pending, self._pending_lines = rest, len(starts) - cut_line
        self.consumed -= len(rest) - old
        self.line_no = first_line - 1 + cut_line
        if not cut_line:
            return []
        return self._records(block[:cut], starts[:cut_line], ends[:cut_line], firsts[:cut_line], first_line)

    def _records(
        self, block: bytes, starts: np.ndarray, ends: np.ndarray, firsts: np.ndarray, first_line: int
    ) -> list[pd.DataFrame]:
        is_open = firsts == ord("{")
        is_close = firsts == ord("}")
        depth = np.cumsum(is_open) - (np.cumsum(is_close) - is_close)
        outside = depth == 0
        openers = np.flatnonzero(is_open)
        out: list[pd.DataFrame] = []
        well_formed = bool((depth <= 1).all() and (depth >= 0).all() and len(openers))
        well_formed &= int(is_close.sum()) == len(openers)
        for i in np.flatnonzero(outside & ~is_close).tolist():
            text = block[int(starts[i]) : int(ends[i])].strip()
            if text not in _FRAMING:
                self.skips.add(self.path, first_line + i, "text outside a JSON record")
        if not well_formed:
            self._careful_array(block, starts, ends, is_open, is_close, first_line, out)
            return out
        closers = np.flatnonzero(is_close)
        for j in range(0, len(openers), self.batch_rows):
            o, c = openers[j : j + self.batch_rows], closers[j : j + self.batch_rows]
            lines = self._numbers(o, first_line)
            body = _compact(block, starts, ends, is_close, outside, int(o[0]), int(c[-1]))
            table = read_fast(partial(_read_json, body), len(o)) if body is not None else None
            if table is None:
                texts = [
                    block[int(starts[a]) : int(starts[b]) + 1]
                    for a, b in zip(o.tolist(), c.tolist(), strict=True)
                ]
                table, lines = self._careful(texts, lines)
            self._emit(table, lines, out)
        return out

    def _numbers(self, openers: np.ndarray, first_line: int) -> np.ndarray:
        if self.record_numbers:
            nums = np.arange(self.records + 1, self.records + 1 + len(openers), dtype=np.int64)
            self.records += len(openers)
            return nums
        self.records += len(openers)
        return (openers + first_line).astype(np.int64)

    def _careful_array(
        self,
        block: bytes,
        starts: np.ndarray,
        ends: np.ndarray,
        is_open: np.ndarray,
        is_close: np.ndarray,
        first_line: int,
        out: list[pd.DataFrame],
    ) -> None:
        """Malformed nesting: pair each opener with the next closer; report the rest."""
        texts: list[bytes] = []
        opens: list[int] = []
        current: int | None = None
        for i in np.flatnonzero(is_open | is_close).tolist():
            if is_open[i]:
                if current is not None:
                    self.skips.add(self.path, first_line + current, "unterminated JSON record")
                current = i
            elif current is None:
                self.skips.add(self.path, first_line + i, "'}' outside a JSON record")
            else:
                texts.append(block[int(starts[current]) : int(starts[i]) + 1])
                opens.append(current)
                current = None
        if texts:
            lines = self._numbers(np.asarray(opens, dtype=np.int64), first_line)
            table, lines = self._careful(texts, lines)
            self._emit(table, lines, out)

    def _careful(self, texts: list[bytes], lines: np.ndarray) -> tuple[pa.Table | None, np.ndarray]:
        """Records one by one with :func:`json.loads`: bad ones skipped with a reason."""
        return sift(texts, lines, check=_check_text, read=_rows_table, skip=self._skip,
                    malformed="malformed JSON record")

    def _skip(self, line: int, reason: str) -> None:
        self.skips.add(self.path, line, reason)

    def _emit(self, table: pa.Table | None, lines: np.ndarray, out: list[pd.DataFrame]) -> None:
        if table is None or table.num_rows == 0:
            return
        frame = _json_frame(table, lines, self.path, self.skips)
        if frame is not None and len(frame):
            out.append(frame)


def _compact(
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    is_close: np.ndarray,
    outside: np.ndarray,
    a: int,
    b: int,
) -> bytes | None:
    """Records on lines ``a..b`` -> one object per line, in one vectorized pass.

    Every newline inside a record becomes a space (JSON whitespace; JSON strings hold no
    raw newlines) and the ``,``/``]`` after a closing ``}`` is blanked. None when the
    layout is not nfdump's (text between records): the caller then goes record by record.
    """
    if (outside[a : b + 1] & ~is_close[a : b + 1]).any():
        return None
    idx = np.arange(a, b + 1)
    close = is_close[a : b + 1]
    cl = idx[close]
    extra = ends[cl] - starts[cl] - 1
    if len(extra) and int(extra.max()) > 2:
        return None
    base = int(starts[a])
    buf = np.frombuffer(block, dtype=np.uint8)[base : int(ends[b]) + 1].copy()
    buf[ends[idx[~close]] - base] = 32
    for k in (1, 2):
        sel = cl[extra >= k]
        buf[starts[sel] + k - base] = 32
    return buf.tobytes()


def _read_json(data: bytes) -> pa.Table:
    """One pyarrow.json call over one-object-per-line records (raises on a bad one)."""
    return pajson.read_json(
        pa.py_buffer(data),
        read_options=pajson.ReadOptions(use_threads=True, block_size=max(1 << 20, len(data) + 1)),
        parse_options=pajson.ParseOptions(
            explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"
        ),
    )


def _check_text(text: bytes) -> str | None:
    """Why one JSON record is unusable, or None."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"bad JSON ({str(exc)[:60]})"
    return _check_record(obj)


def _rows_table(texts: Sequence[bytes]) -> pa.Table:
    """Checked records (:func:`_check_text`) as a table of the JSON fields read."""
    rows = [{k: obj.get(k) for k in JSON_FIELDS} for obj in map(json.loads, texts)]
    return pa.Table.from_pylist(rows, schema=_JSON_SCHEMA)


def _check_record(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "JSON value is not an object"
    for key, typ in JSON_FIELDS.items():
        v = obj.get(key)
        if v is None:
            continue
        if pa.types.is_integer(typ):
            if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
                return f"bad {key} {str(v)[:40]!r}"
        elif not isinstance(v, str):
            return f"bad {key} {str(v)[:40]!r}"
    return None


def _out_of_range(key: str, values: np.ndarray) -> Callable[[int], str]:
    return lambda i: f"{key} out of range ({values[i]})"


def _json_frame(table: pa.Table, lines: np.ndarray, path: str, skips: SkipLog) -> pd.DataFrame | None:
    n = table.num_rows
    rej = Rejects(n)

    def text(key: str) -> pa.Array:
        return column_text(table.column(key), trim=False)

    raw: dict[str, Any] = {
        "first": pc.fill_null(text("first"), ""),
        "last": pc.fill_null(text("last"), ""),
        "src": pc.fill_null(pc.coalesce(text("src4_addr"), text("src6_addr")), ""),
        "dst": pc.fill_null(pc.coalesce(text("dst4_addr"), text("dst6_addr")), ""),
        "flags": pc.fill_null(text("tcp_flags"), ""),
    }
    for key, (role, hi) in _JSON_INTS.items():
        col = table.column(key)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        missing = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        v = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        rej.add(~missing & ((v < 0) | (v > hi)), _out_of_range(key, v))
        raw[role] = (v, missing)
    if not bool_mask(pc.is_valid(table.column("tcp_flags"))).any():
        raw["flags"] = None
    return canonical_frame(raw, rej, lines, path, skips)


#: keys that only nfdump's JSON has (a Zeek JSON log has none of them)
_JSON_KEYS = (b'"src4_addr"', b'"src6_addr"', b'"in_packets"', b'"export_sysid"')


def is_nfdump_json(text: bytes) -> bool:
    """Whether an input's first bytes are nfdump JSON (``-o json`` or ``-o ndjson``)."""
    return b'"id.orig_h"' not in text[:4096] and any(k in text[:4096] for k in _JSON_KEYS)
