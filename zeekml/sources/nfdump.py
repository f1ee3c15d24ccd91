"""nfdump output -> canonical flow batches: CSV (both layouts), JSON, NDJSON, nfcapd files.

Inputs
    ``nfdump_csv``   ``-o csv`` of nfdump <= 1.7.4 (48 columns ``ts,te,td,sa,da,sp,dp,pr,
                     flg,...``, a 3-line ``Summary`` trailer) and of nfdump >= 1.7.5
                     (``firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,
                     bytes,flows``, and any ``-o 'csv:%tsr,...'`` layout), columns by
                     header *name*. A header repeated mid-stream (concatenated outputs)
                     re-reads the header; header-less ``-q`` output of <= 1.7.4 is read
                     as the 48-column layout. ``No matching flows`` and the trailer are
                     not data.
    ``nfdump_json``  ``-o json`` (one pretty-printed array, streamed record by record,
                     never the whole output in memory; a record is the lines from a
                     ``{`` to a ``}`` at the start of a line, as nfdump writes them) and
                     ``-o ndjson`` (one object per line); IPv4 and IPv6 keys
                     (``src4_addr``/``src6_addr``).
    nfcapd           files and directories, through the real ``nfdump`` binary
                     (:func:`iter_nfcapd`), its stdout streamed.

This module is their public face (the ``nfdump_csv`` and ``nfdump_json`` entry points
name it, and :func:`sniff` tells the forms apart); each part lives in its own module:

* :mod:`zeekml.sources.nfdump_csv` -- the CSV reader (both layouts, tunnel lines);
* :mod:`zeekml.sources.nfdump_json` -- the JSON/NDJSON reader;
* :mod:`zeekml.sources.nfdump_map` -- the mapping of both to the canonical table
  (what NetFlow cannot know stays missing);
* :mod:`zeekml.sources.nfcapd` -- nfcapd files and directories through ``nfdump``.

Unidirectional records are joined with their reverse by :mod:`zeekml.sources.biflow`.
"""

from __future__ import annotations

from zeekml.sources.nfcapd import (
    NFCAPD_MAGIC,
    NFDUMP_CANDIDATES,
    iter_nfcapd,
    nfcapd_files,
    nfdump_binary,
)
from zeekml.sources.nfdump_csv import NfdumpCsvParser, is_nfdump_csv
from zeekml.sources.nfdump_json import NfdumpJsonParser, is_nfdump_json

__all__ = [
    "NFCAPD_MAGIC", "NFDUMP_CANDIDATES", "NfdumpCsvParser", "NfdumpJsonParser", "iter_nfcapd",
    "nfcapd_files", "nfdump_binary", "sniff",
]  # fmt: skip


def sniff(head: bytes) -> str | None:
    """``nfcapd``, ``nfdump_json`` or ``nfdump_csv`` from an input's first bytes, else None.

    CSV is recognised by header *roles* (so ``-o 'csv:%sa,%da,%ts,%pr'`` orders work)
    or, without a header (``-q``), by a 48-field line starting with a date-time.
    """
    if head[:2] == NFCAPD_MAGIC:
        return "nfcapd"
    text = head.removeprefix(b"\xef\xbb\xbf")
    line = next((x.strip() for x in text.split(b"\n") if x.strip()), b"")
    if line.startswith((b"[", b"{")):
        return "nfdump_json" if is_nfdump_json(text) else None
    return "nfdump_csv" if is_nfdump_csv(line) else None
