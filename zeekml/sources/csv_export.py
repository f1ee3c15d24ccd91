"""CSV flow exports -> canonical flow batches: Zeek-field CSV and CICFlowMeter CSV.

Both are read by header *name*, never by position, with the same machinery
(:class:`CsvParser`): blocks of complete lines are parsed by one ``pyarrow.csv`` call
(every column read as text), then validated and converted column by column with
pyarrow/numpy. When the fast parse fails (wrong field count, bad UTF-8, a stray
``\\r``), the block is re-read line by line: bad lines are recorded in the
:class:`~zeekml.sources.skips.SkipLog` with path, line and reason and every good line
is kept. Values that do not parse (a port ``80x``, a time ``yesterday``) reject their
row the same way. A repeated header line (``cat a.csv b.csv``) re-reads the header.
Quoted fields are supported; a quoted field containing a newline is not (it shows up
as two lines with the wrong field count, and both are skipped).

Zeek-field CSV (``zeek_csv``)
    A header of Zeek conn.log field names (``ts,uid,id.orig_h,...``; ``id_orig_h`` and
    bare ``orig_h`` are accepted), as many teams export Zeek logs and as the IoT-23
    copies in ``../shared/data/iot23-csv`` are. Empty field or ``-``: unset (missing);
    ``(empty)``: the empty string; ``\\xNN``: Zeek escapes, decoded. ``ts`` is epoch
    seconds or ISO 8601 (UTC unless an offset is given). Bools ``T/F``, ``true/false``,
    ``1/0``. ``label``; ``detailed-label``/``detailedlabel``/``detailed_label``
    (IoT-23 writes ``-`` for benign rows: missing, as in the Zeek original).
    ``tunnel_parents`` and unknown columns are ignored. Rows without a ``uid`` get a
    synthesized one (prefix ``E``, see :func:`synth_uids`).
    :func:`format_csv_rows` writes this format (what ``zeekml convert --to csv`` emits).

CICFlowMeter CSV (``cicflowmeter_csv``), as in the improved CICIDS2017 (CNS2022)
    Header names are matched case-insensitively with spaces trimmed, so the 2017
    spellings (``Source IP``, ``Total Backward Packets``, ``Total Length of Fwd
    Packets``) work too. Mapping to the canonical table:

    ==================  ============================================================
    ts                  ``Timestamp`` (ISO ``2017-07-07 13:39:36.267908``; the
                        improved CSVs are in UTC). Day-first ``7/7/2017 13:39[:36]``
                        of the 2017 originals is accepted and also taken as written
                        (those were local time, UTC-3, minute resolution).
    uid                 synthesized from ``Flow ID`` + the row ``id`` (or line), prefix ``M``
    orig_h/p, resp_h/p  ``Src IP``/``Src Port``, ``Dst IP``/``Dst Port``; for ICMP
                        (protocol 1/58) orig_p/resp_p are ``ICMP Type``/``ICMP Code``
                        when present (Zeek's convention)
    proto               ``Protocol`` 6 tcp, 17 udp, 1 and 58 icmp, else ``unknown_transport``
    duration            ``Flow Duration`` (microseconds) / 1e6; missing for a
                        one-packet flow of duration 0 and for negative values
    orig_pkts/resp_pkts ``Total Fwd Packet(s)`` / ``Total Bwd packets`` (CICFlowMeter
                        is bidirectional, so 0 is a real 0)
    orig/resp_bytes     ``Total Length of Fwd/Bwd Packet(s)``: payload bytes
    orig/resp_ip_bytes  payload + ``Fwd/Bwd Header Length`` (TCP/UDP headers) + 20
                        bytes of IPv4 header per packet (40 for IPv6): an
                        approximation (IP options are not counted); missing when a
                        header length is negative (a CICFlowMeter bug)
    history (TCP)       approximated from flag counts, letters in Zeek's order:
                        ``S`` SYN >= 1; ``h`` SYN >= 2 with backward packets (SYN-ACK);
                        ``A`` ACK >= 1 and >= 2 forward packets; ``D``/``d`` forward/
                        backward payload > 0; ``F`` FIN >= 1; ``f`` FIN >= 2;
                        ``R``/``r`` ``Fwd``/``Bwd RST Flags`` > 0 (``RST Flag Count``
                        gives ``R`` when the split is absent). UDP: ``D``/``d`` from
                        payload. Other protocols, and no letter at all: missing.
    conn_state (TCP)    no SYN: ``OTH``; SYN, nothing back: ``RSTOS0`` (with RST),
                        ``SH`` (with FIN), else ``S0``; SYN answered but no SYN-ACK:
                        ``REJ`` (backward RST), else ``OTH``; handshake (SYN >= 2):
                        ``RSTO``/``RSTR`` (forward/backward RST), ``SF`` (FIN >= 2),
                        ``S2`` (one FIN), ``S1``. UDP: ``SF`` both ways, ``S0`` one
                        way. Others ``OTH``.
    label               ``Benign`` for ``BENIGN``, else ``Malicious``
    detailed_label      the original ``Label`` (``DoS Hulk``, ``Botnet``...)
    service, local_*,   missing (CICFlowMeter does not record them)
    missed_bytes
    ==================  ============================================================
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from zeekml.errors import FormatError, StateError
from zeekml.records import schema
from zeekml.sources.lines import LineParser, line_spans
from zeekml.sources.sift import read_fast, sift

log = logging.getLogger(__name__)

_INT_RE = r"^[+-]?[0-9]{1,18}$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_ADDR_RE = r"^[0-9A-Fa-f:.]{2,45}(%[0-9A-Za-z_.-]{1,32})?$"
_MAX_HEADER_FIELDS = 4096

# --------------------------------------------------------------------------- values


def column_text(arr: pa.Array | pa.ChunkedArray, trim: bool = True) -> pa.Array:
    """One string column as a contiguous array, whitespace-trimmed if asked."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return pc.utf8_trim_whitespace(arr) if trim else arr


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def present_mask(text: pa.Array, unset: Sequence[str] = ("",)) -> np.ndarray:
    """True where a text value is set (not null, not one of the ``unset`` tokens)."""
    absent = pc.is_in(text, value_set=pa.array(list(unset), pa.string()))
    return ~_mask(pc.or_(absent, pc.is_null(text)))


def _cast(text: pa.Array, present: np.ndarray, typ: pa.DataType, fill: str) -> pa.Array | None:
    """Cast the set values of a text column in one C call; None if any does not parse."""
    src = text if present.all() else pc.if_else(pa.array(present), text, fill)
    try:
        return pc.cast(src, typ)
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
        ok = _mask(pc.match_substring_regex(text, _INT_RE)) & present
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
        ok = _mask(pc.match_substring_regex(text, _FLOAT_RE)) & present
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

    def report(self, skips: Any, path: str, lines: np.ndarray) -> np.ndarray:
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


# --------------------------------------------------------------------------- uids

_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)
_K1, _K2 = "zeekml-uid-key-1", "zeekml-uid-key-2"
_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the output (uint64, wraps)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _M1
        x = x ^ (x >> np.uint64(27))
        x = x * _M2
        return x ^ (x >> np.uint64(31))


_G1, _G2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93)


def _fold_numeric(cols: list[np.ndarray], s1: np.uint64, s2: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes per row of numeric columns: each column's bits (floats by
    their IEEE bits, ints as int64) folded in order (xor, multiply by an odd constant,
    xor-shift), then splitmix64's finalizer."""
    n = len(cols[0])
    h1 = np.full(n, s1, dtype=np.uint64)
    h2 = np.full(n, s2, dtype=np.uint64)
    shift = np.uint64(29)
    with np.errstate(over="ignore"):
        for col in cols:
            if col.dtype.kind == "f":
                bits = np.ascontiguousarray(col, dtype=np.float64).view(np.uint64)
            else:
                bits = col.astype(np.int64).view(np.uint64)
            h1 = (h1 ^ bits) * _G1
            h1 ^= h1 >> shift
            h2 = (h2 ^ bits) * _G2
            h2 ^= h2 >> shift
    return _mix(h1), _mix(h2)


def _base62(values: np.ndarray, width: int) -> np.ndarray:
    out = np.empty((len(values), width), dtype=np.uint8)
    v = values.copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = _ALPHABET[(v % np.uint64(62)).astype(np.intp)]
        v //= np.uint64(62)
    return out


def synth_uids(prefix: str, source: str, keys: dict[str, Any]) -> pd.Series:
    """Deterministic Zeek-style uids for sources that have none.

    ``prefix`` (one ASCII letter) + 17 base62 characters = 96 bits, like Zeek's ``C...``
    uids. The bits are a keyed SipHash (pandas' ``hash_pandas_object``, fixed keys) of
    the ``keys`` columns (e.g. record index, 5-tuple, start time), salted with the
    *base name* of ``source`` and mixed with splitmix64. The same file read twice, or
    from another directory, gives the same uids, so notices can reference flows.
    When every key is a numeric numpy array, the columns are folded with splitmix64
    alone (:func:`_fold_numeric`, several times faster than SipHash over a DataFrame).
    """
    name = os.path.basename(source).encode("utf-8", "surrogateescape")
    salt = hashlib.blake2b(name, digest_size=16).digest()
    s1 = np.uint64(int.from_bytes(salt[:8], "little"))
    s2 = np.uint64(int.from_bytes(salt[8:], "little"))
    if keys and all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in keys.values()):
        n = len(next(iter(keys.values())))
        h1, h2 = _fold_numeric(list(keys.values()), s1, s2)
    else:
        frame = pd.DataFrame({k: (v if isinstance(v, pd.Series) else pd.Series(v))
                              for k, v in keys.items()}).reset_index(drop=True)
        n = len(frame)
        h1 = _mix(pd.util.hash_pandas_object(frame, index=False, hash_key=_K1).to_numpy(np.uint64) ^ s1)
        h2 = _mix(pd.util.hash_pandas_object(frame, index=False, hash_key=_K2).to_numpy(np.uint64) ^ s2)
    digits = np.concatenate(
        [
            np.full((n, 1), ord(prefix[0]), dtype=np.uint8),
            _base62(h1, 11),
            _base62(h2 & np.uint64(0xFFFFFFFF), 6),
        ],
        axis=1,
    )
    # 18 ASCII bytes per uid: one Arrow string array over the matrix, no per-row objects
    offsets = pa.py_buffer(np.arange(0, 18 * (n + 1), 18, dtype=np.int32))
    text = pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(np.ascontiguousarray(digits))])
    return pd.Series(text.to_pandas(types_mapper={pa.string(): _STR_DTYPE}.get))


# --------------------------------------------------------------------------- parser base


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

    def __init__(self, path: str, skips: Any = None, *, batch_rows: int = 65536) -> None:
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
                pacsv.ReadOptions(column_names=names, use_threads=True, block_size=1 << 22),
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
        starts, ends = line_spans(block)
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
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    text = text.removesuffix("\r")
    if "\r" in text:
        return "stray carriage return in line"
    try:
        fields = next(csv.reader([text], delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        return f"bad CSV line ({exc})"
    if len(fields) != n_fields:
        return f"wrong field count ({len(fields)} of {n_fields})"
    return None


# --------------------------------------------------------------------------- Zeek-field CSV

_UNSET = ("", "-")
_BOOL_TRUE = ("T", "t", "true", "True", "TRUE", "1")
_BOOL_FALSE = ("F", "f", "false", "False", "FALSE", "0")
_CSV_LABEL_NAMES = {"label": "label", "detailed_label": "detailed-label"}


def _zeek_role(name: str) -> str | None:
    from zeekml.sources.zeek_tsv import canonical_name

    name = name.strip()
    return canonical_name(name) or (name if name in ("orig_h", "orig_p", "resp_h", "resp_p") else None)


class ZeekCsvParser(CsvParser):
    """CSV with Zeek conn.log field names (IoT-23 CSV copies, team exports)."""

    format = "zeek_csv"

    def _roles(self, fields: list[str]) -> dict[int, str]:
        roles: dict[int, str] = {}
        for i, f in enumerate(fields):
            role = _zeek_role(f)
            if role is not None and role not in roles.values():
                roles[i] = role
        if "ts" not in roles.values():
            raise FormatError(f"{self.path}: Zeek-field CSV header has no 'ts' column")
        return roles

    def _is_header(self, fields: list[str]) -> bool:
        roles = {_zeek_role(f) for f in fields}
        return "ts" in roles and len(roles - {None}) >= 2

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        n = len(lines)
        rej = Rejects(n)
        data: dict[str, Any] = {}
        for canon, raw in cols.items():
            dtype = schema.COLUMNS.get(canon) or schema.LABEL_COLUMNS[canon]
            text = column_text(raw, trim=dtype != schema.STR)
            if canon == "ts":
                values, bad = parse_times(text, _UNSET)
                rej.add(bad | np.isnan(values), lambda i, t=text: f"bad ts {value_at(t)(i)}")
                data[canon] = values
            elif dtype == "float64":
                values, _, bad = parse_floats(text, _UNSET)
                rej.add(bad, lambda i, t=text, c=canon: f"bad {c} {value_at(t)(i)}")
                data[canon] = values
            elif dtype in ("Int32", "Int64"):
                hi = 65535 if dtype == "Int32" else 2**63 - 1
                values, present, bad = parse_ints(text, 0, hi, _UNSET)
                rej.add(bad, lambda i, t=text, c=canon: f"bad {c} {value_at(t)(i)}")
                data[canon] = nullable_int(values, ~present, dtype)
            elif dtype == "boolean":
                is_t = _mask(pc.is_in(text, value_set=pa.array(_BOOL_TRUE)))
                is_f = _mask(pc.is_in(text, value_set=pa.array(_BOOL_FALSE)))
                present = present_mask(text, _UNSET)
                rej.add(present & ~(is_t | is_f), lambda i, t=text, c=canon: f"bad {c} {value_at(t)(i)}")
                data[canon] = pd.arrays.BooleanArray(is_t, ~(is_t | is_f))
            else:
                data[canon], bad = _zeek_strings(text)
                rej.add(bad, f"bad escape in {canon}")
        keep = rej.report(self.skips, self.path, lines)
        df = pd.DataFrame(data)
        df["source_line"] = lines
        if not keep.all():
            df = df[keep].reset_index(drop=True)
        if not len(df):
            return None
        if "uid" not in df.columns or df["uid"].isna().any():
            made = synth_uids("E", self.path, _uid_keys(df))
            df["uid"] = made if "uid" not in df.columns else df["uid"].fillna(made)
        return schema.conform(df, source_file=self.path)


def _zeek_strings(text: pa.Array) -> tuple[pd.Series, np.ndarray]:
    """Zeek-CSV string values: unset -> missing, ``(empty)`` -> "", ``\\xNN`` decoded."""
    from zeekml.sources.zeek_tsv import unescape

    missing = ~present_mask(text, _UNSET)
    arr = pc.if_else(pc.equal(text, "(empty)"), "", text)
    bad = np.zeros(len(text), dtype=bool)
    has = _mask(pc.match_substring(arr, "\\"))
    if has.any():
        values = arr.to_pylist()
        for i in np.flatnonzero(has).tolist():
            try:
                values[i] = unescape(values[i])
            except ValueError:
                bad[i] = True
        arr = pa.array(values, pa.string())
    s = pd.Series(arr.to_pandas(), dtype=schema.STR)
    s[missing] = np.nan
    return s, bad


def _uid_keys(df: pd.DataFrame) -> dict[str, Any]:
    keys: dict[str, Any] = {"line": df["source_line"].to_numpy()}
    for c in ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto"):
        if c in df.columns:
            keys[c] = df[c]
    return keys


# --------------------------------------------------------------------------- CICFlowMeter

#: normalized CICFlowMeter header name -> role
_CIC_ROLES: dict[str, str] = {
    "id": "row_id",
    "flow id": "flow_id",
    "src ip": "src", "source ip": "src",
    "src port": "sport", "source port": "sport",
    "dst ip": "dst", "destination ip": "dst",
    "dst port": "dport", "destination port": "dport",
    "protocol": "proto",
    "timestamp": "ts",
    "flow duration": "duration",
    "total fwd packet": "fwd_pkts", "total fwd packets": "fwd_pkts",
    "total bwd packets": "bwd_pkts", "total backward packets": "bwd_pkts",
    "total length of fwd packet": "fwd_bytes", "total length of fwd packets": "fwd_bytes",
    "total length of bwd packet": "bwd_bytes", "total length of bwd packets": "bwd_bytes",
    "fwd header length": "fwd_hdr", "bwd header length": "bwd_hdr",
    "fin flag count": "fin", "syn flag count": "syn", "rst flag count": "rst",
    "ack flag count": "ack", "fwd rst flags": "fwd_rst", "bwd rst flags": "bwd_rst",
    "icmp type": "icmp_type", "icmp code": "icmp_code",
    "label": "label",
}  # fmt: skip
_CIC_REQUIRED = ("src", "dst", "ts", "proto")
_COUNTS = ("fwd_pkts", "bwd_pkts", "fwd_bytes", "bwd_bytes", "fin", "syn", "rst", "ack", "fwd_rst", "bwd_rst")


def _norm_cic(name: str) -> str:
    return " ".join(name.strip().lower().split())


class CicFlowMeterParser(CsvParser):
    """CICFlowMeter CSV (CICIDS2017 improved and original spellings)."""

    format = "cicflowmeter_csv"

    def _roles(self, fields: list[str]) -> dict[int, str]:
        roles: dict[int, str] = {}
        for i, f in enumerate(fields):
            role = _CIC_ROLES.get(_norm_cic(f))
            if role is not None and role not in roles.values():
                roles[i] = role
        missing = [r for r in _CIC_REQUIRED if r not in roles.values()]
        if missing:
            raise FormatError(
                f"{self.path}: CICFlowMeter header lacks {', '.join(missing)} "
                "(Src/Dst IP, Timestamp and Protocol are needed)"
            )
        return roles

    def _is_header(self, fields: list[str]) -> bool:
        roles = {_CIC_ROLES.get(_norm_cic(f)) for f in fields}
        return "src" in roles and "dst" in roles

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        n = len(lines)
        rej = Rejects(n)
        t = {role: column_text(a) for role, a in cols.items()}
        ts, bad = parse_times(t["ts"])
        rej.add(bad | np.isnan(ts), lambda i: f"bad Timestamp {value_at(t['ts'])(i)}")
        for role in ("src", "dst"):
            ok = _mask(pc.match_substring_regex(t[role], _ADDR_RE))
            rej.add(~ok, lambda i, r=role: f"bad address {value_at(t[r])(i)}")
        ints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for role, lo, hi in (("sport", 0, 65535), ("dport", 0, 65535), ("proto", 0, 255),
                             ("icmp_type", -1, 255), ("icmp_code", -1, 255)):  # fmt: skip
            if role in t:
                v, present, bad = parse_ints(t[role], lo, hi)
                rej.add(bad, lambda i, r=role: f"bad {r} {value_at(t[r])(i)}")
                ints[role] = (v, present)
        for role in _COUNTS + ("fwd_hdr", "bwd_hdr", "duration"):
            if role in t:
                lo = 0 if role in _COUNTS else -(2**62)
                v, present, bad = parse_ints(t[role], lo, 2**62)
                rej.add(bad, lambda i, r=role: f"bad {r} {value_at(t[r])(i)}")
                ints[role] = (v, present)
        keep = rej.report(self.skips, self.path, lines)
        if not keep.any():
            return None

        def col(role: str) -> tuple[np.ndarray, np.ndarray]:
            v, present = ints.get(role, (np.zeros(n, np.int64), np.zeros(n, bool)))
            return v[keep], ~present[keep]

        df = _cic_frame(t, col, ts[keep], keep)
        df["source_line"] = lines[keep]
        ids = t["row_id"].filter(pa.array(keep)).to_pandas() if "row_id" in t else df["source_line"]
        flow = t["flow_id"].filter(pa.array(keep)).to_pandas() if "flow_id" in t else df["orig_h"]
        df["uid"] = synth_uids("M", self.path, {"flow": pd.Series(flow, dtype=object),
                                               "id": pd.Series(ids, dtype=object)})  # fmt: skip
        return schema.conform(df, source_file=self.path)


def _cic_frame(
    t: dict[str, pa.Array],
    col: Callable[[str], tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
    keep: np.ndarray,
) -> pd.DataFrame:
    """The canonical columns of the kept CICFlowMeter rows (see the module docstring)."""
    k = pa.array(keep)
    n = int(keep.sum())
    src = t["src"].filter(k)
    proto, proto_na = col("proto")
    sport, sport_na = col("sport")
    dport, dport_na = col("dport")
    itype, itype_na = col("icmp_type")
    icode, icode_na = col("icmp_code")
    icmp = ((proto == 1) | (proto == 58)) & ~itype_na & (itype >= 0) & ~icode_na & (icode >= 0)
    orig_p = np.where(icmp, itype, sport)
    resp_p = np.where(icmp, icode, dport)
    fp, fp_na = col("fwd_pkts")
    bp, bp_na = col("bwd_pkts")
    fb, fb_na = col("fwd_bytes")
    bb, bb_na = col("bwd_bytes")
    fh, fh_na = col("fwd_hdr")
    bh, bh_na = col("bwd_hdr")
    dur, dur_na = col("duration")
    v6 = _mask(pc.match_substring(src, ":"))
    ip_hdr = np.where(v6, 40, 20)
    duration = np.where(dur_na | (dur < 0) | ((dur == 0) & (fp + bp <= 1)), np.nan, dur / 1e6)
    df = pd.DataFrame(
        {
            "ts": ts,
            "orig_h": pd.Series(src.to_pandas(), dtype=schema.STR),
            "orig_p": nullable_int(orig_p, (sport_na & ~icmp), "Int32"),
            "resp_h": pd.Series(t["dst"].filter(k).to_pandas(), dtype=schema.STR),
            "resp_p": nullable_int(resp_p, (dport_na & ~icmp), "Int32"),
            "proto": proto_names(proto, proto_na),
            "duration": duration,
            "orig_bytes": nullable_int(fb, fb_na),
            "resp_bytes": nullable_int(bb, bb_na),
            "orig_pkts": nullable_int(fp, fp_na),
            "resp_pkts": nullable_int(bp, bp_na),
            "orig_ip_bytes": nullable_int(fb + fh + ip_hdr * fp, fb_na | fh_na | fp_na | (fh < 0)),
            "resp_ip_bytes": nullable_int(bb + bh + ip_hdr * bp, bb_na | bh_na | bp_na | (bh < 0)),
        }
    )
    syn, _ = col("syn")
    fin, _ = col("fin")
    ack, _ = col("ack")
    rst, _ = col("rst")
    frst, frst_na = col("fwd_rst")
    brst, brst_na = col("bwd_rst")
    fwd_r = np.where(frst_na, rst > 0, frst > 0)
    bwd_r = ~brst_na & (brst > 0)
    tcp, udp = proto == 6, proto == 17
    back = bp > 0
    hist = join_letters(
        [
            (tcp & (syn >= 1), "S"), (tcp & (syn >= 2) & back, "h"), (tcp & (ack >= 1) & (fp >= 2), "A"),
            (fb > 0, "D"), (bb > 0, "d"), (tcp & (fin >= 1), "F"), (tcp & (fin >= 2), "f"),
            (tcp & fwd_r, "R"), (tcp & bwd_r, "r"),
        ],
        n,
    )  # fmt: skip
    history = pd.Series(hist.to_pandas(), dtype=schema.STR)
    history[~(tcp | udp) | (history == "").to_numpy()] = np.nan
    hs = (syn >= 2) & back
    state = np.select(
        [
            tcp & (syn == 0),
            tcp & ~back & fwd_r, tcp & ~back & (fin > 0), tcp & ~back,
            tcp & ~hs & bwd_r, tcp & ~hs,
            tcp & fwd_r, tcp & bwd_r, tcp & (fin >= 2), tcp & (fin == 1), tcp,
            udp & back & (fp > 0), udp,
        ],
        ["OTH", "RSTOS0", "SH", "S0", "REJ", "OTH", "RSTO", "RSTR", "SF", "S2", "S1", "SF", "S0"],
        "OTH",
    )  # fmt: skip
    df["history"] = history
    df["conn_state"] = pd.Series(state, dtype=schema.STR)
    if "label" in t:
        original = t["label"].filter(k)
        benign = _mask(pc.equal(pc.utf8_upper(original), "BENIGN"))
        label = np.where(benign, "Benign", "Malicious").astype(object)
        empty = ~present_mask(original)
        label[empty] = None
        df["label"] = pd.Series(label, dtype=schema.STR)
        detail = pd.Series(original.to_pandas(), dtype=schema.STR)
        detail[empty] = np.nan
        df["detailed_label"] = detail
    return df


# --------------------------------------------------------------------------- sniffing


def sniff(head: bytes) -> str | None:
    """``cicflowmeter_csv`` or ``zeek_csv`` from an input's first line, else None."""
    line = next((x for x in head.split(b"\n") if x.strip()), b"")
    fields = split_header(line)
    if len(fields) < 4:
        return None
    cic = {_CIC_ROLES.get(_norm_cic(f)) for f in fields}
    if all(r in cic for r in _CIC_REQUIRED):
        return "cicflowmeter_csv"
    zeek = {_zeek_role(f) for f in fields} - {None}
    if "ts" in zeek and len(zeek) >= 3:
        return "zeek_csv"
    return None


# --------------------------------------------------------------------------- writer


def csv_fields(with_labels: bool) -> tuple[list[str], list[str]]:
    """(header names, Zeek types) of the Zeek-field CSV that :func:`format_csv_rows` writes."""
    names = [schema.ZEEK_NAMES.get(c, c) for c in schema.COLUMNS]
    types = [schema.ZEEK_TYPES[c] for c in schema.COLUMNS]
    if with_labels:
        names += [_CSV_LABEL_NAMES[c] for c in schema.LABEL_COLUMNS]
        types += [schema.ZEEK_TYPES[c] for c in schema.LABEL_COLUMNS]
    return names, types


def format_csv_header(with_labels: bool) -> bytes:
    return (",".join(csv_fields(with_labels)[0]) + "\n").encode()


def format_csv_rows(df: pd.DataFrame, with_labels: bool) -> bytes:
    """Canonical rows as Zeek-field CSV lines: Zeek's value formatting and escaping
    (``(empty)``, ``\\xNN``, 6-decimal times), unset as an empty field, RFC 4180 quoting
    for values with a comma or quote. Reads back through :class:`ZeekCsvParser` unchanged.
    """
    from zeekml.sinks.zeek_ascii import format_rows

    names, types = csv_fields(with_labels)
    view = df.rename(columns={"detailed_label": "detailed-label"})
    tsv = format_rows(view, names, types)
    if not tsv:
        return b""
    if b"," in tsv or b'"' in tsv:
        return _quoted(tsv.split(b"\n")[:-1])
    body = b"\t" + tsv.replace(b"\n", b"\t\n\t")  # every field now has a tab on both sides
    body = body.replace(b"\t-\t", b"\t\t").replace(b"\t-\t", b"\t\t")
    body = body.replace(b"\t\n\t", b"\n")[1:]
    return body.removesuffix(b"\t").replace(b"\t", b",")


def _quoted(lines: list[bytes]) -> bytes:
    """Slow path for rows with a comma or quote in a value: the csv module quotes them."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for line in lines:
        w.writerow(["" if v == "-" else v for v in line.decode("utf-8").split("\t")])
    return buf.getvalue().encode("utf-8")
