"""nfcapd files -> canonical flow batches, through the real ``nfdump`` binary.

nfcapd's binary format is nfdump's business: zeekml runs ``nfdump -r FILE -O tend -o
json`` (an argument list, never a shell string; ``TZ=UTC``) and streams its stdout through
the JSON reader (:class:`~zeekml.sources.nfdump_json.NfdumpJsonParser`). ``-O tend``: a
file's records in the order their flows ended, as Zeek writes conn.log (a connection is
logged when it ends). A file holds them in the order the exporter flushed its cache, and
``nfpcapd`` flushes a whole interval at once in hash order: a reflection attack's records
came out grouped by reflector, so every window and count downstream (rows are read in
stream order) saw one source at a time; the StopDDoS DNS reflection attack was 61% noticed
by the flood detector, 90% in end order. Start order (``-O tstart``) was measured too:
it reads a long flow's end early, and the pairing's log clock (the latest end read) then
closed 280 records of the IoT-23 IRC capture before their reverse came (2,183 pairs in file
order, 1,903 in start order, 2,177 in end order; ``tools/pair_report.py``). nfdump sorts
deterministically (the same file gives the same order every time), which the directory
cursor's "rows done" relies on. A directory
means its *closed* files: nfcapd writes the current interval to
``nfcapd.current.<pid>`` and renames it to ``nfcapd.YYYYMMDDhhmm[ss]`` when the
interval closes (:data:`NAME_RE`, :func:`closed_names`; the follower of a live
directory is :mod:`zeekml.sources.nfcapd_dir`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pandas as pd

from zeekml import defaults
from zeekml.errors import FormatError
from zeekml.sources.nfdump_json import NfdumpJsonParser
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

#: nfcapd's file magic (layout version 1 or 2 follows)
NFCAPD_MAGIC = b"\x0c\xa5"

#: Closed nfcapd files: ``nfcapd.`` + 12 digits (minutes) or 14 digits (seconds).
NAME_RE = re.compile(r"^nfcapd\.(\d{12}|\d{14})$")


def order_key(name: str) -> tuple[str, str]:
    """Sort by timestamp (12-digit names padded to seconds), then by name."""
    m = NAME_RE.match(name)
    digits = m.group(1).ljust(14, "0") if m else ""
    return digits, name


def closed_names(directory: str | os.PathLike[str]) -> list[str]:
    """Names of closed nfcapd files in ``directory``, in timestamp order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if NAME_RE.match(n)), key=order_key)


#: where nfdump is looked for when it is not on PATH
NFDUMP_CANDIDATES: tuple[str, ...] = ("/usr/bin/nfdump", "/usr/local/bin/nfdump")


def nfdump_binary() -> str:
    """Path of the ``nfdump`` binary; :class:`FormatError` naming the package if absent."""
    for cand in (shutil.which("nfdump"), *NFDUMP_CANDIDATES):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FormatError("reading nfcapd files needs the nfdump binary (apt-get install nfdump)")


def nfcapd_files(path: str) -> list[str]:
    """The file itself, or a directory's closed ``nfcapd.<time>`` files in time order."""
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in closed_names(path)]
    return [path]


def iter_nfcapd(
    path: str, skips: SkipLog | None = None, batch_rows: int = defaults.BATCH_ROWS, *, chunk: int = 1 << 20
) -> Iterator[pd.DataFrame]:
    """Canonical batches of an nfcapd file (or directory) read by the real ``nfdump``.

    Runs ``nfdump -r FILE -o json`` per file (argument list, ``TZ=UTC`` in its
    environment) and streams its stdout through :class:`NfdumpJsonParser`, so memory is
    bounded by the batch size. JSON rather than ``-o csv``: millisecond timestamps
    (<= 1.7.4 CSV has whole seconds) and exactly one record per flow (its CSV adds a
    line per tunnel). Rows are numbered by record index within each file. A file nfdump
    cannot read (bad magic, short read) is recorded as a skip naming the file and
    nfdump's message (a :class:`~zeekml.errors.ParseError` in strict mode), after any
    rows it did yield; a directory reads only closed ``nfcapd.<time>`` files.
    """
    skips = skips if skips is not None else SkipLog()
    exe = nfdump_binary()
    files = nfcapd_files(path)
    if os.path.isdir(path) and not files:
        log.warning("%s: no closed nfcapd files in this directory", path)
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    for name in files:
        yield from _one_nfcapd(exe, name, skips, batch_rows, chunk, env)


def _one_nfcapd(
    exe: str, name: str, skips: SkipLog, batch_rows: int, chunk: int, env: dict[str, str]
) -> Iterator[pd.DataFrame]:
    if not os.path.isfile(name):
        raise FileNotFoundError(2, "no such nfcapd file", name)
    parser = NfdumpJsonParser(name, skips, batch_rows=batch_rows, record_numbers=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [exe, "-r", os.path.abspath(name), "-O", "tend", "-o", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        try:
            assert proc.stdout is not None
            while True:
                data = proc.stdout.read(chunk)
                if not data:
                    break
                yield from parser.feed(data)
            yield from parser.close()
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        message = err.read(4096).decode("utf-8", "replace").strip()
    if rc != 0 or message:
        first = message.splitlines()[0] if message else f"exit status {rc}"
        skips.add(name, None, f"nfdump could not read it completely: {first[:200]}")
