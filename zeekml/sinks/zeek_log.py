"""The ``zeekml.log`` sink (``#path zeekml``), and the crash-safe append file under it.

:class:`AppendFile` is what makes file output exactly-once across crashes. Its
:meth:`~AppendFile.checkpoint` is taken after an fsync and records the file's identity
(device, inode) and the byte size written so far; the pipeline stores it in the state
file together with the input offsets. On the next run :meth:`~AppendFile.restore`
truncates the file back to that size before appending, so rows written after the last
checkpoint (and then re-produced from the re-read input) appear exactly once. A file
that was moved away or replaced meanwhile (log rotation) is not touched: a new file
with a fresh header is started.

Without a checkpoint the file is created (or truncated) and gets a new header, as Zeek
does when it opens a log. ``footer`` writes Zeek's ``#close`` line on close; a
``--state`` run leaves it out because the next run appends to the same file, like a
Zeek log that has not been rotated yet.

``-`` writes to standard output (no truncation possible: at-least-once only).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from zeekml.errors import SinkError
from zeekml.records.verdicts import zeek_fields, zeek_types
from zeekml.sinks import zeek_ascii

log = logging.getLogger(__name__)


def fsync_if_possible(fd: int) -> None:
    """fsync ``fd``; a target that cannot be synced (a pipe, ``/dev/null``, a FIFO: EINVAL)
    has nothing durable to make, so that is not an error."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF) or stat.S_ISREG(os.fstat(fd).st_mode):
            raise


class AppendFile:
    """A byte sink with fsync checkpoints and truncate-back restore."""

    def __init__(self, target: str | Path, header: Callable[[], bytes] | None = None,
                 *, append: bool = False) -> None:
        self.target = str(target)
        self.append = append
        self.stdout = self.target == "-"
        self.path = None if self.stdout else Path(self.target).resolve()
        self._header = header
        self._fh: BinaryIO | None = None
        self._resume: dict[str, Any] | None = None
        self._size = 0
        self.created = False

    # ------------------------------------------------------------------ opening
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
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._resume is not None and self._can_resume(self._resume):
                fh = open(self.path, "r+b")  # noqa: SIM115 - kept open for the run
                size = int(self._resume["size"])
                fh.truncate(size)
                fh.seek(size)
                self._fh, self._size = fh, size
                return fh
            if self.append and self.path.exists():
                # a stateful run without a checkpoint for this file: never destroy what
                # is there, start a new header block after it (zeek-cut and zat read on)
                self._fh = open(self.path, "ab")  # noqa: SIM115
                self._size = self._fh.tell()
            else:
                self._fh = open(self.path, "wb")  # noqa: SIM115
                self._size = 0
                self.created = True
            self._write_header()
            return self._fh
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing: {exc.strerror or exc}") from exc

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
            raise SinkError(f"{self.target}: write failed: {exc.strerror or exc}") from exc
        self._size += len(data)

    def flush(self) -> None:
        fh = self.open()
        try:
            fh.flush()
            if not self.stdout:
                fsync_if_possible(fh.fileno())
        except OSError as exc:
            raise SinkError(f"{self.target}: flush failed: {exc.strerror or exc}") from exc

    def checkpoint(self) -> dict[str, Any]:
        """Position after the last :meth:`flush`: file identity and byte size."""
        if self.stdout:
            return {}
        fh = self.open()
        assert self.path is not None
        st = os.fstat(fh.fileno())  # the file written, even if logrotate moved it meanwhile
        return {"path": str(self.path), "dev": st.st_dev, "ino": st.st_ino, "size": self._size}

    def close(self, footer: bytes = b"") -> None:
        if self._fh is None and not footer:
            return
        self.write(footer)
        self.flush()
        if self._fh is not None and not self.stdout:
            self._fh.close()
        self._fh = None


class ZeekLogSink:
    """Verdict rows as a Zeek ASCII log (default ``#path zeekml``, verdict fields)."""

    kind = "zeek"

    def __init__(
        self,
        target: str | Path = "zeekml.log",
        *,
        log_path: str = "zeekml",
        fields: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        footer: bool = True,
        append: bool = False,
    ) -> None:
        self.fields = list(fields or zeek_fields())
        self.types = list(types or zeek_types())
        if len(self.fields) != len(self.types):
            raise ValueError("fields and types differ in length")
        self.log_path = log_path
        self.transform = transform
        self.footer = footer
        self.file = AppendFile(target, self._header, append=append)
        self.name = f"{self.kind}:{self.file.path or '-'}"
        self.rows = 0

    def _header(self) -> bytes:
        return zeek_ascii.format_header(self.log_path, self.fields, self.types)

    def write(self, verdicts: pd.DataFrame) -> None:
        df = self.transform(verdicts) if self.transform else verdicts
        if len(df):
            self.file.write(zeek_ascii.format_rows(df, self.fields, self.types))
            self.rows += len(df)

    def flush(self) -> None:
        self.file.flush()

    def checkpoint(self) -> dict[str, Any]:
        return self.file.checkpoint()

    def restore(self, position: dict[str, Any]) -> None:
        self.file.restore(position)

    def close(self) -> None:
        self.file.open()  # an empty run still leaves a valid log with its header
        self.file.close(zeek_ascii.format_close() if self.footer else b"")


def factory(target: str, options: dict[str, str]) -> ZeekLogSink:
    """Registry factory: ``zeek:PATH?footer=false&append=true`` (default ``zeekml.log``)."""
    from zeekml.sinks.registry import SinkOptions

    opts = SinkOptions(options, "zeek")
    footer = opts.flag("footer", True)
    append = opts.flag("append", False)
    opts.done()
    return ZeekLogSink(target or "zeekml.log", footer=footer, append=append)
