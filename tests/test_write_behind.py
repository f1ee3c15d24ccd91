"""Writing a batch's verdicts while the next batch is scored (``Pipeline(write_behind=True)``,
what ``zeekml score --all`` uses).

On a real capture cut into several batches: the output is byte-for-byte the one written
inline; a sink that fails in the helper thread fails the run with its own error (never
swallowed), and the run's abort waits for the write still going on before it cuts the
output back. The kernel-level failures (a full tmpfs, EFBIG, /dev/full) with ``--all`` are
in tests/test_exactly_once.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DATA, need

CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


def _pipeline(sinks: list, write_behind: bool):
    from zeekml.models.registry import ScorerOptions, default_scorers
    from zeekml.policy.notice import NoticePolicy, PolicyConfig
    from zeekml.runtime.pipeline import Pipeline

    return Pipeline(default_scorers(ScorerOptions(threads=1)),
                    NoticePolicy(PolicyConfig(all_flows=True)), sinks,
                    write_behind=write_behind)


def _score(pipeline, batch_rows: int = 1000) -> None:
    from zeekml.runtime.batch_run import RunOptions, score_inputs
    from zeekml.sources import SkipLog
    from zeekml.sources.options import ReadOptions

    score_inputs([str(CAPTURE)], pipeline, skips=SkipLog(),
                 options=RunOptions(read=ReadOptions(batch_rows=batch_rows)))


def test_written_behind_is_the_same_file(tmp_path: Path) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    from zeekml.sinks.zeek_log import ZeekLogSink

    texts = []
    for behind in (False, True):
        out = tmp_path / f"out-{behind}.log"
        _score(_pipeline([ZeekLogSink(str(out))], behind))
        texts.append([ln for ln in out.read_text().splitlines()
                      if not ln.startswith(("#open", "#close"))])
    assert len(texts[0]) > 5000 and texts[0] == texts[1]


class SlowFailing:
    """A sink whose writes are slow and whose ``fail_at``-th write fails; it records when
    each write ended and when it was aborted."""

    name = "slow"

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.writes, self.events = fail_at, 0, []
        self.threads: set[str] = set()

    def write(self, rows: pd.DataFrame) -> None:
        self.writes += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(0.2)
        self.events.append(("wrote", self.writes))
        if self.writes == self.fail_at:
            raise OSError(28, "No space left on device: injected")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def checkpoint(self) -> dict:
        return {}

    def restore(self, pos: dict) -> None:
        pass

    def abort(self) -> None:
        self.events.append(("abort", self.writes))


def test_a_failed_write_behind_fails_the_run_and_abort_waits_for_it() -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    sink = SlowFailing(fail_at=2)
    with pytest.raises(OSError, match="injected"):
        _score(_pipeline([sink], True))
    assert "zeekml-background" in sink.threads  # written in the helper thread
    assert sink.events[-1][0] == "abort"  # cut back only after the write in flight ended
    assert sink.writes == 2  # the run stopped at the failure, no batch written after it


def test_abort_while_a_write_is_in_flight_waits_for_it() -> None:
    """A failure elsewhere (the scorers) while a write is still going on."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    sink = SlowFailing(fail_at=10 ** 9)
    pipeline = _pipeline([sink], True)
    calls = 0
    process = pipeline.process

    def fails_second(flows: pd.DataFrame) -> pd.DataFrame:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("scorer failed")
        return process(flows)

    pipeline.process = fails_second  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="scorer failed"):
        _score(pipeline)
    assert sink.events == [("wrote", 1), ("abort", 1)]
