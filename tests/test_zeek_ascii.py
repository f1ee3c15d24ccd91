"""Zeek ASCII formatting: byte-exact against logs Zeek wrote, escaping of hostile strings."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, need
from zeekml.records.schema import COLUMNS, ZEEK_NAMES, ZEEK_TYPES
from zeekml.sinks import zeek_ascii as z
from zeekml.sources import read_flows, read_table
from zeekml.sources.zeek_tsv import unescape

REAL_LOGS = [
    "zat-sample/conn.log",
    "stratosphere-008-mixed/conn.log.labeled",
    "stratosphere-003-androidtester-rat/conn.log",
    "rita-proxy/conn.log",
    "iot23-34-1-mirai/conn.log.labeled",
]


def _split(path):
    lines = path.read_bytes().decode("utf-8").split("\n")
    fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    types = next(ln for ln in lines if ln.startswith("#types")).split("\t")[1:]
    rows = [ln.split("\t") for ln in lines if ln and not ln.startswith("#")]
    return lines, fields, types, rows


@pytest.mark.parametrize("name", REAL_LOGS)
def test_rows_are_byte_exact_with_zeek(name) -> None:
    """Parse a log Zeek wrote, write its canonical columns back: the same bytes."""
    path = DATA / "zeek" / name
    need(path.is_file(), f"the capture {path}")
    _, fields, _, rows = _split(path)
    df = read_table(path)
    cols = [c for c in COLUMNS if ZEEK_NAMES.get(c, c) in fields]
    names = [ZEEK_NAMES.get(c, c) for c in cols]
    idx = [fields.index(n) for n in names]
    got = z.format_rows(df, names, [ZEEK_TYPES[c] for c in cols]).decode().split("\n")
    assert got[-1] == ""
    expect = ["\t".join(r[i] for i in idx) for r in rows]
    assert len(got) - 1 == len(expect) > 100
    assert got[:-1] == expect


@pytest.mark.parametrize("name", ["zat-sample/conn.log", "zeek-btest-baselines/core.tunnels.teredo/conn.log"])
def test_sets_are_byte_exact_with_zeek(name) -> None:
    """``tunnel_parents`` (a set of uids, some filled, some ``(empty)``/``-``) round-trips."""
    path = DATA / "zeek" / name
    need(path.is_file(), f"the capture {path}")
    _, fields, types, rows = _split(path)
    i = fields.index("tunnel_parents")
    raw = [r[i] for r in rows]
    cells = [None if v == "-" else [] if v == "(empty)" else [unescape(e) for e in v.split(",")]
             for v in raw]
    assert z.format_column(pd.Series(cells, dtype=object), types[i]) == raw
    if "teredo" in name:
        assert any("," not in v and v not in ("-", "(empty)") for v in raw)


def test_header_matches_zeek_layout() -> None:
    path = DATA / "zeek" / "zat-sample" / "conn.log"
    need(path.is_file(), f"the capture {path}")
    lines, fields, types, _ = _split(path)
    head = z.format_header("conn", fields, types, open_ts=0).decode().split("\n")
    assert head[:5] == lines[:5]  # separator .. path
    assert re.fullmatch(r"#open\t\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", head[5])
    assert head[6:8] == lines[6:8]
    assert re.fullmatch(r"#close\t\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d\n", z.format_close().decode())


@pytest.mark.parametrize(
    "value, expect",
    [
        ("", "(empty)"),
        ("-", "\\x2d"),
        ("(empty)", "\\x28empty)"),
        ("--", "--"),
        ("a\tb", "a\\x09b"),
        ("a\nb\r", "a\\x0ab\\x0d"),
        ("back\\slash", "back\\x5cslash"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("caf\u00e9 \u4e2d", "caf\u00e9 \u4e2d"),  # valid UTF-8 passes through
        ("\x85\u2028", "\\xc2\\x85\\xe2\\x80\\xa8"),  # line breaks for Python's splitlines
        (b"raw\xff\xfe", "raw\\xff\\xfe"),  # undecodable bytes
        ("sur\udcff", "sur\\xff"),  # a surrogateescape'd byte
        ("a,b", "a,b"),
    ],
)
def test_escape(value, expect) -> None:
    assert z.escape(value) == expect


def test_escape_in_sets_escapes_the_separator() -> None:
    assert z.escape("a,b", in_set=True) == "a\\x2cb"
    cells = [["a", "b,c"], [], None, ["-", ""], ["x\ty"]]
    got = z.format_column(pd.Series(cells, dtype=object), "vector[string]")
    assert got == ["a,b\\x2cc", "(empty)", "-", "\\x2d,(empty)", "x\\x09y"]


def test_numbers_like_zeek() -> None:
    t = pd.Series([1300475167.096535, 0.0, -0.5, np.nan, 0.9999996, 1e-7])
    assert z.format_column(t, "time") == [
        "1300475167.096535", "0.000000", "-0.500000", "-", "1.000000", "0.000000"]
    d = pd.Series([0.5, 1.0, 0.0, 0.1234567, np.nan, -2.0, 0.25])
    assert z.format_column(d, "double") == ["0.5", "1.0", "0.0", "0.123457", "-", "-2.0", "0.25"]
    assert z.format_column(pd.Series([True, None, False], dtype="boolean"), "bool") == ["T", "-", "F"]
    assert z.format_column(pd.Series([0, None, 65535], dtype="Int32"), "port") == ["0", "-", "65535"]


def test_time_is_printf_6_decimals_on_real_timestamps() -> None:
    flows = read_table(DATA / "zeek" / "iot23-34-1-mirai" / "conn.log.labeled")
    got = z.format_column(flows["ts"], "time")
    assert got == [f"{x:.6f}" for x in flows["ts"]]


# -------------------------------------------------------------- hostile round trip

hostile_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
).filter(lambda s: not re.search(r"\\x[0-9a-fA-F]{2}", s))  # that is an escaped byte


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
@example(b"Sh\xffAD")
@example(b"\\x41\\")
@example(b"\\xff\xff\t")
@example(b"-")
def test_any_bytes_zeek_wrote_are_written_back_the_same(raw) -> None:
    """Whatever bytes a field held, the value Zeek wrote reads in and writes out unchanged
    (``Sh\\xffAD`` used to come out as ``Sh\\x5cxffAD``)."""
    written = _zeek_escaped(raw)
    assert z.escape(raw) == written or not raw
    if raw:
        assert z.escape(unescape(written)) == written


def _zeek_escaped(raw: bytes) -> str:
    """Reference: a field's bytes as Zeek's ASCII writer writes them (every byte that is
    a backslash, a control or not UTF-8 as ``\\xNN``; zeekml also escapes C1, U+2028/9;
    a whole field equal to the unset ``-`` or empty ``(empty)`` mark gets its first
    character escaped, so it cannot read back as that mark)."""
    if raw in (b"-", b"(empty)"):
        return f"\\x{raw[0]:02x}" + raw[1:].decode()
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\" or o < 0x20 or 0x7F <= o <= 0x9F or ch in "\u2028\u2029":
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


@pytest.mark.parametrize(("zeek", "text"), [
    ("Sh\\xffAD", "Sh\\xffAD"),        # a byte that is not UTF-8: kept as its escape
    ("\\x5cxff", "\\x5cxff"),          # the four characters \xff
    ("a\\x5cb", "a\\b"),               # a backslash
    ("\\xc3\\xa9t\\xc3\\xa9", "\u00e9t\u00e9"),  # UTF-8 escaped: decoded
])
def test_escapes_read_and_written_back(zeek, text) -> None:
    assert unescape(zeek) == text
    assert z.escape(text) == (zeek if "\\xc3" not in zeek else text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), hostile_text), min_size=1, max_size=20))
def test_any_string_keeps_the_columns_and_round_trips(values) -> None:
    df = pd.DataFrame({"ts": np.arange(len(values), dtype=float) + 1e9,
                       "uid": pd.Series(values, dtype="str"),
                       "history": pd.Series(values[::-1], dtype="str")})
    fields, types = ["ts", "uid", "history"], ["time", "string", "string"]
    rows = z.format_rows(df, fields, types).decode("utf-8").split("\n")
    assert rows[-1] == "" and len(rows) == len(values) + 1
    for row, v in zip(rows[:-1], values, strict=True):
        cols = row.split("\t")
        assert len(cols) == 3
        if v is None:
            assert cols[1] == "-"
        elif v == "":
            assert cols[1] == "(empty)"
        else:
            assert unescape(cols[1]) == v


def test_written_log_reads_back_with_zat_and_zeekml(tmp_path) -> None:
    need_zat = pytest.importorskip("zat.log_to_dataframe")
    flows = read_table(DATA / "zeek" / "stratosphere-003-androidtester-rat" / "conn.log")
    cols = list(COLUMNS)
    names = [ZEEK_NAMES.get(c, c) for c in cols]
    types = [ZEEK_TYPES[c] for c in cols]
    p = tmp_path / "conn.log"
    p.write_bytes(z.format_log("conn", flows, names, types))
    back = pd.concat(list(read_flows(p)), ignore_index=True)
    pd.testing.assert_frame_equal(back[cols], flows[cols])
    zdf = need_zat.LogToDataFrame().create_dataframe(str(p))
    assert len(zdf) == len(flows)
    assert zdf["orig_bytes"].dtype.name == "UInt64" and zdf["duration"].dtype.kind == "m"
