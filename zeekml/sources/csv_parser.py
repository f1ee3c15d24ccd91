"""The incremental header-by-name CSV parser the CSV-family readers share.

Subclasses (Zeek-field CSV, CICFlowMeter, nfdump CSV, Argus binetflow) say which
header fields they read and how text columns become canonical columns; the machinery
is here: blocks of complete lines are parsed by one ``pyarrow.csv`` call (every column
read as text unless a subclass types it), and when that fast parse fails (wrong field
count, bad UTF-8, a stray ``\\r``) the block goes through
:func:`zeekml.sources.sift.sift`: bad lines are recorded in the
:class:`~zeekml.sources.skips.SkipLog` with path, line and reason and every good line
is kept. A repeated header line (``cat a.csv b.csv``) re-reads the header. Quoted
fields are supported; a quoted field containing a newline is not (it shows up as two
lines with the wrong field count, and both are skipped).
"""

from __future__ import annotations

import csv
import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from zeekml import defaults
from zeekml.errors import FormatError, StateError
from zeekml.sources.lines import LineParser
from zeekml.sources.sift import line_text, read_fast, sift

log = logging.getLogger(__name__)

_MAX_HEADER_FIELDS = 4096


def split_header(raw: bytes, delimiter: str = ",") -> list[str]:
    """The fields of one CSV line (quotes honoured), BOM and ``\\r`` removed."""
    text = raw.decode("utf-8", errors="replace").removesuffix("\r").lstrip("\ufeff")
    try:
        return next(csv.reader([text], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return [text]


def _unique_names(fields: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for i, f in enumerate(fields):
        name = f if f not in seen else f"{f}\x00{i}"
        seen.add(name)
        out.append(name)
    return out


def _structurally_clean(run: bytes) -> bool:
    return b"\r" not in run or run.count(b"\r") == run.count(b"\r\n")


class CsvParser(LineParser):
    """Incremental header-by-name CSV parser (the FlowParser interface).

    Subclasses define :meth:`_roles` (which header fields they read, under which
    role name), :meth:`_is_header`, and :meth:`_frame` (text columns by role ->
    canonical DataFrame); optionally :meth:`_default_fields` (layout assumed when data
    comes without a header) and :meth:`_special` (non-data lines such as a trailer).
    :attr:`delimiter` is the field separator (a subclass may change it per header,
    through :meth:`_header_fields`).
    """

    format = "csv"
    delimiter = ","

    def __init__(self, path: str, skips: Any = None, *, batch_rows: int = defaults.BATCH_ROWS) -> None:
        super().__init__(path, skips, batch_rows=batch_rows)
        self.fields: list[str] | None = None
        self._ignore = 0  # following non-blank lines that are not data (a trailer)
        self._plan: tuple[Any, Any, Any, dict[str, str]] | None = None
        self._warned_default = False

    # -- subclass hooks ------------------------------------------------------------------
    def _roles(self, fields: list[str]) -> dict[int, str]:
        raise NotImplementedError

    def _is_header(self, fields: list[str]) -> bool:
        raise NotImplementedError

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        raise NotImplementedError

    def _default_fields(self) -> list[str] | None:
        return None

    def _special(self, text: str) -> int | None:
        """For a non-data line: how many following lines to ignore too; None for data."""
        return None

    def _split_ok(self, line: bytes) -> bool:
        """Whether a batch may end after this data line (False keeps the next one with it)."""
        return True

    def _arrow_type(self, role: str) -> pa.DataType:
        """The type pyarrow parses a role's column as (text unless a subclass says
        otherwise; an unparsable value then sends its block to the careful path)."""
        return pa.string()

    def _header_fields(self, raw: bytes) -> list[str]:
        """The fields of a line that may be a header (split with :attr:`delimiter`)."""
        return split_header(raw, self.delimiter)

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update({"fields": self.fields, "ignore": self._ignore})
        return state

    def _set_state_extra(self, state: dict[str, Any]) -> None:
        fields, ignore = state.get("fields"), state.get("ignore", 0)
        if fields is not None and (
            not isinstance(fields, list)
            or len(fields) > _MAX_HEADER_FIELDS
            or not all(isinstance(f, str) and len(f) < 1024 for f in fields)
        ):
            raise StateError(f"{self.path}: parser state has a bad field list")
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore < 1000:
            raise StateError(f"{self.path}: parser state has a bad 'ignore' count")
        if fields is not None:
            self._roles(fields)  # raises FormatError for an unusable header
        self.fields, self._ignore, self._plan = fields, ignore, None

    # -- header --------------------------------------------------------------------------
    def _set_header(self, fields: list[str], line: int) -> None:
        if len(fields) > _MAX_HEADER_FIELDS:
            raise FormatError(f"{self.path}:{line}: CSV header with {len(fields)} fields")
        self._roles(fields)  # validate first: raises FormatError naming what is missing
        self.fields, self._plan = fields, None

    def _current_plan(self) -> tuple[Any, Any, Any, dict[str, str]]:
        if self._plan is None:
            assert self.fields is not None
            names = _unique_names(self.fields)
            roles = self._roles(self.fields)
            read = {names[i]: role for i, role in roles.items()}
            if not read:
                read = {names[0]: ""}
            self._plan = (
                pacsv.ReadOptions(column_names=names, use_threads=True, block_size=1 << 20),
                pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=False,
                                   ignore_empty_lines=True),
                pacsv.ConvertOptions(
                    column_types={n: self._arrow_type(role) for n, role in read.items()},
                    include_columns=list(read),
                    null_values=[""],  # typed columns only: strings are never null
                    strings_can_be_null=False,
                    check_utf8=True,
                ),
                read,
            )
        return self._plan

    # -- parsing -------------------------------------------------------------------------
    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        out: list[pd.DataFrame] = []
        starts, ends = self._line_spans(block)
        if not len(starts):
            return out
        arr = np.frombuffer(block, dtype=np.uint8)
        firsts = arr[np.minimum(starts, len(arr) - 1)]
        lengths = ends - starts
        blank = (lengths == 0) | ((lengths == 1) & (firsts == 13))
        nonblank = np.flatnonzero(~blank)
        run_start = 0
        if self._ignore and len(nonblank):
            k = min(self._ignore, len(nonblank))
            self._ignore -= k
            run_start = int(nonblank[k - 1]) + 1
        low = firsts | 0x20
        cand = ((low >= 97) & (low <= 122)) | (firsts == 0x22) | (firsts == 0xEF)
        cand &= ~blank
        if self.fields is None and len(nonblank):
            cand[nonblank[nonblank >= run_start][:1]] = True
        for i in np.flatnonzero(cand).tolist():
            if i < run_start:
                continue
            raw = block[int(starts[i]) : int(ends[i])]
            fields = self._header_fields(raw)
            line = first_line + i
            if self._is_header(fields):
                self._emit(block, starts, ends, blank, run_start, i, first_line, out)
                self._set_header(fields, line)
                run_start = i + 1
                continue
            text = raw.decode("utf-8", errors="replace").strip()
            n_ignore = self._special(text)
            if n_ignore is not None:
                self._emit(block, starts, ends, blank, run_start, i, first_line, out)
                after = nonblank[nonblank > i]
                k = min(n_ignore, len(after))
                self._ignore = n_ignore - k
                run_start = int(after[k - 1]) + 1 if k else i + 1
                continue
            if self.fields is None:
                default = self._default_fields()
                if default is None:  # the first line must be the header: say what it lacks
                    self._set_header(fields, line)
                    run_start = i + 1
                    continue
                if not self._warned_default:
                    self._warned_default = True
                    log.warning("%s: no CSV header; assuming %d-column layout", self.path, len(default))
                self.fields, self._plan = default, None
        self._emit(block, starts, ends, blank, run_start, len(starts), first_line, out)
        return out

    def _emit(
        self,
        block: bytes,
        starts: np.ndarray,
        ends: np.ndarray,
        blank: np.ndarray,
        a: int,
        b: int,
        first_line: int,
        out: list[pd.DataFrame],
    ) -> None:
        """Parse the data lines ``a..b-1`` in runs of at most ``batch_rows`` lines."""
        keep = np.flatnonzero(~blank[a:b]) + a
        if not len(keep):
            return
        if self.fields is None:
            for i in keep.tolist():
                self.skips.add(self.path, first_line + i, "data line before any CSV header")
            return
        j = 0
        while j < len(keep):
            end = min(j + self.batch_rows, len(keep))
            while end < len(keep) and not self._split_ok(
                block[int(starts[keep[end - 1]]) : int(ends[keep[end - 1]])]
            ):
                end += 1
            idx = keep[j:end]
            run = block[int(starts[idx[0]]) : int(ends[idx[-1]]) + 1]
            # blank lines inside the run are skipped by pyarrow too
            self._parse_run(run, (idx + first_line).astype(np.int64), out)
            j = end

    def _parse_run(self, run: bytes, lines: np.ndarray, out: list[pd.DataFrame]) -> None:
        read_opts, parse_opts, convert_opts, read = self._current_plan()

        def parse(data: bytes) -> pa.Table:
            return pacsv.read_csv(pa.py_buffer(data), read_opts, parse_opts, convert_opts)

        table = read_fast(lambda: parse(run), len(lines)) if _structurally_clean(run) else None
        if table is None:
            assert self.fields is not None
            n_fields = len(self.fields)
            table, lines = sift(
                [r for r in run.split(b"\n")[:-1] if r not in (b"", b"\r")],
                lines,
                check=lambda raw: _check_line(raw, n_fields, self.delimiter),
                read=lambda good: parse(b"\n".join(good) + b"\n"),
                skip=self._skip,
                reason=lambda exc: f"unparsable CSV line ({str(exc).splitlines()[0][:80]})",
                malformed="malformed CSV line",
            )
        if table is None or table.num_rows == 0:
            return
        cols = {role: table.column(name) for name, role in read.items() if role}
        frame = self._frame(cols, lines)
        if frame is not None and len(frame):
            out.append(frame)

    def _skip(self, line: int, reason: str) -> None:
        self.skips.add(self.path, line, reason)


def _check_line(raw: bytes, n_fields: int, delimiter: str = ",") -> str | None:
    text, why = line_text(raw)
    if why is not None:
        return why
    try:
        fields = next(csv.reader([text], delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        return f"bad CSV line ({exc})"
    if len(fields) != n_fields:
        return f"wrong field count ({len(fields)} of {n_fields})"
    return None
