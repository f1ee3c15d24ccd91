"""What ``zeekml tail`` follows, as one interface: canonical batches plus a cursor.

Three kinds, chosen by :func:`open_tail_source`:

* :class:`FileTail` a growing log (Zeek TSV/JSON, nfdump CSV/JSON text) through the
  :class:`~zeekml.sources.follow.Follower`, with one sans-I/O parser per file
  generation (format sniffed from the generation's first line);
* :class:`PipeTail` the same on a pipe (``-``): no resumable position;
* :class:`DirTail`  an nfcapd directory: each closed file once, through ``nfdump``.

The contract the tail loop relies on: :meth:`poll` returns every batch parsed so far
(nothing is parsed and held back), so right after the loop has scored and written
those batches, :meth:`cursor` describes exactly the input consumed. A restart with
that cursor (``resume=``) continues at the first flow not yet written. The cursor is
JSON-able and validated on load (it is read back from a state file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from zeekml.errors import FormatError, StateError
from zeekml.sources.follow import Chunk, Ended, Follower, Opened, PipeFollower, Position
from zeekml.sources.nfcapd_dir import DirCursor, NfcapdDir, iter_file
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

#: Longest first line accepted before the format must be known (a Zeek TSV header
#: line or one JSON record is far shorter).
MAX_SNIFF_BYTES = 1 << 20


class TailSource(Protocol):
    name: str
    finished: bool  # a pipe at EOF: nothing more will come
    boundary: bool  # a file generation ended since the last cursor(): commit now

    def poll(self, max_bytes: int) -> list[pd.DataFrame]: ...

    def cursor(self) -> dict[str, Any]: ...

    def wait(self, timeout: float) -> None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class _Generation:
    """The parser of one file generation, created once its format is known."""

    def __init__(self, path: str, start: int, skips: SkipLog, batch_rows: int,
                 fmt: str | None = None, parser_state: dict[str, Any] | None = None,
                 options: Any = None) -> None:
        self.path = path
        self.options = options
        self.start = start
        self.skips = skips
        self.batch_rows = batch_rows
        self.fmt = fmt
        self.parser: Any = None
        self.base = start  # input offset of parser.consumed == 0
        self._held = bytearray()
        if fmt is not None:
            self._make_parser(parser_state)

    def _make_parser(self, state: dict[str, Any] | None) -> None:
        from zeekml.sources.detect import open_parser

        assert self.fmt is not None
        if self.fmt == "nfcapd":
            raise FormatError(
                f"{self.path}: an nfcapd binary file cannot be followed as a log; "
                "follow its directory instead (zeekml tail DIR)"
            )
        self.parser = open_parser(self.fmt, self.path, self.skips, batch_rows=self.batch_rows,
                                  options=self.options)
        if state is not None:
            try:
                self.parser.set_state(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"parser state for {self.path} is malformed: {exc}") from exc
        self.base = self.start - int(self.parser.consumed)

    def feed(self, data: bytes) -> list[pd.DataFrame]:
        if self.parser is not None:
            return list(self.parser.feed(data))
        self._held += data
        if b"\n" not in self._held and len(self._held) < MAX_SNIFF_BYTES:
            return []
        from zeekml.sources.detect import sniff_format

        self.fmt = sniff_format(bytes(self._held[:MAX_SNIFF_BYTES]))
        self._make_parser(None)
        held, self._held = bytes(self._held), bytearray()
        return list(self.parser.feed(held))

    def close(self) -> list[pd.DataFrame]:
        if self.parser is None:
            if not self._held.strip():
                return []
            from zeekml.sources.detect import sniff_format

            self.fmt = sniff_format(bytes(self._held))
            self._make_parser(None)
            self.parser.feed(bytes(self._held))
        return list(self.parser.close())

    @property
    def offset(self) -> int:
        """Input offset up to which every byte has been turned into rows."""
        if self.parser is None:
            return self.start
        return self.base + int(self.parser.consumed)

    def state(self) -> dict[str, Any] | None:
        return None if self.parser is None else self.parser.get_state()


class FileTail:
    """A growing log file, followed through rotation; resumable from its cursor."""

    kind = "file"

    def __init__(self, path: str, *, skips: SkipLog, batch_rows: int = 65536,
                 poll_interval: float = 0.25, resume: dict[str, Any] | None = None,
                 watch: bool = True, options: Any = None) -> None:
        self.name = str(path)
        self.skips = skips
        self.options = options  # ReadOptions for the parsers (--tz ...)
        self.batch_rows = batch_rows
        self.finished = False
        self.boundary = False
        self.files = 0  # file generations opened
        self._gen: _Generation | None = None
        self._gen_id = 0
        self._ended_pos: Position | None = None
        position, self._resume_fmt, self._resume_parser = self._parse_resume(resume)
        self.follower = self._make_follower(path, poll_interval, position, watch)

    def _make_follower(self, path: str, poll: float, position: Position | None,
                       watch: bool) -> Any:
        return Follower(path, poll_interval=poll, resume=position, watch=watch)

    def _parse_resume(self, resume: dict[str, Any] | None
                      ) -> tuple[Position | None, str | None, dict[str, Any] | None]:
        if resume is None:
            return None, None, None
        if not isinstance(resume, dict) or resume.get("kind") != self.kind:
            raise StateError(f"{self.name}: the state's cursor is not for a {self.kind} input")
        if resume.get("ended") or resume.get("position") is None:
            return None, None, None
        fmt = resume.get("fmt")
        parser = resume.get("parser")
        if fmt is not None and not isinstance(fmt, str):
            raise StateError(f"{self.name}: cursor 'fmt' must be a string")
        if parser is not None and not isinstance(parser, dict):
            raise StateError(f"{self.name}: cursor 'parser' must be an object")
        return Position.from_dict(resume["position"]), fmt, parser

    def poll(self, max_bytes: int = 1 << 20) -> list[pd.DataFrame]:
        out: list[pd.DataFrame] = []
        for ev in self.follower.read(max_bytes):
            if isinstance(ev, Chunk):
                assert self._gen is not None and ev.gen == self._gen_id
                out.extend(self._gen.feed(ev.data))
            elif isinstance(ev, Opened):
                fmt = parser = None
                if ev.reason in ("resumed", "recovered"):
                    fmt, parser = self._resume_fmt, self._resume_parser
                    if ev.offset and (fmt is None or parser is None):
                        raise StateError(f"{self.name}: cursor lacks the parser state")
                self._gen = _Generation(ev.path, ev.offset, self.skips, self.batch_rows,
                                        fmt, parser, self.options)
                self._gen_id = ev.gen
                self._ended_pos = None
                self.files += 1
                self.boundary = True  # commit the new identity before reading far into it
            elif isinstance(ev, Ended):
                assert self._gen is not None
                out.extend(self._gen.close())
                self._ended_pos = self.follower.position_at(ev.offset)
                self._gen = None
                self.boundary = True
                if ev.reason == "eof":
                    self.finished = True
        return out

    def cursor(self) -> dict[str, Any]:
        self.boundary = False
        cur: dict[str, Any] = {"kind": self.kind, "path": self.name}
        if self._gen is None:
            pos = self._ended_pos
            cur.update(position=pos.to_dict() if pos else None, ended=pos is not None)
            return cur
        pos = self.follower.position_at(self._gen.offset)
        cur.update(position=pos.to_dict() if pos else None, ended=False,
                   fmt=self._gen.fmt, parser=self._gen.state())
        return cur

    def wait(self, timeout: float) -> None:
        self.follower.wait(timeout)

    def wake(self) -> None:
        self.follower.wake()

    def close(self) -> None:
        self.follower.close()


class PipeTail(FileTail):
    """stdin: the file machinery on a :class:`PipeFollower`; ends at EOF."""

    kind = "pipe"

    def __init__(self, *, skips: SkipLog, batch_rows: int = 65536,
                 poll_interval: float = 0.25, fd: int = 0, options: Any = None) -> None:
        self._fd = fd
        super().__init__("-", skips=skips, batch_rows=batch_rows, poll_interval=poll_interval,
                         options=options)

    def _make_follower(self, path: str, poll: float, position: Position | None,
                       watch: bool) -> Any:
        return PipeFollower(self._fd, poll_interval=poll)

    def cursor(self) -> dict[str, Any]:
        self.boundary = False
        return {"kind": self.kind, "path": "-"}


class DirTail:
    """An nfcapd directory: closed files in name order, each once, resumable by rows."""

    kind = "nfcapd_dir"

    def __init__(self, directory: str, *, skips: SkipLog, batch_rows: int = 65536,
                 poll_interval: float = 1.0, resume: dict[str, Any] | None = None,
                 watch: bool = True) -> None:
        self.name = str(directory)
        self.skips = skips
        self.batch_rows = batch_rows
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


def open_tail_source(path: str, *, skips: SkipLog, batch_rows: int, poll_interval: float,
                     resume: dict[str, Any] | None = None, options: Any = None) -> TailSource:
    """``-`` -> pipe; a directory -> nfcapd directory; anything else -> growing file.

    ``options`` (a :class:`~zeekml.sources.options.ReadOptions`) reaches the text
    parsers (nfcapd files are read by nfdump with ``TZ=UTC``).
    """
    if path == "-":
        return PipeTail(skips=skips, batch_rows=batch_rows, poll_interval=poll_interval,
                        options=options)
    if os.path.isdir(path):
        return DirTail(path, skips=skips, batch_rows=batch_rows,
                       poll_interval=poll_interval, resume=resume)
    return FileTail(path, skips=skips, batch_rows=batch_rows, poll_interval=poll_interval,
                    resume=resume, options=options)
