"""Reading ahead (zeekml.sources.prefetch) and why it keeps cron runs exactly-once.

The unit tests pin the hand-over: order, a reader's error raised in its place, an early
stop that closes the reader in its own thread. The last test runs ``score_inputs`` on a
real capture cut into many pieces, with a commit after every piece and the pipeline
failing on a later piece: the committed cursor must be the last *processed* piece's,
never the one read ahead, and a second run must score exactly the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from tests.conftest import DATA, need
from zeekml.errors import ConfigError
from zeekml.sources.prefetch import prefetched

CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


def _helpers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "zeekml-read-ahead"]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_every_item_in_order(depth: int) -> None:
    assert list(prefetched(iter(range(1000)), depth)) == list(range(1000))
    assert not _helpers()


def test_reads_in_a_helper_thread_ahead_of_the_consumer() -> None:
    produced: list[int] = []
    threads: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(5):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    it = prefetched(source(), 1)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert produced[:2] == [0, 1]  # item 1 was read while item 0 was being used
    assert list(it) == [1, 2, 3, 4]
    assert threads == {"zeekml-read-ahead"}


def test_error_is_raised_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad input at line 3")

    got = []
    with pytest.raises(ValueError, match="line 3"):
        for x in prefetched(source(), 2):
            got.append(x)
    assert got == [1, 2]
    assert not _helpers()


def test_early_stop_closes_the_reader_and_its_thread() -> None:
    closed = threading.Event()
    pulled: list[int] = []

    def source() -> Iterator[int]:
        try:
            for i in range(10_000):
                pulled.append(i)
                yield i
        finally:
            closed.set()

    it = prefetched(source(), 2)
    assert next(it) == 0
    it.close()
    assert closed.is_set()  # the file behind the reader is closed when close() returns
    assert not _helpers()
    assert len(pulled) <= 4  # the item in use, two read ahead, one waiting to be handed over


def test_consumer_error_stops_the_reader() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(10_000)
        finally:
            closed.set()

    it = prefetched(source(), 1)
    with pytest.raises(RuntimeError):
        for x in it:
            if x == 3:
                raise RuntimeError("sink failed")
    it.close()
    assert closed.is_set() and not _helpers()


def test_read_ahead_is_validated() -> None:
    from zeekml.runtime.batch_run import RunOptions

    with pytest.raises(ConfigError):
        RunOptions(read_ahead=-1)
    assert RunOptions().read_ahead == 1


def test_a_failed_run_commits_the_processed_piece_not_the_one_read_ahead(tmp_path) -> None:
    """Commit after every piece; the pipeline fails on the 4th batch. The state's cursor is
    the third piece's, and the next run scores exactly the rows after it."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    from zeekml.models.registry import ScorerOptions, default_scorers
    from zeekml.policy.notice import NoticePolicy
    from zeekml.runtime.batch_run import RunOptions, score_inputs
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.runtime.state import StateStore
    from zeekml.sources import SkipLog
    from zeekml.sources.options import ReadOptions
    from zeekml.sources.stream import read_pieces

    read = ReadOptions(batch_rows=500)
    pieces = [(sum(len(f) for f in p.frames), p.cursor) for p in read_pieces(
        str(CAPTURE), None, SkipLog(), read, hold_partial=True)]
    with_rows = [(n, c) for n, c in pieces if n]
    assert len(with_rows) >= 6, "the capture must be cut into several pieces"
    total = sum(n for n, _ in pieces)

    class FailsOnBatch(Pipeline):
        def __init__(self, fail_at: int | None) -> None:
            super().__init__(default_scorers(ScorerOptions(threads=1)), NoticePolicy(), [])
            self.fail_at, self.calls, self.rows = fail_at, 0, 0

        def process(self, flows: pd.DataFrame) -> pd.DataFrame:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("injected failure")
            self.rows += len(flows)
            return super().process(flows)

    store = StateStore(tmp_path / "state.npz")
    opts = RunOptions(read=read, checkpoint_seconds=1e-9, read_ahead=2)
    first = FailsOnBatch(fail_at=4)
    with pytest.raises(RuntimeError, match="injected"):
        score_inputs([str(CAPTURE)], first, skips=SkipLog(), store=store, options=opts)
    assert not _helpers()
    saved = store.load().inputs
    assert len(saved) == 1
    cursor = next(iter(saved.values()))
    assert cursor["offset"] == with_rows[2][1]["offset"]  # after the 3 processed batches
    assert first.rows == sum(n for n, _ in with_rows[:3])

    second = FailsOnBatch(fail_at=None)
    score_inputs([str(CAPTURE)], second, skips=SkipLog(), store=store, options=opts)
    assert first.rows + second.rows == total  # nothing lost, nothing twice
