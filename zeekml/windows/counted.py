"""The store of a count detector, and the earlier flows it counted for a notice's
``context``.

The scan, DNS burst and brute-force detectors (:mod:`zeekml.windows.scan`,
:mod:`zeekml.windows.lookups`, :mod:`zeekml.windows.logins`) keep, per key, a window of
the key's last flows of one kind (failed flows, lookups, login attempts) with their
``ts`` and uid (:class:`CountedHistory`), and count positions of it; a notice lists the
uids of the newest few counted. Each keeps, per piece of rows counted together, the rows,
which positions counted and the windows (:class:`CountedPart`), and answers
:func:`counted_context` from them, only for the rows a notice is written for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.windows.history import FieldSpec, KeyedHistory, KeySequences
from zeekml.windows.host_window import UID_BYTES, uid_bytes


class CountedHistory:
    """Per-key store of a count detector: the key's last ``depth`` flows of its kind,
    each with ``ts``, uid and the detector's own ``fields``; positions further than
    ``horizon`` seconds from a row are not valid in its window. Subclasses name the
    state key (``key``, what the Spark engine cuts the stream by) and count."""

    #: the state key (set by each detector's store)
    key = ""
    #: the state key of every flow the store never takes (set by each detector's store;
    #: no address is this): such a flow is scored without any state, so the Spark engine
    #: scores it where it is read instead of sending it to a key's group
    unkept = ""

    def __init__(self, *, max_keys: int, depth: int, horizon: float,
                 fields: dict[str, FieldSpec] | None = None) -> None:
        self.history = KeyedHistory(
            depth,
            {**(fields or {}), "uid": FieldSpec(np.dtype(f"S{UID_BYTES}"))},
            max_keys=max_keys,
            idle_timeout=horizon,  # a position further away in time does not count
        )

    @property
    def depth(self) -> int:
        return self.history.depth

    def extend_pieces(self, flows: pd.DataFrame, rows: np.ndarray, keys: np.ndarray,
                      values: dict[str, np.ndarray] | None = None
                      ) -> Iterator[tuple[np.ndarray, KeySequences]]:
        """Append the batch ``rows`` (arrival order) under their ``keys`` with their
        ``values`` of the detector's fields (aligned with ``rows``), and yield each piece's
        rows and windows. In consecutive pieces: the ``[rows, depth + 1]`` temporaries
        stay small beside the other scorers' (1M one-SYN hosts: peak RSS), and a store
        never takes more distinct keys at once than it can hold. Consume it whole."""
        if not len(rows):
            return
        ts = flows["ts"].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        ts = np.where(np.isfinite(ts), ts, 0.0)
        uid = uid_bytes(flows["uid"].iloc[rows])
        step = min(self.history.max_keys, defaults.SCAN_PIECE_ROWS)
        for lo in range(0, len(rows), step):
            piece = slice(lo, lo + step)
            items = {"ts": ts[piece], "uid": uid[piece],
                     **{k: v[piece] for k, v in (values or {}).items()}}
            yield rows[piece], self.history.extend_seq(keys[piece], items)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.history.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.history.load_state_dict(state)


def store_keys(col: pd.Series, kept: np.ndarray, other: str) -> pd.Series:
    """A count store's state key of every flow (what the Spark engine partitions by):
    ``col`` (an address column) as ``str``, missing -> ``""``, where ``kept``; ``other``,
    a key no address is, for the flows the store never takes."""
    key = col.astype("str").fillna("").reset_index(drop=True)
    return key.where(pd.Series(np.asarray(kept, dtype=bool)), other)


@dataclass
class CountedPart:
    """Rows counted together: their batch rows (ascending), the positions counted
    ``[F, n]`` (each row's own last) and their windows (uids gathered on demand)."""

    rows: np.ndarray
    counted: np.ndarray
    seq: KeySequences


#: earlier counted flows whose uids a count detector's notice lists, newest first
CONTEXT_FLOWS = 5


@dataclass
class CountedBatch:
    """What a count detector's store returns for a batch besides its counts (each
    detector's subclass holds those): the pieces counted, from which :meth:`context` gives
    the earlier flows a notice lists (valid until the store's next push)."""

    parts: list[CountedPart]

    def context(self, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``take`` (batch rows): uids ``[len(take), CONTEXT_FLOWS]`` of the earlier
        flows each row counted, newest first, and how many of them are real."""
        return counted_context(self.parts, take, CONTEXT_FLOWS)


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
