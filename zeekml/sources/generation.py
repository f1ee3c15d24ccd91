"""Which file generation an input is: identity by content, plus inode where it holds.

A log is renamed by rotation, gzipped into an archive, moved by zeekctl, copied: its
path and even its inode change, its content does not. A *generation* is therefore
named by a SHA-256 of its first (decompressed) bytes, ``key = "<len>:<sha256>"``. A
Zeek log's head carries its ``#open`` time (a JSON log its first record's ts and uid,
an nfdump file its header and first flow), so two generations of ``conn.log`` never
share a key; where two files do start alike, the device and inode break the tie.

Cursors (how far a generation was read, see :mod:`zeekml.sources.stream`) are stored
in the state file under the key of the generation's head *as it was when read*: a
cursor saved while the live file was shorter than :data:`HEAD_BYTES` matches the grown
file (or its rotated, gzipped copy) when the file still starts with those bytes
(:func:`match_cursor`: longest matching prefix wins, then the same inode).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeekml.sources.gzipped import GZIP_MAGIC, gzip_head

#: bytes of a generation's (decompressed) head that identify it
HEAD_BYTES = 4096
NFCAPD_MAGIC = b"\x0c\xa5"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Generation:
    """Who a file is: content kind, device, inode, size, mtime and a head fingerprint."""

    kind: str  # "plain" | "gzip" | "nfcapd"
    dev: int
    ino: int
    size: int
    mtime: float
    head_len: int
    head_sha256: str
    head: bytes = b""

    @property
    def key(self) -> str:
        return f"{self.head_len}:{self.head_sha256}"

    def key_at(self, n: int) -> str:
        """The key this generation had when only its first ``n`` bytes existed."""
        n = min(n, self.head_len)
        return f"{n}:{sha256(self.head[:n])}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "dev": self.dev, "ino": self.ino,
                "head_len": self.head_len, "head_sha256": self.head_sha256}


def identify(path: str | Path) -> Generation:
    """The :class:`Generation` of a file (reads at most its first compressed MiB)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        magic = fh.read(2)
        fh.seek(0)
        if magic == GZIP_MAGIC:
            kind, head = "gzip", gzip_head(fh, HEAD_BYTES)
        else:
            kind = "nfcapd" if magic == NFCAPD_MAGIC else "plain"
            head = fh.read(HEAD_BYTES)
    return Generation(kind, st.st_dev, st.st_ino, st.st_size, st.st_mtime, len(head),
                      sha256(head), head)


def match_cursor(
    cursors: Mapping[str, dict[str, Any]], gen: Generation
) -> tuple[str | None, dict[str, Any] | None]:
    """The saved cursor of this generation, matched by content; else (None, None).

    A cursor saved while the file was shorter matches when the file still starts with
    the same bytes: the longest matching prefix wins; among equal keys' candidates the
    cursor of the same device and inode is preferred (it is stored under one key, so
    this only orders prefix lengths).
    """
    if gen.head_len == 0:
        return None, None
    if gen.key in cursors:
        return gen.key, cursors[gen.key]
    lengths = sorted({int(c.get("head_len", -1)) for c in cursors.values()
                      if isinstance(c.get("head_len"), int) and 0 < c["head_len"] < gen.head_len},
                     reverse=True)
    for n in lengths:
        key = gen.key_at(n)
        if key in cursors:
            return key, cursors[key]
    return None, None
