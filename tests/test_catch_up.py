"""Catch-up: every generation rotated away while zeekml was down is read, once, in order.

Real logs from ../shared/data are cut into generations (each with its own ``#open``, as
Zeek writes them), rotated the ways sensors rotate (bare Zeek rename, logrotate
copytruncate, zeekctl move + gzip into a dated archive), and a :class:`FileTail` that
resumes from a saved cursor must deliver exactly the flows not yet delivered.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DATA, need
from zeekml.errors import ConfigError
from zeekml.runtime.tail_sources import FileTail
from zeekml.sources import SkipLog
from zeekml.sources.rotation import (
    earlier_generations,
    is_live_name,
    parse_duration,
    rotated_name_pattern,
)

TSV = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
JSON = DATA / "zeek" / "zat-sample-json" / "conn.log"


def generations(data: bytes, n: int) -> list[bytes]:
    """The log as ``n`` valid logs with their own ``#open`` (rows split in order)."""
    lines = data.splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    rows = [ln for ln in lines if not ln.startswith(b"#")]
    out = []
    for i in range(n):
        part = rows[i * len(rows) // n:(i + 1) * len(rows) // n]
        head = [ln if not ln.startswith(b"#open") else b"#open\t2022-06-17-%02d-00-00\n" % i
                for ln in header]
        out.append(b"".join(head + part))
    return out


def uids(data: bytes) -> list[str]:
    return [ln.split(b"\t")[1].decode() for ln in data.splitlines()
            if ln and not ln.startswith(b"#")]


def drain(ft: FileTail) -> list[str]:
    """Everything the source has for us now (catch-up included), as uids."""
    frames: list[pd.DataFrame] = []
    idle = 0
    while idle < 3:
        got = ft.poll(1 << 20)
        frames.extend(got)
        if got or ft.busy:
            idle = 0
        else:
            idle += 1
            time.sleep(0.02)
    return [u for f in frames for u in f["uid"].tolist()]


def tail(path: Path, resume: dict | None = None, **kw) -> FileTail:
    return FileTail(str(path), skips=SkipLog(), poll_interval=0.02, resume=resume,
                    watch=False, **kw)


@pytest.fixture(scope="module")
def tsv() -> bytes:
    need(TSV.is_file(), f"{TSV}")
    return TSV.read_bytes()


def first_run(live: Path, data: bytes, cut: int) -> dict:
    """A tail that read ``data[:cut]`` of the live log, then stopped: its cursor."""
    live.write_bytes(data[:cut])
    ft = tail(live)
    got = drain(ft)
    cursor = ft.cursor()
    ft.close()
    assert got == uids(data[: data.rindex(b"\n", 0, cut) + 1])
    return cursor


def test_two_rotations_while_down_are_both_read(tmp_path: Path, tsv: bytes) -> None:
    """Issue 11, item 1: A (unfinished), B (never seen) rotated away, C live: A's rest,
    all of B, then C, in order, nothing twice."""
    a, b, c = generations(tsv, 3)
    live = tmp_path / "conn.log"
    cut = a.index(b"\n", len(a) // 2) + 1
    cursor = first_run(live, a, cut)
    with open(live, "ab") as fh:
        fh.write(a[cut:])
    live.rename(tmp_path / "conn.A.log")
    live.write_bytes(b)
    live.rename(tmp_path / "conn.B.log")
    live.write_bytes(c)
    ft = tail(live, cursor)
    got = drain(ft)
    assert got == uids(a[cut:]) + uids(b) + uids(c)
    assert ft.caught_up == 2
    again = tail(live, ft.cursor())  # a restart now reads nothing again
    ft.close()
    assert drain(again) == []
    with open(live, "ab") as fh:  # and goes on with the live file
        fh.write(a[len(a) - 300:][a[len(a) - 300:].index(b"\n") + 1:])
    assert len(drain(again)) > 0
    again.close()


def test_zeekctl_archive_is_searched(tmp_path: Path, tsv: bytes) -> None:
    """zeekctl moves the rotated log into logs/YYYY-MM-DD/ gzipped: found with --archive."""
    a, b, c = generations(tsv, 3)
    current, logs = tmp_path / "current", tmp_path / "logs"
    current.mkdir()
    live = current / "conn.log"
    cut = a.index(b"\n", len(a) // 3) + 1
    cursor = first_run(live, a, cut)
    live.write_bytes(a)  # the rest arrived, then two hourly rotations while down
    day = logs / time.strftime("%Y-%m-%d")
    day.mkdir(parents=True)
    for name, data in (("conn.10:00:00-11:00:00.log.gz", a), ("conn.11:00:00-12:00:00.log.gz", b)):
        with gzip.open(day / name, "wb") as fh:
            fh.write(data)
        time.sleep(0.01)  # distinct mtimes: oldest first
    live.unlink()
    live.write_bytes(c)
    without = tail(live, cursor)
    assert drain(without) == uids(c)  # not looked for without --archive
    without.close()
    ft = tail(live, cursor, archive=str(logs))
    assert drain(ft) == uids(a[cut:]) + uids(b) + uids(c)
    ft.close()


def test_copytruncate_while_down(tmp_path: Path, tsv: bytes) -> None:
    a, b = generations(tsv, 2)
    live = tmp_path / "conn.log"
    cut = a.index(b"\n", len(a) // 2) + 1
    cursor = first_run(live, a, cut)
    with open(live, "ab") as fh:
        fh.write(a[cut:])
    shutil.copyfile(live, tmp_path / "conn.log.1")  # logrotate copytruncate
    with open(live, "r+b") as fh:
        fh.truncate(0)
        fh.write(b)
    ft = tail(live, cursor)
    assert drain(ft) == uids(a[cut:]) + uids(b)
    ft.close()


def test_rotated_and_gone_reads_the_new_file_only(tmp_path: Path, tsv: bytes) -> None:
    a, b = generations(tsv, 2)
    live = tmp_path / "conn.log"
    cursor = first_run(live, a, len(a))
    live.unlink()
    live.write_bytes(b)
    ft = tail(live, cursor)
    assert drain(ft) == uids(b)
    ft.close()


def test_same_inode_rewritten_is_a_new_generation(tmp_path: Path, tsv: bytes) -> None:
    need(JSON.is_file(), f"{JSON}")
    a, _ = generations(tsv, 2)
    live = tmp_path / "conn.log"
    cursor = first_run(live, a, len(a))
    other = JSON.read_bytes() * 3
    with open(live, "r+b") as fh:  # same inode, other content, longer than the offset
        fh.truncate(0)
        fh.write(other)
    ft = tail(live, cursor)
    got = drain(ft)
    ft.close()
    assert len(got) == 3 * len(JSON.read_bytes().splitlines())


def test_history_before_the_state_began_is_not_read(tmp_path: Path, tsv: bytes) -> None:
    """Files rotated before zeekml first ran are history nobody asked for; ones older than
    the look-back are not even looked at."""
    old, a, b = generations(tsv, 3)
    live = tmp_path / "conn.log"
    (tmp_path / "conn.2022-06-16-00-00-00.log").write_bytes(old)
    past = time.time() - 3600
    os.utime(tmp_path / "conn.2022-06-16-00-00-00.log", (past, past))
    cursor = first_run(live, a, len(a))
    live.rename(tmp_path / "conn.2022-06-17-00-00-00.log")
    live.write_bytes(b)
    ft = tail(live, cursor)
    assert drain(ft) == uids(b)
    ft.close()
    # a generation rotated long ago but unknown: outside a 10-minute look-back
    ancient = tmp_path / "conn.2022-06-15-00-00-00.log"
    ancient.write_bytes(old)
    os.utime(ancient, (past, past))
    found = earlier_generations(live, {}, since=0.0, lookback=600.0)
    assert ancient not in [p for p, _ in found]


def test_plain_and_gzip_copies_of_one_generation_are_read_once(tmp_path: Path, tsv: bytes) -> None:
    """Mid-archiving (renamed file and its gzip both present): one generation, read once."""
    a, b = generations(tsv, 2)
    live = tmp_path / "conn.log"
    live.write_bytes(b"")
    ft = tail(live)
    drain(ft)
    cursor = ft.cursor()
    ft.close()
    rotated = tmp_path / "conn.2022-06-17-00-00-00.log"
    rotated.write_bytes(a)
    with gzip.open(str(rotated) + ".gz", "wb") as fh:
        fh.write(a)
    live.unlink()
    live.write_bytes(b)
    ft = tail(live, cursor)
    assert drain(ft) == uids(a) + uids(b)
    ft.close()


def test_rotation_names_and_durations() -> None:
    pat = rotated_name_pattern("conn")
    for ok in ("conn.2024-01-01-10-00-00.log", "conn.15:48:23-16:00:00.log.gz",
               "conn.15:48:23-16:00:00-logger-1.log.gz", "conn.log.1", "conn.log.2.gz",
               "conn.log-20240101.gz", "conn.A.log"):
        assert pat.match(ok), ok
    for bad in ("conn.log", "conn.log.labeled", "dns.2024-01-01-10-00-00.log", "connx.A.log",
                ".conn.log.lock", "conn.log.lock"):
        assert not pat.match(bad), bad
    assert is_live_name("/x/conn.log") and not is_live_name("/x/conn.A.log")
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90") == 90
    assert parse_duration("30m") == 1800 and parse_duration("1.5h") == 5400
    for bad in ("", "-1", "0", "7 days", "1y"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
