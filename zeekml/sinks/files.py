"""Output files written so that a failure loses no verdict and repeats none.

Every file sink (``zeekml.log``, notice log, Zeek JSON, ECS) writes through
:class:`OutputFile`, in one of three modes:

``replace``  a run without ``--state`` (``zeekml score``, ``convert``): rows go to a
             hidden temporary file beside the target, which replaces the target only
             when the run succeeds (fsync, rename, directory fsync). A run that fails,
             is interrupted or killed leaves the target exactly as it was.
``append``   a stateful run (``--state``) and feeds (ECS): the file is appended to.
             :meth:`~OutputFile.checkpoint` (after an fsync) records the file's
             identity and size; the pipeline stores it in the state together with the
             input cursors, *before* writing anything (a write-ahead checkpoint), and
             :meth:`~OutputFile.mark_committed` tells the file the state is saved. A run
             that fails cuts the file back to its last committed size
             (:meth:`~OutputFile.abort`); a run killed with ``kill -9`` is cut back by
             the next run (:meth:`~OutputFile.restore`), so re-produced rows appear once.
``live``     ``zeekml tail`` without ``--state``: the file is (re)created and written in
             place, readable while it grows.

``-`` is standard output (no lock, no truncation: at least once). Every other target
is locked for the whole run (:class:`OutputLock`, an ``flock`` on a hidden
``.NAME.lock`` beside it), so two runs never write one file, whatever their
``--state``. Errors name the target file, never a temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from zeekml.errors import SinkError

log = logging.getLogger(__name__)

MODES = ("replace", "append", "live")


def fsync_if_possible(fd: int) -> None:
    """fsync ``fd``; a target that cannot be synced (a pipe, ``/dev/null``, a FIFO: EINVAL)
    has nothing durable to make, so that is not an error."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF) or stat.S_ISREG(os.fstat(fd).st_mode):
            raise


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_regular_target(path: Path) -> bool:
    """True unless the target exists and is not a regular file (/dev/null, a FIFO...)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``.NAME.lock`` beside an output file.

    The kernel releases it when the process dies, so a crash never leaves a stale lock
    (only, after ``kill -9``, an unlocked file the next run reuses). A run removes its
    lock file when it is done, while still holding the lock; a run that opened the old
    file meanwhile sees it is no longer the one at the path and tries again.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.with_name(f".{target.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        for _ in range(100):
            fd = self._try_once()
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
                self._fd = fd
                return
        raise SinkError(f"{self.target}: cannot lock: its lock file keeps being replaced")

    def _try_once(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SinkError(f"{self.target}: cannot create its lock file {self.path.name}: "
                            f"{_reason(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise SinkError(f"{self.target}: another zeekml run is writing this output{who}; "
                                "two runs never share an output file") from None
            raise SinkError(f"{self.target}: cannot lock: {_reason(exc)}") from exc
        try:
            st = os.stat(self.path)
            mine = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it after we opened it: take the new one
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it (see the class docstring)
        os.close(fd)


class OutputFile:
    """A byte sink with the failure semantics of its mode (see the module docstring)."""

    def __init__(self, target: str | Path, header: Callable[[], bytes] | None = None,
                 *, mode: str = "replace") -> None:
        if mode not in MODES:
            raise ValueError(f"output mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.target = str(target)
        self.mode = mode
        self.stdout = self.target == "-"
        self.path = None if self.stdout else Path(self.target).resolve()
        self._header = header
        self._fh: BinaryIO | None = None
        self._tmp: Path | None = None
        self._resume: dict[str, Any] | None = None
        self._committed: dict[str, Any] | None = None
        self._size = 0
        self._lock = None if self.path is None else OutputLock(self.path)
        self.created = False

    # ------------------------------------------------------------------ opening
    def set_mode(self, mode: str) -> None:
        """Choose the mode before anything is written (the run knows, the factory not)."""
        if self._fh is not None:
            raise SinkError(f"{self.target}: the output mode cannot change once writing began")
        if mode not in MODES:
            raise ValueError(f"output mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode

    def restore(self, position: dict[str, Any] | None) -> None:
        """Continue after ``position`` (from :meth:`checkpoint`) instead of starting anew."""
        if self._fh is not None:
            raise SinkError(f"{self.target}: restore() after writing started")
        self._resume = dict(position) if position else None

    def open(self) -> BinaryIO:
        if self._fh is not None:
            return self._fh
        if self.stdout:
            self._fh = sys.stdout.buffer
            self._write_header()
            return self._fh
        assert self.path is not None and self._lock is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot create its directory: {_reason(exc)}") from exc
        self._lock.acquire()
        try:
            self._open_file()
        except OSError as exc:
            self._lock.release()
            raise SinkError(f"{self.path}: cannot open for writing: {_reason(exc)}") from exc
        except BaseException:
            self._lock.release()
            raise
        return self._fh  # type: ignore[return-value]

    def _open_file(self) -> None:
        assert self.path is not None
        if self.mode == "replace" and is_regular_target(self.path):
            self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            # 0666 minus the umask, as open() creates files: outputs follow the umask
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            self._fh = os.fdopen(fd, "wb")
            self._size = 0
            self.created = True
            self._write_header()
            return
        if self._resume is not None and self.mode in ("append", "live") and \
                self._can_resume(self._resume):
            fh = open(self.path, "r+b")  # kept open for the run
            size = int(self._resume["size"])
            fh.truncate(size)
            fh.seek(size)
            self._fh, self._size = fh, size
            self._committed = self.checkpoint()
            return
        if self.mode == "append":
            if self.path.exists() and is_regular_target(self.path):
                # no checkpoint for this file: never destroy what is there; a new header
                # block follows it (zeek-cut and zat read on)
                self._fh = open(self.path, "ab")
                self._size = self._fh.tell()
                self._committed = self.checkpoint()
                self._write_header()
                return
        self._fh = open(self.path, "wb")
        self._size = 0
        self.created = True
        if self.mode == "append":
            self._committed = {**self.checkpoint(), "size": 0}
        self._write_header()

    def _can_resume(self, pos: dict[str, Any]) -> bool:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            log.info("%s: no longer exists; starting a new file", self.path)
            return False
        try:
            same = (st.st_dev, st.st_ino) == (int(pos["dev"]), int(pos["ino"]))
            size = int(pos["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SinkError(f"{self.path}: malformed output checkpoint {pos!r}") from exc
        if size < 0:
            raise SinkError(f"{self.path}: malformed output checkpoint {pos!r}")
        if not same:
            log.info("%s: is another file than the checkpointed one (rotated?); starting anew",
                     self.path)
            return False
        if st.st_size < size:
            log.warning("%s: is shorter (%d bytes) than checkpointed (%d): truncated by someone "
                        "else; starting a new file", self.path, st.st_size, size)
            return False
        if st.st_size > size:
            log.info("%s: dropping %d bytes written after the last checkpoint (they are "
                     "re-produced now)", self.path, st.st_size - size)
        return True

    def _write_header(self) -> None:
        if self._header is not None:
            self.write(self._header())

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        """Write whole records in one call (several sinks never interleave records)."""
        if not data:
            return
        fh = self.open()
        try:
            fh.write(data)
        except OSError as exc:
            raise SinkError(f"{self.target}: write failed: {_reason(exc)}") from exc
        self._size += len(data)

    def flush(self) -> None:
        fh = self.open()
        try:
            fh.flush()
            if not self.stdout:
                fsync_if_possible(fh.fileno())
        except OSError as exc:
            raise SinkError(f"{self.target}: write failed: {_reason(exc)}") from exc

    def checkpoint(self) -> dict[str, Any]:
        """Position after the last :meth:`flush`: file identity and byte size."""
        if self.stdout:
            return {}
        fh = self.open()
        assert self.path is not None
        st = os.fstat(fh.fileno())  # the file written, even if logrotate moved it meanwhile
        return {"path": str(self.path), "dev": st.st_dev, "ino": st.st_ino, "size": self._size}

    def mark_committed(self, position: dict[str, Any] | None = None) -> None:
        """The state holding ``position`` (default: the current one) is saved."""
        if self.mode == "append" and self._fh is not None and not self.stdout:
            self._committed = dict(position) if position else self.checkpoint()

    def close(self, footer: bytes = b"") -> None:
        """Finish the file (a replaced target is swapped in now) and release it."""
        if self._fh is None and not footer:
            if self._lock is not None:
                self._lock.release()
            return
        try:
            self.write(footer)
            self.flush()
            if self._fh is not None and not self.stdout:
                self._fh.close()
            self._fh = None
            if self._tmp is not None:
                assert self.path is not None
                try:
                    os.replace(self._tmp, self.path)
                except OSError as exc:
                    raise SinkError(f"{self.path}: cannot replace it: {_reason(exc)}") from exc
                self._tmp = None
                fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        finally:
            if self._lock is not None and self._fh is None:
                self._lock.release()

    def abort(self) -> None:
        """The run failed: leave the target as it was at the last commit (see the modes)."""
        fh, self._fh = self._fh, None
        try:
            if fh is not None and not self.stdout:
                # the cut goes through a second descriptor *after* the file object is
                # closed: records still in its buffer reach the file on close (or fail
                # to), and a cut made before would leave them behind it
                fd, committed = None, self._committed
                if self.mode == "append" and committed is not None:
                    try:
                        fd = os.dup(fh.fileno())
                    except OSError as exc:
                        log.error("%s: could not cut back to the last commit (%s); the next "
                                  "run will", self.path, _reason(exc))
                with contextlib.suppress(OSError):
                    fh.close()
                if fd is not None and committed is not None:
                    try:
                        self._cut_back(fd, committed)
                    finally:
                        os.close(fd)
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    self._tmp.unlink()
                self._tmp = None
        finally:
            if self._lock is not None:
                self._lock.release()

    def _cut_back(self, fd: int, pos: dict[str, Any]) -> None:
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (pos.get("dev"), pos.get("ino")):
                return
            size = int(pos["size"])
            if st.st_size > size:
                os.ftruncate(fd, size)
                fsync_if_possible(fd)
                log.info("%s: cut back to its last committed size (%d bytes)", self.path, size)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.error("%s: could not cut back to the last commit (%s); the next run will",
                      self.path, exc)



class FileSink:
    """What every file sink shares: an :class:`OutputFile` and the sink calls on it.

    Subclasses set ``self.file`` (and ``self.pinned`` when an option fixed the mode),
    implement ``write`` and may override :meth:`footer` (Zeek's ``#close``).
    """

    file: OutputFile
    pinned: bool = False
    stateful: bool = False

    def begin(self, run: Any) -> None:
        """A stateful run appends; tail without state writes in place; else replace."""
        self.stateful = bool(run.stateful)
        if not self.pinned:
            self.file.set_mode(run.file_mode)

    def footer(self) -> bytes:
        return b""

    def flush(self) -> None:
        self.file.flush()

    def checkpoint(self) -> dict[str, Any]:
        return self.file.checkpoint()

    def restore(self, position: dict[str, Any]) -> None:
        self.file.restore(position)

    def mark_committed(self) -> None:
        self.file.mark_committed()

    def abort(self) -> None:
        self.file.abort()

    def close(self) -> None:
        self.file.open()  # an empty run still leaves a valid file (with its header)
        self.file.close(self.footer())
