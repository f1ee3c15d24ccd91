"""The common entry point: input specs -> files -> bytes -> format -> canonical batches.

``read_flows(path)`` is what every batch command uses. It opens the path (``-`` is
stdin), decompresses gzip when the *content* starts with the gzip magic (whatever the
name), sniffs the format from the first bytes, and feeds the bytes in chunks to the
format's incremental parser, so memory stays bounded by the chunk and batch size,
never by the file. nfcapd binaries go through ``zeekml.sources.nfdump.iter_nfcapd``.

A damaged gzip stream (truncated archive, corrupt block) yields every row before the
damage, then records one skip naming the file and the line where the damage starts
(a :class:`~zeekml.errors.ParseError` in strict mode); the partial line at the damage
is dropped, not guessed at.

``expand_inputs`` turns command-line specs into a sorted, de-duplicated file list:
files as given, globs, and directories searched recursively for Zeek conn logs
(``conn.log``, ``conn.log.labeled``, rotated ``conn.<time>.log[.gz]``, zeekctl archives
``YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz``) and nfcapd files
(``nfcapd.YYYYMMDDhhmm``). Other files inside directories (``dns.log``, READMEs, CSV
copies of the same flows) are left out; name them explicitly to read them.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from zeekml.errors import FormatError, ParseError
from zeekml.records import schema
from zeekml.sources.detect import open_parser, sniff_format
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
#: bytes looked at for format detection
SNIFF_BYTES = 64 * 1024
#: compressed bytes decompressed per step: at a damaged block, the output of the step
#: that hits the damage is lost, so steps are small
RAW_CHUNK = 1 << 14

_DIR_FILE = re.compile(r"^(conn(\..*)?|nfcapd\.\d{12}(\d{2})?)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def chunk_bytes(batch_rows: int) -> int:
    """Read size giving about one batch per chunk (a conn.log line is 100-200 bytes)."""
    return max(64 * 1024, min(64 << 20, batch_rows * 96))


class _Damaged(Exception):
    """The compressed stream is damaged; rows before it were delivered."""


def _gunzip(f: BinaryIO, size: int) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream in bounded pieces; raise _Damaged on damage.

    Output per step is capped at ``size`` bytes, so a decompression bomb cannot take
    more memory than a plain file would.
    """
    d = zlib.decompressobj(31)
    fed = False
    pending = b""
    while True:
        raw, pending = (pending or f.read(RAW_CHUNK)), b""
        if not raw:
            if fed:
                out = d.flush()
                if out:
                    yield out
                if not d.eof:
                    raise _Damaged(
                        "truncated gzip stream (it ends before its end-of-stream marker)"
                    )
            return
        if not fed and not raw.strip(b"\x00"):
            continue  # zero padding after the last member
        fed = True
        while raw:
            try:
                out = d.decompress(raw, size)
            except zlib.error as exc:
                raise _Damaged(f"corrupt gzip data ({exc})") from None
            raw = d.unconsumed_tail
            if out:
                yield out
            if d.eof:  # member ends: what follows is another member (or padding)
                pending = d.unused_data + raw
                d = zlib.decompressobj(31)
                fed = False
                break


def _chunks(f: BinaryIO, size: int) -> tuple[bytes, Iterator[bytes]]:
    """The first bytes (decompressed) for sniffing, and an iterator over all the data."""
    head = f.read(2)
    while len(head) < 2:  # a pipe may deliver one byte first
        more = f.read(2 - len(head))
        if not more:
            break
        head += more
    if head == GZIP_MAGIC:
        gz = _gunzip(_Prepend(head, f), size)
        first = b""
        try:
            while len(first) < SNIFF_BYTES:
                piece = next(gz)
                first += piece
        except StopIteration:
            pass
        except _Damaged as exc:
            return first, _chain(first, _raise_after(exc))
        return first, _chain(first, gz)

    def plain() -> Iterator[bytes]:
        while True:
            data = f.read(size)
            if not data:
                return
            yield data

    rest = f.read(SNIFF_BYTES)
    return head + rest, _chain(head + rest, plain())


class _Prepend:
    """A file whose first bytes were already read."""

    def __init__(self, first: bytes, f: BinaryIO) -> None:
        self._first, self._f = first, f

    def read(self, n: int = -1) -> bytes:
        if self._first:
            out, self._first = self._first, b""
            return out
        return self._f.read(n)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _raise_after(exc: Exception) -> Iterator[bytes]:
    raise exc
    yield b""  # pragma: no cover


def read_flows(
    path: str | Path,
    *,
    skips: SkipLog | None = None,
    batch_rows: int = 65536,
    fmt: str | None = None,
    info: dict[str, str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Canonical flow batches from one input (file path, or ``-`` for stdin).

    ``fmt`` forces a format; by default it is sniffed from the content. Bad lines are
    recorded in ``skips`` (strict mode raises :class:`ParseError` at the first).
    ``info``, if given, receives ``info["format"]`` once the format is known.
    """
    info = info if info is not None else {}
    skips = skips if skips is not None else SkipLog()
    name = str(path)
    if name == "-":
        yield from _read_stream(sys.stdin.buffer, "<stdin>", skips, batch_rows, fmt, info)
        return
    if os.path.isdir(name):
        raise FormatError(f"{name}: is a directory (expand it with expand_inputs)")
    with open(name, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        if fmt == "nfcapd" or (
            fmt is None and magic[:2] == b"\x0c\xa5" and sniff_format(magic) == "nfcapd"
        ):
            from zeekml.sources import nfdump  # lazy: the nfdump side

            info["format"] = "nfcapd"
            yield from nfdump.iter_nfcapd(name, skips, batch_rows)
            return
        yield from _read_stream(f, name, skips, batch_rows, fmt, info)


def _read_stream(
    f: BinaryIO, name: str, skips: SkipLog, batch_rows: int, fmt: str | None, info: dict[str, str]
) -> Iterator[pd.DataFrame]:
    size = chunk_bytes(batch_rows)
    head, chunks = _chunks(f, size)
    parser = None
    try:
        if fmt is None:
            if not head:
                for _ in chunks:  # raises _Damaged for a gzip damaged before any data
                    pass
                log.info("%s: empty input", name)
                return
            try:
                fmt = sniff_format(head)
            except FormatError as exc:
                raise FormatError(f"{name}: {exc}") from None
            if fmt == "nfcapd":
                raise FormatError(f"{name}: nfcapd data can only be read from a file, not a stream")
        info["format"] = fmt
        parser = open_parser(fmt, name, skips, batch_rows=batch_rows)
        log.debug("%s: reading as %s", name, fmt)
        for data in chunks:
            yield from parser.feed(data)
    except _Damaged as exc:
        # rows before the damage were delivered; the partial line at the damage is dropped
        line = parser.line_no + 1 if parser is not None else 1
        skips.add(name, line, f"{exc}; rows after this point are lost")
        return
    yield from parser.close()


def sniff_path(path: str | Path) -> str:
    """The format of a file, detected from its (decompressed) first bytes."""
    name = str(path)
    with open(name, "rb") as f:
        magic = f.read(4)
        if magic[:2] == b"\x0c\xa5" and sniff_format(magic) == "nfcapd":
            return "nfcapd"
        f.seek(0)
        head, _ = _chunks(f, SNIFF_BYTES)
    if not head:
        return "empty"
    try:
        return sniff_format(head)
    except FormatError as exc:
        raise FormatError(f"{name}: {exc}") from None


def read_table(paths: Sequence[str | Path] | str | Path, *, options: ReadOptions | None = None,
               **kw: object) -> pd.DataFrame:
    """All flows of the inputs as one canonical table (for training and evaluation).

    The inputs are one stream: unidirectional NetFlow records pair across files
    (:mod:`zeekml.sources.biflow`) unless ``options.pair`` is False.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = expand_inputs([str(p) for p in paths])
    batches: Iterator[pd.DataFrame] = (batch for p in files
                                       for batch in read_flows(p, **kw))  # type: ignore[arg-type]
    return schema.concat(pair_batches(batches, options))


def pair_batches(batches: Iterable[pd.DataFrame], options: ReadOptions | None = None
                 ) -> Iterator[pd.DataFrame]:
    """Canonical batches of one stream with NetFlow pairing applied (unless turned off)."""
    pair = (options or ReadOptions()).pair_options()
    if pair is None:
        yield from batches
        return
    from zeekml.sources.biflow import paired_stream

    yield from paired_stream(batches, pair)


def expand_inputs(specs: Sequence[str]) -> list[str]:
    """Files, directories (recursive), globs and ``-`` -> an ordered list of inputs.

    Each spec's matches are sorted by path (zeekctl archive names sort by time);
    spec order is kept; a file named twice is read once. A spec that names nothing
    raises FileNotFoundError naming it.
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = p if p == "-" else os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    for spec in specs:
        spec = str(spec)
        if spec == "-":
            add("-")
        elif os.path.isdir(spec):
            found = sorted(_walk(spec))
            if not found:
                log.warning("%s: no conn logs or nfcapd files in this directory", spec)
            for p in found:
                add(p)
        elif os.path.exists(spec):
            add(spec)
        elif _GLOB_CHARS.search(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise FileNotFoundError(errno.ENOENT, "no file matches this pattern", spec)
            for m in matches:
                if os.path.isdir(m):
                    for p in sorted(_walk(m)):
                        add(p)
                else:
                    add(m)
        else:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), spec)
    return out


def walk_inputs(root: str) -> list[str]:
    """The conn logs and nfcapd files under a directory, sorted (no warning when none)."""
    return sorted(_walk(root))


def _walk(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if _DIR_FILE.match(fn):
                p = os.path.join(dirpath, fn)
                if os.path.isfile(p):
                    yield p


__all__ = ["ParseError", "chunk_bytes", "expand_inputs", "pair_batches", "read_flows", "read_table",
           "sniff_path"]
