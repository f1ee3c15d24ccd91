"""The careful path every text reader shares (zeekml.sources.sift), with real pyarrow reads."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from hypothesis import given, settings
from hypothesis import strategies as st

from zeekml.sources.sift import read_fast, sift

NAMES = ["a", "b"]
OPTS = (
    pacsv.ReadOptions(column_names=NAMES),
    pacsv.ParseOptions(delimiter=","),
    pacsv.ConvertOptions(column_types={"a": pa.int64(), "b": pa.string()}, check_utf8=True),
)


class Reader:
    """A two-column CSV reader (int64, string) that counts its pyarrow calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, records: list[bytes]) -> pa.Table:
        self.calls += 1
        return pacsv.read_csv(pa.py_buffer(b"\n".join(records) + b"\n"), *OPTS)


def check(raw: bytes) -> str | None:
    """What Python can see cheaply: UTF-8, a stray CR, the field count (not numbers)."""
    try:
        text = raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError:
        return "not UTF-8"
    if "\r" in text:
        return "stray carriage return"
    if text.count(",") != 1:
        return "wrong field count"
    return None


def run(records: list[bytes]) -> tuple[list[int], list[tuple[int, str]], Reader]:
    skips: list[tuple[int, str]] = []
    reader = Reader()
    lines = np.arange(10, 10 + len(records))
    table, kept = sift(records, lines, check=check, read=reader,
                       skip=lambda line, why: skips.append((line, why)),
                       reason=lambda exc: "bad number")
    if table is not None:
        assert table.num_rows == len(kept)
        assert table.column("a").to_pylist() == [int(records[i - 10].split(b",")[0]) for i in kept]
    return kept.tolist(), skips, reader


def test_bad_records_are_named_and_every_good_one_kept_in_order() -> None:
    records = [b"1,x", b"2,y,z", b"3,\xff", b"x4,w", b"5,v\r", b"6,u\r\r", b"7,t"]
    kept, skips, _ = run(records)
    assert kept == [10, 14, 16]
    # Python's checks first (line order), then what only pyarrow refuses
    assert skips == [(11, "wrong field count"), (12, "not UTF-8"), (15, "stray carriage return"),
                     (13, "bad number")]


def test_nothing_good_gives_no_table() -> None:
    kept, skips, reader = run([b"a,b,c", b"1,\xff"])
    assert kept == [] and [line for line, _ in skips] == [10, 11] and reader.calls == 0
    kept, skips, reader = run([b"x,y"])  # passes the check, refused by pyarrow: re-read alone
    assert kept == [] and skips == [(10, "bad number")] and reader.calls == 2


def test_clean_records_cost_one_read() -> None:
    kept, skips, reader = run([f"{i},v{i}".encode() for i in range(1000)])
    assert kept == list(range(10, 1010)) and skips == [] and reader.calls == 1


def test_a_few_bad_numbers_are_found_by_bisection_not_one_read_per_line() -> None:
    records = [f"{i},v".encode() for i in range(1024)]
    for i in (5, 700):
        records[i] = b"notanumber,v"
    kept, skips, reader = run(records)
    assert [line for line, _ in skips] == [15, 710]
    assert len(kept) == 1022
    assert reader.calls <= 1 + 2 * 2 * math.ceil(math.log2(1024))  # far below 1024


def test_read_fast_needs_exactly_the_rows() -> None:
    data = b"1,a\n2,b\n"
    assert read_fast(lambda: pacsv.read_csv(pa.py_buffer(data), *OPTS), 2) is not None
    assert read_fast(lambda: pacsv.read_csv(pa.py_buffer(data), *OPTS), 3) is None
    assert read_fast(lambda: pacsv.read_csv(pa.py_buffer(b"x,a\n"), *OPTS), 1) is None


RECORD = st.one_of(
    st.integers(-10**6, 10**6).map(lambda i: f"{i},v".encode()),
    st.sampled_from([b"n,v", b"1,2,3", b"1,\xfe", b"1,v\rw", b"", b"1e3,v"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORD, min_size=1, max_size=60))
def test_kept_are_exactly_the_records_that_parse_alone(records: list[bytes]) -> None:
    kept, skips, _ = run(records)
    alone = []
    for i, r in enumerate(records):
        if check(r) is None:
            try:
                ok = Reader()([r.removesuffix(b"\r")]).num_rows == 1
            except (pa.ArrowException, ValueError):
                ok = False
            if ok:
                alone.append(10 + i)
    assert kept == alone
    assert sorted(line for line, _ in skips) == sorted(set(range(10, 10 + len(records))) - set(alone))
