"""Follower on real files: appends, rename and gzip rotation, truncation, deletion, resume.

(Generations rotated away while zeekml was down: tests/test_catch_up.py.)

Every scenario uses bytes of a real conn.log from ../shared/data and checks that the
bytes handed out, per file generation, are exactly the bytes written, in order.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, need
from zeekml.errors import StateError
from zeekml.sources.follow import Chunk, Ended, Follower, Opened, Position

TSV = DATA / "zeek" / "stratosphere-003-androidtester-rat" / "conn.log"
JSON = DATA / "zeek" / "zat-sample-json" / "conn.log"


@pytest.fixture(scope="module")
def tsv() -> bytes:
    need(TSV.is_file(), f"{TSV}")
    return TSV.read_bytes()


@pytest.fixture(scope="module")
def jsn() -> bytes:
    need(JSON.is_file(), f"{JSON}")
    return JSON.read_bytes()


def collect(f: Follower, events: list | None = None, max_bytes: int = 1 << 20) -> list:
    """Read until nothing is left right now."""
    events = [] if events is None else events
    while True:
        got = f.read(max_bytes)
        if not got:
            return events
        events.extend(got)


def by_gen(events: list) -> dict[int, bytes]:
    """Bytes per generation, checking offsets are contiguous from the Opened offset."""
    out: dict[int, bytearray] = {}
    start: dict[int, int] = {}
    for e in events:
        if isinstance(e, Opened):
            assert e.gen not in out
            out[e.gen] = bytearray()
            start[e.gen] = e.offset
        elif isinstance(e, Chunk):
            assert e.offset == start[e.gen] + len(out[e.gen])
            out[e.gen].extend(e.data)
        elif isinstance(e, Ended):
            assert e.offset == start[e.gen] + len(out[e.gen])
    return {g: bytes(b) for g, b in out.items()}


def kinds(events: list) -> list[tuple[str, str]]:
    return [(type(e).__name__, e.reason) for e in events if not isinstance(e, Chunk)]


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def split_points(data: bytes, n: int) -> list[int]:
    """n cut points that fall inside lines (never on a newline boundary)."""
    step = len(data) // (n + 1)
    cuts = []
    for i in range(1, n + 1):
        c = i * step
        while data[c - 1 : c] == b"\n":
            c += 1
        cuts.append(c)
    return cuts


def test_appends_in_chunks_split_lines(tmp_path: Path, tsv: bytes) -> None:
    p = tmp_path / "conn.log"
    p.write_bytes(b"")
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    last = 0
    for c in split_points(tsv, 7) + [len(tsv)]:
        append(p, tsv[last:c])
        last = c
        collect(f, events, max_bytes=4096)
    f.close()
    assert kinds(events) == [("Opened", "start")]
    assert by_gen(events) == {1: tsv}


def test_multibyte_split_is_passed_through(tmp_path: Path, tsv: bytes) -> None:
    text = tsv + "é€😀\n".encode()
    p = tmp_path / "conn.log"
    p.write_bytes(b"")
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    cut = len(tsv) + 1  # inside the two-byte é
    append(p, text[:cut])
    collect(f, events)
    append(p, text[cut:])
    collect(f, events)
    f.close()
    assert by_gen(events)[1] == text


def test_rename_rotation_keeps_tail_written_before_rename(tmp_path: Path, tsv: bytes) -> None:
    p = tmp_path / "conn.log"
    half = len(tsv) // 2
    p.write_bytes(tsv[:half])
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    append(p, tsv[half:])  # written just before the rename, not yet read
    os.rename(p, tmp_path / "conn.2024-01-01-10-00-00.log")
    p.write_bytes(tsv[:100])
    collect(f, events)
    append(p, tsv[100:])
    collect(f, events)
    f.close()
    assert kinds(events) == [("Opened", "start"), ("Ended", "rotated"), ("Opened", "rotated")]
    assert by_gen(events) == {1: tsv, 2: tsv}


def test_zeekctl_archive_and_gzip(tmp_path: Path, jsn: bytes) -> None:
    spool = tmp_path / "spool"
    archive = tmp_path / "logs" / "2024-01-01"
    spool.mkdir()
    archive.mkdir(parents=True)
    p = spool / "conn.log"
    p.write_bytes(jsn[:5000])
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    append(p, jsn[5000:])
    moved = archive / "conn.10:00:00-11:00:00.log"
    shutil.move(p, moved)
    with open(moved, "rb") as src, gzip.open(str(moved) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    moved.unlink()  # gzip removes the original; our handle still reads it
    collect(f, events)
    assert kinds(events) == [("Opened", "start"), ("Ended", "deleted")]
    p.write_bytes(jsn)  # zeek opens a new conn.log on its next write
    collect(f, events)
    f.close()
    assert kinds(events)[-1] == ("Opened", "created")
    assert by_gen(events) == {1: jsn, 2: jsn}


def test_truncation_in_place_restarts_at_zero(tmp_path: Path, tsv: bytes) -> None:
    p = tmp_path / "conn.log"
    p.write_bytes(tsv)
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, tsv[:3000])
    collect(f, events)
    f.close()
    assert kinds(events) == [("Opened", "start"), ("Ended", "truncated"), ("Opened", "truncated")]
    assert by_gen(events) == {1: tsv, 2: tsv[:3000]}


def test_rewrite_in_place_past_offset_is_detected(tmp_path: Path, tsv: bytes, jsn: bytes) -> None:
    """copytruncate followed by growth beyond the old offset before the next poll."""
    p = tmp_path / "conn.log"
    p.write_bytes(tsv[:2000])
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    with open(p, "r+b") as fh:
        fh.truncate(0)
        fh.write(jsn)
    collect(f, events)
    f.close()
    assert kinds(events)[-2:] == [("Ended", "truncated"), ("Opened", "truncated")]
    assert by_gen(events)[2] == jsn


def test_delete_and_recreate(tmp_path: Path, tsv: bytes, jsn: bytes) -> None:
    p = tmp_path / "conn.log"
    p.write_bytes(tsv)
    f = Follower(p, poll_interval=0.05, watch=False)
    events = collect(f)
    p.unlink()
    collect(f, events)
    assert kinds(events) == [("Opened", "start"), ("Ended", "deleted")]
    assert collect(f) == []  # nothing there: no events, no error
    p.write_bytes(jsn)
    collect(f, events)
    f.close()
    assert kinds(events)[-1] == ("Opened", "created")
    assert by_gen(events) == {1: tsv, 2: jsn}


def test_missing_at_start(tmp_path: Path, tsv: bytes) -> None:
    p = tmp_path / "later" / "conn.log"
    f = Follower(p, poll_interval=0.05)
    assert collect(f) == []
    p.parent.mkdir()
    p.write_bytes(tsv)
    events = collect(f)
    f.close()
    assert kinds(events) == [("Opened", "created")]
    assert by_gen(events) == {1: tsv}


def test_resume_same_file(tmp_path: Path, tsv: bytes) -> None:
    p = tmp_path / "conn.log"
    p.write_bytes(tsv[:4000])
    f = Follower(p, poll_interval=0.05, watch=False)
    collect(f)
    pos = f.position_at(3000)
    f.close()
    pos = Position.from_dict(pos.to_dict())
    append(p, tsv[4000:])
    g = Follower(p, poll_interval=0.05, watch=False, resume=pos)
    events = collect(g)
    g.close()
    assert kinds(events) == [("Opened", "resumed")]
    assert events[0].offset == 3000
    assert by_gen(events) == {1: tsv[3000:]}


def test_position_rejects_hostile_state() -> None:
    good = {"dev": 1, "ino": 2, "offset": 10, "head_len": 10, "head_sha": "a" * 64}
    assert Position.from_dict(good).offset == 10
    for bad in (
        [],
        {**good, "offset": -1},
        {**good, "offset": "10"},
        {**good, "offset": True},
        {**good, "head_len": 11},
        {**good, "head_sha": "x" * 64},
        {k: v for k, v in good.items() if k != "ino"},
    ):
        with pytest.raises(StateError):
            Position.from_dict(bad)


def test_watchdog_wakes_wait_before_poll_interval(tmp_path: Path, tsv: bytes) -> None:
    """With a 30 s poll interval, only a filesystem event can end the wait early."""
    p = tmp_path / "conn.log"
    p.write_bytes(b"")
    f = Follower(p, poll_interval=30.0)
    events = collect(f)
    f.wait(0.2)  # let the observer settle
    threading.Timer(0.3, append, (p, tsv)).start()
    t0 = time.monotonic()
    f.wait()
    waited = time.monotonic() - t0
    collect(f, events)
    f.close()
    assert waited < 20, "wait() was not woken by the filesystem event"
    assert by_gen(events) == {1: tsv}


def test_pipe_follower_reads_a_real_pipe_until_eof(tsv: bytes) -> None:
    from zeekml.sources.follow import PipeFollower

    r, w = os.pipe()
    f = PipeFollower(r, poll_interval=0.05)
    events = f.read()
    cuts = split_points(tsv, 5) + [len(tsv)]
    last = 0
    for c in cuts:
        os.write(w, tsv[last:c])
        last = c
        f.wait(1.0)
        events.extend(f.read(777))
    os.close(w)
    while not f.eof:
        f.wait(1.0)
        events.extend(f.read())
    f.close()
    os.close(r)
    assert kinds(events) == [("Opened", "start"), ("Ended", "eof")]
    assert by_gen(events) == {1: tsv}
    assert f.position_at(10) is None


NFCAPD = DATA / "nfdump" / "pcap-slips-test7-malicious" / "nfcapd"


def test_nfcapd_dir_lists_closed_files_in_order_once(tmp_path: Path) -> None:
    from zeekml.sources.nfcapd_dir import DirCursor, NfcapdDir

    need(NFCAPD.is_dir(), f"{NFCAPD}")
    names = sorted(os.listdir(NFCAPD))
    d = NfcapdDir(tmp_path, poll_interval=0.05, watch=False)
    shutil.copyfile(NFCAPD / names[0], tmp_path / "nfcapd.current.4242")
    assert d.ready() == [] and d.ready() == []  # in-progress file: never
    for name in reversed(names):  # appear out of order; handed out in name order
        shutil.copyfile(NFCAPD / name, tmp_path / ".tmp")
        os.rename(tmp_path / ".tmp", tmp_path / name)
    (tmp_path / "nfcapd.2018030920").write_bytes(b"")  # not a closed-file name
    assert d.ready() == []  # first look: not settled yet
    assert [p.name for p in d.ready()] == names
    d.mark_done(names[0])
    assert [p.name for p in d.ready()] == names[1:]
    d.mark_done(names[-1])
    assert d.ready() == []
    # a later file with seconds in its name sorts by time among minute names
    shutil.copyfile(NFCAPD / names[0], tmp_path / "nfcapd.20180309210030")
    d.ready()
    assert [p.name for p in d.ready()] == ["nfcapd.20180309210030"]
    assert DirCursor.from_dict(d.cursor.to_dict()).done == names[-1]
    for bad in ({"done": "../etc/passwd"}, {"done": "", "rows": -1}, {"file": 3}, "x"):
        with pytest.raises(StateError):
            DirCursor.from_dict(bad)
    d.close()


def test_watchdog_wakes_for_a_relative_path(tmp_path: Path, tsv: bytes, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = Path("conn.log")
    p.write_bytes(b"")
    f = Follower("conn.log", poll_interval=30.0)
    events = collect(f)
    f.wait(0.2)
    threading.Timer(0.3, append, (tmp_path / "conn.log", tsv)).start()
    t0 = time.monotonic()
    f.wait()
    waited = time.monotonic() - t0
    collect(f, events)
    f.close()
    assert waited < 20, "wait() was not woken by the filesystem event"
    assert by_gen(events) == {1: tsv}
