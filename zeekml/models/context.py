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
    row ``i`` holds ``names[i, :have[i]]`` as ``str`` (non-UTF-8 bytes replaced)."""
    b = len(names)
    out = np.empty(b, dtype=object)
    if b == 0:
        return out
    if names.dtype.kind == "S":
        try:  # uids are ASCII in practice: a C-speed cast; anything else decodes slowly
            names = names.astype(f"U{names.dtype.itemsize}")
        except UnicodeDecodeError:
            names = np.char.decode(names, "utf-8", errors="replace")
    have = np.asarray(have, dtype=np.int64)
    order = np.argsort(have, kind="stable")
    pieces: list[list[str]] = []
    for j in range(names.shape[1] + 1):
        sel = order[have[order] == j]
        pieces.extend(names[sel, :j].tolist() if j else [[] for _ in range(len(sel))])
    out[order] = np.fromiter(pieces, dtype=object, count=b)
    return out
