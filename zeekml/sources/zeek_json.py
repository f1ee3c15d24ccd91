"""Zeek JSON conn logs (``LogAscii::use_json``, one object per line) -> canonical batches.

Keys are dotted (``id.orig_h``; ``id_orig_h`` is accepted too); an unset field is an
absent key (or ``null``) and stays missing; ``ts`` is an epoch double or an ISO 8601
string (``JSON::TS_ISO8601``); spaces after separators are fine; duplicate lines are
data and are kept. Labels: ``label`` and ``detailedlabel`` / ``detailed-label``.
Records of another log (``_path`` not conn) or zeekml's own verdict and notice records
are refused (:mod:`zeekml.sources.logkind`).

A block of lines is parsed with one ``pyarrow.json`` call against an explicit schema.
When that fails (a line that is not a JSON object, a value of the wrong type, bad
UTF-8), each line is checked with :func:`json.loads`, bad lines are recorded with
path, line and reason, and the good ones are parsed again (:func:`zeekml.sources.sift.sift`).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from zeekml.records import schema
from zeekml.sources.lines import LineParser, arrow_to_canonical
from zeekml.sources.logkind import check_json_block
from zeekml.sources.sift import read_fast, sift

log = logging.getLogger(__name__)

_KIND = {"float64": "float", "Int32": "int", "Int64": "int", "boolean": "bool", schema.STR: "str"}
_ARROW = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string()}

#: JSON key -> canonical column (every alias the readers accept)
KEYS: dict[str, str] = {}
for _c in schema.COLUMNS:
    KEYS[_c] = _c
for _c in ("orig_h", "orig_p", "resp_h", "resp_p"):
    KEYS[f"id.{_c}"] = _c
    KEYS[f"id_{_c}"] = _c
    del KEYS[_c]
KEYS.update({"label": "label", "detailedlabel": "detailed_label",
             "detailed-label": "detailed_label", "detailed_label": "detailed_label"})  # fmt: skip

_CANON_KIND = {c: _KIND[t] for c, t in {**schema.COLUMNS, **schema.LABEL_COLUMNS}.items()}
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _schema(ts_kind: str) -> pa.Schema:
    return pa.schema(
        [(k, pa.string() if (c == "ts" and ts_kind == "str") else _ARROW[_CANON_KIND[c]])
         for k, c in KEYS.items()]
    )  # fmt: skip


_SCHEMAS = {kind: _schema(kind) for kind in ("float", "str")}


class ZeekJsonParser(LineParser):
    """Incremental Zeek JSON-lines parser (the FlowParser interface)."""

    format = "zeek_json"

    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        check_json_block(block, self.path)  # a dns.log, zeekml's JSON ... is no conn log
        starts, ends = self._line_spans(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        nonblank = np.ones(len(starts), dtype=bool)
        short = np.flatnonzero(ends - starts <= 2)
        for i in short.tolist():  # "", "\r", " " ... lines are not records
            if not block[int(starts[i]) : int(ends[i])].strip():
                nonblank[i] = False
        ws_only = np.flatnonzero(
            (ends - starts > 2)
            & (
                (arr[np.minimum(starts, len(arr) - 1)] == 32)
                | (arr[np.minimum(starts, len(arr) - 1)] == 9)
            )
        )
        for i in ws_only.tolist():
            if not block[int(starts[i]) : int(ends[i])].strip():
                nonblank[i] = False
        out: list[pd.DataFrame] = []
        idx = np.flatnonzero(nonblank)
        for a in range(0, len(idx), self.batch_rows):
            part = idx[a : a + self.batch_rows]
            lo, hi = int(part[0]), int(part[-1])
            run = block[int(starts[lo]) : int(ends[hi]) + 1]
            lines = (part + first_line).astype(np.int64)
            table, lines = self._parse(run, lines, nonblank[lo : hi + 1])
            if table is not None and table.num_rows:
                frame = self._to_frame(table, lines)
                if frame is not None:
                    out.append(frame)
        return out

    def _parse(
        self, run: bytes, lines: np.ndarray, nonblank: np.ndarray
    ) -> tuple[pa.Table | None, np.ndarray]:
        ts_kind = "str" if (b'"ts":"' in run or b'"ts": "' in run) else "float"
        table = read_fast(lambda: _read(run, ts_kind), len(lines))
        if table is not None and _utf8_ok(run):
            return table, lines
        # careful path: decide line by line
        raws = [r for r, keep in zip(run.split(b"\n")[:-1], nonblank.tolist(), strict=True) if keep]
        kinds: set[str] = set()  # ts kinds of the good lines (check runs before any read)

        def check(raw: bytes) -> str | None:
            reason, kind = _check(raw)
            if reason is None:
                kinds.add(kind)
            return reason

        def read(good: Sequence[bytes]) -> pa.Table:
            if len(kinds) > 1:  # numeric and ISO ts mixed: normalise ts to numbers
                return _read(b"\n".join(_ts_to_number(g) for g in good) + b"\n", "float")
            return _read(b"\n".join(good) + b"\n", next(iter(kinds)))

        return sift(raws, lines, check=check, read=read, skip=self._skip,
                    malformed="malformed JSON record")

    def _skip(self, line: int, reason: str) -> None:
        self.skips.add(self.path, line, reason)

    def _to_frame(self, table: pa.Table, lines: np.ndarray) -> pd.DataFrame | None:
        data: dict[str, Any] = {}
        for key, canon in KEYS.items():
            col = table.column(key)
            if col.null_count == len(col):
                continue
            if canon in data:  # an alias of a column already read: fill its gaps
                data[canon] = pc.coalesce(data[canon], col)
                continue
            data[canon] = col
        if "ts" in data and pa.types.is_string(data["ts"].type):
            raw_ts = data["ts"]
            data["ts"] = _iso_to_epoch(raw_ts)
            bad = np.isnan(data["ts"]) & ~raw_ts.is_null().to_numpy(zero_copy_only=False)
            if bad.any():
                for line in lines[bad].tolist():
                    self.skips.add(self.path, int(line), "bad ts (not an ISO 8601 time)")
                keep = pa.array(~bad)
                data = {c: (a[~bad] if isinstance(a, np.ndarray) else pc.filter(a, keep))
                        for c, a in data.items()}  # fmt: skip
                lines = lines[~bad]
        if not len(lines):
            return None
        if isinstance(data.get("ts"), np.ndarray):
            data["ts"] = pa.array(data["ts"], type=pa.float64())
        if "label" in data or "detailed_label" in data:  # a labeled batch has both columns
            data.setdefault("label", pa.nulls(len(lines), pa.string()))
            data.setdefault("detailed_label", pa.nulls(len(lines), pa.string()))
        return arrow_to_canonical(data, lines, self.path)


def _read(data: bytes, ts_kind: str) -> pa.Table:
    """One pyarrow.json call against the schema (raises when a record does not fit it)."""
    return pajson.read_json(
        io.BytesIO(data),
        read_options=pajson.ReadOptions(use_threads=True, block_size=1 << 22),
        parse_options=pajson.ParseOptions(
            explicit_schema=_SCHEMAS[ts_kind],
            unexpected_field_behavior="ignore",
            newlines_in_values=False,
        ),
    )


def _utf8_ok(run: bytes) -> bool:
    if run.isascii():
        return True
    try:
        run.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check(raw: bytes) -> tuple[str | None, str]:
    """(reason the line is bad or None, ts kind "float"/"str")."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return "not UTF-8", ""
    except ValueError as exc:
        return f"bad JSON ({str(exc).split(':')[0]})", ""
    if not isinstance(obj, dict):
        return "JSON record is not an object", ""
    ts_kind = "float"
    for key, canon in KEYS.items():
        if key not in obj or obj[key] is None:
            continue
        v, kind = obj[key], _CANON_KIND[canon]
        if canon == "ts" and isinstance(v, str):
            if _parse_iso(v) is None:
                return "bad ts (not an ISO 8601 time)", ""
            ts_kind = "str"
        elif kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return f"bad number in {key}", ""
        elif kind == "int":
            if isinstance(v, bool) or not isinstance(v, int) or not _INT_MIN <= v <= _INT_MAX:
                return f"bad integer in {key}", ""
        elif kind == "bool":
            if not isinstance(v, bool):
                return f"bad bool in {key}", ""
        elif not isinstance(v, str):
            return f"bad string in {key}", ""
    return None, ts_kind


def _parse_iso(v: str) -> float | None:
    try:
        t = pd.Timestamp(v)
    except (ValueError, TypeError, OverflowError):
        return None
    if t is pd.NaT:
        return None
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    return float(t.timestamp())


def _ts_to_number(raw: bytes) -> bytes:
    obj = json.loads(raw)
    if isinstance(obj.get("ts"), str):
        obj["ts"] = _parse_iso(obj["ts"])
    return json.dumps(obj).encode()


def _iso_to_epoch(col: pa.ChunkedArray) -> np.ndarray:
    """ISO 8601 strings -> epoch seconds (naive times are UTC)."""
    s = pd.Series(col, dtype=schema.STR)
    t = pd.to_datetime(s, utc=True, format="ISO8601", errors="coerce")
    secs = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return np.asarray(secs.to_numpy(dtype=np.float64, na_value=np.nan))
