"""Context uids: the lists of earlier flows an analyst pivots to, packed one way for every
scorer.

Both built-in scorers end with the same shape: per row, a fixed-width array of candidate
uids (bytes) in the order to show them and a count of how many are real. Packing that into
one Python list per row is the costly part (string decoding, list building), so it is done
here once, vectorized per count (one ``tolist`` per distinct count, never a loop per flow),
and only for the rows the pipeline writes (see :class:`zeekml.models.base.Deferred`).
"""

from __future__ import annotations

import numpy as np


def uid_lists(names: np.ndarray, have: np.ndarray) -> np.ndarray:
    """``names [B, k]`` bytes (``S``) or str, ``have [B]`` -> object array ``[B]`` of lists:
    row ``i`` holds ``names[i, :have[i]]`` as ``str`` (non-UTF-8 bytes replaced).

    Only the rows and columns that hold real uids are decoded: a count detector's rows
    are mostly empty (no earlier flow counted), and decoding every cell was most of the
    cost (``--all``: 300k rows x 5 uids, 0.15 of 0.18 s)."""
    b = len(names)
    out = np.empty(b, dtype=object)
    if b == 0:
        return out
    have = np.asarray(have, dtype=np.int64)
    full = np.flatnonzero(have > 0)
    width = int(have.max()) if b else 0
    order = np.argsort(have[full], kind="stable")
    sub = names[full[order], :width]
    if sub.dtype.kind == "S":
        try:  # uids are ASCII in practice: a C-speed cast; anything else decodes slowly
            sub = sub.astype(f"U{sub.dtype.itemsize}")
        except UnicodeDecodeError:
            sub = np.char.decode(sub, "utf-8", errors="replace")
    counts = have[full[order]]
    pieces: list[list[str]] = []
    for j in range(1, width + 1):
        lo, hi = np.searchsorted(counts, [j, j + 1])
        pieces.extend(sub[lo:hi, :j].tolist())
    if len(full):
        out[full[order]] = np.fromiter(pieces, dtype=object, count=len(full))
    empty = np.flatnonzero(have <= 0)
    out[empty] = np.fromiter(([] for _ in range(len(empty))), dtype=object, count=len(empty))
    return out
