"""The earlier flows a count detector counted, for a notice's ``context``.

The scan and DNS burst detectors (:mod:`zeekml.windows.scan`,
:mod:`zeekml.windows.lookups`) count positions of a window of a key's earlier flows; a
notice lists the uids of the newest few it counted. Both keep, per piece of rows they
counted together, the rows, which positions counted and the windows
(:class:`CountedPart`), and answer :func:`counted_context` from them, only for the rows
a notice is written for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeekml.windows.history import KeySequences
from zeekml.windows.host_window import UID_BYTES


@dataclass
class CountedPart:
    """Rows counted together: their batch rows (ascending), the positions counted
    ``[F, n]`` (each row's own last) and their windows (uids gathered on demand)."""

    rows: np.ndarray
    counted: np.ndarray
    seq: KeySequences


def counted_context(parts: Sequence[CountedPart], take: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For ``take`` (batch rows): uids ``[len(take), k]`` of the earlier flows each row
    counted, newest first, and how many of them are real (rows that counted nothing, or
    are in no part, have none)."""
    take = np.asarray(take, dtype=np.int64)
    names = np.zeros((len(take), k), dtype=f"S{UID_BYTES}")
    have = np.zeros(len(take), dtype=np.int64)
    for part in parts:
        if not len(part.rows):
            continue
        where = np.minimum(np.searchsorted(part.rows, take), len(part.rows) - 1)
        hit = part.rows[where] == take
        if not hit.any():
            continue
        sel = where[hit]
        ok = part.counted[sel, :-1][:, ::-1]  # earlier positions, newest first
        ids = part.seq.gather(part.seq.items["uid"], sel)[:, :-1][:, ::-1]
        order = np.argsort(~ok, axis=1, kind="stable")  # counted ones first, in order
        picked = np.take_along_axis(ids, order, axis=1)[:, :k]
        names[hit, :picked.shape[1]] = picked
        have[hit] = np.minimum(ok.sum(axis=1), k)
    return names, have
