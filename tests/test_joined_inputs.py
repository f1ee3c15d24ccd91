"""Small inputs joined into one scoring batch (``zeekml.runtime.batch_run._Joined``).

A zeekctl archive is hourly gzipped files of a few thousand flows; ``score_inputs`` joins
consecutive inputs' rows up to the batch size instead of scoring each file as its own
batch. On a real archive (RITA's internet-facing server, one day of hourly files): the
batches are fewer than the files, the verdicts are those of scoring every file alone, and
a run that fails on a joined batch commits only the inputs whose rows were all written,
so the next run scores exactly the rest.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import DATA, need

ARCHIVE_DAY = DATA / "zeek" / "rita-rotated-archive" / "2024-04-19"


def _files() -> list[str]:
    need(ARCHIVE_DAY.is_dir(), f"the zeekctl archive {ARCHIVE_DAY}")
    files = sorted(str(p) for p in ARCHIVE_DAY.glob("conn.*.log.gz"))
    assert len(files) >= 12, "a day of hourly files"
    return files


class Recording:
    """A pipeline that records each batch it is given (and can fail on one)."""

    def __init__(self, fail_at: int | None = None) -> None:
        from zeekml.models.registry import ScorerOptions, default_scorers
        from zeekml.policy.notice import NoticePolicy, PolicyConfig
        from zeekml.runtime.pipeline import Pipeline

        outer = self
        self.sizes: list[int] = []
        self.verdicts: list[pd.DataFrame] = []
        self.uids: list[str] = []

        class P(Pipeline):
            def process(self, flows: pd.DataFrame) -> pd.DataFrame:
                if fail_at is not None and len(outer.sizes) + 1 == fail_at:
                    raise RuntimeError("injected failure")
                outer.sizes.append(len(flows))
                outer.uids.extend(flows["uid"].astype(str))
                out = super().process(flows)
                outer.verdicts.append(out)
                return out

        self.pipeline = P(default_scorers(ScorerOptions(threads=1)),
                          NoticePolicy(PolicyConfig(all_flows=True, suppress=0.0)), [])


def _run(files: list[str], rec: Recording, batch_rows: int, store=None,
         input_commit_seconds: float | None = None) -> None:
    from zeekml.runtime.batch_run import RunOptions, score_inputs
    from zeekml.sources import SkipLog
    from zeekml.sources.options import ReadOptions

    more = {} if input_commit_seconds is None else {"input_commit_seconds": input_commit_seconds}
    score_inputs(files, rec.pipeline, skips=SkipLog(), store=store,
                 options=RunOptions(read=ReadOptions(batch_rows=batch_rows), **more))


def _rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    cols = ["uid", "model", "verdict", "score", "notice"]
    return pd.concat(frames, ignore_index=True)[cols]


def test_small_inputs_are_scored_in_fewer_batches_with_the_same_verdicts() -> None:
    files = _files()[:12]
    joined = Recording()
    _run(files, joined, batch_rows=8192)
    alone = Recording()
    for f in files:  # each file its own run of batches, one stream (the scorers' state kept)
        _run([f], alone, batch_rows=8192)
    per_file = len(alone.sizes)
    assert per_file >= len(files)
    assert len(joined.sizes) < per_file / 2, (joined.sizes, alone.sizes)
    assert all(n >= 8192 // 2 for n in joined.sizes[:-1])  # each held to half a batch
    assert all(n <= 8192 for n in joined.sizes)
    assert sum(joined.sizes) == sum(alone.sizes)
    a, b = _rows(joined.verdicts), _rows(alone.verdicts)
    pd.testing.assert_frame_equal(a, b)


def test_a_run_failing_on_a_joined_batch_commits_only_inputs_whose_rows_were_written(
        tmp_path) -> None:
    from zeekml.runtime.state import StateStore
    from zeekml.sources.open import read_flows

    files = _files()[:12]
    store = StateStore(tmp_path / "state.npz")
    first = Recording(fail_at=2)
    with pytest.raises(RuntimeError, match="injected"):  # every input's end committed
        _run(files, first, batch_rows=8192, store=store, input_commit_seconds=0)
    assert len(first.sizes) == 1  # one joined batch was written, the second failed
    saved = store.load().inputs
    done = [c for c in saved.values() if c.get("done")]
    assert 1 < len(done) < len(files)  # several whole inputs, not the ones still held
    rows = [sum(len(f) for f in read_flows(f)) for f in files]
    assert sum(rows[: len(done)]) == first.sizes[0]  # exactly the inputs written
    second = Recording()
    _run(files, second, batch_rows=8192, store=store)
    everything = Recording()
    _run(files, everything, batch_rows=8192)
    both = first.uids + second.uids
    assert len(both) == len(everything.uids)  # nothing lost, nothing twice
    assert sorted(both) == sorted(everything.uids)


class CountingStore:
    """A real state store that counts its saves."""

    def __init__(self, path) -> None:
        from zeekml.runtime.state import StateStore

        self.inner, self.saves = StateStore(path), 0

    def load(self):
        return self.inner.load()

    def save(self, state) -> None:
        self.saves += 1
        self.inner.save(state)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_input_ends_are_committed_at_most_every_few_seconds_and_still_exactly_once(
        tmp_path) -> None:
    """By default an input's end is not committed sooner than 5 s after the last commit: a
    day of archive files is committed before and after, not after every joined batch; a
    failure then leaves only the first commit, and the next run scores everything once."""
    files = _files()[:12]
    every = CountingStore(tmp_path / "every.npz")
    _run(files, Recording(), batch_rows=8192, store=every, input_commit_seconds=0)
    default = CountingStore(tmp_path / "default.npz")
    _run(files, Recording(), batch_rows=8192, store=default)
    assert every.saves >= 4 and default.saves == 2, (every.saves, default.saves)
    store = CountingStore(tmp_path / "state.npz")
    first = Recording(fail_at=3)
    with pytest.raises(RuntimeError, match="injected"):
        _run(files, first, batch_rows=8192, store=store)
    assert store.saves == 1 and not [c for c in store.load().inputs.values() if c.get("done")]
    second = Recording()
    _run(files, second, batch_rows=8192, store=store)
    everything = Recording()
    _run(files, everything, batch_rows=8192)
    assert sorted(second.uids) == sorted(everything.uids)  # the failed run's rows again, once
