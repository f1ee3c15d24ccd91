"""Scorers in lanes, a batch ahead of the policy (``Pipeline(lanes=True)``, what
``zeekml score`` uses; :mod:`zeekml.runtime.lanes`).

On a real capture cut into many batches, with notices (suppression, context uids taken
after the lane pushed the next batch), every verdict and ``--incidents``: the output is
byte-for-byte the one scored batch by batch; a commit saves the scorers' state of exactly
the rows written (a run continued from any checkpoint equals one run); a scorer failing in
its lane fails the run with its own error after the batches before it were written, and
the next run scores exactly the rest; a scorer that does not declare its results outlive
its next call is never laned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, need

CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
ARCHIVE_DAY = DATA / "zeek" / "rita-rotated-archive" / "2024-04-19"


def _pipeline(sinks: list, lanes: bool, *, all_flows: bool = False, scorers=None,
              incidents=None):
    from zeekml.models.registry import ScorerOptions, default_scorers
    from zeekml.policy.notice import NoticePolicy, PolicyConfig
    from zeekml.runtime.pipeline import Pipeline

    return Pipeline(scorers or default_scorers(ScorerOptions(threads=1)),
                    NoticePolicy(PolicyConfig(all_flows=all_flows)), sinks, lanes=lanes,
                    incidents=incidents)


def _score(paths: list[str], pipeline, batch_rows: int = 700, store=None) -> None:
    """Score ``paths``; with ``store``, commit after every input that ends (not only every
    5 s: the commits between batches are what the tests look at)."""
    from zeekml.runtime.batch_run import RunOptions, score_inputs
    from zeekml.sources import SkipLog
    from zeekml.sources.options import ReadOptions

    score_inputs(paths, pipeline, skips=SkipLog(), store=store,
                 options=RunOptions(read=ReadOptions(batch_rows=batch_rows),
                                    input_commit_seconds=0))


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.startswith(("#open", "#close"))]


@pytest.mark.parametrize("all_flows", [False, True])
def test_laned_output_is_the_batch_by_batch_output(tmp_path: Path, all_flows: bool) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    from zeekml.policy.incidents import IncidentConfig, IncidentTracker
    from zeekml.sinks.zeek_log import ZeekLogSink

    texts = []
    for lanes in (False, True):
        out = tmp_path / f"out-{lanes}.log"
        inc = ZeekLogSink(str(tmp_path / f"incidents-{lanes}.log"))
        inc.use_incidents()
        pipeline = _pipeline([ZeekLogSink(str(out)), inc], lanes, all_flows=all_flows,
                             incidents=IncidentTracker(IncidentConfig()))
        assert pipeline.lanes is lanes
        _score([str(CAPTURE)], pipeline)
        texts.append((_lines(out), _lines(tmp_path / f"incidents-{lanes}.log")))
    (plain, plain_inc), (laned, laned_inc) = texts
    assert laned == plain and laned_inc == plain_inc
    # not a trivial equality: notices from several models (12 today) and their incidents
    assert len(plain) > (5000 if all_flows else 15) and len(plain_inc) > 10
    # notices carry the uids of their context flows, taken after the lane pushed the next
    # batch into the same store
    fields = next(ln for ln in plain if ln.startswith("#fields")).split("\t")[1:]
    rows = [dict(zip(fields, ln.split("\t"), strict=True)) for ln in plain if ln[0] != "#"]
    assert any(r["notice"] == "T" and r["context"] not in ("-", "(empty)") for r in rows)


def test_commits_with_lanes_save_exactly_what_was_written(tmp_path: Path) -> None:
    """Stopped after any number of batches (a failure there), then continued from the
    state: the output equals one uninterrupted run, row for row."""
    need(ARCHIVE_DAY.is_dir(), f"the zeekctl archive {ARCHIVE_DAY}")
    from zeekml.runtime.state import StateStore
    from zeekml.sinks.zeek_log import ZeekLogSink

    files = sorted(str(p) for p in ARCHIVE_DAY.glob("conn.*.log.gz"))[:8]
    whole = tmp_path / "whole.log"
    _score(files, _pipeline([ZeekLogSink(str(whole))], lanes=False, all_flows=True),
           batch_rows=2000)
    for stop_after in (1, 3, 6):
        out = tmp_path / f"cut-{stop_after}.log"
        store = StateStore(tmp_path / f"state-{stop_after}.npz")
        first = _pipeline([ZeekLogSink(str(out))], lanes=True, all_flows=True)
        calls = 0
        process = first.process

        def stops(flows: pd.DataFrame, _p=process, _n=stop_after) -> pd.DataFrame:
            nonlocal calls
            calls += 1
            if calls > _n:
                raise RuntimeError("stopped")
            return _p(flows)

        first.process = stops  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="stopped"):
            _score(files, first, batch_rows=2000, store=store)
        _score(files, _pipeline([ZeekLogSink(str(out))], lanes=True, all_flows=True),
               batch_rows=2000, store=store)
        assert _lines(out)[8:] == _lines(whole)[8:], stop_after  # after the header


class FailsOn:
    """A laned scorer wrapping a bundled one that fails on its ``n``-th batch."""

    results_survive_next_score = True

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.calls, self.name = inner, n, 0, inner.name
        self.card = inner.card  # the same model id in the state

    def score(self, flows: pd.DataFrame):
        self.calls += 1
        if self.calls == self.n:
            raise ValueError("scorer failed in its lane")
        return self.inner.score(flows)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.inner.load_state_dict(state)


def test_a_scorer_failing_in_its_lane_fails_the_run_and_the_next_run_scores_the_rest(
        tmp_path: Path) -> None:
    need(ARCHIVE_DAY.is_dir(), f"the zeekctl archive {ARCHIVE_DAY}")
    from zeekml.models.registry import ScorerOptions, default_scorers
    from zeekml.runtime.state import StateStore
    from zeekml.sinks.zeek_log import ZeekLogSink

    files = sorted(str(p) for p in ARCHIVE_DAY.glob("conn.*.log.gz"))[:8]
    whole = tmp_path / "whole.log"
    _score(files, _pipeline([ZeekLogSink(str(whole))], lanes=False, all_flows=True),
           batch_rows=2000)
    out = tmp_path / "out.log"
    store = StateStore(tmp_path / "state.npz")
    scorers = default_scorers(ScorerOptions(threads=1))
    scorers[1] = FailsOn(scorers[1], n=4)
    failing = _pipeline([ZeekLogSink(str(out))], lanes=True, all_flows=True, scorers=scorers)
    assert failing.lanes
    with pytest.raises(ValueError, match="failed in its lane"):
        _score(files, failing, batch_rows=2000, store=store)
    assert failing._lanes is None  # the lanes were stopped by the abort
    written = [ln for ln in _lines(out) if not ln.startswith("#")]
    assert 0 < len(written) < len([ln for ln in _lines(whole) if not ln.startswith("#")])
    _score(files, _pipeline([ZeekLogSink(str(out))], lanes=True, all_flows=True),
           batch_rows=2000, store=store)
    assert _lines(out)[8:] == _lines(whole)[8:]


def test_a_scorer_without_the_declaration_is_not_laned() -> None:
    from zeekml.models.registry import ScorerOptions, default_scorers
    from zeekml.runtime.lanes import can_lane

    scorers = default_scorers(ScorerOptions(threads=1))
    assert can_lane(scorers)

    class Plugin:
        name = "plugin"

        def score(self, flows):  # pragma: no cover - never called
            raise AssertionError

        def state_dict(self):  # pragma: no cover
            return {}

        def load_state_dict(self, state) -> None:  # pragma: no cover
            pass

    assert not can_lane([*scorers, Plugin()])
    assert _pipeline([], lanes=True, scorers=[*scorers, Plugin()]).lanes is False
