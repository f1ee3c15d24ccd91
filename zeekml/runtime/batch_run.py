"""The batch and cron front end: :func:`score_inputs` runs every input through a
:class:`~zeekml.runtime.pipeline.Pipeline`, with the state file's cursors, checkpoints and the
catch-up of rotated generations (``zeekml score``, ``zeekml calibrate``).

Exactly-once with a state file (:mod:`zeekml.runtime.state`): the run commits once before
it writes anything, then whenever an input's flows are all written and every
``checkpoint_seconds``; a commit saves each input's cursor only once every row read
before it has been processed (the read-ahead's pieces, small inputs joined into one batch),
so a run that dies or fails is cut back to a point the next run continues from exactly.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from zeekml import defaults
from zeekml.errors import ConfigError, FormatError, SinkError
from zeekml.runtime.pipeline import Counters, Pipeline
from zeekml.runtime.state import StateStore, journal_factory
from zeekml.sinks.base import RunContext
from zeekml.sources.generation import Generation, identify, match_cursor
from zeekml.sources.options import ReadOptions
from zeekml.sources.prefetch import prefetched
from zeekml.sources.rotation import earlier_generations, is_live_name
from zeekml.sources.skips import SkipLog
from zeekml.sources.stream import read_pieces


@dataclass
class RunOptions:
    """How ``score`` runs: reading, checkpoints, catch-up of rotated generations."""

    read: ReadOptions = field(default_factory=ReadOptions)
    checkpoint_seconds: float = defaults.CHECKPOINT_SECONDS
    #: an input's end is committed only this long after the last commit (0: every one)
    input_commit_seconds: float = defaults.INPUT_COMMIT_SECONDS
    max_cursors: int = defaults.MAX_CURSORS
    #: with --state: zeekctl's archive directory searched for rotated generations
    archive: str | None = None
    #: with --state: rotated generations modified longer ago than this are not looked at
    lookback: float = defaults.LOOKBACK_SECONDS
    #: input pieces read ahead in a helper thread while the current one is scored
    read_ahead: int = defaults.READ_AHEAD

    def __post_init__(self) -> None:
        if not isinstance(self.read, ReadOptions):
            raise ConfigError(f"read must be ReadOptions, got {type(self.read).__name__}")
        if not (self.checkpoint_seconds > 0 and math.isfinite(self.checkpoint_seconds)):
            raise ConfigError("checkpoint_seconds must be a positive number of seconds, "
                              f"got {self.checkpoint_seconds}")
        if not (self.input_commit_seconds >= 0 and math.isfinite(self.input_commit_seconds)):
            raise ConfigError("input_commit_seconds must be >= 0 seconds, "
                              f"got {self.input_commit_seconds}")
        if self.max_cursors < 1:
            raise ConfigError(f"max_cursors must be >= 1, got {self.max_cursors}")
        if not (self.lookback > 0 and not math.isnan(self.lookback)):
            raise ConfigError(f"lookback must be > 0 seconds, got {self.lookback}")
        if not 0 <= self.read_ahead <= 8:
            raise ConfigError(f"read_ahead must be 0..8 pieces, got {self.read_ahead}")
        if self.archive is not None and not str(self.archive):
            raise ConfigError("archive must name a directory")

    @property
    def batch_rows(self) -> int:
        return self.read.batch_rows


class _Cursors:
    """The state's input cursors, keyed by generation; bounded by age and count."""

    def __init__(self, saved: dict[str, dict[str, Any]], limit: int, lookback: float) -> None:
        self.map = dict(saved)
        self.limit = limit
        self.lookback = lookback

    def find(self, gen: Generation) -> tuple[str | None, dict[str, Any] | None]:
        return match_cursor(self.map, gen)

    def put(self, old_key: str | None, cursor: dict[str, Any]) -> str:
        if old_key is not None and old_key != cursor["key"]:
            self.map.pop(old_key, None)  # the head grew: the cursor is re-keyed
        self.map[cursor["key"]] = {**cursor, "seen": time.time()}
        return str(cursor["key"])

    def pruned(self) -> dict[str, dict[str, Any]]:
        """Forget inputs seen long before the lookback (and the oldest past the limit)."""
        horizon = time.time() - self.lookback - 86400.0
        kept = {k: c for k, c in self.map.items()
                if not (c.get("done") and float(c.get("seen", 0) or 0) < horizon)}
        if len(kept) > self.limit:
            order = sorted(kept, key=lambda k: kept[k].get("seen", 0))
            for k in order[: len(kept) - self.limit]:
                del kept[k]
        self.map = kept
        return kept


class _Joined:
    """Frames of consecutive inputs joined up to the batch size before they are scored.

    A zeekctl archive is hourly files of a few thousand flows each; scored one file per
    batch, every batch pays the fixed cost of one (scorer threads, the policy, pandas
    calls: ~60 ms with the three bundled models), and the 72 files of a three-day
    archive ran at a fifth of the speed of one large file. Joining does not change a
    verdict: consecutive batches are one stream whatever their sizes.

    Rows are held until they make half a batch: a large input's pieces (most of a batch
    each) go on at once, so reading the next piece still overlaps scoring this one.

    Exactly-once: an input's cursor is applied to the cursors only once every row read
    before it has been processed (:meth:`flush`), so a commit never saves the cursor
    of a piece whose rows are still waiting here (rows the pipeline's lanes still score
    are decided and written by the commit itself, before it saves: ``Pipeline.flush``).
    """

    def __init__(self, pipeline: Pipeline, cursors: _Cursors, rows: int) -> None:
        self.pipeline = pipeline
        self.cursors = cursors
        self.limit = max(1, rows)
        self.frames: list[pd.DataFrame] = []
        self.rows = 0
        self.pending: list[tuple[str | None, dict[str, Any]]] = []

    def add(self, frame: pd.DataFrame) -> None:
        if self.frames and (self.rows + len(frame) > self.limit
                            or not _same_schema(self.frames[-1], frame)):
            self.flush()
        self.frames.append(frame)
        self.rows += len(frame)
        if 2 * self.rows >= self.limit:  # big enough: a reader's full piece goes on at once
            self.flush()

    def put(self, key: str | None, cursor: dict[str, Any]) -> str:
        """Record an input's cursor (applied once its rows are processed); its new key."""
        if self.frames:
            self.pending.append((key, cursor))
        else:
            self.cursors.put(key, cursor)
        return str(cursor["key"])

    def flush(self) -> None:
        """Process the rows held, then apply the cursors that waited for them."""
        frames, self.frames, self.rows = self.frames, [], 0
        if len(frames) == 1:
            self.pipeline.process(frames[0])
        elif frames:
            self.pipeline.process(pd.concat(frames, ignore_index=True))
        pending, self.pending = self.pending, []
        for key, cursor in pending:
            self.cursors.put(key, cursor)


def _same_schema(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Two frames that concatenate without a column or dtype changing."""
    return list(a.columns) == list(b.columns) and all(a.dtypes == b.dtypes)


def score_inputs(
    paths: Sequence[str],
    pipeline: Pipeline,
    *,
    skips: SkipLog,
    store: StateStore | None = None,
    options: RunOptions | None = None,
    progress: Callable[[Counters, int, int], None] | None = None,
) -> Counters:
    """Score every input in order through ``pipeline`` (the batch/cron front end).

    Without ``store`` every input is read from its start; outputs are replaced only
    when the run succeeds (:mod:`zeekml.sinks.files`), notices held for suppression
    are written at the end and the logs closed with Zeek's ``#close``.

    With ``store`` (the caller holds its lock) the run continues from the saved state:
    it commits once before writing anything (outputs' positions, so a run that dies
    is cut back by the next), then after an input whose rows are all written (small
    inputs are joined into one batch: :class:`_Joined`) once ``input_commit_seconds``
    passed since the last commit, and every ``checkpoint_seconds``;
    each input generation is remembered by content (:mod:`zeekml.sources.generation`)
    and read from its cursor; for a live log named like ``conn.log``, generations
    rotated away since the state began (beside it, or under ``archive``) and not yet
    finished are read first, oldest first. Open suppression windows stay in the state
    for the next run. Any failure cuts every output back to the last commit.
    """
    opts = options or RunOptions()
    counters = pipeline.counters
    state = store.load() if store is not None else None
    cursors = _Cursors(state.inputs if state else {}, opts.max_cursors, opts.lookback)
    meta: dict[str, Any] = dict(state.meta) if state else {}
    meta.setdefault("since", time.time())
    meta.setdefault("stream", uuid.uuid4().hex)
    pipeline.begin(RunContext(stateful=store is not None, journal=None if store is None else
                              journal_factory(store, str(meta["stream"]))))
    if state is not None:
        pipeline.restore(state)
    meta["runs"] = int(meta.get("runs", 0)) + 1
    last = time.monotonic()
    changed = True  # anything since the last commit (a commit of nothing is skipped)

    def checkpoint() -> None:
        nonlocal last, changed
        if store is not None and changed:
            try:
                pipeline.commit(store, cursors.pruned(), meta)
            except SinkError as exc:
                raise SinkError(f"{exc}; nothing was committed: the next run scores these "
                                "flows again and sends their notices then") from exc
            last = time.monotonic()
            changed = False

    try:
        checkpoint()  # write-ahead: outputs' starting positions are committed first
        plan = _plan(paths, cursors, opts, float(meta["since"]), store is not None)
        joined = _Joined(pipeline, cursors, opts.batch_rows)
        ended = False  # an input ended since the last commit
        for i, (path, gen, final) in enumerate(plan):
            counters.files += 1
            key, cursor = (None, None)
            if gen is not None:
                key, cursor = cursors.find(gen)
                if cursor is not None and _nothing_new(gen, cursor):
                    counters.files_unchanged += 1
                    cursors.put(key, cursor)
                    changed = True
                    continue
            # the next piece is parsed while this one is scored; each piece's cursor is
            # committed only after that piece is processed (zeekml.sources.prefetch)
            pieces = prefetched(read_pieces(path, cursor, skips, opts.read, final=final,
                                            hold_partial=store is not None, gen=gen),
                                opts.read_ahead)
            try:
                for piece in pieces:
                    changed = True
                    for frame in piece.frames:
                        joined.add(frame)
                    if progress is not None:
                        progress(counters, i, len(plan))
                    if piece.cursor is not None and store is not None:
                        key = joined.put(key, piece.cursor)
                        ended = ended or piece.done
                        since = time.monotonic() - last
                        due = since >= opts.checkpoint_seconds
                        if due:
                            joined.flush()
                        if joined.rows == 0 and (due or (ended and since >= opts.input_commit_seconds)):
                            checkpoint()
                            ended = False
            except FormatError as exc:
                # a whole input zeekml cannot read (unknown format, another Zeek log):
                # named, the others still scored, the run exits 1 (--strict: at once)
                if skips.strict:
                    raise
                counters.unreadable.append(str(exc))
            finally:
                pieces.close()  # stops the read-ahead and closes the input
        joined.flush()
        unreadable = counters.unreadable_error(others_scored=False)
        if unreadable is not None and len(counters.unreadable) == len(plan):
            raise unreadable  # no input was readable: the outputs stay as they were
        if store is None:
            pipeline.finish()
        else:
            checkpoint()
        pipeline.close()
    except BaseException:
        pipeline.abort()
        raise
    counters.stop()
    return counters


def _plan(paths: Sequence[str], cursors: _Cursors, opts: RunOptions, since: float,
          stateful: bool) -> list[tuple[str, Generation | None, bool]]:
    """Inputs in reading order: (path, generation or None for stdin, complete?).

    In a stateful run a live log (``conn.log``) is preceded by its generations rotated
    away since the state began and not finished yet (found by content beside it or in
    the archive), oldest first; a generation is read once even when listed twice.
    """
    out: list[tuple[str, Generation | None, bool]] = []
    seen: set[str] = set()

    def add(path: str, gen: Generation | None, final: bool) -> None:
        if gen is not None and stateful:  # one cursor per content: read it once
            if gen.key in seen:
                return
            seen.add(gen.key)
        out.append((path, gen, final))

    for path in paths:
        if path == "-":
            add(path, None, False)
            continue
        if stateful and is_live_name(path):
            for old, gen in earlier_generations(path, cursors.map, since=since,
                                                archive=opts.archive, lookback=opts.lookback):
                add(str(old), gen, True)
        add(path, identify(path), False)
    return out


def _nothing_new(gen: Generation, cursor: dict[str, Any]) -> bool:
    """The input was read to its end before and has not grown."""
    if cursor.get("done"):
        return True
    return gen.kind == "plain" and cursor.get("offset") == gen.size
