"""Zeek ASCII (TSV) conn logs -> canonical flow batches, fast and exact.

How a block of complete lines is read
    Meta lines (``#`` first, after optional leading whitespace) update the header:
    ``#separator`` (written ``#separator \\x09``, also ``#separator<TAB>\\x09``),
    ``#set_separator``, ``#empty_field``, ``#unset_field``, ``#fields``, ``#types``;
    a ``#separator`` or ``#fields`` line after data starts a new header block
    (concatenated rotated logs). A ``#path`` other than a conn log's (``dns``,
    ``zeekml``, ``notice`` ...) and ``#fields`` of zeekml's own verdicts are refused
    (:mod:`zeekml.sources.logkind`). ``#open``, ``#close`` and any other ``#`` line
    (``### BTest baseline``) are ignored. Runs of data lines between meta lines
    are parsed by **one pyarrow.csv call** per ``batch_rows`` lines with the column types
    taken from the header: that is what makes the reader ~1.5M+ rows/s.

Columns by ``#fields`` name, never position
    ``id.orig_h`` and ``id_orig_h`` (scope separator ``_``) map to ``orig_h``;
    ``label``; ``detailedlabel`` / ``detailed-label`` / ``detailed_label`` map to
    ``detailed_label``; other fields (``_node_name``, ``ip_proto``, ``tunnel_parents``,
    log-extension fields) are not converted at all. ``#types`` are checked against the
    canonical kind of each column (a mismatch is logged once and the canonical kind is
    used, so the table always has its canonical dtypes).

Values
    The unset field (``-``) is missing; the empty field (``(empty)``) is ``""``; ``\\xNN``
    escapes are decoded (bytes that do not form UTF-8 after decoding stay written as
    ``\\xNN``, which the writers put back unchanged: see :func:`unescape`); a ``#``
    inside a value is data. A value with a backslash not followed by
    ``xNN`` is a bad escape.

Bad lines
    When the fast parse of a run fails (wrong field count, unparsable number or bool,
    non-UTF-8 bytes, a stray ``\\r``), the run is re-read carefully: each line is
    checked in Python (leniently: pyarrow has the last word on numbers), the good
    ones are parsed again with pyarrow (where pyarrow still rejects something, the
    lines are bisected down to the ones it rejects), and each bad line is recorded in
    the :class:`SkipLog` with path, line and a value-free reason (reasons are counted,
    so they stay few). Every good line is kept, in order. (The careful path is the
    readers' shared :func:`zeekml.sources.sift.sift`.) Cost: a clean run is one
    pyarrow call; a run with a bad line costs about 10 us of Python per line once.

Blank lines are not records and are not counted as skips. The ``#``-free check that
selects the fast path is a memchr over the chunk; a chunk with a ``#`` anywhere is
split into lines with numpy to find the meta lines.

Quirks handled
    CRLF line ends; no final newline (the partial last line is parsed at
    :meth:`close`); IoT-23 ``conn.log.labeled`` files whose last three fields are
    joined by three spaces (``tunnel_parents   label   detailed-label``, in
    ``#fields``, ``#types`` and every row): when a ``#fields`` entry contains three
    spaces, three spaces in data rows are read as a separator. A file with data but no
    ``#fields`` header at all (rita's ``conn_top.log``) is read as the standard
    21-column Zeek conn.log layout with a warning; rows of another width are skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from zeekml import defaults
from zeekml.errors import StateError
from zeekml.records import schema
from zeekml.sources.lines import LineParser, arrow_to_canonical, line_spans
from zeekml.sources.logkind import check_fields, check_path
from zeekml.sources.sift import line_text, read_fast, sift

log = logging.getLogger(__name__)

#: The standard Zeek conn.log layout (Zeek 3.x .. 7.0), assumed for header-less input.
STANDARD_FIELDS: tuple[str, ...] = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents",
)  # fmt: skip
STANDARD_TYPES: tuple[str, ...] = tuple(
    schema.ZEEK_TYPES.get(canonical, "set[string]")
    for canonical in (f.removeprefix("id.") for f in STANDARD_FIELDS)
)

_ID_FIELDS = ("orig_h", "orig_p", "resp_h", "resp_p")
_DETAILED = ("detailedlabel", "detailed-label", "detailed_label")

#: canonical dtype -> (kind, arrow type, Zeek types that agree with it)
_KINDS: dict[str, tuple[str, pa.DataType, frozenset[str]]] = {
    "float64": ("float", pa.float64(), frozenset({"time", "interval", "double"})),
    "Int32": ("int", pa.int64(), frozenset({"port", "count", "int"})),
    "Int64": ("int", pa.int64(), frozenset({"count", "int", "port"})),
    "boolean": ("bool", pa.bool_(), frozenset({"bool"})),
    schema.STR: ("str", pa.string(), frozenset({"string", "addr", "enum", "subnet"})),
}

_ESCAPE_OK = re.compile(r"(?:[^\\]|\\x[0-9a-fA-F]{2})*", re.S)
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_BACKSLASH_BEFORE_ESCAPE = re.compile(rb"\\(?=x[0-9a-fA-F]{2})")
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def canonical_name(zeek_field: str) -> str | None:
    """The canonical column a Zeek ``#fields`` name feeds, or None if it is not used."""
    name = zeek_field
    if name[:3] in ("id.", "id_") and name[3:] in _ID_FIELDS:
        return name[3:]
    if name in schema.COLUMNS:
        return name
    low = name.lower()
    if low == "label":
        return "label"
    if low in _DETAILED:
        return "detailed_label"
    return None


def unescape(value: str) -> str:
    """Decode Zeek's ``\\xNN`` escapes (the inverse of the ASCII writer's escaping).

    Raises ValueError for a backslash not followed by ``xNN``. Decoded bytes that are not
    valid UTF-8 stay ``\\xNN`` text (``Sh\\xffAD``: a table of text cannot hold the
    byte; Zeek's JSON writer does the same), and the writers put them back as the same
    escape. So that this stays unambiguous, a decoded backslash that would be followed
    by ``xNN`` is kept as ``\\x5c`` (``\\x5cxff`` is the four characters ``\\xff``).
    """
    if "\\" not in value:
        return value
    if not _ESCAPE_OK.fullmatch(value):
        raise ValueError("bad escape")
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))
    if b"\\" in raw:
        raw = _BACKSLASH_BEFORE_ESCAPE.sub(rb"\\x5c", raw)
    return raw.decode("utf-8", errors="backslashreplace")


@dataclass
class ZeekHeader:
    """The header in effect: separators and the (possibly absent) field list."""

    separator: str = "\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"
    fields: list[str] | None = None
    types: list[str] | None = None
    split3: bool = False  # IoT-23: three spaces also separate fields
    assumed: bool = False  # no #fields seen: the standard conn layout is assumed

    def to_dict(self) -> dict[str, Any]:
        return {
            "separator": self.separator,
            "set_separator": self.set_separator,
            "empty_field": self.empty_field,
            "unset_field": self.unset_field,
            "fields": self.fields,
            "types": self.types,
            "split3": self.split3,
            "assumed": self.assumed,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ZeekHeader:
        if not isinstance(d, dict):
            raise StateError("zeek_tsv header state is not an object")
        h = cls()
        for key in ("separator", "set_separator", "empty_field", "unset_field"):
            v = d.get(key, getattr(h, key))
            if not isinstance(v, str) or len(v) > 64 or (not v and key != "empty_field"):
                raise StateError(f"zeek_tsv header state: bad {key}")
            setattr(h, key, v)
        if len(h.separator) != 1 or h.separator in "\n\r":
            raise StateError("zeek_tsv header state: separator must be one character")
        for key in ("fields", "types"):
            v = d.get(key)
            if v is not None and (
                not isinstance(v, list)
                or len(v) > 10000
                or not all(isinstance(x, str) and len(x) < 1024 for x in v)
            ):
                raise StateError(f"zeek_tsv header state: bad {key}")
            setattr(h, key, v)
        for key in ("split3", "assumed"):
            v = d.get(key, False)
            if not isinstance(v, bool):
                raise StateError(f"zeek_tsv header state: bad {key}")
            setattr(h, key, v)
        return h


@dataclass
class _Plan:
    """What to read from rows under one header: pyarrow options and the column map."""

    n_fields: int
    names: list[str]  # unique pyarrow column names, one per field
    read: dict[str, str]  # pyarrow column name -> canonical column
    kinds: dict[str, str]  # canonical column -> kind (float/int/bool/str)
    index: dict[str, int] = field(default_factory=dict)  # canonical column -> field index
    read_opts: Any = None
    parse_opts: Any = None
    convert_opts: Any = None


def _make_plan(h: ZeekHeader, path: str) -> _Plan:
    fields = h.fields or list(STANDARD_FIELDS)
    types = h.types if h.types is not None and len(h.types) == len(fields) else None
    names: list[str] = []
    seen: set[str] = set()
    read: dict[str, str] = {}
    kinds: dict[str, str] = {}
    index: dict[str, int] = {}
    col_types: dict[str, pa.DataType] = {}
    for i, f in enumerate(fields):
        name = f if f not in seen else f"{f}\x00{i}"
        seen.add(name)
        names.append(name)
        canon = canonical_name(f)
        if canon is None or canon in index:
            continue
        dtype = schema.LABEL_COLUMNS.get(canon) or schema.COLUMNS[canon]
        kind, atype, agree = _KINDS[dtype]
        if types is not None and types[i] not in agree:
            log.warning("%s: field %s declared %s, read as %s", path, f, types[i], kind)
        read[name] = canon
        kinds[canon] = kind
        index[canon] = i
        col_types[name] = atype
    if not read:  # nothing canonical: still read one column to count rows
        read[names[0]] = ""
        col_types[names[0]] = pa.string()
    plan = _Plan(len(fields), names, read, kinds, index)
    plan.read_opts = pacsv.ReadOptions(column_names=names, use_threads=True, block_size=1 << 22)
    plan.parse_opts = pacsv.ParseOptions(
        delimiter=h.separator,
        quote_char=False,
        escape_char=False,
        double_quote=False,
        newlines_in_values=False,
        ignore_empty_lines=True,
    )
    plan.convert_opts = pacsv.ConvertOptions(
        column_types=col_types,
        include_columns=list(read),
        null_values=[h.unset_field],
        true_values=["T"],
        false_values=["F"],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        check_utf8=True,
    )
    return plan


class ZeekTsvParser(LineParser):
    """Incremental Zeek ASCII parser (the FlowParser interface, see ``zeekml.sources``)."""

    format = "zeek_tsv"

    def __init__(self, path: str, skips: Any = None, *, batch_rows: int = defaults.BATCH_ROWS) -> None:
        super().__init__(path, skips, batch_rows=batch_rows)
        self.header = ZeekHeader()
        self._plan: _Plan | None = None

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["header"] = self.header.to_dict()
        return state

    def _set_state_extra(self, state: dict[str, Any]) -> None:
        header = ZeekHeader.from_dict(state.get("header", {}))
        self.header = header
        self._plan = None

    # -- parsing -------------------------------------------------------------------------
    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        out: list[pd.DataFrame] = []
        if b"#" not in block:  # no meta line possible: data only (memchr-fast check)
            self._parse_data(block, first_line, out)
            return out
        starts, ends = self._line_spans(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        firsts = arr[np.minimum(starts, len(block) - 1)]
        maybe_meta = np.flatnonzero((firsts == 35) | (firsts == 9) | (firsts == 32))
        run_start = 0  # index of the first line of the current data run
        for i in maybe_meta.tolist():
            text = block[int(starts[i]) : int(ends[i])]
            if firsts[i] != 35 and not text.lstrip(b" \t").startswith(b"#"):
                continue  # data that starts with whitespace
            if i > run_start:
                run = block[int(starts[run_start]) : int(starts[i])]
                self._parse_data(run, first_line + run_start, out)
            self._meta(text, first_line + i)
            run_start = i + 1
        if run_start < len(starts):
            self._parse_data(block[int(starts[run_start]) :], first_line + run_start, out)
        return out

    def _parse_data(self, block: bytes, first_line: int, out: list[pd.DataFrame]) -> None:
        """Data lines only: cut by bytes into runs of at most batch_rows lines."""
        n = block.count(b"\n")
        pieces = -(-n // self.batch_rows)
        if pieces > 1:
            pieces += 1  # lines vary in length: aim below the cap
        size = len(block)
        pos = 0
        for k in range(1, pieces + 1):
            end = size if k == pieces else block.find(b"\n", k * size // pieces) + 1
            if end <= pos:
                continue
            piece = block[pos:end] if (pos, end) != (0, size) else block
            m = n if piece is block else piece.count(b"\n")
            if m > self.batch_rows:  # very uneven line lengths: cut exactly
                starts, _ = line_spans(piece)
                for j in range(0, m, self.batch_rows):
                    lo = int(starts[j])
                    hi = int(starts[j + self.batch_rows]) if j + self.batch_rows < m else len(piece)
                    self._parse_run(piece[lo:hi], first_line + j, out)
            else:
                self._parse_run(piece, first_line, out, m)
            first_line += m
            pos = end

    def _meta(self, raw: bytes, line: int) -> None:
        text = raw.decode("utf-8", errors="replace").strip(" \t\r")
        h = self.header
        if text.startswith("#separator"):
            value = text[len("#separator") :].lstrip(" \t")
            try:
                sep = unescape(value)
            except ValueError:
                sep = ""
            if len(sep) != 1 or sep in "\r\n":
                self.skips.add(self.path, line, f"unsupported #separator {value[:20]!r}")
                return
            self.header = ZeekHeader(separator=sep)
            self._plan = None
            return
        key, _, rest = text.partition(h.separator)
        if key == "#path":
            check_path(rest, self.path)  # a dns.log, zeekml.log ... is no conn log
        elif key == "#fields":
            fields = rest.split(h.separator)
            h.split3 = any("   " in f for f in fields)
            if h.split3:
                fields = [x for f in fields for x in f.split("   ")]
            check_fields(fields, self.path)
            h.fields, h.types, h.assumed = fields, None, False
            self._plan = None
        elif key == "#types":
            types = rest.split(h.separator)
            if h.split3:
                types = [x for t in types for x in t.split("   ")]
            h.types = types
            self._plan = None
        elif key in ("#set_separator", "#empty_field", "#unset_field"):
            try:
                value = unescape(rest)
            except ValueError:
                self.skips.add(self.path, line, f"bad escape in {key}")
                return
            if key == "#unset_field" and not value:
                self.skips.add(self.path, line, "empty #unset_field")
                return
            setattr(h, key[1:], value)
            self._plan = None

    def _current_plan(self) -> _Plan:
        if self._plan is None:
            h = self.header
            if h.fields is None and not h.assumed:
                h.assumed = True
                log.warning(
                    "%s: no #fields header; assuming the standard Zeek conn.log layout (%d fields)",
                    self.path,
                    len(STANDARD_FIELDS),
                )
            self._plan = _make_plan(h, self.path)
        return self._plan

    def _parse_run(
        self, run: bytes, first_line: int, out: list[pd.DataFrame], n: int | None = None
    ) -> None:
        """Parse one run of complete data lines (``n`` of them, counted if not given)."""
        plan = self._current_plan()
        h = self.header
        if h.split3:
            run = run.replace(b"   ", h.separator.encode())
        if n is None:
            n = run.count(b"\n")
        table = self._read(run, plan, n) if _structurally_clean(run) else None
        if table is None:  # blank lines, a bad line, or pyarrow saw other line ends than ours
            records = run.split(b"\n")[:-1]
            keep = [k for k, raw in enumerate(records) if raw not in (b"", b"\r")]
            table, lines = sift(
                [records[k] for k in keep],
                np.asarray(keep, dtype=np.int64) + first_line,
                check=lambda raw: self._check_line(raw, plan),
                read=lambda good: self._read_records(good, plan),
                skip=self._skip,
                reason=lambda exc: _arrow_reason(exc, plan),
            )
        else:
            lines = np.arange(first_line, first_line + n, dtype=np.int64)
        frame = self._to_frame(table, lines, plan, run)
        if frame is not None and len(frame):
            out.append(frame)

    # -- reading -------------------------------------------------------------------------
    def _read(self, data: bytes, plan: _Plan, rows: int) -> pa.Table | None:
        """The fast path: one pyarrow call over a run, None unless it gives ``rows`` rows."""
        return read_fast(lambda: _read_csv(data, plan), rows)

    def _read_records(self, records: Sequence[bytes], plan: _Plan) -> pa.Table:
        return _read_csv(b"\n".join(records) + b"\n", plan)

    def _skip(self, line: int, reason: str) -> None:
        self.skips.add(self.path, line, reason)

    def _check_line(self, raw: bytes, plan: _Plan) -> str | None:
        """Why a line is bad, or None. Lenient where pyarrow decides (numbers)."""
        text, why = line_text(raw)
        if why is not None:
            return why
        parts = text.split(self.header.separator)
        if len(parts) != plan.n_fields:
            return f"wrong field count ({len(parts)} of {plan.n_fields})"
        unset = self.header.unset_field
        for canon, i in plan.index.items():
            v = parts[i]
            if v == unset:
                continue
            kind = plan.kinds[canon]
            try:
                if kind == "float":
                    float(v)
                elif kind == "int":
                    if not _INT_MIN <= int(v) <= _INT_MAX:
                        return f"{canon} out of range"
                elif kind == "bool":
                    if v not in ("T", "F"):
                        return f"bad bool in {canon}"
                elif "\\" in v:
                    unescape(v)
            except ValueError:
                what = "escape" if kind == "str" else kind
                return f"bad {what} in {canon}"
        return None

    # -- arrow -> canonical ----------------------------------------------------------------
    def _to_frame(
        self, table: pa.Table | None, lines: np.ndarray, plan: _Plan, run: bytes
    ) -> pd.DataFrame | None:
        if table is None or table.num_rows == 0:
            return None
        h = self.header
        check_empty = h.empty_field.encode() in run
        check_escape = b"\\" in run
        cols: dict[str, Any] = {}
        bad = None
        for name, canon in plan.read.items():
            if not canon:
                continue
            arr = table.column(name)
            if plan.kinds[canon] == "str":
                if check_empty:
                    arr = pc.if_else(pc.equal(arr, h.empty_field), "", arr)
                if check_escape:
                    arr, bad_rows = _decode_escapes(arr)
                    if bad_rows is not None:
                        bad = bad_rows if bad is None else (bad | bad_rows)
            cols[canon] = arr
        if bad is not None and bad.any():
            for line in lines[bad].tolist():
                self.skips.add(self.path, int(line), "bad escape")
            keep = pa.array(~bad)
            cols = {c: pc.filter(a, keep) for c, a in cols.items()}
            lines = lines[~bad]
            if not len(lines):
                return None
        return arrow_to_canonical(cols, lines, self.path)


def _read_csv(data: bytes, plan: _Plan) -> pa.Table:
    opts = plan.read_opts
    if len(data) > 1 << 21:  # two even blocks: one per core of a 2-core machine
        opts = pacsv.ReadOptions(
            column_names=plan.names, use_threads=True, block_size=len(data) // 2 + 1024
        )
    return pacsv.read_csv(pa.py_buffer(data), opts, plan.parse_opts, plan.convert_opts)


_ARROW_COLUMN = re.compile(r"column #(\d+)")
_ARROW_TYPE = re.compile(r"conversion error to (\w+)")


def _arrow_reason(exc: BaseException, plan: _Plan) -> str:
    """A short, value-free reason from a pyarrow error (reasons are counted by text)."""
    msg = str(exc)
    if "Expected" in msg and "columns" in msg:
        return f"wrong field count (expected {plan.n_fields})"
    col, typ = _ARROW_COLUMN.search(msg), _ARROW_TYPE.search(msg)
    if typ:
        idx = int(col.group(1)) if col else -1
        canon = plan.read.get(plan.names[idx], "") if 0 <= idx < len(plan.names) else ""
        if canon:
            return f"bad {plan.kinds[canon]} in {canon}"
        return f"bad {typ.group(1)} value"
    if "UTF8" in msg or "UTF-8" in msg:
        return "not UTF-8"
    return "malformed line"


def _structurally_clean(run: bytes) -> bool:
    """False when the fast parse could accept what the careful path rejects.

    pyarrow splits lines on a lone ``\\r`` too, and checks UTF-8 only in the columns it
    converts; such runs take the careful path.
    """
    if b"\r" in run and run.count(b"\r") != run.count(b"\r\n"):
        return False
    if not run.isascii():
        try:
            run.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _decode_escapes(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray | None]:
    """Decode ``\\xNN`` in the values that have a backslash (rare: done in Python)."""
    has = pc.match_substring(arr, "\\")
    if not pc.any(has).as_py():
        return arr, None
    mask = has.to_numpy(zero_copy_only=False)
    mask = np.where(pd.isna(mask), False, mask).astype(bool)
    values = arr.to_pylist()
    bad = np.zeros(len(values), dtype=bool)
    for i in np.flatnonzero(mask).tolist():
        try:
            values[i] = unescape(values[i])
        except ValueError:
            bad[i] = True
            values[i] = None
    return pa.chunked_array([pa.array(values, type=pa.string())]), bad
