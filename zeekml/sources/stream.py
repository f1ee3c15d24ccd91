"""The one input path: a file generation (or stdin) from a cursor to canonical batches.

Every command reads flows through here: ``score`` (batch and cron), ``tail`` (its
catch-up over rotated generations, and :class:`Decoder` for the live file), Spark
tasks, ``summary``, ``convert``, ``eval`` and the trainers (through
:func:`zeekml.sources.open.read_flows`). One place therefore decides:

* **opening**: gzip is recognised by its magic (:mod:`zeekml.sources.gzipped`, the
  one decoder), nfcapd binaries by theirs (read through the real ``nfdump``);
* **format**: sniffed from the generation's real start, never its name
  (:class:`Decoder`, once the first line is complete or :data:`SNIFF_BYTES` are in);
* **resuming**: a cursor (``offset`` of consumed complete lines in the decompressed
  stream plus the parser's header state, or ``rows`` for nfcapd) continues exactly
  where a committed run stopped; a plain file is seeked, a gzip one decompressed and
  skipped;
* **identity**: each cursor carries the generation's identity
  (:mod:`zeekml.sources.generation`), so a rotated, renamed, gzipped or moved file is
  recognised and never read twice.

:func:`read_pieces` yields :class:`Piece` objects: the batches parsed from one chunk
of input and the cursor that is true once they are written. Damage (a truncated gzip)
ends the generation after the last good row with one skip naming the file and line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from zeekml import defaults
from zeekml.errors import FormatError, StateError
from zeekml.sources.detect import open_parser, sniff_format
from zeekml.sources.generation import Generation, identify
from zeekml.sources.gzipped import GZIP_MAGIC, GzipDamage, gunzip
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

#: bytes of a generation's start the format is sniffed from (at most)
SNIFF_BYTES = defaults.SNIFF_BYTES
#: a first line longer than this is sniffed as it is (a Zeek header line or one JSON
#: record is far shorter)
MAX_SNIFF_BYTES = 1 << 20
#: a growing file's unfinished last line is only consumed once the file is this old
SETTLE_SECONDS = 60.0


def chunk_bytes(batch_rows: int) -> int:
    """Read size giving about one batch per chunk (a conn.log line is 100-200 bytes)."""
    return max(64 * 1024, min(64 << 20, batch_rows * 96))


@dataclass
class Piece:
    """Batches read from one input, and its cursor once they are written."""

    frames: list[pd.DataFrame]
    cursor: dict[str, Any] | None
    done: bool = False


class Decoder:
    """Bytes of one generation -> canonical batches; the format is sniffed from its start.

    ``start`` is the input offset of the first byte fed. A decoder resuming mid-file
    (``start > 0``) must be given the format and parser state of its cursor; one
    starting at 0 sniffs the format once the first line is complete (or
    :data:`MAX_SNIFF_BYTES` arrived, or at :meth:`close`).
    """

    def __init__(self, path: str, skips: SkipLog, options: ReadOptions | None = None, *,
                 fmt: str | None = None, parser_state: dict[str, Any] | None = None,
                 start: int = 0) -> None:
        self.path = path
        self.skips = skips
        self.options = options or ReadOptions()
        self.fmt = fmt
        self.start = start
        self.parser: Any = None
        self.base = start  # input offset where parser.consumed == 0
        self._held = bytearray()
        if fmt is not None:
            self._make_parser(parser_state)
        elif start:
            raise StateError(f"{path}: a cursor at byte {start} lacks the input's format")

    def _make_parser(self, state: dict[str, Any] | None) -> None:
        assert self.fmt is not None
        if self.fmt == "nfcapd":
            raise FormatError(f"{self.path}: nfcapd data can only be read from a file, "
                              "through nfdump (follow its directory, not the file)")
        self.parser = open_parser(self.fmt, self.path, self.skips,
                                  batch_rows=self.options.batch_rows, options=self.options)
        if state is not None:
            try:
                self.parser.set_state(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"{self.path}: saved parser state is malformed: {exc}") from exc
        self.base = self.start - int(self.parser.consumed)

    def _sniff(self, final: bool) -> Any:
        """The parser, made once the held bytes show the format; None while they do not."""
        head = bytes(self._held[:SNIFF_BYTES])
        complete = any(line.strip() for line in head.split(b"\n")[:-1])
        if not (final or complete or len(self._held) >= MAX_SNIFF_BYTES):
            return None
        if not head.strip():
            return None
        try:
            self.fmt = sniff_format(head)
        except FormatError as exc:
            raise FormatError(f"{self.path}: {exc}") from None
        self._make_parser(None)
        return self.parser

    def feed(self, data: bytes) -> list[pd.DataFrame]:
        if self.parser is not None:
            return list(self.parser.feed(data))
        self._held += data
        parser = self._sniff(final=False)
        if parser is None:
            return []
        held, self._held = bytes(self._held), bytearray()
        return list(parser.feed(held))

    def close(self) -> list[pd.DataFrame]:
        """End of the generation: a valid unfinished last line is parsed."""
        if self.parser is None:
            parser = self._sniff(final=True)
            if parser is None:
                return []
            held, self._held = bytes(self._held), bytearray()
            out = list(parser.feed(held))
            return out + list(parser.close())
        return list(self.parser.close())

    @property
    def offset(self) -> int:
        """Input offset up to which every byte has been turned into rows."""
        if self.parser is None:
            return self.start
        return self.base + int(self.parser.consumed)

    @property
    def line_no(self) -> int:
        return int(self.parser.line_no) if self.parser is not None else 0

    def state(self) -> dict[str, Any] | None:
        return None if self.parser is None else self.parser.get_state()


# --------------------------------------------------------------------------- cursors


def cursor_fields(cursor: dict[str, Any] | None, path: str) -> tuple[int, str | None,
                                                                      dict[str, Any] | None]:
    """Validated (offset, fmt, parser state) of a saved cursor (it comes from a file)."""
    if not cursor:
        return 0, None, None
    offset, fmt, state = cursor.get("offset", 0), cursor.get("fmt"), cursor.get("parser")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise StateError(f"{path}: saved offset {offset!r} is not a byte offset")
    if fmt is not None and not isinstance(fmt, str):
        raise StateError(f"{path}: saved format {fmt!r} is not a format name")
    if state is not None and not isinstance(state, dict):
        raise StateError(f"{path}: saved parser state is not an object")
    if offset:
        if state is None:
            raise StateError(f"{path}: the cursor at byte {offset} lacks the parser state")
        fmt = fmt or state.get("format")
        if not isinstance(fmt, str):
            raise StateError(f"{path}: the cursor at byte {offset} lacks the input's format")
    return offset, fmt, state


def _cursor(gen: Generation, path: str, dec: Decoder, done: bool) -> dict[str, Any]:
    return {**gen.to_dict(), "path": os.path.abspath(path), "offset": int(dec.offset),
            "fmt": dec.fmt, "parser": dec.state(), "done": done}


# --------------------------------------------------------------------------- reading


def read_pieces(
    path: str,
    cursor: dict[str, Any] | None = None,
    skips: SkipLog | None = None,
    options: ReadOptions | None = None,
    *,
    final: bool = False,
    hold_partial: bool = False,
    chunk: int | None = None,
    fmt: str | None = None,
    gen: Generation | None = None,
) -> Iterator[Piece]:
    """Canonical batches of one input from ``cursor`` on, each group with its new cursor.

    ``final`` says the generation is complete (rotated away, archived): it is read to
    its end, its unfinished last line parsed, and its cursor marked ``done``. A gzip
    generation is always complete. Otherwise (a live file) ``hold_partial`` leaves an
    unfinished last line for the next run unless the file has been quiet for
    :data:`SETTLE_SECONDS` (cron mode). ``fmt`` forces a format (no sniffing); ``gen``
    is the generation when the caller identified it already.
    """
    skips = skips if skips is not None else SkipLog()
    options = options or ReadOptions()
    if path == "-":
        yield from _read_stdin(skips, options, fmt)
        return
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory (name its files, or expand it with expand_inputs)")
    gen = gen or identify(path)
    if gen.kind == "nfcapd" and fmt in (None, "nfcapd"):
        yield from _read_nfcapd(path, gen, cursor, skips, options)
        return
    offset, saved_fmt, state = cursor_fields(cursor, path)
    size = chunk or chunk_bytes(options.batch_rows)
    with open(path, "rb") as fh:
        gz = gen.kind == "gzip"
        complete = final or gz
        if gz:
            stream: Iterator[bytes] = _skip_bytes(gunzip(fh, size), offset)
        else:
            if offset:
                fh.seek(offset)
            stream = iter(lambda: fh.read(size), b"")
        dec = Decoder(path, skips, options, fmt=fmt or (saved_fmt if offset else None),
                      parser_state=state if offset else None, start=offset)
        try:
            for data in stream:
                frames = dec.feed(data)
                yield Piece(frames, _cursor(gen, path, dec, False))
        except GzipDamage as exc:
            # rows before the damage were delivered; the partial line at it is dropped
            skips.add(path, dec.line_no + 1, f"{exc}; rows after this point are lost")
            yield Piece([], _cursor(gen, path, dec, True), done=True)
            return
        settled = (time.time() - gen.mtime) >= SETTLE_SECONDS
        last = complete or not hold_partial or settled
        frames = dec.close() if last else []
        yield Piece(frames, _cursor(gen, path, dec, complete), done=True)


def _skip_bytes(stream: Iterator[bytes], offset: int) -> Iterator[bytes]:
    """The stream from byte ``offset`` on (a gzip generation cannot be seeked)."""
    pos = 0
    for data in stream:
        end = pos + len(data)
        if end > offset:
            yield data[max(0, offset - pos):]
        pos = end
    if pos < offset:
        raise StateError(f"a saved cursor points at byte {offset}, past the end ({pos}) of "
                         "its input: the file changed since it was read")


def _read_nfcapd(path: str, gen: Generation, cursor: dict[str, Any] | None, skips: SkipLog,
                 options: ReadOptions) -> Iterator[Piece]:
    from zeekml.sources.nfcapd import iter_nfcapd

    done_rows = cursor.get("rows", 0) if cursor else 0
    if not isinstance(done_rows, int) or isinstance(done_rows, bool) or done_rows < 0:
        raise StateError(f"{path}: saved row count {done_rows!r} is malformed")
    base = {**gen.to_dict(), "path": os.path.abspath(path), "fmt": "nfcapd"}
    seen = 0
    for frame in iter_nfcapd(path, skips, options.batch_rows):
        lo = max(0, done_rows - seen)
        seen += len(frame)
        if lo < len(frame):
            yield Piece([frame.iloc[lo:].reset_index(drop=True)],
                        {**base, "rows": seen, "done": False})
    yield Piece([], {**base, "rows": max(seen, done_rows), "done": True}, done=True)


def _read_stdin(skips: SkipLog, options: ReadOptions, fmt: str | None) -> Iterator[Piece]:
    fh: BinaryIO = sys.stdin.buffer
    size = chunk_bytes(options.batch_rows)
    magic = fh.read(2)
    while len(magic) < 2:  # a pipe may deliver one byte first
        more = fh.read(2 - len(magic))
        if not more:
            break
        magic += more
    if magic == GZIP_MAGIC:
        stream: Iterator[bytes] = gunzip(fh, size, first=magic)
    else:
        def plain() -> Iterator[bytes]:
            if magic:
                yield magic
            while data := fh.read(size):
                yield data
        stream = plain()
    if magic[:2] == b"\x0c\xa5" and fmt is None:
        raise FormatError("<stdin>: nfcapd data can only be read from a file, not a stream")
    dec = Decoder("<stdin>", skips, options, fmt=fmt)
    try:
        for data in stream:
            yield Piece(dec.feed(data), None)
    except GzipDamage as exc:
        skips.add("<stdin>", dec.line_no + 1, f"{exc}; rows after this point are lost")
        return
    yield Piece(dec.close(), None, done=True)


def read_all(path: str | Path, skips: SkipLog | None = None,
             options: ReadOptions | None = None, *, fmt: str | None = None,
             info: dict[str, str] | None = None) -> Iterator[pd.DataFrame]:
    """Every batch of one whole input (a file or ``-``), as a batch command reads it."""
    name = str(path)
    for piece in read_pieces(name, None, skips, options, final=True, fmt=fmt):
        if info is not None and piece.cursor is not None and piece.cursor.get("fmt"):
            info["format"] = str(piece.cursor["fmt"])
        yield from piece.frames
