"""Sans-I/O line assembly shared by the text parsers (Zeek TSV, Zeek JSON, CSV exports).

Bytes come in as arbitrary chunks (a file read, a pipe, a growing file's new bytes);
parsers want blocks of *complete* lines so one vectorized call (pyarrow) can parse
thousands of them at once. :class:`LineParser` keeps the unfinished last line for
the next :meth:`~LineParser.feed`, counts the bytes and lines fully consumed (the
checkpoint offset a follower stores), and hands each block of complete lines to the
subclass's :meth:`~LineParser._process` together with the number of its first line.

Nothing here reads a file, so the same parser serves whole files, stdin and ``tail``.

:func:`arrow_to_canonical` is the other thing the text parsers share: parsed pyarrow
columns -> a canonical DataFrame, converted in C++ (no per-row Python).

A line longer than :data:`MAX_LINE` bytes is dropped and counted as a skip instead of
being buffered without bound (a hostile or binary input cannot exhaust memory).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml import defaults
from zeekml.errors import SchemaError, StateError
from zeekml.records import schema
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

#: Longest line kept; longer ones are dropped and counted (a conn.log line is ~200 bytes).
MAX_LINE = 1 << 20


def line_spans(block: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets (end = index of the ``\\n``) of every line in ``block``.

    ``block`` must end with ``\\n``. Vectorized: about 1 ms per MB.
    """
    arr = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends


class LineParser:
    """Base of the incremental text parsers: feed bytes, get canonical batches.

    Subclasses implement :meth:`_process` (a block of complete lines, each ending in
    ``\\n``, and the 1-based number of its first line) and their own state keys.
    """

    format = "text"

    def __init__(self, path: str, skips: SkipLog | None = None, *, batch_rows: int = defaults.BATCH_ROWS) -> None:
        if batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        self.path = str(path)
        self.skips = skips if skips is not None else SkipLog()
        self.batch_rows = int(batch_rows)
        #: bytes of input fully consumed (complete lines), for checkpoint offsets
        self.consumed = 0
        #: lines consumed so far
        self.line_no = 0
        self._tail = b""
        self._dropping = False  # inside an overlong line, discarding until its newline
        self._spans: tuple[bytes, tuple[np.ndarray, np.ndarray]] | None = None

    # -- the FlowParser interface ------------------------------------------------------
    def feed(self, data: bytes) -> list[pd.DataFrame]:
        """Parse every complete line in ``data`` (plus the kept partial line)."""
        if not data:
            return []
        data = bytes(data)
        if self._dropping:
            nl = data.find(b"\n")
            if nl < 0:
                self.consumed += len(data)
                return []
            self._dropping = False
            self.consumed += nl + 1
            self.line_no += 1
            self.skips.add(self.path, self.line_no, f"line longer than {MAX_LINE} bytes")
            data = data[nl + 1 :]
        buf = self._tail + data if self._tail else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            self._tail = buf
            if len(buf) > MAX_LINE:
                self._tail = b""
                self._dropping = True
                self.consumed += len(buf)
            return []
        self._tail = buf[cut:]
        block = buf[:cut] if cut < len(buf) else buf
        return self._run(block)

    def close(self) -> list[pd.DataFrame]:
        """End of stream: a partial last line (no final newline) is parsed if valid."""
        out: list[pd.DataFrame] = []
        if self._dropping:
            self._dropping = False
            self.line_no += 1
            self.skips.add(self.path, self.line_no, f"line longer than {MAX_LINE} bytes")
        if self._tail:
            tail, self._tail = self._tail, b""
            out = self._run(tail + b"\n", extra=-1)
        return out

    def get_state(self) -> dict[str, Any]:
        """JSON-able position and header; see :meth:`set_state`."""
        return {"format": self.format, "line_no": self.line_no, "consumed": self.consumed}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume after a restart at a consumed offset; validates before changing anything."""
        if not isinstance(state, dict):
            raise StateError(f"{self.path}: parser state is not an object")
        if state.get("format") != self.format:
            raise StateError(
                f"{self.path}: parser state is for format {state.get('format')!r}, not {self.format!r}"
            )
        line_no = self._count(state.get("line_no"), "line_no")
        consumed = self._count(state.get("consumed", 0), "consumed")
        self._set_state_extra(state)
        self.line_no = line_no
        self.consumed = consumed
        self._tail = b""
        self._dropping = False

    def _count(self, value: object, name: str) -> int:
        """A non-negative integer from a state file (StateError otherwise)."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StateError(f"{self.path}: parser state {name} must be a non-negative integer")
        return value

    # -- for subclasses ----------------------------------------------------------------
    def _set_state_extra(self, state: dict[str, Any]) -> None:
        """Validate and apply subclass keys (raise StateError before changing anything)."""

    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        raise NotImplementedError

    def _run(self, block: bytes, extra: int = 0) -> list[pd.DataFrame]:
        first = self.line_no + 1
        spans = line_spans(block)  # counted once; _process gets them through _line_spans
        self._spans = (block, spans)
        self.line_no += len(spans[0])
        self.consumed += len(block) + extra
        try:
            return self._process(block, first)
        finally:
            self._spans = None

    def _line_spans(self, block: bytes) -> tuple[np.ndarray, np.ndarray]:
        """:func:`line_spans` of the block being processed (computed once per block)."""
        if self._spans is not None and self._spans[0] is block:
            return self._spans[1]
        return line_spans(block)


_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)
_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): _STR_DTYPE,
    pa.large_string(): _STR_DTYPE,
}
_NUMPY_INTS = {"Int64": np.int64, "Int32": np.int32}


def _narrow_int32(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """An Arrow integer column as int32 (a value outside int32 becomes missing)."""
    try:
        return pc.cast(arr, pa.int32())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        ok = pc.and_(pc.greater_equal(arr, -(2**31)), pc.less(arr, 2**31))
        return pc.cast(pc.if_else(ok, arr, None), pa.int32())


def missing_column(dtype: str, n: int) -> Any:
    """An all-missing column of a canonical dtype (what a format does not record)."""
    if dtype in _NUMPY_INTS:
        return pd.arrays.IntegerArray(np.zeros(n, _NUMPY_INTS[dtype]), np.ones(n, dtype=bool))
    if dtype == "boolean":
        return pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool))
    if dtype == "float64":
        return np.full(n, np.nan)
    return pd.array(pa.nulls(n, pa.string()), dtype=dtype)


def _from_arrow(arr: pa.Array | pa.ChunkedArray, dtype: str) -> Any:
    """One Arrow column -> a pandas array of the canonical ``dtype`` (one C++ conversion
    per column, no DataFrame in between)."""
    if dtype == "Int32" and arr.type != pa.int32() and pa.types.is_integer(arr.type):
        arr = _narrow_int32(arr)
    mapped = _PANDAS_TYPES.get(arr.type)
    if mapped is not None:
        return mapped.__from_arrow__(arr)
    if pa.types.is_floating(arr.type):
        return arr.to_numpy(zero_copy_only=False)
    return arr.to_pandas().array


def arrow_to_canonical(
    cols: dict[str, Any], lines: np.ndarray, path: str
) -> pd.DataFrame:
    """Columns named by canonical column -> a canonical DataFrame, in C++.

    A column is a pyarrow array (integer columns int64, floats float64, bools bool,
    strings string; Int32 columns, the ports, are narrowed here, a value outside int32
    becoming missing) or already a pandas/numpy array of the canonical dtype (a reader
    that computed it with numpy hands it over without a round trip through Arrow).
    Absent columns are all-missing; label columns are there when either is given.
    The frame is built in canonical order, so :func:`schema.conform` has nothing left
    to do. ``lines`` are the 1-based source line numbers. Other readers may use this too.
    """
    n = len(lines)
    labels = "label" in cols or "detailed_label" in cols
    expected = schema.all_dtypes(labels)
    out: dict[str, Any] = {}
    for col, dtype in expected.items():
        if col == "source_file":
            value: Any = pd.array(pa.nulls(n, pa.string()).fill_null(path), dtype=_STR_DTYPE)
        elif col == "source_line":
            value = np.asarray(lines, dtype=np.int64)
        elif col in cols:
            value = cols[col]
            if isinstance(value, (pa.Array, pa.ChunkedArray)):
                value = _from_arrow(value, dtype)
        else:
            value = missing_column(dtype, n)
        if str(value.dtype) != dtype:
            try:
                value = pd.array(value).astype(dtype)
            except (TypeError, ValueError) as exc:
                raise SchemaError(
                    f"column {col!r} cannot be cast to {dtype}: {exc}") from exc
        out[col] = value
    return pd.DataFrame(out, copy=False)
