"""Text columns -> typed values, vectorized: the value parsing the flow-export readers share.

The CSV-family readers (Zeek-field CSV, CICFlowMeter, nfdump CSV and JSON, Argus
binetflow) read every column as text and convert it here, column by column in
pyarrow/numpy, never a Python loop per row. Each parser returns the values together
with ``present`` (set, not one of the ``unset`` tokens) and ``bad`` (set but not
parsable) masks; :class:`Rejects` collects the bad rows of a batch with their reasons
and reports them to the :class:`~zeekml.sources.skips.SkipLog` in line order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.records import schema
from zeekml.sources.skips import SkipLog

_INT_RE = r"^[+-]?[0-9]{1,18}$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
#: an IPv4/IPv6 address (with an optional zone), as the CSV exports write them
ADDR_RE = r"^[0-9A-Fa-f:.]{2,45}(%[0-9A-Za-z_.-]{1,32})?$"


def column_text(arr: pa.Array | pa.ChunkedArray, trim: bool = True) -> pa.Array:
    """One string column as a contiguous array, whitespace-trimmed if asked."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return pc.utf8_trim_whitespace(arr) if trim else arr


def bool_mask(arr: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy bools (null -> False)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def present_mask(text: pa.Array, unset: Sequence[str] = ("",)) -> np.ndarray:
    """True where a text value is set (not null, not one of the ``unset`` tokens)."""
    absent = pc.is_in(text, value_set=pa.array(list(unset), pa.string()))
    return ~bool_mask(pc.or_(absent, pc.is_null(text)))


def _cast(text: pa.Array, present: np.ndarray, typ: pa.DataType, fill: str) -> pa.Array | None:
    """Cast the set values of a text column in one C call (unset ones become ``fill``);
    None if any does not parse.

    A contiguous column is cast with the unset values masked as null in place (a new
    validity bitmap over the same buffers), not after a copy that writes ``fill`` into them.
    """
    if present.all():
        src = text
    elif (isinstance(text, pa.Array) and text.offset == 0
          and (pa.types.is_string(text.type) or pa.types.is_large_string(text.type))):
        validity = pa.py_buffer(np.packbits(present, bitorder="little"))
        src = pa.Array.from_buffers(text.type, len(text), [validity, *text.buffers()[1:]])
    else:
        src = pc.if_else(pa.array(present), text, fill)
    try:
        out = pc.cast(src, typ)
        return out if out.null_count == 0 else out.fill_null(pc.cast(pa.scalar(fill), typ))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def parse_ints(
    text: pa.Array, lo: int, hi: int, unset: Sequence[str] = ("",)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 values, present, bad) of a text column; bad = set but not an int in range."""
    present = present_mask(text, unset)
    fast = _cast(text, present, pa.int64(), "0")
    if fast is not None:
        values = np.asarray(fast.to_numpy(zero_copy_only=False), dtype=np.int64)
        ok = present.copy()
    else:  # some value is bad (or padded): find which, vectorized
        text = pc.utf8_trim_whitespace(text)
        ok = bool_mask(pc.match_substring_regex(text, _INT_RE)) & present
        values = pc.cast(pc.if_else(pa.array(ok), text, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    ok &= (values >= lo) & (values <= hi)
    return np.where(ok, values, 0), present, present & ~ok


def parse_floats(
    text: pa.Array, unset: Sequence[str] = ("",)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing or bad, present, bad) of a text column."""
    present = present_mask(text, unset)
    fast = _cast(text, present, pa.float64(), "0")
    if fast is not None:
        values = np.asarray(fast.to_numpy(zero_copy_only=False), dtype=np.float64)
        ok = present & np.isfinite(values)
    else:
        text = pc.utf8_trim_whitespace(text)
        ok = bool_mask(pc.match_substring_regex(text, _FLOAT_RE)) & present
        values = pc.cast(pc.if_else(pa.array(ok), text, "0"), pa.float64()).to_numpy(zero_copy_only=False)
    return np.where(ok, values, np.nan), present, present & ~ok


def _seconds(ns: np.ndarray) -> np.ndarray:
    """Epoch nanoseconds -> float seconds, rounded once (``ns / 1e9`` would round the
    18-digit integer to float first and print ``...0.3980002`` for ``.398``)."""
    whole, frac = np.divmod(ns, 1_000_000_000)
    return whole.astype(np.float64) + frac / 1e9


def parse_times(text: pa.Array, unset: Sequence[str] = ("",)) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds float64, bad) from epoch numbers or date-time text.

    Date-times without an offset are taken as UTC. ISO 8601 (``T`` or space, any
    fraction) is parsed in C; other forms (an offset, day-first ``d/m/Y H:M[:S]`` of
    the CICIDS2017 originals) go through pandas. Unset values are NaN.
    """
    present = present_mask(text, unset)
    fast = _cast(text, present, pa.timestamp("ns"), "1970-01-01")
    if fast is not None:
        ns = np.asarray(fast.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        out = np.where(present, _seconds(ns), np.nan)
        return out, np.zeros(len(out), dtype=bool)
    out, present, not_num = parse_floats(text, unset)
    if not_num.any():
        idx = np.flatnonzero(not_num)
        s = pd.Series(pc.take(text, pa.array(idx)).to_pandas(), dtype=object)
        dt = pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)
        for fmt in ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y %I:%M:%S %p"):
            miss = dt.isna().to_numpy()
            if not miss.any():
                break
            dt[miss] = pd.to_datetime(s[miss], format=fmt, errors="coerce", utc=True)
        ns = dt.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        out[idx] = np.where(~dt.isna().to_numpy(), _seconds(ns), np.nan)
    return out, present & ~np.isfinite(out)


def nullable_int(values: np.ndarray, missing: np.ndarray, dtype: str = "Int64") -> pd.arrays.IntegerArray:
    """A pandas nullable integer array (``Int64`` or ``Int32``) from values and a mask."""
    np_dtype = np.int32 if dtype == "Int32" else np.int64
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np_dtype), missing.copy())


def proto_names(numbers: np.ndarray, missing: np.ndarray) -> pd.Series:
    """Zeek's ``proto`` enum from IP protocol numbers: tcp, udp, icmp (v4 and v6), else
    ``unknown_transport``; missing stays missing."""
    names = np.select(
        [numbers == 6, numbers == 17, (numbers == 1) | (numbers == 58)],
        ["tcp", "udp", "icmp"],
        "unknown_transport",
    ).astype(object)
    names[missing] = None
    return pd.Series(names, dtype=schema.STR)


def join_letters(parts: Sequence[tuple[np.ndarray, str]], n: int) -> pa.Array:
    """Concatenate one letter per (condition, letter) in order (a history string)."""
    cols = [pc.if_else(pa.array(cond), pa.scalar(letter), pa.scalar("")) for cond, letter in parts]
    if not cols:
        return pa.array([""] * n)
    return pc.binary_join_element_wise(*cols, "")


class Rejects:
    """Rows of a batch found bad, with reasons; reported in line order, then dropped."""

    def __init__(self, n: int) -> None:
        self.mask = np.zeros(n, dtype=bool)
        self._items: list[tuple[np.ndarray, str | Callable[[int], str]]] = []

    def add(self, bad: np.ndarray, reason: str | Callable[[int], str]) -> None:
        """Mark rows ``bad`` (not already marked); ``reason`` may take the row index."""
        new = bad & ~self.mask
        if new.any():
            self._items.append((np.flatnonzero(new), reason))
            self.mask |= new

    def report(self, skips: SkipLog, path: str, lines: np.ndarray) -> np.ndarray:
        """Record every rejected row in ``skips`` (line order) and return the keep mask."""
        found: list[tuple[int, str]] = []
        for idx, reason in self._items:
            for i in idx.tolist():
                found.append((int(lines[i]), reason(i) if callable(reason) else reason))
        for line, why in sorted(found):
            skips.add(path, line, why)
        return ~self.mask


def value_at(text: pa.Array) -> Callable[[int], str]:
    """A reason helper: the (shortened) repr of the value at a row."""

    def get(i: int) -> str:
        v = text[i].as_py()
        return repr(v[:40] if isinstance(v, str) else v)

    return get


def bad_value(what: str, text: pa.Array) -> Callable[[int], str]:
    """A reason: ``bad <what> <the value at the row>`` (shortened, as :func:`value_at`)."""
    at = value_at(text)
    return lambda i: f"bad {what} {at(i)}"


def bad_number(what: str, values: np.ndarray) -> Callable[[int], str]:
    """A reason: ``bad <what> <the number at the row>``."""
    return lambda i: f"bad {what} {values[i]}"
