"""Sweepers: an outside host flagged against many local hosts is one subject, not many.

The notice policy keys an inbound flow's notice by its local responder (``suppress_by =
"host"``): ten thousand sources against one local server is one notice about that server.
The opposite shape, one outside host that a model flags against many local hosts (a
sweep, a worm, a scanner the model calls by another name), would then be one notice per
local host: 253 for a ping sweep of a /24 whose echo requests a model calls ``ddos``.
Zeek's own scan notices are keyed by the scanner, and so is this: once an originator has
been flagged, by one model with one verdict, against ``hosts`` distinct responders, its
later inbound flows of that model and verdict are keyed by the originator until it goes
quiet. The first ``hosts - 1`` local hosts keep their own notices (what it reached before
it was seen sweeping). A carpet-bombing DDoS whose every source hits ``hosts`` or more
local hosts is keyed by its sources too (none of the shared or lab DDoS captures is one).

**Episode (log time).** As a suppression window, a group ``(originator, verdict, model)``
stays open while its flagged flows come less than ``interval`` seconds of log time apart:
a flow whose stream clock (running maximum of ``ts``) reaches the previous one's time +
``interval`` starts a new episode that counts its responders from zero. Decided per row
from the rows of its own group only, so the result does not depend on how the stream was
cut into batches (nor on the other hosts' rows: the Spark engine decides it on a part of
the rows by originator and gets the local engine's answer).

State: per group of the last episode the distinct responders counted (up to ``hosts``),
the deadline, and while under ``hosts`` the responders themselves; groups whose deadline
the stream clock has passed are dropped, and beyond ``max_groups`` (every input is hostile:
a flood from spoofed sources, each flagged) the least recently flagged are forgotten, the
one place where the result can depend on batch cuts. It round-trips through plain arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import StateError
from zeekml.records.text_arrays import decode_texts, encode_texts


class SweepKeys:
    """Which inbound flagged rows belong to a sweeping originator (one per stream)."""

    def __init__(self, hosts: int, interval: float,
                 max_groups: int = defaults.SWEEP_MAX_GROUPS) -> None:
        self.hosts = int(hosts)
        self.interval = float(interval)
        self.max_groups = int(max_groups)
        self._clear()

    def _clear(self) -> None:
        self._keys = np.empty(0, dtype=object)  # group key per open group
        self._deadline = np.empty(0, dtype=np.float64)
        self._count = np.empty(0, dtype=np.int64)  # distinct responders, capped at hosts
        self._owner = np.empty(0, dtype=object)  # remembered responders' group keys ...
        self._pairs = np.empty(0, dtype=object)  # ... and the responders (under hosts)

    def __len__(self) -> int:
        return len(self._keys)

    def swept(self, codes: np.ndarray, keys: np.ndarray, resp: np.ndarray,
               eff_ts: np.ndarray, clock: np.ndarray, end_clock: float) -> np.ndarray:
        """Per row (rows in stream order): has its group reached ``hosts`` distinct
        responders by this row (a sweep)?

        ``codes`` the group of each row (indices into ``keys``, the group key strings),
        ``resp`` its responder, ``eff_ts`` its log time, ``clock`` the stream clock at
        it; ``end_clock`` the stream clock at the end of the batch (for dropping groups).
        """
        n = len(codes)
        out = np.zeros(n, dtype=bool)
        if self.hosts <= 0:
            return out
        if n:
            out = self._decide(np.asarray(codes, dtype=np.int64), np.asarray(keys, dtype=object),
                               np.asarray(resp, dtype=object),
                               np.asarray(eff_ts, dtype=np.float64),
                               np.asarray(clock, dtype=np.float64))
        self._expire(end_clock)
        return out

    def _decide(self, codes: np.ndarray, keys: np.ndarray, resp: np.ndarray,
                t: np.ndarray, clock: np.ndarray) -> np.ndarray:
        n = len(codes)
        order = np.lexsort((np.arange(n), codes))  # by group, then stream order
        g, tt, cc = codes[order], t[order], clock[order]
        rr = pd.Series(resp[order], dtype=object).fillna("-").astype(str).to_numpy(dtype=object)
        starts = np.r_[True, g[1:] != g[:-1]]
        j = pd.Index(self._keys).get_indexer(keys) if len(self._keys) else np.full(len(keys), -1)
        known = j >= 0
        c_dead = np.full(len(keys), -np.inf)
        c_count = np.zeros(len(keys), dtype=np.int64)
        c_dead[known] = self._deadline[j[known]]
        c_count[known] = self._count[j[known]]
        prev_dead = np.where(starts, c_dead[g], np.r_[-np.inf, tt[:-1] + self.interval])
        broke = cc >= prev_dead  # this row starts a new episode of its group
        first = np.flatnonzero(broke | starts)  # first row of each episode
        ep = np.cumsum(broke | starts) - 1
        ep_carried = (starts & ~broke)[first]  # continues the remembered episode
        # a responder counts once per episode; in a carried one, not if remembered
        new = ~pd.DataFrame({"e": ep, "r": rr}).duplicated().to_numpy(dtype=bool)
        if len(self._pairs):
            seen = pd.MultiIndex.from_arrays([self._owner, self._pairs])
            mine = pd.MultiIndex.from_arrays([keys[g], rr]).isin(seen)
            new &= ~(ep_carried[ep] & np.asarray(mine, dtype=bool))
        cs = np.cumsum(new)
        before = cs[first] - new[first]
        base = np.where(ep_carried, c_count[g[first]], 0)
        count = cs - before[ep] + base[ep]
        swept = np.empty(n, dtype=bool)
        swept[order] = count >= self.hosts
        self._remember(keys, g, ep, first, ep_carried, count, tt, rr, new)
        return swept

    def _remember(self, keys: np.ndarray, g: np.ndarray, ep: np.ndarray, first: np.ndarray,
                  ep_carried: np.ndarray, count: np.ndarray, tt: np.ndarray, rr: np.ndarray,
                  new: np.ndarray) -> None:
        """Keep each group's last episode of the batch: its count, deadline and, while
        under ``hosts``, its responders (a carried episode's remembered ones too)."""
        last_row = np.r_[first[1:], len(g)] - 1  # last row of each episode
        ep_group = g[first]
        last_ep = np.flatnonzero(np.r_[ep_group[1:] != ep_group[:-1], True])
        gk = keys[ep_group[last_ep]]
        cnt = np.minimum(count[last_row[last_ep]], self.hosts)
        dead = tt[last_row[last_ep]] + self.interval
        under = cnt < self.hosts
        keep_ep = np.zeros(len(first), dtype=bool)
        keep_ep[last_ep[under]] = True
        fresh = new & keep_ep[ep]
        touched = pd.Index(gk)
        old_owner = np.asarray(self._owner, dtype=object)
        # remembered pairs stay for untouched groups and for carried episodes under hosts
        go_on = touched[under & ep_carried[last_ep]]
        owners = pd.Index(old_owner)
        stay = (~np.asarray(owners.isin(touched), dtype=bool)
                | np.asarray(owners.isin(go_on), dtype=bool))
        self._owner = np.concatenate([old_owner[stay], keys[g[fresh]]]).astype(object)
        self._pairs = np.concatenate([self._pairs[stay], rr[fresh]]).astype(object)
        drop = np.asarray(pd.Index(self._keys).isin(touched), dtype=bool)
        self._keys = np.concatenate([self._keys[~drop], gk]).astype(object)
        self._deadline = np.concatenate([self._deadline[~drop], dead])
        self._count = np.concatenate([self._count[~drop], cnt]).astype(np.int64)
        if len(self._keys) > self.max_groups:
            self._forget(np.argsort(self._deadline, kind="stable")[:-self.max_groups])

    def _forget(self, at: np.ndarray) -> None:
        """Drop the groups at positions ``at`` and their remembered responders."""
        gone = np.zeros(len(self._keys), dtype=bool)
        gone[at] = True
        keep = ~np.asarray(pd.Index(self._owner).isin(self._keys[gone]), dtype=bool)
        self._owner, self._pairs = self._owner[keep], self._pairs[keep]
        self._keys, self._deadline = self._keys[~gone], self._deadline[~gone]
        self._count = self._count[~gone]

    def _expire(self, end_clock: float) -> None:
        """Drop the groups no later row can continue (the clock only grows)."""
        if not len(self._keys) or not np.isfinite(end_clock):
            return
        gone = np.flatnonzero(self._deadline <= end_clock)
        if len(gone):
            self._forget(gone)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, np.ndarray]:
        kb, ko = encode_texts(self._keys)
        ob, oo = encode_texts(self._owner)
        pb, po = encode_texts(self._pairs)
        return {"sweep_keys_utf8": kb, "sweep_keys_offsets": ko,
                "sweep_deadline": self._deadline.astype(np.float64),
                "sweep_count": self._count.astype(np.int64),
                "sweep_owner_utf8": ob, "sweep_owner_offsets": oo,
                "sweep_resp_utf8": pb, "sweep_resp_offsets": po}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output, validated (a policy state written before
        sweepers had none: nothing remembered)."""
        if "sweep_keys_utf8" not in state:
            self._clear()
            return
        try:
            keys = decode_texts(state["sweep_keys_utf8"], state["sweep_keys_offsets"],
                                "sweep state keys")
            owner = decode_texts(state["sweep_owner_utf8"], state["sweep_owner_offsets"],
                                 "sweep state owners")
            resp = decode_texts(state["sweep_resp_utf8"], state["sweep_resp_offsets"],
                                "sweep state responders")
            dead = np.asarray(state["sweep_deadline"])
            count = np.asarray(state["sweep_count"])
        except KeyError as exc:
            raise StateError(f"sweep state lacks {exc}") from exc
        m = len(keys)
        if dead.shape != (m,) or count.shape != (m,) or (m and (
                dead.dtype.kind != "f" or count.dtype.kind != "i" or (count < 1).any())):
            raise StateError("sweep state has a wrong shape or type")
        if len(owner) != len(resp) or not set(owner) <= set(keys):
            raise StateError("sweep state responders name no remembered group")
        self._keys = np.asarray(keys, dtype=object)
        self._owner = np.asarray(owner, dtype=object)
        self._pairs = np.asarray(resp, dtype=object)
        self._deadline = dead.astype(np.float64)
        self._count = count.astype(np.int64)
