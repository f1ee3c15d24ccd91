"""Follower: read a growing file like ``tail -F``, through rotation, truncation and crashes.

The follower knows only files, identities, sizes and offsets; it never parses. It hands
out *events* in stream order, so a consumer can keep one parser per file generation:

``Opened(gen, offset, reason)``  a file generation starts at ``offset`` (0, or the
                                 checkpointed offset on resume): start a fresh parser;
``Chunk(gen, offset, data)``     bytes of that generation at that offset;
``Ended(gen, offset, reason)``   the generation is finished (rotated away, deleted,
                                 truncated): close its parser.

Identity is ``(st_dev, st_ino)`` plus a fingerprint of the file's first bytes. While
the follower holds a file open its inode cannot be reused, so the inode alone tells a
rename or a re-creation apart; the fingerprint is what makes a *checkpointed* position
trustworthy after a restart (inode numbers are reused after deletion) and what detects
a file rewritten in place past the old offset (copytruncate then fast regrowth).

Rotation: when the path names another inode (bare Zeek renamed ``conn.log`` to
``conn.2024-01-01-10-00-00.log`` and opened a new one; zeekctl moved it into the archive
and gzipped it) or no inode at all (deleted), the old file is first read to its end
through the still-open handle, so the last lines written before the rename are not
lost, and only then is the new file opened and read from its start. A file that
shrinks below the offset was truncated in place: it is re-read from 0.

Resume: :class:`Position` (identity, offset, fingerprint) says where the path's file
was. If the path still holds that file (same inode and fingerprint), reading continues
at the offset; otherwise the path's file is read from 0. Finding generations rotated
away while zeekml was down is not the follower's job but
:mod:`zeekml.sources.rotation`'s (``zeekml tail`` reads them before it follows).

``hold=True`` makes the follower stop after each ``Ended`` until :meth:`Follower.release`:
the consumer reads the generations rotated in between before the new file is opened.

Promptness: a watchdog observer on the parent directory wakes :meth:`Follower.wait`
when the path is modified, created, moved or deleted; polling every ``poll_interval``
seconds is the fallback for network filesystems and missed events.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from zeekml.errors import StateError
from zeekml.sources.generation import HEAD_BYTES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    gen: int
    offset: int
    reason: str  # "start" | "created" | "resumed" | "rotated" | "truncated"
    path: str


@dataclass(frozen=True)
class Chunk:
    gen: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Ended:
    gen: int
    offset: int
    reason: str  # "rotated" | "deleted" | "truncated"


Event = Opened | Chunk | Ended


@dataclass(frozen=True)
class Position:
    """Where a followed file was: what a checkpoint stores, validated on load."""

    dev: int
    ino: int
    offset: int
    head_len: int
    head_sha: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "head_len": self.head_len,
            "head_sha": self.head_sha,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Position:
        if not isinstance(d, dict):
            raise StateError("input position must be an object")
        try:
            vals = {k: d[k] for k in ("dev", "ino", "offset", "head_len")}
            sha = d["head_sha"]
        except KeyError as exc:
            raise StateError(f"input position lacks {exc}") from exc
        for k, v in vals.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise StateError(f"input position field {k!r} must be a non-negative integer")
        if vals["head_len"] > HEAD_BYTES or vals["head_len"] > vals["offset"]:
            raise StateError("input position head_len is out of range")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise StateError("input position head_sha must be a sha256 hex digest")
        return cls(head_sha=sha, **vals)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_head(fh: BinaryIO, n: int) -> bytes:
    """The first ``n`` bytes of an open file."""
    if n <= 0:
        return b""
    return os.pread(fh.fileno(), n, 0)


#: watchdog events that change nothing in a file (watchdog >= 2.3 reports opens): a reader
#: opening the log must not wake the follower, whose look would find no new byte yet (the
#: writer's open comes before its write, which wakes it with "modified")
QUIET_EVENTS = frozenset({"opened", "closed_no_write"})


class _Watcher:
    """watchdog observer on the parent directory that wakes the follower."""

    def __init__(self, path: Path, wake: threading.Event) -> None:
        self.path = path
        self.wake = wake
        self.observer: Any = None

    def start(self) -> bool:
        if self.observer is not None:
            return True
        path = os.path.abspath(self.path)  # event paths are built on the watched dir
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            return False
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return False
        target = os.fsencode(path)
        wake = self.wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type in QUIET_EVENTS:
                    return
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    if p and os.fsencode(os.path.abspath(os.fsdecode(p))) == target:
                        wake.set()
                        return

        try:
            obs = Observer()
            obs.daemon = True
            obs.schedule(Handler(), parent, recursive=False)
            obs.start()
        except (OSError, RuntimeError) as exc:
            log.warning("%s: filesystem events unavailable (%s); polling only", parent, exc)
            return False
        self.observer = obs
        return True

    def stop(self) -> None:
        if self.observer is not None:
            try:
                self.observer.stop()
                self.observer.join(timeout=2)
            except RuntimeError:
                pass
            self.observer = None


class Follower:
    """Follow ``path`` across rotation, truncation, deletion and re-creation.

    Call :meth:`read` repeatedly (it never blocks) and :meth:`wait` when it returned
    nothing. :meth:`position` is the checkpointable position *of the bytes handed out
    so far*; a consumer that has parsed fewer bytes passes its own offset to
    :meth:`position_at`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float = 0.25,
        resume: Position | None = None,
        watch: bool = True,
        hold: bool = False,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 s, got {poll_interval}")
        self.path = Path(path)
        self.hold = hold
        self._held = False
        self.poll_interval = float(poll_interval)
        self._resume = resume
        self._fh: BinaryIO | None = None
        self._ident: tuple[int, int] | None = None
        self._offset = 0
        self._head = b""
        self._gen = 0
        self._draining: str | None = None  # reason, once the path moved on
        self._then_open: str | None = None  # reason for the next Opened after an Ended
        self._started = False
        self._wake = threading.Event()
        self._watcher = _Watcher(self.path, self._wake) if watch else None

    # ----------------------------------------------------------------- public
    @property
    def gen(self) -> int:
        return self._gen

    @property
    def offset(self) -> int:
        return self._offset

    def position_at(self, offset: int) -> Position | None:
        """Checkpointable position at ``offset`` of the current generation."""
        if self._ident is None:
            return None
        n = min(len(self._head), offset)
        return Position(self._ident[0], self._ident[1], offset, n, _sha(self._head[:n]))

    def position(self) -> Position | None:
        return self.position_at(self._offset)

    def unread_bytes(self, offset: int | None = None) -> int | None:
        """Bytes not yet consumed: the open generation after ``offset`` (default: after
        what was handed out) plus, once the path names a newer file, that file's size.

        None while no file is open. For monitoring (``tail --metrics``): two stat calls.
        """
        if self._fh is None:
            return None
        try:
            size = os.fstat(self._fh.fileno()).st_size
        except (OSError, ValueError):
            return None
        behind = max(0, size - (self._offset if offset is None else offset))
        try:
            st = os.stat(self.path)
        except OSError:
            return behind
        if (st.st_dev, st.st_ino) != self._ident:
            behind += st.st_size
        return behind

    def wake(self) -> None:
        """Make a pending :meth:`wait` return now (signal handlers call this)."""
        self._wake.set()

    @property
    def holding(self) -> bool:
        """Stopped after an ``Ended`` (``hold=True``) until :meth:`release`."""
        return self._held

    def release(self) -> None:
        """Go on after a held ``Ended``: the path's (new) file is opened at the next read."""
        self._held = False

    def wait(self, timeout: float | None = None) -> None:
        """Block until the path changes or ``timeout`` (default poll interval) passes."""
        if self._watcher is not None and self._watcher.observer is None:
            self._watcher.start()
        self._wake.wait(self.poll_interval if timeout is None else min(timeout, self.poll_interval))
        self._wake.clear()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, max_bytes: int = 1 << 20) -> list[Event]:
        """Events available now, at most about ``max_bytes`` of data; never blocks."""
        events: list[Event] = []
        if self._held:
            return events
        if not self._started:
            self._started = True
            if self._watcher is not None:
                self._watcher.start()
            self._first_open(events)
        if self._fh is None:
            self._open_path(events, self._then_open or "created")
            if self._fh is None:
                return events
        budget = max_bytes
        while True:
            data = self._fh.read(budget)
            if data:
                self._emit(events, data)
                budget -= len(data)
                if budget <= 0:
                    return events
                continue
            # at the end of the current file
            if self._draining is not None:
                self._end(events, self._draining)
                if self.hold:
                    self._held = True
                    return events
                self._open_path(events, self._then_open or "rotated")
                if self._fh is None:
                    return events
                continue
            change = self._check_path()
            if change is None:
                return events
            if change == "truncated":
                self._end(events, "truncated")
                self._then_open = "truncated"
                if self.hold:
                    self._held = True
                    return events
                self._open_path(events, "truncated")
                if self._fh is None:
                    return events
                continue
            # rotated or deleted: read the old file to its end before switching
            self._draining = change
            self._then_open = "rotated" if change == "rotated" else "created"

    # ---------------------------------------------------------------- helpers
    def _emit(self, events: list[Event], data: bytes) -> None:
        if len(self._head) < HEAD_BYTES and self._offset < HEAD_BYTES:
            take = data[: HEAD_BYTES - self._offset] if self._offset == len(self._head) else b""
            self._head += take
        events.append(Chunk(self._gen, self._offset, data))
        self._offset += len(data)

    def _end(self, events: list[Event], reason: str) -> None:
        events.append(Ended(self._gen, self._offset, reason))
        log.info("%s: finished %s at byte %d (%s)", self.path, self._ident, self._offset, reason)
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        # identity and head stay until the next file is adopted: the consumer asks
        # position_at() for the ended generation's final cursor
        self._draining = None

    def _stat_path(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def _check_path(self) -> str | None:
        """What happened to the path since we opened it: None, rotated, deleted, truncated."""
        st = self._stat_path()
        if st is None:
            return "deleted"
        if (st.st_dev, st.st_ino) != self._ident:
            return "rotated"
        assert self._fh is not None
        size = os.fstat(self._fh.fileno()).st_size
        if size < self._offset:
            return "truncated"
        if self._head and _read_head(self._fh, len(self._head)) != self._head:
            return "truncated"  # rewritten in place past our offset
        return None

    def _open(self, path: Path) -> tuple[BinaryIO, os.stat_result] | None:
        try:
            fh = open(path, "rb")  # owned by the follower
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise OSError(exc.errno, "is a directory, not a log file", str(path)) from exc
        return fh, os.fstat(fh.fileno())

    def _adopt(
        self, events: list[Event], fh: BinaryIO, st: os.stat_result, reason: str,
        offset: int, where: Path | None = None,
    ) -> None:
        """Make ``fh`` the current generation, positioned at ``offset``."""
        self._fh = fh
        self._ident = (st.st_dev, st.st_ino)
        self._head = _read_head(fh, min(offset, HEAD_BYTES))
        if offset:
            fh.seek(offset)
        self._offset = offset
        self._gen += 1
        self._then_open = None
        shown = where or self.path
        events.append(Opened(self._gen, offset, reason, str(shown)))
        log.info("%s: following %s from byte %d (%s)", shown, self._ident, offset, reason)

    def _open_path(self, events: list[Event], reason: str) -> None:
        opened = self._open(self.path)
        if opened is not None:
            self._adopt(events, *opened, reason, 0)

    def _first_open(self, events: list[Event]) -> None:
        pos, self._resume = self._resume, None
        if pos is None:
            self._open_path(events, "start")
            if self._fh is None:
                log.info("%s: does not exist yet; waiting for it to appear", self.path)
            return
        opened = self._open(self.path)
        if opened is not None:
            fh, st = opened
            if (
                (st.st_dev, st.st_ino) == (pos.dev, pos.ino)
                and st.st_size >= pos.offset
                and _sha(_read_head(fh, pos.head_len)) == pos.head_sha
            ):
                self._adopt(events, fh, st, "resumed", pos.offset)
                return
            fh.close()
        # another file now: the caller reads rotated generations itself
        self._open_path(events, "start")
        if self._fh is None:
            log.info("%s: does not exist yet; waiting for it to appear", self.path)


class PipeFollower:
    """A pipe (stdin) as the same event stream: one generation, ``Ended("eof")`` at EOF.

    ``nfdump -r FILE -o csv | zeekml tail -`` and ``zeek ... | zeekml tail -``: reads
    what is available without blocking (``select`` then one ``os.read`` per ready
    chunk), so the micro-batcher's latency bound holds on a slow pipe too. A pipe has
    no identity or offset to resume from: :meth:`position_at` is None.
    """

    def __init__(self, fd: int = 0, *, poll_interval: float = 0.25, name: str = "<stdin>") -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 s, got {poll_interval}")
        self.fd = fd
        self.name = name
        self.poll_interval = float(poll_interval)
        self.eof = False
        self._offset = 0
        self._started = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def offset(self) -> int:
        return self._offset

    def position_at(self, offset: int) -> Position | None:
        return None

    def read(self, max_bytes: int = 1 << 20) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(Opened(1, 0, "start", self.name))
        budget = max_bytes
        while not self.eof and budget > 0:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                break
            data = os.read(self.fd, min(budget, 1 << 20))
            if not data:
                self.eof = True
                events.append(Ended(1, self._offset, "eof"))
                break
            events.append(Chunk(1, self._offset, data))
            self._offset += len(data)
            budget -= len(data)
        return events

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def wait(self, timeout: float | None = None) -> None:
        t = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
        fds = [self._wake_r] if self.eof else [self.fd, self._wake_r]
        ready, _, _ = select.select(fds, [], [], t)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
