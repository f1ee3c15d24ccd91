"""The ``zeekml tail`` loop: follow one input, micro-batch, score, write, checkpoint.

Micro-batching with a latency bound: flows parsed from the input wait in a pending
batch that is scored and written (one :meth:`Pipeline.process` call, then a sink flush)
as soon as it holds ``batch_rows`` flows **or** its oldest flow has waited
``max_latency`` seconds. A quiet input therefore still gets its verdicts within about
``max_latency`` plus the scoring time, and a busy one is scored in large batches.

Exactly once with ``--state``: a checkpoint flushes (fsyncs) every sink and saves,
atomically and together, the input's cursor (every generation's identity, byte offset
and parser header state, see :mod:`zeekml.runtime.tail_sources`), every scorer's window
state, the policy state and each sink's size. A checkpoint is taken at start-up before
anything is written, right after the first batch a (re)started process writes (so a
crash loop still advances), every ``checkpoint_seconds`` (stretched so that saving a
large window state takes at most about a tenth of the time; never in the middle of a
batch), at every input generation boundary (rotation, catch-up), around output
rotation and reopening, and at shutdown. After ``kill -9`` at any moment, the next run
truncates each output back to its checkpointed size and re-reads the input from the
checkpointed offsets with the checkpointed windows, so every verdict is in the output
exactly once (the rows written after the last checkpoint are re-produced identically).
A failure (a full disk, a collector that stays down) cuts the outputs back to the
last checkpoint before the process exits 1.

Signals: SIGTERM and SIGINT flush, checkpoint and exit 0; SIGHUP reopens the main
output (after ``logrotate`` moved it: a new file with a header; if it was not moved,
writing simply continues). ``--rotate SECONDS`` rotates the main output like Zeek:
at each multiple of the interval the file gets ``#close``, is renamed
``<name>.YYYY-MM-DD-HH-MM-SS.log`` (its open time, local time as Zeek writes it) and a
new file is started.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from zeekml import defaults
from zeekml.errors import ConfigError, StateError
from zeekml.records import schema
from zeekml.runtime.metrics import NullMetrics
from zeekml.runtime.pipeline import Pipeline
from zeekml.runtime.state import StateStore, journal_factory
from zeekml.runtime.tail_sources import TailSource
from zeekml.sinks.base import RunContext, Sink, call_optional

log = logging.getLogger(__name__)

#: while a batch is pending and data keeps coming, read at most this often
GATHER_SECONDS = 0.05


class _SignalRelay:
    """Signals handed to a thread of their own, so no handler ever takes a lock.

    A Python signal handler runs in the main thread between two bytecodes, possibly while
    that thread holds the very lock an ``Event.set`` in the handler would take (inside
    ``Event.wait``, or a first handler interrupted by a second signal): the process then
    hangs forever on SIGTERM (seen: ``timeout`` signals the command and its process group,
    so the tail got SIGTERM twice and never exited; a burst of 300 SIGHUPs then SIGTERM hung
    1 run in 5). The handler here only writes the signal's number to a pipe (``os.write``
    takes no Python lock); a daemon thread reads it and calls the action, taking its locks
    as any thread does.
    """

    def __init__(self, actions: dict[int, Callable[[], None]]) -> None:
        self._actions = actions
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)  # a full pipe drops a signal, never blocks a handler
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in actions}
        self._thread = threading.Thread(target=self._relay, name="zeekml-signals", daemon=True)
        self._thread.start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        try:
            os.write(self._w, bytes([signum]))
        except OSError:  # the pipe is full (a signal storm) or closed (shutting down)
            pass

    def _relay(self) -> None:
        while True:
            try:
                got = os.read(self._r, 64)
            except OSError:
                return
            if not got:
                return  # closed
            for signum in got:
                action = self._actions.get(signum)
                if action is not None:
                    action()

    def close(self) -> None:
        """Restore the previous handlers and end the relay thread."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        os.close(self._w)  # the reader sees end of file
        self._thread.join(timeout=5)
        os.close(self._r)

@dataclass(frozen=True)
class TailOptions:
    """Knobs of the loop (validated: the CLI passes user values straight in)."""

    batch_rows: int = defaults.TAIL_BATCH_ROWS
    max_latency: float = defaults.TAIL_MAX_LATENCY
    poll_interval: float = defaults.TAIL_POLL_INTERVAL
    checkpoint_seconds: float = defaults.TAIL_CHECKPOINT_SECONDS
    rotate: float | None = None
    read_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if self.batch_rows < 1:
            raise ConfigError(f"batch_rows must be >= 1, got {self.batch_rows}")
        for name in ("max_latency", "poll_interval", "checkpoint_seconds"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive number of seconds, got {v}")
        if self.rotate is not None and not (self.rotate >= 1 and math.isfinite(self.rotate)):
            raise ConfigError(f"rotate must be >= 1 second, got {self.rotate}")
        if self.read_bytes < 4096:
            raise ConfigError(f"read_bytes must be >= 4096, got {self.read_bytes}")


@dataclass
class TailStats:
    batches: int = 0
    checkpoints: int = 0
    rotations: int = 0
    reopens: int = 0
    started: float = field(default_factory=time.monotonic)
    #: seconds from start to the first verdict written (None: none yet)
    first_verdict: float | None = None


def rotated_name(path: Path, opened: float) -> Path:
    """``zeekml.log`` opened at ``opened`` -> ``zeekml.YYYY-MM-DD-HH-MM-SS.log`` (free name)."""
    stem, dot, rest = path.name.partition(".")
    suffix = f".{rest}" if dot else ""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(opened))
    cand = path.with_name(f"{stem}.{stamp}{suffix}")
    n = 1
    while cand.exists():  # two rotations within a second: never overwrite one
        cand = path.with_name(f"{stem}.{stamp}-{n}{suffix}")
        n += 1
    return cand


def next_boundary(now: float, interval: float) -> float:
    """The next multiple of ``interval`` seconds after ``now`` (Zeek aligns rotation so)."""
    return (math.floor(now / interval) + 1) * interval


class Tail:
    """Drive a :class:`Pipeline` from a :class:`TailSource` until stopped.

    ``make_main_sink`` builds a fresh main output (the pipeline's first sink) for
    rotation and reopening; ``input_key`` names the input's cursor in the state.
    """

    def __init__(
        self,
        source_factory: Callable[[dict[str, Any] | None], TailSource],
        pipeline: Pipeline,
        *,
        input_key: str,
        store: StateStore | None = None,
        options: TailOptions | None = None,
        make_main_sink: Callable[[], Sink] | None = None,
        metrics: NullMetrics | None = None,
    ) -> None:
        self.source_factory = source_factory
        self.metrics = metrics or NullMetrics()  # --metrics hooks (zeekml.runtime.metrics)
        self.pipeline = pipeline
        self.pipeline.on_incidents = self.metrics.incidents_written
        self.input_key = input_key
        self.store = store
        self.opts = options or TailOptions()
        self.make_main_sink = make_main_sink
        self.stats = TailStats()
        self._stop = threading.Event()
        self._reopen = False
        self._source: TailSource | None = None
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0
        self._pending_since = 0.0
        self._dirty = False
        self._commit_soon = True  # right after the first batch of this process
        self._last_commit = time.monotonic()
        self._commit_every = self.opts.checkpoint_seconds
        self._inputs: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to flush, checkpoint and return (from any thread; a signal
        handler goes through :class:`_SignalRelay`)."""
        self._stop.set()
        if self._source is not None:
            self._source.wake()

    def request_reopen(self) -> None:
        self._reopen = True
        if self._source is not None:
            self._source.wake()

    def _install_signals(self) -> _SignalRelay | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        return _SignalRelay({signal.SIGTERM: self.stop, signal.SIGINT: self.stop,
                             signal.SIGHUP: self.request_reopen})

    # ------------------------------------------------------------------ state
    def _load(self) -> dict[str, Any] | None:
        """Load the state (sinks begin first: restoring needs to know the run)."""
        state = self.store.load() if self.store is not None else None
        if state is None:
            self._meta.setdefault("stream", uuid.uuid4().hex)
            self.pipeline.begin(self._run_context())
            return None
        self._inputs = dict(state.inputs)
        self._meta = dict(state.meta)
        self._meta.setdefault("stream", uuid.uuid4().hex)
        self.pipeline.begin(self._run_context())
        self.pipeline.restore(state)
        cursor = self._inputs.get(self.input_key)
        if cursor is not None and not isinstance(cursor, dict):
            raise StateError(f"{self.store.path}: cursor of {self.input_key} is malformed")
        return cursor

    def _commit(self) -> None:
        """Flush every sink and save input cursor + scorer/policy/sink state together."""
        if self.store is None or self._source is None:
            self.pipeline.flush()
            return
        self._inputs[self.input_key] = self._source.cursor()
        t0 = time.monotonic()
        self.pipeline.commit(self.store, self._inputs, self._meta)
        self.metrics.checkpointed()
        self._dirty = False
        self._last_commit = time.monotonic()
        # a big window state (millions of hosts) takes a while to save: keep checkpoints
        # under about a tenth of the time, whatever checkpoint_seconds says
        self._commit_every = max(self.opts.checkpoint_seconds, 10 * (self._last_commit - t0))
        self.stats.checkpoints += 1

    # ------------------------------------------------------------------ batching
    def _flush_pending(self) -> None:
        if not self._pending:
            return
        frames, self._pending = self._pending, []
        self._pending_rows = 0
        batch = frames[0] if len(frames) == 1 else schema.concat(frames)
        step = self.opts.batch_rows
        started = time.monotonic()
        for lo in range(0, len(batch), step):  # never more rows than batch_rows at once
            part = batch if len(batch) <= step else batch.iloc[lo:lo + step].reset_index(drop=True)
            self.metrics.scored(part, self.pipeline.process(part))
            self.stats.batches += 1
        self.pipeline.flush()  # verdicts reach the file now (the latency bound)
        self.metrics.batch_done(started, self._pending_since)
        self._dirty = True
        if self.stats.first_verdict is None:
            self.stats.first_verdict = time.monotonic() - self.stats.started
            log.info("first verdicts written %.2f s after start", self.stats.first_verdict)
        if self._commit_soon:
            self._commit_soon = False
            self._commit()  # a restarted process makes progress even if it dies soon

    def _due(self, now: float) -> bool:
        return bool(self._pending) and (
            self._pending_rows >= self.opts.batch_rows
            or now - self._pending_since >= self.opts.max_latency
        )

    # ------------------------------------------------------------------ output files
    def _main_sink_path(self) -> Path | None:
        sink = self.pipeline.sinks[0] if self.pipeline.sinks else None
        f = getattr(sink, "file", None)
        p = getattr(f, "path", None)
        return Path(p) if p is not None else None

    def _replace_main_sink(self, restore_from: dict[str, Any] | None) -> None:
        old = self.pipeline.sinks[0]
        if hasattr(old, "stateful"):
            # a closed file ends with #close, as Zeek writes it; if the same file goes on
            # (SIGHUP without a move), restore() below cuts the #close back off
            old.stateful = False
        old.close()
        assert self.make_main_sink is not None
        new = self.make_main_sink()
        call_optional(new, "begin", self._run_context())
        if restore_from:
            new.restore(restore_from)  # same file still there: continue
        self.pipeline.sinks[0] = new

    def _reopen_output(self) -> None:
        self._reopen = False
        if self.make_main_sink is None or self._main_sink_path() is None:
            log.info("SIGHUP: the output is not a file; nothing to reopen")
            return
        self._flush_pending()
        self._commit()
        cp = self.pipeline.sinks[0].checkpoint()
        self._replace_main_sink(cp)
        self._commit()
        self.stats.reopens += 1
        log.info("reopened %s", self._main_sink_path())

    def _rotate_output(self, now_wall: float) -> None:
        path = self._main_sink_path()
        if path is None or self.make_main_sink is None:
            return
        self._flush_pending()
        self._commit()
        opened = float(self._meta.get("out_opened", now_wall))
        self._replace_main_sink(None)
        if path.exists():
            dest = rotated_name(path, opened)
            os.replace(path, dest)
            log.info("rotated %s -> %s", path, dest.name)
        self._meta["out_opened"] = now_wall
        self.pipeline.sinks[0].checkpoint()  # opens the new file (header) now
        self._commit()
        self.stats.rotations += 1

    # ------------------------------------------------------------------ loop
    def _run_context(self) -> RunContext:
        journal = None
        if self.store is not None:
            journal = journal_factory(self.store, str(self._meta["stream"]))
        return RunContext(stateful=self.store is not None, streaming=True, journal=journal)

    def run(self) -> TailStats:
        relay = self._install_signals()
        try:
            cursor = self._load()
            self._meta["runs"] = int(self._meta.get("runs", 0)) + 1
            self._meta.setdefault("out_opened", time.time())
            self._source = self.source_factory(cursor)
            try:
                if self.store is not None:
                    self._commit()  # write-ahead: outputs' starting positions first
                self._loop()
            except BaseException:
                self.pipeline.abort()  # cut every output back to the last checkpoint
                raise
        finally:
            if self._source is not None:
                self._source.close()
            if relay is not None:
                relay.close()
        return self.stats

    def _loop(self) -> None:
        src = self._source
        assert src is not None
        opts = self.opts
        next_rotate = next_boundary(time.time(), opts.rotate) if opts.rotate else math.inf
        while not self._stop.is_set():
            if self._reopen:
                self._reopen_output()
            if time.time() >= next_rotate:
                self._rotate_output(time.time())
                next_rotate = next_boundary(time.time(), opts.rotate or math.inf)
            frames = src.poll(opts.read_bytes)
            now = time.monotonic()
            got = False
            for f in frames:
                if len(f):
                    if not self._pending:
                        self._pending_since = now
                    self._pending.append(f)
                    self._pending_rows += len(f)
                    self.metrics.read(len(f))
                    got = True
            boundary, src.boundary = src.boundary, False
            if self._due(now) or ((boundary or src.finished) and self._pending):
                self._flush_pending()
            if boundary or (self._dirty and now - self._last_commit >= self._commit_every):
                self._commit()  # a file ended: commit before the next one is read
            self.metrics.tick(src, self.pipeline.sinks)
            if src.finished:
                break
            if got or getattr(src, "busy", False):
                if self._pending and not self._due(time.monotonic()):
                    # a steady trickle: gather it for a moment rather than parse tiny
                    # chunks (filesystem events would wake a wait() at every write)
                    time.sleep(max(0.0, min(GATHER_SECONDS, self._pending_since
                                            + opts.max_latency - time.monotonic())))
                continue
            timeout = opts.poll_interval
            if self._pending:
                timeout = max(0.0, min(timeout, self._pending_since + opts.max_latency - now))
            if opts.rotate:
                timeout = max(0.0, min(timeout, next_rotate - time.time()))
            if timeout > 0:
                src.wait(timeout)
        self._flush_pending()
        self.pipeline.counters.files = int(getattr(src, "files", 0))
        if self.store is None:
            self.pipeline.finish()  # no later run will close open suppression windows
        self._commit()
