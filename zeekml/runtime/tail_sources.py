"""What ``zeekml tail`` follows, as one interface: canonical batches plus a cursor.

Three kinds, chosen by :func:`open_tail_source`:

* :class:`FileTail` a live log (Zeek TSV/JSON, nfdump CSV/JSON text): first every
  earlier generation it has not finished (rotated beside the log or into zeekctl's
  archive while zeekml was down or busy, :mod:`zeekml.sources.rotation`), oldest
  first, through the one input path (:func:`zeekml.sources.stream.read_pieces`); then
  the live file through the :class:`~zeekml.sources.follow.Follower`, with a
  :class:`~zeekml.sources.stream.Decoder` per generation. After each rotation it
  looks again, so two rotations between two looks lose nothing;
* :class:`PipeTail` the same decoder on a pipe (``-``): no resumable position;
* :class:`DirTail`  an nfcapd directory: each closed file once, through ``nfdump``.

The contract the tail loop relies on: :meth:`poll` returns every batch parsed so far
(nothing is parsed and held back), so right after the loop has scored and written
those batches, :meth:`cursor` describes exactly the input consumed. A restart with
that cursor (``resume=``) continues at the first flow not yet written. The cursor is
JSON-able and validated on load (it is read back from a state file).

A FileTail cursor holds, per generation (keyed by content,
:mod:`zeekml.sources.generation`), how far it was read and whether it is finished, and
``since``: when the state first followed this log. Generations rotated away before
that are history nobody asked for; finished ones are never read again.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from zeekml.errors import StateError
from zeekml.sources.follow import Chunk, Ended, Follower, Opened, PipeFollower, Position
from zeekml.sources.generation import Generation, identify, match_cursor
from zeekml.sources.nfcapd_dir import DirCursor, NfcapdDir, iter_file
from zeekml.sources.options import ReadOptions
from zeekml.sources.rotation import DEFAULT_LOOKBACK, earlier_generations
from zeekml.sources.skips import SkipLog
from zeekml.sources.stream import Decoder, Piece, read_pieces

log = logging.getLogger(__name__)

#: most generation cursors a FileTail keeps (finished ones are also dropped once older
#: than the look-back)
MAX_GENERATIONS = 10_000


class TailSource(Protocol):
    name: str
    finished: bool  # a pipe at EOF: nothing more will come
    boundary: bool  # a file generation ended since the last cursor(): commit now

    def poll(self, max_bytes: int) -> list[pd.DataFrame]: ...

    def cursor(self) -> dict[str, Any]: ...

    def wait(self, timeout: float) -> None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


def _check_resume(resume: Any, kind: str, name: str) -> dict[str, Any]:
    if not isinstance(resume, dict) or resume.get("kind") != kind:
        raise StateError(f"{name}: the state's cursor is not for a {kind} input")
    return resume


class FileTail:
    """A live log and its unfinished earlier generations; resumable from its cursor."""

    kind = "file"

    def __init__(self, path: str, *, skips: SkipLog, options: ReadOptions | None = None,
                 poll_interval: float = 0.25, resume: dict[str, Any] | None = None,
                 archive: str | None = None, lookback: float = DEFAULT_LOOKBACK,
                 watch: bool = True) -> None:
        self.name = str(path)
        self.path = os.path.abspath(path)
        self.skips = skips
        self.options = options or ReadOptions()
        self.poll_interval = poll_interval
        self.archive = archive
        self.lookback = lookback
        self.watch = watch
        self.finished = False
        self.boundary = False
        self.files = 0  # generations read (caught up or followed)
        self.caught_up = 0  # earlier generations read before following
        self.gens: dict[str, dict[str, Any]] = {}
        self.since = time.time()
        if resume is not None:
            self._load(_check_resume(resume, self.kind, self.name))
        self._phase = "scan"
        self._queue: list[tuple[Path, Generation]] = []
        self._reader: Iterator[Piece] | None = None
        self._reading_key: str | None = None
        self.follower: Follower | None = None
        self._dec: Decoder | None = None
        self._live_key: str | None = None
        self._live_resume: dict[str, Any] | None = None

    def _load(self, resume: dict[str, Any]) -> None:
        since, gens = resume.get("since"), resume.get("generations", {})
        if not isinstance(since, (int, float)) or isinstance(since, bool) or not math.isfinite(since):
            raise StateError(f"{self.name}: the state's cursor has no valid 'since' time")
        if not isinstance(gens, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) for k, v in gens.items()):
            raise StateError(f"{self.name}: the state's generation cursors are malformed")
        self.since = float(since)
        self.gens = dict(gens)

    # ------------------------------------------------------------------ reading
    @property
    def busy(self) -> bool:
        """Catching up (or about to look): poll again without waiting."""
        return self._phase != "live"

    def poll(self, max_bytes: int = 1 << 20) -> list[pd.DataFrame]:
        if self._phase == "scan":
            self._scan()
        if self._phase == "catchup":
            return self._catch_up_step()
        return self._follow(max_bytes)

    def _scan(self) -> None:
        self._queue = earlier_generations(self.path, self.gens, since=self.since,
                                          archive=self.archive, lookback=self.lookback)
        if self._queue:
            self._phase = "catchup"
            log.info("%s: %d earlier generation(s) to finish first: %s", self.name,
                     len(self._queue), ", ".join(p.name for p, _ in self._queue[:5]))
            return
        self._phase = "live"
        if self.follower is None:
            self.follower = Follower(self.path, poll_interval=self.poll_interval,
                                     resume=self._live_position(), watch=self.watch, hold=True)
        else:
            self.follower.release()

    def _catch_up_step(self) -> list[pd.DataFrame]:
        if self._reader is None:
            p, gen = self._queue.pop(0)
            key, cursor = match_cursor(self.gens, gen)
            start = int(cursor.get("offset", cursor.get("rows", 0)) or 0) if cursor else 0
            log.info("%s: reading %s (%s) from %s", self.name, p, gen.kind,
                     f"byte {start}" if start else "its start")
            self._reader = read_pieces(str(p), cursor, self.skips, self.options, final=True,
                                       gen=gen)
            self._reading_key = key
            self.files += 1
            self.caught_up += 1
        piece = next(self._reader)
        if piece.cursor is not None:
            self._reading_key = self._put(self._reading_key, piece.cursor)
        if piece.done:
            self._reader = None
            self.boundary = True  # commit before the next generation is read
            if not self._queue:
                self._phase = "scan"  # look again: more may have rotated meanwhile
        return piece.frames

    def _live_position(self) -> Position | None:
        """Where to resume the live file: its generation's cursor, if the state has one."""
        self._live_resume = None
        try:
            gen = identify(self.path)
        except OSError:
            return None
        key, cursor = match_cursor(self.gens, gen)
        if cursor is None:
            return None
        offset = cursor.get("offset", 0)
        if not isinstance(offset, int) or offset <= 0 or offset > gen.size:
            return None
        self._live_key, self._live_resume = key, cursor
        n = min(int(cursor.get("head_len", 0) or 0), offset, gen.head_len)
        return Position(gen.dev, gen.ino, offset, n, gen.key_at(n).split(":", 1)[1])

    def _follow(self, max_bytes: int) -> list[pd.DataFrame]:
        assert self.follower is not None
        out: list[pd.DataFrame] = []
        for ev in self.follower.read(max_bytes):
            if isinstance(ev, Chunk):
                assert self._dec is not None
                out.extend(self._dec.feed(ev.data))
            elif isinstance(ev, Opened):
                cur = self._live_resume if ev.reason == "resumed" else None
                fmt, state = (cur.get("fmt") or (cur.get("parser") or {}).get("format"),
                              cur.get("parser")) if cur else (None, None)
                self._dec = Decoder(ev.path, self.skips, self.options, fmt=fmt,
                                    parser_state=state, start=ev.offset)
                if ev.reason != "resumed":
                    self._live_key = None
                self._live_resume = None
                self.files += 1
                self.boundary = True  # commit the new identity before reading far into it
            elif isinstance(ev, Ended):
                assert self._dec is not None
                drained = ev.reason in ("rotated", "deleted")
                if drained:  # read to its end through the open handle: complete
                    out.extend(self._dec.close())
                self._save_live(done=drained)
                self._dec = None
                self._live_key = None
                self.boundary = True
                self._phase = "scan"  # generations rotated in between come first
                break
        return out

    # ------------------------------------------------------------------ cursor
    def _put(self, old_key: str | None, cursor: dict[str, Any]) -> str:
        key = str(cursor["key"])
        if old_key is not None and old_key != key:
            self.gens.pop(old_key, None)  # the head grew: the cursor is re-keyed
        self.gens[key] = {**cursor, "seen": time.time()}
        return key

    def _save_live(self, done: bool = False) -> None:
        """The live generation's cursor from the follower's identity and the decoder."""
        if self._dec is None or self.follower is None:
            return
        pos = self.follower.position_at(self._dec.offset)
        if pos is None or pos.head_len == 0:
            return  # nothing consumed yet: nothing to remember
        cursor = {"key": f"{pos.head_len}:{pos.head_sha}", "kind": "plain", "dev": pos.dev,
                  "ino": pos.ino, "head_len": pos.head_len, "head_sha256": pos.head_sha,
                  "path": self.path, "offset": pos.offset, "fmt": self._dec.fmt,
                  "parser": self._dec.state(), "done": done}
        self._live_key = self._put(self._live_key, cursor)

    def cursor(self) -> dict[str, Any]:
        self.boundary = False
        self._save_live()
        horizon = time.time() - self.lookback - 86400.0
        gens = {k: c for k, c in self.gens.items()
                if not (c.get("done") and float(c.get("seen", 0) or 0) < horizon)}
        if len(gens) > MAX_GENERATIONS:
            for k in sorted(gens, key=lambda k: gens[k].get("seen", 0))[: len(gens) - MAX_GENERATIONS]:
                del gens[k]
        self.gens = gens
        return {"kind": self.kind, "path": self.path, "since": self.since, "generations": gens}

    def bytes_behind(self) -> int | None:
        """Bytes of the live log not yet turned into rows (``tail --metrics``); None while
        earlier generations are being caught up (the backlog is then larger than that)."""
        if self.follower is None or self._dec is None or self._phase != "live":
            return None
        return self.follower.unread_bytes(self._dec.offset)

    def wait(self, timeout: float) -> None:
        if self.follower is not None:
            self.follower.wait(timeout)
        else:
            time.sleep(min(timeout, self.poll_interval))

    def wake(self) -> None:
        if self.follower is not None:
            self.follower.wake()

    def close(self) -> None:
        if self._reader is not None and hasattr(self._reader, "close"):
            self._reader.close()
        if self.follower is not None:
            self.follower.close()


class PipeTail:
    """stdin (``-``): one stream through a :class:`Decoder`; ends at EOF, no resuming."""

    kind = "pipe"

    def __init__(self, *, skips: SkipLog, options: ReadOptions | None = None,
                 poll_interval: float = 0.25, fd: int = 0) -> None:
        self.name = "-"
        self.finished = False
        self.boundary = False
        self.files = 1
        self._dec = Decoder("<stdin>", skips, options)
        self.follower = PipeFollower(fd, poll_interval=poll_interval)

    def poll(self, max_bytes: int = 1 << 20) -> list[pd.DataFrame]:
        out: list[pd.DataFrame] = []
        for ev in self.follower.read(max_bytes):
            if isinstance(ev, Chunk):
                out.extend(self._dec.feed(ev.data))
            elif isinstance(ev, Ended):
                out.extend(self._dec.close())
                self.finished = True
                self.boundary = True
        return out

    def cursor(self) -> dict[str, Any]:
        self.boundary = False
        return {"kind": self.kind, "path": "-"}

    def wait(self, timeout: float) -> None:
        self.follower.wait(timeout)

    def wake(self) -> None:
        self.follower.wake()

    def close(self) -> None:
        self.follower.close()

class DirTail:
    """An nfcapd directory: closed files in name order, each once, resumable by rows."""

    kind = "nfcapd_dir"

    def __init__(self, directory: str, *, skips: SkipLog, options: ReadOptions | None = None,
                 poll_interval: float = 1.0, resume: dict[str, Any] | None = None,
                 watch: bool = True) -> None:
        self.name = str(directory)
        self.skips = skips
        self.batch_rows = (options or ReadOptions()).batch_rows
        self.finished = False
        self.boundary = False
        self.files = 0
        cursor = None
        if resume is not None:
            if not isinstance(resume, dict) or resume.get("kind") != self.kind:
                raise StateError(f"{self.name}: the state's cursor is not for an nfcapd directory")
            cursor = DirCursor.from_dict(resume)
        self.dir = NfcapdDir(directory, poll_interval=poll_interval, cursor=cursor, watch=watch)
        self._file: Path | None = None
        self._rows = 0
        self._iter: Iterator[pd.DataFrame] | None = None
        self._announced = False

    def poll(self, max_bytes: int = 1 << 20) -> list[pd.DataFrame]:
        if not self._announced:
            self._announced = True
            log.info("%s: watching for closed nfcapd files after %r", self.name,
                     self.dir.cursor.done or "the start")
            try:
                zeek = sorted(n for n in os.listdir(self.name) if n.startswith("conn")
                              and ".log" in n)[:1]
            except OSError:
                zeek = []
            if zeek:
                log.warning("%s: holds Zeek logs (%s); a directory is followed as an nfcapd "
                            "directory: to follow Zeek, name the log (%s)", self.name, zeek[0],
                            os.path.join(self.name, "conn.log"))
        if self._iter is None:
            ready = self.dir.ready()
            if not ready:
                return []
            self._file = ready[0]
            self.files += 1
            cur = self.dir.cursor
            skip = cur.rows if cur.file == self._file.name else 0
            self._rows = skip
            log.info("%s: scoring %s%s", self.name, self._file.name,
                     f" from row {skip}" if skip else "")
            self._iter = iter_file(self._file, self.skips, self.batch_rows, skip)
        try:
            df = next(self._iter)
        except StopIteration:
            assert self._file is not None
            self.dir.mark_done(self._file.name)
            self._iter = None
            self._file = None
            self.boundary = True
            return []
        self._rows += len(df)
        return [df]

    @property
    def busy(self) -> bool:
        """A file is being read: poll again without waiting."""
        return self._iter is not None

    def cursor(self) -> dict[str, Any]:
        self.boundary = False
        cur = self.dir.cursor
        if self._file is not None:
            cur = DirCursor(cur.done, self._file.name, self._rows)
        return {"kind": self.kind, "path": self.name, **cur.to_dict()}

    def wait(self, timeout: float) -> None:
        self.dir.wait(timeout)

    def wake(self) -> None:
        self.dir.wake()

    def close(self) -> None:
        if self._iter is not None and hasattr(self._iter, "close"):
            self._iter.close()  # stops the nfdump process
        self.dir.close()


def open_tail_source(path: str, *, skips: SkipLog, options: ReadOptions, poll_interval: float,
                     resume: dict[str, Any] | None = None, archive: str | None = None,
                     lookback: float = DEFAULT_LOOKBACK) -> TailSource:
    """``-`` -> pipe; a directory -> nfcapd directory; anything else -> live log."""
    if path == "-":
        return PipeTail(skips=skips, options=options, poll_interval=poll_interval)
    if os.path.isdir(path):
        return DirTail(path, skips=skips, options=options, poll_interval=poll_interval,
                       resume=resume)
    return FileTail(path, skips=skips, options=options, poll_interval=poll_interval,
                    resume=resume, archive=archive, lookback=lookback)
