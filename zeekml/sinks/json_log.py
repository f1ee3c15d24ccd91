"""Verdicts as a Zeek JSON log: one object per line, dotted keys, epoch ``ts``.

Matches Zeek's ``LogAscii::use_json=T`` defaults: keys are the Zeek field names
(``"id.orig_h"``), times are epoch seconds as JSON numbers, unset fields are omitted,
sets and vectors are arrays, bools ``true``/``false``. Strings are JSON-escaped with
``\\uXXXX`` for every non-ASCII or control character, so a line is always plain ASCII
and a hostile value can never split a record. (Zeek writes valid UTF-8 raw; any JSON
parser reads both forms as the same string.)

Rows are rendered vectorized, one field at a time (pyarrow), with Python only for the
few strings that need escaping; the file handling (fsync checkpoints, truncate-back
restore, cut-back on failure) is :class:`~zeekml.sinks.files.OutputFile`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.records.incidents import incident_fields, incident_types
from zeekml.records.verdicts import zeek_fields, zeek_types
from zeekml.sinks.files import FileSink, OutputFile
from zeekml.sinks.zeek_ascii import _CANONICAL_OF, _concat_buffer, _string_lists

_L = pa.large_string()
_NEEDS_JSON_ESCAPE = r'["\\\x00-\x1f\x7f]|[^\x00-\x7f]'


def _s(text: str) -> pa.Scalar:
    return pa.scalar(text, _L)


def _json_strings(values: Any) -> pa.Array:
    """JSON string literals (quoted), null where missing."""
    if isinstance(values, pa.Array):
        values = pd.Series(values.to_pandas(types_mapper={pa.large_string(): pd.StringDtype(
            "pyarrow", na_value=np.nan), pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)
        }.get))
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    try:
        arr = pa.array(s, from_pandas=True)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = pc.cast(arr, _L)
        arr = arr.cast(_L)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeEncodeError):
        return pa.array([None if _missing(v) else _dumps(v) for v in s.tolist()], type=_L)
    needs = pc.fill_null(pc.match_substring_regex(arr, _NEEDS_JSON_ESCAPE), False)
    quoted = pc.binary_join_element_wise(_s('"'), arr, _s('"'), _s(""))
    if pc.any(needs).as_py():
        idx = np.nonzero(needs.to_numpy(zero_copy_only=False))[0]
        vals = quoted.to_numpy(zero_copy_only=False).astype(object)
        raw = arr.to_numpy(zero_copy_only=False)
        vals[idx] = [_dumps(raw[i]) for i in idx]
        quoted = pa.array(vals, type=_L)
    return quoted


def _dumps(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "backslashreplace")
    return json.dumps(str(v), ensure_ascii=True)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def _json_values(values: Any, zeek_type: str) -> pa.Array:
    """JSON literals of one column, null for unset (so the key is omitted)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if zeek_type in ("time", "interval", "double"):
        v = s.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(v)
        arr = pc.cast(pa.array(np.where(ok, v, 0.0)), _L)
        return pc.if_else(pa.array(ok), arr, pa.nulls(len(v), _L))
    if zeek_type in ("count", "int", "port"):
        arr = pa.array(s.astype("Int64") if s.dtype.kind == "f" else s, from_pandas=True)
        return pc.cast(arr, _L)
    if zeek_type == "bool":
        arr = pa.array(s.astype("boolean"), from_pandas=True)
        return pc.if_else(arr, _s("true"), _s("false"))
    if zeek_type.startswith(("set[", "vector[", "table[")):
        lists = _string_lists(s)
        if lists is not None:
            elems = _json_strings(pc.list_flatten(lists))
            lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), elems),
                                    _s(","))
            arr = pc.binary_join_element_wise(_s("["), joined, _s("]"), _s(""))
            return pc.if_else(lists.is_null(), pa.nulls(len(lists), _L), arr)
        cells = s.tolist()
        missing = np.fromiter((_missing(c) if not isinstance(c, (list, tuple, np.ndarray))
                               else False for c in cells), dtype=bool, count=len(cells))
        lists = [[] if m else list(c) for c, m in zip(cells, missing, strict=True)]
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        elems = _json_strings(pd.Series([str(e) for x in lists for e in x], dtype=object))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), elems), _s(","))
        arr = pc.binary_join_element_wise(_s("["), joined, _s("]"), _s(""))
        return pc.if_else(pa.array(missing), pa.nulls(len(cells), _L), arr)
    return _json_strings(s)


def format_json_rows(df: pd.DataFrame, fields: Sequence[str], types: Sequence[str]) -> bytes:
    """Every row of ``df`` as one JSON object per line (UTF-8/ASCII bytes)."""
    n = len(df)
    if n == 0:
        return b""
    parts: list[pa.Array] = []
    for name, typ in zip(fields, types, strict=True):
        col = name if name in df.columns else _CANONICAL_OF.get(name)
        if col is None or col not in df.columns:
            continue
        vals = _json_values(df[col], typ)
        parts.append(pc.binary_join_element_wise(_s(json.dumps(name) + ":"), vals, _s("")))
    if parts:
        body = pc.binary_join_element_wise(*parts, _s(","), null_handling="skip")
        body = pc.fill_null(body, _s(""))
    else:
        body = pa.array([""] * n, type=_L)
    lines = pc.binary_join_element_wise(_s("{"), body, _s("}\n"), _s(""))
    return _concat_buffer(lines)


class JsonLogSink(FileSink):
    """Verdict (or notice) rows as Zeek-style NDJSON."""

    kind = "json"
    unit = "notice"

    def __init__(
        self,
        target: str | Path = "zeekml.log",
        *,
        fields: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        append: bool = False,
    ) -> None:
        self.fields = list(fields or zeek_fields())
        self.types = list(types or zeek_types())
        self.transform = transform
        self.pinned = append
        self.file = OutputFile(target, mode="append" if append else "replace")
        self.name = f"{self.kind}:{self.file.path or '-'}"
        self.rows = 0

    def use_incidents(self) -> None:
        """Take incident records (``--sink json:PATH?unit=incident``): Zeek JSON lines of
        the ``zeekml_incident`` fields."""
        self.unit = "incident"
        self.fields, self.types = incident_fields(), incident_types()
        self.transform = None

    def write(self, verdicts: pd.DataFrame) -> None:
        df = self.transform(verdicts) if self.transform else verdicts
        if len(df):
            self.file.write(format_json_rows(df, self.fields, self.types))
            self.rows += len(df)


def factory(target: str, options: dict[str, str]) -> JsonLogSink:
    """Registry factory: ``json:PATH?append=true`` (PATH defaults to ``zeekml.json``)."""
    from zeekml.sinks.registry import SinkOptions

    opts = SinkOptions(options, "json")
    append = opts.flag("append", False)
    opts.done()
    return JsonLogSink(target or "zeekml.json", append=append)
