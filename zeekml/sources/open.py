"""The convenience entry points: input specs -> files -> canonical batches.

``read_flows(path)`` reads one whole input through the one input path
(:mod:`zeekml.sources.stream`: gzip by content, format sniffed from content, nfcapd
through ``nfdump``, memory bounded by the chunk and batch size, never by the file).
A damaged gzip stream (truncated archive, corrupt block) yields every row before the
damage, then records one skip naming the file and the line where the damage starts
(a :class:`~zeekml.errors.ParseError` in strict mode).

``expand_inputs`` turns command-line specs into a sorted, de-duplicated file list:
files as given, globs, and directories searched recursively for Zeek conn logs
(``conn.log``, ``conn.log.labeled``, rotated ``conn.<time>.log[.gz]``, zeekctl archives
``YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz``), nfcapd files (``nfcapd.YYYYMMDDhhmm``)
and Argus ``*.binetflow[.gz]`` files (as CTU-13 and Stratosphere publish them; their
format is still detected from the content). Other files inside directories (``dns.log``, READMEs, CSV
copies of the same flows) are left out; name them explicitly to read them.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from zeekml.errors import FormatError, ParseError
from zeekml.records import schema
from zeekml.sources.detect import sniff_format
from zeekml.sources.generation import identify
from zeekml.sources.gzipped import gzip_head
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog
from zeekml.sources.stream import SNIFF_BYTES, chunk_bytes, read_all

log = logging.getLogger(__name__)

_DIR_FILE = re.compile(r"^(conn(\..*)?|nfcapd\.\d{12}(\d{2})?|.+\.binetflow(\.gz)?)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def read_flows(
    path: str | Path,
    *,
    skips: SkipLog | None = None,
    batch_rows: int | None = None,
    fmt: str | None = None,
    info: dict[str, str] | None = None,
    options: ReadOptions | None = None,
) -> Iterator[pd.DataFrame]:
    """Canonical flow batches from one input (file path, or ``-`` for stdin).

    The one input path (:mod:`zeekml.sources.stream`) reads it whole. ``fmt`` forces a
    format; by default it is sniffed from the content. Bad lines are recorded in
    ``skips`` (strict mode raises :class:`ParseError` at the first). ``info``, if
    given, receives ``info["format"]`` once the format is known. ``options`` (``--tz``
    ...) reach the parsers that take them; ``batch_rows`` overrides its batch size.
    """
    options = options or ReadOptions()
    if batch_rows is not None and batch_rows != options.batch_rows:
        options = replace(options, batch_rows=batch_rows)
    name = str(path)
    if name != "-" and os.path.isdir(name):
        raise FormatError(f"{name}: is a directory (expand it with expand_inputs)")
    yield from read_all(name, skips, options, fmt=fmt, info=info)


def sniff_path(path: str | Path) -> str:
    """The format of a file, detected from its (decompressed) first bytes."""
    name = str(path)
    gen = identify(name)
    if gen.kind == "nfcapd" and sniff_format(gen.head[:4]) == "nfcapd":
        return "nfcapd"
    with open(name, "rb") as f:
        head = gzip_head(f, SNIFF_BYTES) if gen.kind == "gzip" else f.read(SNIFF_BYTES)
    if not head.strip():
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
    batches: Iterator[pd.DataFrame] = (batch for p in files for batch in read_flows(
        p, options=options, **kw))  # type: ignore[arg-type]
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
    raises FileNotFoundError naming it; a directory without conn logs or nfcapd files
    raises FormatError naming it.
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
            if not found:  # an empty run that exits 0 hides a wrong path from cron
                raise FormatError(f"{spec}: no conn logs or nfcapd files in this directory "
                                  "(conn*.log[.gz], nfcapd.*); name other files explicitly")
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
           "sniff_path", "walk_inputs"]
