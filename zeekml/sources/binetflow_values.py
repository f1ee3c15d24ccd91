"""Argus binetflow text columns -> values, vectorized: ports, start times, dictionaries.

Argus writes ports in decimal or hex (``0x01bb``) and ICMP type and code packed in
``Sport``; its start times are ``YYYY/MM/DD hh:mm:ss[.ffffff]`` in the zone it ran in.
These parsers read them over the raw bytes of a whole column (numpy matrices of fixed
width), never a Python loop per row; the binetflow reader (:mod:`zeekml.sources.binetflow`)
calls them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.sources.values import bool_mask, parse_ints, parse_times

_HEX_RE = r"^0[xX][0-9A-Fa-f]{1,4}$"
_NS = 1_000_000_000


def dictionary(text: pa.Array) -> tuple[list[str | None], np.ndarray]:
    """Distinct values and each row's index into them (for low-cardinality columns; a
    column pyarrow already parsed as a dictionary is taken as it is)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    enc = text if pa.types.is_dictionary(text.type) else pc.dictionary_encode(text)
    idx = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), np.int64)
    return enc.dictionary.to_pylist(), idx


def gather(values: list[Any], idx: np.ndarray, dtype: Any = object) -> np.ndarray:
    """``values[idx]`` for every row (``idx`` from :func:`dictionary`)."""
    table = np.empty(len(values), dtype=dtype)
    table[:] = values
    return table[np.maximum(idx, 0)] if len(values) else np.zeros(len(idx), dtype=dtype)


def _fixed_bytes(text: pa.Array, width: int) -> np.ndarray:
    """The first ``width`` bytes of every value as an (n, width) uint8 matrix; each
    value must be at least ``width`` bytes long."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + n + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)
    if n and offsets[-1] - offsets[0] == n * width:  # every value exactly width: a view
        return data[offsets[0] : offsets[-1]].reshape(n, width)
    return np.asarray(data[offsets[:-1, None] + np.arange(width)])


def _offsets(text: pa.Array) -> np.ndarray:
    """The value offsets of a string array (n + 1 of them), without a copy."""
    n = len(text)
    return np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + n + 1]


def value_lengths(text: pa.Array) -> np.ndarray:
    """Byte length of every value (nulls: 0), from the offsets."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    lengths = np.diff(_offsets(text)).astype(np.int64)
    if text.null_count:
        lengths[np.asarray(text.is_null().to_numpy(zero_copy_only=False), bool)] = 0
    return lengths


def bytes_ok(text: pa.Array, allowed: np.ndarray) -> bool:
    """Whether every byte of every value is in ``allowed`` (a 256-entry mask): one pass
    over the data buffer, so a clean column costs almost nothing to validate."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    off = _offsets(text)
    if not len(text):
        return True
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[off[0] : off[-1]]
    return bool(allowed.take(data).all())  # take: twice as fast as allowed[data]


def _charset(chars: str) -> np.ndarray:
    out = np.zeros(256, dtype=bool)
    out[np.frombuffer(chars.encode(), dtype=np.uint8)] = True
    return out


_HEX_VALUE = np.full(256, 0, dtype=np.int64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_VALUE[_c] = _i + 10
_DIGITS = _charset("0123456789")
ADDR_CHARS = _charset("0123456789abcdefABCDEF:.")


def parse_ports(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, present, bad) of a port column: decimal or Argus hex ``0xHHHH``.

    Empty is missing; anything else that is not a port 0..65535 is bad.
    """
    lengths = value_lengths(text)
    present = lengths > 0
    if present.all() and bytes_ok(text, _DIGITS) and lengths.max() <= 5:  # plain decimal
        values = np.asarray(pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        bad = values > 65535
        return np.where(bad, 0, values), present, bad
    values, present, bad = parse_ints(text, 0, 65535)  # pyarrow >= 2x casts 0x.. itself
    if bad.any():
        idx = np.flatnonzero(bad)
        sub = pc.utf8_trim_whitespace(text.take(pa.array(idx)))
        ok = bool_mask(pc.match_substring_regex(sub, _HEX_RE))
        if ok.any():
            digits = pc.utf8_lpad(pc.utf8_slice_codeunits(sub.filter(pa.array(ok)), 2), 4, "0")
            nib = _HEX_VALUE[_fixed_bytes(digits, 4)]
            rows = idx[ok]
            values[rows] = (nib[:, 0] << 12) | (nib[:, 1] << 8) | (nib[:, 2] << 4) | nib[:, 3]
            bad[rows] = False
    return values, present, bad


def packed_icmp(text: pa.Array, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` hold a port written with exactly four hex digits (``0x0303``):
    Argus' packed ICMP type and code."""
    sub = text.take(pa.array(rows))
    return np.asarray(bool_mask(pc.starts_with(sub, "0x", ignore_case=True)) & (value_lengths(sub) == 6))


def _civil_days(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorized)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146097 + doe - 719468)


_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


#: years accepted in a StartTime: relative times of Argus west of UTC print as
#: 1969/12/31; anything far outside is no capture's time (and beyond pandas' range)
_FIRST_YEAR, _LAST_YEAR = 1900, 2199
_FIRST_SECOND = -2208988800.0  # 1900-01-01 UTC
_END_SECOND = 7258118400.0  # 2200-01-01 UTC
_SEP_COLS = np.array([4, 7, 10, 13, 16])
_SEP_VALUES = np.array([ord("/"), ord("/"), ord(" "), ord(":"), ord(":")], dtype=np.uint8)


_DIGIT_COLS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]


def _argus_block(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(epoch ns as if UTC, ok) of ``YYYY/MM/DD hh:mm:ss[.f...]`` rows of one width
    (``raw`` is their bytes, one row each).

    Two digits at a time in uint8 (a valid pair is at most 99), and the calendar
    (leap years, month lengths, days since the epoch) once per run of rows with the
    same date: Argus writes rows in time order, so a block holds a few dates.
    """
    n, width = raw.shape
    d = raw - np.uint8(48)  # digit values; any other byte wraps to > 9
    ok = (d[:, _DIGIT_COLS + list(range(20, width))] <= 9).all(axis=1)
    ok &= (raw[:, _SEP_COLS] == _SEP_VALUES).all(axis=1)
    if width > 19:
        ok &= raw[:, 19] == ord(".")

    def pair(i: int) -> np.ndarray:  # garbage (not wrong) where a byte is no digit: not ok
        return np.asarray(d[:, i] * np.uint8(10) + d[:, i + 1])

    hour, minute, sec = pair(11), pair(14), pair(17)
    ok &= (hour < 24) & (minute < 60) & (sec < 60)
    seconds = hour.astype(np.int64) * 3600 + minute.astype(np.int64) * 60 + sec
    year = pair(0).astype(np.int64) * 100 + pair(2)
    month, day = pair(5), pair(8)
    key = (year << 16) | (month.astype(np.int64) << 8) | day  # injective: month, day < 256
    change = np.empty(n, dtype=bool)
    change[:1] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    first = np.flatnonzero(change)
    run = np.cumsum(change) - 1  # each row's run of equal dates
    y, m, dd = year[first], month[first].astype(np.int64), day[first].astype(np.int64)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    mdays = _MONTH_DAYS[np.clip(m, 0, 12)] - ((m == 2) & ~leap)
    date_ok = (m >= 1) & (m <= 12) & (dd >= 1) & (dd <= mdays)
    date_ok &= (y >= _FIRST_YEAR) & (y <= _LAST_YEAR)
    ok &= date_ok[run]
    ns = (_civil_days(y, np.clip(m, 1, 12), dd)[run] * 86400 + seconds) * _NS
    if width > 20:  # nanosecond digits (more are truncated)
        last = min(width, 29)
        frac = np.zeros(n, dtype=np.int64)
        c = 20
        while c < last:
            if c + 1 < last:
                frac = frac * 100 + pair(c)
                c += 2
            else:
                frac = frac * 10 + d[:, c]
                c += 1
        ns += frac * 10 ** (29 - last)
    return np.where(ok, ns, 0), ok


def parse_start_times(text: pa.Array, zone: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, bad) of ``StartTime`` values; see binetflow's docstring (``ts``).

    The Argus layout is parsed from the bytes with numpy (no per-row Python, no string
    copies); other spellings go through :func:`~zeekml.sources.values.parse_times`.
    Wall-clock times are shifted from ``zone`` (None: UTC) to UTC; epoch numbers are not.
    """
    n = len(text)
    ns = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    lengths = value_lengths(text)
    wall = np.zeros(n, dtype=bool)  # a wall-clock time (shifted by --tz)
    lo, hi = (int(lengths.min()), int(lengths.max())) if n else (0, 0)
    widths = [lo] if lo == hi else np.unique(lengths).tolist()
    for width in widths:
        if width != 19 and not 21 <= width <= 35:
            continue
        if len(widths) == 1:  # the usual case: every StartTime has the same width
            rows, part = np.arange(n), text
        else:
            rows = np.flatnonzero(lengths == width)
            part = text.take(pa.array(rows))
        got, ok = _argus_block(_fixed_bytes(part, width))
        ns[rows[ok]] = got[ok]
        done[rows[ok]] = True
    seconds = ns // _NS + (ns % _NS) / 1e9
    wall |= done
    bad = np.zeros(n, dtype=bool)
    if not done.all():
        rest = np.flatnonzero(~done)
        sub = text.take(pa.array(rest))
        iso = pc.replace_substring_regex(sub, r"^([0-9]{4})/([0-9]{2})/([0-9]{2})", r"\1-\2-\3")
        values, rest_bad = parse_times(iso)
        numeric = bool_mask(pc.match_substring_regex(sub, r"^\s*[+-]?[0-9.]+([eE][+-]?[0-9]+)?\s*$"))
        in_years = (values >= _FIRST_SECOND) & (values < _END_SECOND)  # NaN: False
        seconds[rest] = values
        bad[rest] = rest_bad | np.isnan(values) | (~numeric & ~in_years)
        wall[rest] = ~numeric & ~bad[rest]
        done[rest] = ~bad[rest]
    if zone is not None and zone != "UTC" and wall.any():
        seconds[wall] = _from_zone(seconds[wall], zone)
    seconds[~done] = np.nan
    return seconds, bad | ~done


def _from_zone(local: np.ndarray, zone: str) -> np.ndarray:
    """Wall-clock seconds in ``zone`` -> epoch seconds (UTC), vectorized by pandas."""
    whole = np.floor(local)
    idx = pd.DatetimeIndex(pd.to_datetime(whole.astype(np.int64), unit="s"))
    utc = idx.tz_localize(zone, ambiguous=np.ones(len(idx), dtype=bool),
                          nonexistent="shift_forward").tz_convert("UTC")
    shift = (utc.tz_localize(None).as_unit("ns").asi8 // _NS) - whole.astype(np.int64)
    return np.asarray(local + shift)
