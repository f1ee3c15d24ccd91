"""Column-at-a-time text formatting and escaping for the alert sinks (syslog, CEF, ECS).

The alert sinks turn a verdict table into one text record per row. Doing that with
a Python loop per row would make ``--all`` (a record for every scored flow) the
slowest stage of the pipeline, so every function here takes and returns whole
pandas ``str`` columns (pyarrow-backed: replace and concatenate run in C).

Missing values stay missing (``NaN``) through every function, so each format can
decide what a missing value means: ``-`` in syslog, an absent key in JSON, an
absent extension in CEF.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STR = "str"

#: Longest text kept from one input value: a hostile multi-megabyte field in a log
#: must not make one alert larger than a collector accepts (rsyslog's default
#: maxMessageSize is 8 KiB). Longer values are cut and end in "...".
MAX_VALUE_CHARS = 1024

_LARGE = pa.large_string()

#: JSON escapes for the ASCII control characters (RFC 8259 section 7).
_JSON_CONTROL = tuple((chr(c), f"\\u{c:04x}") for c in range(0x20))


def as_text(values: pd.Series | Sequence[object], limit: int = MAX_VALUE_CHARS) -> pd.Series:
    """Any column as a ``str`` column (missing stays NaN), each value cut to ``limit``.

    Numbers are rendered by pyarrow's shortest round-trip form (``0.97``, ``1e+20``);
    non-finite floats become missing, since no output format has a place for them.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    s = s.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(s.dtype):
        out = s.map({True: "true", False: "false"}).astype(STR)
    elif pd.api.types.is_float_dtype(s.dtype):
        f = s.to_numpy(dtype="float64", na_value=np.nan)
        arr = pa.array(f, mask=~np.isfinite(f))
        out = pd.Series(pc.cast(arr, pa.string()).to_pandas(), dtype=STR)
    elif pd.api.types.is_integer_dtype(s.dtype):
        arr = pa.array(s, from_pandas=True)
        out = pd.Series(pc.cast(arr, pa.string()).to_pandas(), dtype=STR)
    else:
        out = _str_column(s)
    if limit and len(out) and (out.str.len() > limit).any():
        long = out.str.len() > limit
        out = out.where(~long, out.str.slice(0, limit - 3) + "...")
    return out


def _str_column(s: pd.Series) -> pd.Series:
    """Object/str column -> ``str`` dtype; values that cannot be UTF-8 are repaired."""
    try:
        return s.astype(STR)
    except (UnicodeError, pa.ArrowException):
        # lone surrogates (surrogateescape'd bytes) cannot live in an arrow string
        fixed = s.map(
            lambda v: v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v
        )
        return fixed.astype(STR)


def replace_all(s: pd.Series, pairs: Iterable[tuple[str, str]]) -> pd.Series:
    """Apply literal replacements in order (one vectorized pass each)."""
    for old, new in pairs:
        s = s.str.replace(old, new, regex=False)
    return s


def json_string(s: pd.Series) -> pd.Series:
    """``str`` column -> JSON string literals (quoted, escaped); missing stays NaN."""
    if len(s) and s.str.contains(r'[\x00-\x1f"\\]', regex=True).fillna(False).any():
        # uids, addresses and class names rarely need escaping: one scan decides
        s = replace_all(s, (("\\", "\\\\"), ('"', '\\"')))
        if s.str.contains(r"[\x00-\x1f]", regex=True).fillna(False).any():
            s = replace_all(s, _JSON_CONTROL)
    return '"' + s + '"'


def concat(parts: Sequence[pd.Series | str]) -> pd.Series:
    """Row-wise concatenation of ``str`` columns and constants, in one pass.

    A missing value contributes nothing (build ``key + value`` fragments first, so a
    missing value drops its key too). One arrow call over all parts: chaining ``+``
    would copy the growing prefix once per part, quadratic in the record length.
    """
    args: list[pa.Array | pa.ChunkedArray | pa.Scalar] = []
    n = 0
    for part in parts:
        if isinstance(part, str):
            args.append(pa.scalar(part, _LARGE))
            continue
        arr = pa.array(part.reset_index(drop=True), from_pandas=True)
        args.append(arr if arr.type == _LARGE else arr.cast(_LARGE))
        n = len(arr)
    if not any(isinstance(a, (pa.Array, pa.ChunkedArray)) for a in args):
        raise ValueError("concat needs at least one column")
    if n == 0:
        return pd.Series([], dtype=STR)
    out = pc.binary_join_element_wise(*args, pa.scalar("", _LARGE), null_handling="replace",
                                      null_replacement="")
    return pd.Series(out.to_pandas(), dtype=STR)


def json_object(members: Sequence[tuple[str, pd.Series | str]], n: int) -> pd.Series:
    """Rows of JSON object text from (key, JSON value text) pairs.

    A value column's missing entries omit that key for that row; a plain ``str``
    value is a constant for every row. A row with no member at all is missing, so a
    nested object that would be ``{}`` is omitted by its parent too.
    """
    first = members[0][1] if members else None
    if isinstance(first, str) or (first is not None and bool(first.notna().all())):
        # the first member is always there: "{" + first + ",k:v"... + "}" in one pass
        parts: list[pd.Series | str] = ["{"]
        for i, (key, value) in enumerate(members):
            head = ("" if i == 0 else ",") + json.dumps(key) + ":"
            parts.append(head + value if isinstance(value, str) else
                         head + value.reset_index(drop=True))
        if not isinstance(first, str):
            return concat([*parts, "}"])
        parts.append("}")
        parts.insert(0, pd.Series([""] * n, dtype=STR))  # gives concat its row count
        return concat(parts)
    parts = [pd.Series([""] * n, dtype=STR)]
    for key, value in members:
        head = "," + json.dumps(key) + ":"
        parts.append(head + value if isinstance(value, str) else head + value.reset_index(drop=True))
    body = concat(parts)
    return ("{" + body.str.slice(1) + "}").where(body.str.len() > 0)


def json_array_of_strings(lists: pd.Series) -> pd.Series:
    """A column of lists of strings (e.g. ``context`` uids) -> JSON array text.

    Lists are flattened into one arrow column, escaped in one pass and re-joined;
    a missing or empty list is missing.
    """
    arr = _list_array(lists)
    flat = pd.Series(arr.flatten().to_pandas(), dtype=STR)
    quoted = json_string(as_text(flat)).fillna("null")
    rebuilt = pa.ListArray.from_arrays(arr.offsets, pa.array(quoted, type=pa.string()))
    joined = pc.binary_join(rebuilt, ",")
    out = pd.Series(joined.to_pandas(), dtype=STR)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    return ("[" + out + "]").where(pd.Series(np.nan_to_num(lengths, nan=0) > 0))


def joined_list(lists: pd.Series, sep: str = ",") -> pd.Series:
    """A column of lists of strings -> ``sep``-joined text; empty or missing -> NaN."""
    arr = _list_array(lists)
    flat = as_text(pd.Series(arr.flatten().to_pandas(), dtype=STR)).fillna("-")
    rebuilt = pa.ListArray.from_arrays(arr.offsets, pa.array(flat, type=pa.string()))
    out = pd.Series(pc.binary_join(rebuilt, sep).to_pandas(), dtype=STR)
    return out.where(out.str.len() > 0)


def _list_array(lists: pd.Series) -> pa.ListArray:
    """A column of list-likes (or missing) as one arrow list<string> array."""
    try:
        return pa.array(lists, type=pa.list_(pa.string()), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        # mixed element types: stringify (a rare, already-small notice column)
        values = [
            [str(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else None
            for v in lists.tolist()
        ]
        return pa.array(values, type=pa.list_(pa.string()))


def iso_time(ts: pd.Series) -> pd.Series:
    """Epoch seconds -> RFC 3339 UTC with microseconds (``2020-10-06T15:32:46.785668Z``).

    Used by both RFC 5424 (``TIMESTAMP``, at most 6 fraction digits) and ECS
    (``@timestamp``). Missing or non-finite times stay missing.
    """
    f = pd.Series(ts).reset_index(drop=True).to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(f) | (np.abs(f) > 253402300799.0)  # past year 9999
    us = np.round(np.where(bad, 0, f) * 1e6).astype("int64").astype("datetime64[us]")
    text = np.char.add(np.datetime_as_string(us, unit="us"), "Z")  # C loops; strftime is 5x slower
    return pd.Series(pa.array(text, mask=bad).to_pandas(), dtype=STR)


def epoch_millis(ts: pd.Series) -> pd.Series:
    """Epoch seconds -> integer milliseconds as text (CEF ``rt``); missing stays NaN."""
    f = pd.Series(ts).reset_index(drop=True).to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(f)
    ms = pd.array(np.round(np.where(ok, f, 0) * 1000).astype("int64"), dtype="Int64")
    ms[~ok] = pd.NA
    return as_text(pd.Series(ms))


def encode_lines(records: pd.Series) -> bytes:
    """Records -> one UTF-8 block, each record ending in a newline (one write call).

    The arrow data buffer of ``record + "\\n"`` already is that block, so no Python
    string per record is made.
    """
    if not len(records):
        return b""
    arr = pa.array(records.reset_index(drop=True).fillna(""), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.binary_join_element_wise(arr, pa.scalar("\n", arr.type), pa.scalar("", arr.type))
    width = np.int64 if arr.type == _LARGE else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return bytes(memoryview(data)[int(offsets[0]):int(offsets[-1])])
