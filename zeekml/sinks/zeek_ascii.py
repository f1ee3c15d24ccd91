"""Zeek ASCII log formatting, byte for byte as Zeek's ASCII writer does it.

Why a module of its own: ``zeekml.log``, the notice.log sink and ``zeekml convert
--to zeek`` all write Zeek ASCII, and every consumer (zeek-cut, zat, Zeek's own
Input framework, Splunk's TSV extraction) relies on the exact rules below. It only
formats (bytes out); opening, appending and fsync live in the sinks.

Rules (Zeek ``src/threading/formatters/Ascii.cc``, ``src/Desc.cc``, ``modp_numtoa.c``):

* header: ``#separator \\x09`` (a space, then the escaped separator), then
  ``#set_separator``, ``#empty_field``, ``#unset_field``, ``#path``, ``#open``,
  ``#fields``, ``#types``, key and value(s) joined by tabs; ``#close`` at the end.
  ``#open``/``#close`` are local time ``%Y-%m-%d-%H-%M-%S``.
* unset value: ``-``; empty string or empty set/vector: ``(empty)``; a string equal to
  ``-`` or ``(empty)`` gets its first byte escaped (``\\x2d``, ``\\x28empty)``).
* ``time``/``interval``: fixed 6 decimals (modp_dtoa rounding); ``double``: at most 6
  decimals, trailing zeros dropped, ``.0`` added to integral values; ``bool`` ``T``/``F``.
* strings: backslash, the tab separator and every non-printable byte become ``\\xNN``
  (lower-case hex); valid UTF-8 passes through. Inside sets/vectors the ``,`` of an
  element is escaped too, and elements are joined by ``,``.
* a ``\\xNN`` already in a value is kept as it is: in the canonical flow table it stands
  for a byte that is not UTF-8 (the Zeek readers keep ``Sh\\xffAD`` that way, as Zeek's
  JSON writer does), so such a value is written back exactly as Zeek wrote it. A
  literal backslash followed by ``xNN`` is held as ``\\x5cxNN`` by the readers, so the
  two never meet.

One deliberate, safe strictness beyond Zeek: besides ASCII control bytes, the C1
controls (U+0080..U+009F) and U+2028/U+2029 are escaped (as the ``\\xNN`` of their UTF-8
bytes, which Zeek's reader unescapes back to the same bytes), because Python's
``str.splitlines`` treats them as line breaks. Lone surrogates from a
``surrogateescape`` decode (undecodable input bytes) are written as the original byte.

Formatting is vectorized per column with pyarrow compute; only values that actually
need escaping (hostile or binary strings, rare) go through the Python escaper.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY_FIELD = "(empty)"
UNSET_FIELD = "-"

#: Zeek field name -> canonical column name, for tables that use canonical names.
_CANONICAL_OF = {"id.orig_h": "orig_h", "id.orig_p": "orig_p", "id.resp_h": "resp_h",
                 "id.resp_p": "resp_p"}

_STRING_TYPES = frozenset({"string", "enum", "addr", "subnet", "pattern", "file", "func"})
_INT_TYPES = frozenset({"count", "int", "port"})
_TIME_TYPES = frozenset({"time", "interval"})

# characters escaped in any string value (Python side); a backslash that already starts
# a \xNN escape is an escaped byte of the canonical value and is kept (see module doc)
_BASE_CLASS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
_LONE_BACKSLASH = r"\\(?!x[0-9a-fA-F]{2})"
_ESC_RE = re.compile(_LONE_BACKSLASH + "|[" + _BASE_CLASS + "]")
_ESC_SET_RE = re.compile(_LONE_BACKSLASH + "|[" + _BASE_CLASS + ",]")
# for raw bytes every backslash is data (no canonical escapes in them)
_RAW_ESC_RE = re.compile(r"[\\" + _BASE_CLASS + "]")
_RAW_ESC_SET_RE = re.compile(r"[\\" + _BASE_CLASS + ",]")
# the same classes for RE2 (pyarrow), which cannot hold surrogates anyway
_RE2_BASE = r"\\\x00-\x1f\x7f\x{80}-\x{9f}\x{2028}\x{2029}"
_RE2_ESC = "[" + _RE2_BASE + "]"
_RE2_ESC_SET = "[" + _RE2_BASE + ",]"


def _L(text: str) -> pa.Scalar:
    """A large_string scalar (pyarrow kernels do not mix string and large_string)."""
    return pa.scalar(text, pa.large_string())


def _hex_char(m: re.Match[str]) -> str:
    c = m.group(0)
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # surrogateescape'd raw byte
        return f"\\x{o - 0xDC00:02x}"
    return "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))


def escape(value: str | bytes, *, in_set: bool = False) -> str:
    """Escape one string value exactly as Zeek writes it (reserved values included).

    ``bytes`` are raw data, decoded as UTF-8 with ``surrogateescape`` so undecodable
    bytes come out as ``\\xNN`` (and every backslash in them is data); in ``str`` a
    ``\\xNN`` is a canonical escaped byte and is kept. ``in_set`` also escapes ``,`` (for set/vector elements).
    Returns ``(empty)`` for an empty value; never returns ``-`` for a set value.
    """
    raw = isinstance(value, bytes)
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    if not text:
        return EMPTY_FIELD
    if text == UNSET_FIELD or text == EMPTY_FIELD:
        return f"\\x{ord(text[0]):02x}" + _escape_body(text[1:], in_set, raw)
    return _escape_body(text, in_set, raw)


def _escape_body(value: str, in_set: bool, raw: bool = False) -> str:
    if raw:
        return (_RAW_ESC_SET_RE if in_set else _RAW_ESC_RE).sub(_hex_char, value)
    return (_ESC_SET_RE if in_set else _ESC_RE).sub(_hex_char, value)


# --------------------------------------------------------------------------- header


def _local_stamp(ts: float | None) -> str:
    t = time.time() if ts is None else float(ts)
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(t))


def format_header(
    path: str, fields: Sequence[str], types: Sequence[str], open_ts: float | None = None
) -> bytes:
    """The eight ``#`` header lines Zeek writes when it opens a log."""
    if len(fields) != len(types):
        raise ValueError(f"{len(fields)} fields but {len(types)} types")
    sep = SEPARATOR
    lines = [
        "#separator " + "".join(f"\\x{ord(c):02x}" for c in sep),
        f"#set_separator{sep}{SET_SEPARATOR}",
        f"#empty_field{sep}{EMPTY_FIELD}",
        f"#unset_field{sep}{UNSET_FIELD}",
        f"#path{sep}{escape(path)}",
        f"#open{sep}{_local_stamp(open_ts)}",
        "#fields" + sep + sep.join(escape(f) for f in fields),
        "#types" + sep + sep.join(escape(t) for t in types),
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def format_close(ts: float | None = None) -> bytes:
    """The ``#close`` footer line Zeek writes when it closes (rotates) a log."""
    return f"#close{SEPARATOR}{_local_stamp(ts)}\n".encode()


# --------------------------------------------------------------------------- values


def _float_array(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        return values.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values, dtype=np.float64)


def _modp_split(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(negative, whole, frac) with modp_dtoa's 6-digit rounding, vectorized."""
    neg = v < 0
    a = np.abs(v)
    whole = np.trunc(a)
    tmp = (a - whole) * 1e6
    frac = np.floor(tmp)
    diff = tmp - frac
    up = (diff > 0.5) | ((diff == 0.5) & ((frac == 0) | (np.fmod(frac, 2) == 1)))
    frac = frac + up
    roll = frac >= 1e6
    frac = np.where(roll, 0.0, frac)
    whole = whole + roll
    return neg, whole, frac


def _num_strings(whole: np.ndarray, neg: np.ndarray) -> pa.Array:
    w = pc.cast(pa.array(whole.astype(np.int64)), pa.large_string())
    minus = pa.array(np.where(neg, "-", ""), type=pa.large_string())
    return pc.binary_join_element_wise(minus, w, _L(""))


def _format_float(values: Any, zeek_type: str) -> pa.Array:
    v = _float_array(values)
    nan = ~np.isfinite(v)
    safe = np.where(nan, 0.0, v)
    big = np.abs(safe) > 0x7FFFFFFF
    neg, whole, frac = _modp_split(np.where(big, 0.0, safe))
    head = _num_strings(whole, neg)
    frac_s = pc.utf8_lpad(pc.cast(pa.array(frac.astype(np.int64)), pa.large_string()), 6, "0")
    if zeek_type in _TIME_TYPES:
        out = pc.binary_join_element_wise(head, frac_s, _L("."))
    else:
        trimmed = pc.utf8_rtrim(frac_s, characters="0")
        has_frac = pc.greater(pc.utf8_length(trimmed), 0)
        integral = pa.array((safe == np.trunc(safe)) & ~big)
        with_frac = pc.binary_join_element_wise(head, trimmed, _L("."))
        no_frac = pc.if_else(integral, pc.binary_join_element_wise(head, _L(".0"), _L("")), head)
        out = pc.if_else(has_frac, with_frac, no_frac)
    if big.any():  # beyond modp's range: Zeek falls back to printf; rare, so per value
        idx = np.nonzero(big & ~nan)[0]
        fmt = "%.6f" if zeek_type in _TIME_TYPES else "%e"
        vals = out.to_numpy(zero_copy_only=False).astype(object)
        vals[idx] = [fmt % x for x in safe[idx]]
        out = pa.array(vals, type=pa.large_string())
    if nan.any():
        out = pc.if_else(pa.array(nan), _L(UNSET_FIELD), out)
    return out


def _format_int(values: Any) -> pa.Array:
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if s.dtype.kind == "f":
        s = s.astype("Int64")
    arr = pa.array(s, from_pandas=True)
    if not pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.int64())
    return pc.fill_null(pc.cast(arr, pa.large_string()), _L(UNSET_FIELD))


def _format_bool(values: Any) -> pa.Array:
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    arr = pa.array(s.astype("boolean"), from_pandas=True)
    return pc.fill_null(pc.if_else(arr, _L("T"), _L("F")), _L(UNSET_FIELD))


def _to_string_array(values: Any) -> pa.Array | None:
    """A large_string array of the values, or None when they cannot be UTF-8."""
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    try:
        arr = pa.array(s, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        return None
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.large_string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        try:
            arr = pc.cast(arr, pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    return arr.cast(pa.large_string())


def _escape_objects(values: Any, in_set: bool) -> pa.Array:
    """Slow path (values that are bytes, surrogates or not strings): per value."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(UNSET_FIELD)
        else:
            out.append(escape(v if isinstance(v, (str, bytes)) else str(v), in_set=in_set))
    return pa.array(out, type=pa.large_string())


def _format_strings(values: Any, in_set: bool = False) -> pa.Array:
    arr = (values.cast(pa.large_string()) if isinstance(values, pa.Array)
           else _to_string_array(values))
    if arr is None:
        return _escape_objects(list(values), in_set)
    needs = pc.fill_null(
        pc.match_substring_regex(arr, _RE2_ESC_SET if in_set else _RE2_ESC), False
    )
    if pc.any(needs).as_py():
        idx = np.nonzero(needs.to_numpy(zero_copy_only=False))[0]
        vals = arr.to_numpy(zero_copy_only=False).astype(object)
        vals[idx] = [_escape_body(x, in_set) for x in vals[idx]]
        # an escaped value contains a backslash, so it never equals a reserved word
        arr = pa.array(vals, type=pa.large_string())
    out = pc.if_else(pc.equal(arr, _L("")), _L(EMPTY_FIELD), arr)
    out = pc.if_else(pc.equal(arr, _L(UNSET_FIELD)), _L("\\x2d"), out)
    out = pc.if_else(pc.equal(arr, _L(EMPTY_FIELD)), _L("\\x28empty)"), out)
    return pc.fill_null(out, _L(UNSET_FIELD))


def _is_missing_cell(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, float) and np.isnan(v)


def _string_lists(values: Any) -> pa.Array | None:
    """Cells (list-likes of strings, or missing) as an arrow list array; None if they aren't."""
    cells = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    try:
        return pa.array(cells, type=pa.large_list(pa.large_string()), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        return None


def _format_container(values: Any, zeek_type: str) -> pa.Array:
    """set[T] / vector[T]: each cell a list-like (or missing); elements joined by ``,``."""
    inner = zeek_type[zeek_type.index("[") + 1 : -1]
    lists = _string_lists(values) if inner in _STRING_TYPES else None
    if lists is not None:  # fast path: arrow lists of strings, escaped as one flat column
        missing = lists.is_null().to_numpy(zero_copy_only=False)
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
        elems = _format_strings(pc.list_flatten(lists), in_set=True)
    else:
        cells = list(values)
        missing = np.fromiter((_is_missing_cell(c) for c in cells), dtype=bool, count=len(cells))
        py = [[] if m else list(c) for c, m in zip(cells, missing, strict=True)]
        lengths = np.fromiter((len(x) for x in py), dtype=np.int64, count=len(py))
        flat = [e for x in py for e in x]
        if inner in _STRING_TYPES:
            elems = _format_strings(pd.Series(flat, dtype=object), in_set=True)
        else:
            elems = _format_column(pd.Series(flat, dtype=object), inner)
            elems = _format_strings(pd.Series(elems.to_pylist(), dtype=object), in_set=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), elems),
                            _L(SET_SEPARATOR))
    out = pc.if_else(pa.array(lengths == 0), _L(EMPTY_FIELD), joined)
    return pc.if_else(pa.array(missing), _L(UNSET_FIELD), out)


def _format_column(values: Any, zeek_type: str) -> pa.Array:
    if zeek_type in _TIME_TYPES or zeek_type == "double":
        return _format_float(values, zeek_type)
    if zeek_type in _INT_TYPES:
        return _format_int(values)
    if zeek_type == "bool":
        return _format_bool(values)
    if zeek_type.startswith(("set[", "vector[", "table[")):
        return _format_container(values, zeek_type)
    if zeek_type in _STRING_TYPES:
        return _format_strings(values)
    raise ValueError(f"unsupported Zeek type {zeek_type!r}")


def format_column(values: Any, zeek_type: str) -> list[str]:
    """One column rendered as Zeek would (for tests and small uses)."""
    return _format_column(values, zeek_type).to_pylist()


def format_rows(df: pd.DataFrame, fields: Sequence[str], types: Sequence[str]) -> bytes:
    """Every row of ``df`` as Zeek ASCII lines (each ending in ``\\n``), as UTF-8 bytes.

    ``fields`` are the Zeek field names in output order. Each is taken from the
    column of that name, else from its canonical name (``id.orig_h`` -> ``orig_h``);
    a field with neither is written unset. Values are never allowed to contain a raw
    tab or newline, so a hostile input string cannot break the columns.
    """
    if len(fields) != len(types):
        raise ValueError(f"{len(fields)} fields but {len(types)} types")
    n = len(df)
    if n == 0:
        return b""
    cols: list[pa.Array] = []
    for name, typ in zip(fields, types, strict=True):
        col = name if name in df.columns else _CANONICAL_OF.get(name)
        if col is None or col not in df.columns:
            cols.append(pa.array([UNSET_FIELD] * n, type=pa.large_string()))
        else:
            cols.append(_format_column(df[col], typ))
    lines = pc.binary_join_element_wise(*cols, _L(SEPARATOR))
    lines = pc.binary_join_element_wise(lines, _L("\n"), _L(""))
    return _concat_buffer(lines)


def _concat_buffer(arr: pa.Array) -> bytes:
    """The concatenated bytes of a large_string array with no nulls (zero-copy slice)."""
    arr = arr.cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        return b"".join(_concat_buffer(c) for c in arr.chunks)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    if data is None:
        return b""
    return data.to_pybytes()[int(offsets[0]) : int(offsets[-1])]


def format_log(
    path: str,
    df: pd.DataFrame,
    fields: Sequence[str],
    types: Sequence[str],
    open_ts: float | None = None,
    close_ts: float | None = None,
) -> bytes:
    """A whole log in one call: header, rows, ``#close``."""
    return (
        format_header(path, fields, types, open_ts)
        + format_rows(df, fields, types)
        + format_close(close_ts)
    )
