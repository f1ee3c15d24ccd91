"""The scoring pipeline: the only loop, by batch, never per flow.

::

    canonical flow batch -> [NetFlow pairing] -> every scorer (ONNX, batched)
                         -> notice policy -> every sink

:func:`score_frame` is the pure core (no I/O): a flow table, the scorers and the policy
in, the verdict rows to write out. Spark applies it per partition; :class:`Pipeline`
applies it per batch and adds sinks, counters and checkpoints; ``zeekml score`` (this
module's :func:`score_inputs`) and ``zeekml tail`` drive a Pipeline.

Rows of the verdict table are flow-major: for flow *i* and models *m1, m2*, the rows
are (i, m1), (i, m2), (i+1, m1), ... so an output is in stream order whatever the
number of models.

Exactly-once with a state file (:mod:`zeekml.runtime.state`): a checkpoint flushes
(fsyncs) every sink, then saves, atomically and together, each input's cursor (byte
offset of the last complete line consumed, parser state), every scorer's and the
policy's state, and each sink's checkpoint. A run resuming from it truncates the
outputs back to their checkpoints and reads each input from its offset, so every flow
is scored and written once even across crashes. Inputs are recognised by content
(:func:`zeekml.runtime.state.identify`), so a growing ``current/conn.log`` continues
where the last run stopped and an unchanged archive is skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from zeekml.errors import StateError
from zeekml.models.base import ScoreBatch, Scorer
from zeekml.policy.notice import NoticePolicy
from zeekml.records.verdicts import empty_verdicts
from zeekml.runtime.state import RunState, StateStore, find_cursor, identify
from zeekml.sinks.base import Sink
from zeekml.sources.skips import SkipLog

if TYPE_CHECKING:
    from zeekml.sources.biflow import Pairer

log = logging.getLogger(__name__)

#: flow columns copied into every verdict row
FLOW_COLUMNS = ("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto")
#: a growing file's unfinished last line is only consumed once it is this old
SETTLE_SECONDS = 60.0


# --------------------------------------------------------------------------- pure core


def _context_cells(ctx: Any, n: int) -> np.ndarray:
    """Per-row uid lists from a scorer's ``context`` (object array of lists or 2-D array)."""
    out = np.empty(n, dtype=object)
    if ctx is None:
        return out
    arr = np.asarray(ctx, dtype=object) if not isinstance(ctx, np.ndarray) else ctx
    if arr.ndim == 2:
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8", errors="replace")
        out[:] = [[str(x) for x in row if str(x)] for row in arr.tolist()]
        return out
    out[:] = list(arr)
    return out


_STR = pd.StringDtype("pyarrow", na_value=np.nan)


def _str_series(values: Any) -> pd.Series:
    """Low-cardinality labels (model names, classes) as a ``str`` Series, fast.

    Converting an object array to pandas' arrow strings element by element is the
    slow path; factorizing first and casting a dictionary array costs one hash per
    row and one string per distinct value.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    dictionary = pa.array([str(u) for u in uniques], type=pa.large_string())
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=codes < 0),
                                         dictionary)
    return pd.Series(arr.cast(pa.large_string()).to_pandas(types_mapper={
        pa.large_string(): _STR}.get))


def _missing_str(n: int) -> pd.Series:
    """An all-missing ``str`` Series (built from arrow nulls, not element by element)."""
    return pd.Series(pa.nulls(n, pa.large_string()).to_pandas(
        types_mapper={pa.large_string(): _STR}.get))


def assemble(flows: pd.DataFrame, batches: Sequence[ScoreBatch]) -> pd.DataFrame:
    """Flows and each model's :class:`ScoreBatch` -> scored rows (flow-major), with ``cls``.

    The result has the verdict columns (``verdict``/``notice``/``n`` not yet decided)
    plus ``cls``, the class each model would report; :meth:`NoticePolicy.decide` turns
    it into verdict rows.
    """
    n, k = len(flows), len(batches)
    for b in batches:
        if len(b) != n:
            raise ValueError(f"scorer {b.model!r} returned {len(b)} scores for {n} flows")
    if n == 0 or k == 0:
        out = empty_verdicts()
        out["cls"] = pd.Series([], dtype="str")
        return out
    take = np.repeat(np.arange(n), k)

    def stack(values: list[Any], dtype: Any = None) -> np.ndarray:
        if k == 1:
            return np.asarray(values[0], dtype=dtype)
        return np.stack([np.asarray(v, dtype=dtype) for v in values], axis=1).reshape(-1)

    def extra(*names: str) -> list[Any] | None:
        got = [next((b.extra[a] for a in names if a in b.extra), None) for b in batches]
        return None if all(v is None for v in got) else got

    cols: dict[str, Any] = {}
    for c in FLOW_COLUMNS:
        arr = flows[c].array
        cols[c] = pd.Series(arr if k == 1 else arr.take(take))
    cols["model"] = _str_series(np.tile(np.array([b.model for b in batches], dtype=object), n))
    cols["verdict"] = _missing_str(n * k)
    cols["score"] = stack([b.score for b in batches], np.float64)
    cols["threshold"] = stack([b.threshold for b in batches], np.float64)
    cols["notice"] = pd.array(np.zeros(n * k, dtype=bool), dtype="boolean")
    alt = extra("alt")
    cols["alt"] = (_missing_str(n * k) if alt is None else
                   _str_series(stack([np.full(n, None, dtype=object) if v is None else v
                                      for v in alt], object)))
    alt_score = extra("alt_score", "alt_p")
    cols["alt_score"] = (np.full(n * k, np.nan) if alt_score is None else
                         stack([np.full(n, np.nan) if v is None else v for v in alt_score],
                               np.float64))
    cols["n"] = pd.array(np.ones(n * k, dtype=np.int64), dtype="Int64")
    ctx = extra("context")
    cols["context"] = pd.Series(np.empty(n * k, dtype=object) if ctx is None else
                                stack([_context_cells(v, n) for v in ctx], object), dtype=object)
    cols["cls"] = _str_series(stack([b.cls for b in batches], object))
    return pd.DataFrame(cols)


def score_frame(flows: pd.DataFrame, scorers: Sequence[Scorer], policy: NoticePolicy
                ) -> pd.DataFrame:
    """Score a canonical flow batch with every scorer and decide: the rows to write now.

    Pure apart from the scorers' and the policy's own state (per-host windows,
    suppression windows), which is what makes consecutive batches one stream.
    """
    return policy.decide(assemble(flows, [s.score(flows) for s in scorers]))


# --------------------------------------------------------------------------- counters


@dataclass
class Counters:
    """What a run did, for the summary line and the benchmark."""

    files: int = 0
    files_unchanged: int = 0
    flows_read: int = 0
    flows_scored: int = 0
    rows_written: int = 0
    notices: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.started

    @property
    def flows_per_second(self) -> float:
        s = self.seconds or (time.perf_counter() - self.started)
        return self.flows_scored / s if s > 0 else 0.0

    def summary(self, skips: SkipLog | None = None, models: Sequence[str] = (),
                pending: int = 0, pairing: str = "") -> str:
        nots = sum(self.notices.values())
        per = ", ".join(f"{c} {n}" for c, n in sorted(self.notices.items()))
        lines = [
            f"files: {self.files}" + (f" ({self.files_unchanged} with nothing new)"
                                      if self.files_unchanged else ""),
            f"flows read: {self.flows_read}" + (f"\n{pairing}" if pairing else ""),
            f"skipped: {skips.summary() if skips else '0 skipped'}"
            + "".join(f"\n  e.g. {ex}" for ex in (skips.examples[:3] if skips else [])),
            f"scored: {self.flows_scored}" + (f" by {', '.join(models)}" if models else ""),
            f"rows written: {self.rows_written}",
            f"notices: {nots}" + (f" ({per})" if per else "")
            + (f"; {pending} held until their suppression interval ends" if pending else ""),
            f"speed: {self.flows_per_second:,.0f} flows/s ({self.seconds:.2f} s)",
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- pipeline


class Pipeline:
    """Scorers, policy and sinks for one stream; :meth:`process` is called per batch.

    ``pairer`` (a :class:`~zeekml.sources.biflow.Pairer`, the NetFlow pairing stage)
    joins unidirectional NetFlow records of the stream before they are scored; what
    it holds is saved with the rest of the state (``RunState.stages["pair"]``).
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        policy: NoticePolicy,
        sinks: Sequence[Sink],
        *,
        counters: Counters | None = None,
        pairer: Pairer | None = None,
    ) -> None:
        names = [s.name for s in scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"two scorers share a name: {names}")
        self.scorers = list(scorers)
        self.policy = policy
        self.sinks = list(sinks)
        self.counters = counters or Counters()
        self.pairer = pairer
        from zeekml.sources.biflow import PairStats

        self._pair_stats0 = PairStats()

    def process(self, flows: pd.DataFrame) -> pd.DataFrame:
        """Score one canonical batch and write its verdicts to every sink."""
        self.counters.flows_read += len(flows)
        if self.pairer is not None:  # NetFlow pairing (zeekml.sources.biflow)
            flows = self.pairer.push(flows)
        return self._score(flows)

    def _score(self, flows: pd.DataFrame) -> pd.DataFrame:
        if len(flows) == 0:
            return empty_verdicts()
        verdicts = score_frame(flows, self.scorers, self.policy)
        self.counters.flows_scored += len(flows)
        self._write(verdicts)
        return verdicts

    def _write(self, verdicts: pd.DataFrame) -> None:
        if not len(verdicts):
            return
        for sink in self.sinks:
            sink.write(verdicts)
        self.counters.rows_written += len(verdicts)
        nots = verdicts["verdict"][verdicts["notice"].fillna(False).to_numpy(dtype=bool)]
        self.counters.notices.update(nots.value_counts().to_dict())

    def finish(self) -> pd.DataFrame:
        """End of the stream: NetFlow records still waiting for their reverse are scored
        one-way, then notices still held for suppression are written."""
        if self.pairer is not None:
            self._score(self.pairer.finish())
        out = self.policy.finish()
        self._write(out)
        return out

    def pairing_summary(self) -> str:
        """One line on NetFlow pairing for the run summary ('' when nothing was paired)."""
        p = self.pairer
        if p is None:
            return ""
        before = self._pair_stats0  # the counts a restored state brought (earlier runs)
        candidates = p.stats.candidates - before.candidates
        pairs = p.stats.pairs - before.pairs
        if not candidates:
            return ""
        waiting = p.held + p.waiting
        return (f"paired: {pairs} flows from {2 * pairs} of {candidates} one-way NetFlow "
                "records"
                + (f"; {waiting} records waiting for their reverse (kept in the state)"
                   if waiting else ""))

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - close every sink, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ state
    def model_ids(self) -> dict[str, str]:
        """Model name -> ONNX digest (a state made by another model is not reused)."""
        out = {}
        for s in self.scorers:
            card = getattr(s, "card", None)
            data = getattr(card, "data", None) or {}
            out[s.name] = str(data.get("onnx_sha256", type(s).__name__))
        return out

    def capture(self, inputs: dict[str, dict[str, Any]], meta: dict[str, Any]) -> RunState:
        """Flush every sink, then collect the state that goes with what was written."""
        self.flush()
        return RunState(
            inputs=inputs,
            scorers={s.name: s.state_dict() for s in self.scorers},
            policy=self.policy.state_dict(),
            sinks={s.name: s.checkpoint() for s in self.sinks},
            meta={**meta, "models": self.model_ids()},
            stages={"pair": self.pairer.state_dict()} if self.pairer is not None else {},
        )

    def restore(self, state: RunState) -> None:
        """Load scorer, policy and sink state saved by :meth:`capture`."""
        saved_models = state.meta.get("models", {})
        ids = self.model_ids()
        for s in self.scorers:
            arrays = state.scorers.get(s.name)
            if arrays is None:
                continue
            if saved_models.get(s.name) != ids[s.name]:
                log.warning("model %s changed since the state was saved: its per-host context "
                            "starts empty", s.name)
                continue
            s.load_state_dict(arrays)
        if state.policy:
            self.policy.load_state_dict(state.policy)
        for sink in self.sinks:
            pos = state.sinks.get(sink.name)
            if pos:
                sink.restore(pos)
        saved_pairs = state.stages.get("pair")
        if saved_pairs:
            from zeekml.sources.biflow import Pairer

            if self.pairer is not None:
                self.pairer.load_state_dict(saved_pairs)
                self._pair_stats0 = dataclasses.replace(self.pairer.stats)
            else:  # pairing turned off since: what the last run held leaves one-way now
                leftover = Pairer()
                leftover.load_state_dict(saved_pairs)
                flows = leftover.finish()
                if len(flows):
                    log.info("pairing is off: %d NetFlow records held by the last run are "
                             "scored one-way", len(flows))
                    self._score(flows)


# --------------------------------------------------------------------------- inputs


@dataclass
class Piece:
    """Batches read from one input, and its cursor once they are written."""

    frames: list[pd.DataFrame]
    cursor: dict[str, Any] | None
    done: bool = False


def _gunzip(fh: Any, chunk: int, damaged: Callable[[str], None]) -> Iterator[bytes]:
    """Decompressed bytes of a (multi-member) gzip file, at most ``chunk`` per piece.

    Damage (a corrupt block, a stream cut short) ends the data after the last good
    byte and is reported through ``damaged`` (the rows before it are kept).
    """
    d = zlib.decompressobj(31)
    fed = False
    while True:
        raw = fh.read(1 << 20)
        if not raw:
            if fed:
                tail = d.flush()
                if tail:
                    yield tail
                if not d.eof:
                    damaged("truncated gzip stream (it ends before its end-of-stream marker)")
            return
        while raw:
            if not fed and not raw.strip(b"\x00"):
                break  # zero padding after the last member
            fed = True
            try:
                out = d.decompress(raw, chunk)
            except zlib.error as exc:
                damaged(f"corrupt gzip data ({exc})")
                return
            raw = d.unconsumed_tail
            if out:
                yield out
            if d.eof:  # a member ends: what follows is another member (or padding)
                raw = d.unused_data + raw
                d = zlib.decompressobj(31)
                fed = False


def read_input(
    path: str,
    cursor: dict[str, Any] | None,
    skips: SkipLog,
    batch_rows: int,
    *,
    hold_partial: bool,
    chunk: int | None = None,
) -> Iterator[Piece]:
    """Canonical batches of one input from its cursor on, each group with its new cursor.

    ``cursor`` (from an earlier run; None = from the start) carries ``offset`` (bytes
    of the decompressed stream consumed: complete lines), ``parser`` (the parser's
    state: header, line number) or, for nfcapd files, ``rows``. ``hold_partial``
    leaves a growing file's unfinished last line for the next run unless the file has
    been quiet for :data:`SETTLE_SECONDS` (cron mode). ``chunk`` is the read size
    (default: about one batch of lines); a cursor is yielded after every chunk.
    """
    from zeekml.sources import open_parser, read_flows, sniff_format
    from zeekml.sources.open import SNIFF_BYTES, chunk_bytes

    if path == "-":
        for frame in read_flows("-", skips=skips, batch_rows=batch_rows):
            yield Piece([frame], None)
        return
    ident = identify(path)
    base = {**ident.to_dict(), "path": os.path.abspath(path)}
    if ident.kind == "nfcapd":
        done_rows = int(cursor.get("rows", 0)) if cursor else 0
        seen = 0
        for frame in read_flows(path, skips=skips, batch_rows=batch_rows):
            lo = max(0, done_rows - seen)
            seen += len(frame)
            if lo < len(frame):
                yield Piece([frame.iloc[lo:].reset_index(drop=True)],
                            {**base, "rows": seen, "done": False})
        yield Piece([], {**base, "rows": max(seen, done_rows), "done": True}, done=True)
        return

    offset = int(cursor.get("offset", 0)) if cursor else 0
    size = chunk or chunk_bytes(batch_rows)
    with open(path, "rb") as fh:
        damage: list[str] = []
        if ident.kind == "gzip":
            stream: Iterator[bytes] = _gunzip(fh, size, damage.append)
        else:
            stream = iter(lambda: fh.read(size), b"")
        head = b""
        pieces: list[bytes] = []
        for data in stream:  # sniff from the real start of the content
            head += data
            pieces.append(data)
            if len(head) >= SNIFF_BYTES:
                break
        if not head.strip():
            yield Piece([], {**base, "offset": 0, "done": ident.kind == "gzip"},
                        done=ident.kind == "gzip")
            return
        fmt = sniff_format(head[:SNIFF_BYTES])
        parser = open_parser(fmt, path, skips, batch_rows=batch_rows)
        if cursor and cursor.get("parser") is not None and offset > 0:
            try:
                parser.set_state(cursor["parser"])
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"{path}: saved parser state is malformed: {exc}") from exc
            if int(parser.consumed) != offset:
                raise StateError(f"{path}: saved parser offset {parser.consumed} != {offset}")

        def rest() -> Iterator[bytes]:
            pos = 0
            for data in [*pieces, *stream]:
                end = pos + len(data)
                if end > offset:
                    yield data[max(0, offset - pos):]
                pos = end

        for data in rest():
            frames = parser.feed(data)
            yield Piece(frames, {**base, "offset": int(parser.consumed),
                                 "parser": parser.get_state(), "done": False})
        if damage:  # rows before the damage were delivered; the partial line is dropped
            skips.add(path, parser.line_no + 1, f"{damage[0]}; rows after this point are lost")
            yield Piece([], {**base, "offset": int(parser.consumed),
                             "parser": parser.get_state(), "done": True}, done=True)
            return
        settled = (time.time() - ident.mtime) >= SETTLE_SECONDS
        final = ident.kind == "gzip" or not hold_partial or settled
        frames = parser.close() if final else []
        yield Piece(frames, {**base, "offset": int(parser.consumed), "parser": parser.get_state(),
                             "done": ident.kind == "gzip"}, done=True)


# --------------------------------------------------------------------------- batch runs


@dataclass
class RunOptions:
    batch_rows: int = 65536
    checkpoint_seconds: float = 60.0
    max_cursors: int = 100_000


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

    Without ``store`` every input is read from its start and, at the end, notices held
    for suppression are written and the sinks closed with Zeek's ``#close``. With
    ``store`` (the caller holds its lock) the run continues from the saved state and
    leaves open suppression windows in it for the next run.
    """
    opts = options or RunOptions()
    counters = pipeline.counters
    state = store.load() if store is not None else None
    cursors: dict[str, dict[str, Any]] = dict(state.inputs) if state else {}
    meta: dict[str, Any] = dict(state.meta) if state else {}
    if state is not None:
        pipeline.restore(state)
    meta["runs"] = int(meta.get("runs", 0)) + 1
    last = time.monotonic()

    def checkpoint() -> None:
        nonlocal last
        if store is None:
            return
        kept = cursors
        if len(kept) > opts.max_cursors:  # forget the inputs seen longest ago
            order = sorted(kept, key=lambda k: kept[k].get("seen", 0))
            for k in order[: len(kept) - opts.max_cursors]:
                del kept[k]
        store.save(pipeline.capture(kept, meta))
        last = time.monotonic()

    for i, path in enumerate(paths):
        counters.files += 1
        key, cursor = (None, None)
        if path != "-" and store is not None:
            key, cursor = find_cursor(cursors, identify(path))
            if cursor is not None and _nothing_new(path, cursor):
                counters.files_unchanged += 1
                cursor["seen"] = time.time()
                continue
        for piece in read_input(path, cursor, skips, opts.batch_rows,
                                hold_partial=store is not None):
            for frame in piece.frames:
                pipeline.process(frame)
            if progress is not None:
                progress(counters, i, len(paths))
            if piece.cursor is not None and store is not None:
                if key is not None and key != piece.cursor["key"]:
                    cursors.pop(key, None)  # the head grew: the cursor is re-keyed
                key = piece.cursor["key"]
                cursors[key] = {**piece.cursor, "seen": time.time()}
                if piece.done or time.monotonic() - last >= opts.checkpoint_seconds:
                    checkpoint()
    if store is None:
        pipeline.finish()
    else:
        checkpoint()
    pipeline.close()
    counters.stop()
    return counters


def _nothing_new(path: str, cursor: dict[str, Any]) -> bool:
    """The input was read to its end before and has not grown."""
    if cursor.get("done"):
        return True
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    return cursor.get("kind") == "plain" and int(cursor.get("offset", -1)) == size
