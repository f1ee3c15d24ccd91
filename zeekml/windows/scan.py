"""Failed-connection fan-out of an originator: how many distinct targets its recent
attempts failed to reach.

A scan, a worm or a peer-to-peer bot looking for peers leaves the same trace in a conn
log: one host starting connections to many different (address, service) targets, most of
which nobody answers. Zeek's own ``scan.zeek`` counts exactly that (unsuccessful attempts
to distinct hosts on one port, or to distinct ports on one host, within 5 minutes). The
neural models do not see it: the AMF-LSTM's window of 10 flows cannot tell ten peers from
two hundred, and the flow LM scores each new peer as a new conversation without context.

For each flow, the originator's last :data:`SCAN_DEPTH` flows before it (every flow it
started, answered or not) and the flow itself are looked at, those within
:data:`SCAN_HORIZON` seconds of it; among the ones that *failed* (no reply, or rejected:
see :func:`failed_flows`) this counts the distinct targets (responder address and
service), the distinct responder addresses and the distinct services. Only a failed flow
gets counts; an answered one gets zeros.

The depth is in flows of the key, not in failed flows, so the counts are exact under any
cut of the stream that keeps a key's flows with their :data:`SCAN_DEPTH` predecessors
(the Spark engine's chunks do). Addresses and services are compared by 32-bit hashes
and codes; no address identity is kept beyond the hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zeekml.records.distinct import factorized
from zeekml.windows.history import FieldSpec, KeyedHistory
from zeekml.windows.host_window import UID_BYTES, host_sides, uid_bytes

#: previous flows of the originator looked at (the window is these and the current flow)
SCAN_DEPTH = 31
#: seconds: flows further from the current one (by ``ts``) do not count
SCAN_HORIZON = 300.0
#: connection states of an attempt that failed although packets came back (Zeek's
#: rejected and half-open states); a flow without any reply packet failed whatever its state
REJECTED_STATES = ("S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR")
#: previous counted flows whose uids a notice lists, newest first
CONTEXT_FLOWS = 5


def failed_flows(flows: pd.DataFrame) -> np.ndarray:
    """Bool ``[B]``: the attempt failed (no packet came back, or a rejected/half-open
    state). A one-way NetFlow record (``paired`` False: no reverse record was found) has no
    reply either. Other missing counters and states are not taken as failure."""
    rp = pd.to_numeric(flows["resp_pkts"], errors="coerce").to_numpy(dtype=np.float64,
                                                                      na_value=np.nan)
    codes, values = factorized(flows["conn_state"])
    rejected = np.append(values.isin(REJECTED_STATES).to_numpy(dtype=bool), False)[codes]
    one_way = np.zeros(len(flows), dtype=bool)
    if "paired" in flows.columns:
        one_way = flows["paired"].eq(False).fillna(False).to_numpy(dtype=bool) & np.isnan(rp)
    return (rp == 0) | rejected | one_way


def service_codes(flows: pd.DataFrame) -> np.ndarray:
    """A flow's service as one int32: responder port and protocol (tcp, udp, icmp, other)."""
    codes, values = factorized(flows["proto"])
    low = values.str.lower()
    proto = np.zeros(len(values) + 1, dtype=np.int32)
    proto[:-1][(low == "tcp").to_numpy(dtype=bool)] = 1
    proto[:-1][(low == "udp").to_numpy(dtype=bool)] = 2
    proto[:-1][low.str.startswith("icmp").to_numpy(dtype=bool, na_value=False)] = 3
    port = flows["resp_p"].fillna(-1).to_numpy(dtype=np.int64)
    return (np.clip(port, -1, 1 << 20).astype(np.int32) * 4 + proto[codes]).astype(np.int32)


def _distinct(values: np.ndarray) -> np.ndarray:
    """Distinct values per row of a 2-D array (sorted in place)."""
    if values.shape[1] == 0:
        return np.zeros(len(values), dtype=np.int64)
    values.sort(axis=1)
    return 1 + (values[:, 1:] != values[:, :-1]).sum(axis=1)


@dataclass
class ScanCounts:
    """Per flow of a batch: distinct failed ``targets``, ``peers`` and ``services`` in its
    window (zero for answered flows), and what :meth:`context` needs."""

    targets: np.ndarray
    peers: np.ndarray
    services: np.ndarray
    rows: np.ndarray  # the failed rows
    counted: np.ndarray  # [F, n] the positions counted for each failed row
    uids: np.ndarray  # [F, n] their uids

    def context(self, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``take`` (batch rows): uids ``[len(take), CONTEXT_FLOWS]`` of the earlier
        failed flows each row counted, newest first, and how many of them are real."""
        take = np.asarray(take, dtype=np.int64)
        if len(self.rows):
            where = np.minimum(np.searchsorted(self.rows, take), len(self.rows) - 1)
            hit = self.rows[where] == take
        else:
            where = np.zeros(len(take), dtype=np.int64)
            hit = np.zeros(len(take), dtype=bool)
        k = CONTEXT_FLOWS
        names = np.zeros((len(take), k), dtype=f"S{UID_BYTES}")
        have = np.zeros(len(take), dtype=np.int64)
        if hit.any():
            sel = where[hit]
            ok = self.counted[sel, :-1][:, ::-1]  # earlier positions, newest first
            ids = self.uids[sel, :-1][:, ::-1]
            order = np.argsort(~ok, axis=1, kind="stable")  # counted ones first, in order
            names[hit] = np.take_along_axis(ids, order, axis=1)[:, :k]
            have[hit] = np.minimum(ok.sum(axis=1), k)
        return names, have


class ScanHistory:
    """Per-originator store of the last :data:`SCAN_DEPTH` flows' (ts, target, failed, uid)."""

    #: the state key: the flow's originator (:func:`~zeekml.windows.host_window.host_sides`)
    key = "orig"

    def __init__(self, *, max_keys: int, depth: int = SCAN_DEPTH,
                 horizon: float = SCAN_HORIZON) -> None:
        self.history = KeyedHistory(
            depth,
            {
                # responder hash, service, failed: one int32 block
                "meta": FieldSpec(np.dtype(np.int32), (3,)),
                "uid": FieldSpec(np.dtype(f"S{UID_BYTES}")),
            },
            max_keys=max_keys,
            idle_timeout=horizon,  # a position further away in time does not count
        )

    @property
    def depth(self) -> int:
        return self.history.depth

    def push(self, flows: pd.DataFrame) -> ScanCounts:
        """Append a canonical flow batch (rows in arrival order); count each failed row."""
        b = len(flows)
        keys, peer_hash, _, _ = host_sides(flows, self.key)
        ts = flows["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        ts = np.where(np.isfinite(ts), ts, 0.0)
        failed = failed_flows(flows)
        meta = np.empty((b, 3), dtype=np.int32)
        meta[:, 0] = peer_hash.view(np.int32)
        meta[:, 1] = service_codes(flows)
        meta[:, 2] = failed
        seq = self.history.extend_seq(keys, {"ts": ts, "meta": meta,
                                             "uid": uid_bytes(flows["uid"])})
        rows = np.flatnonzero(failed)
        targets = np.zeros(b, dtype=np.int64)
        peers = np.zeros(b, dtype=np.int64)
        services = np.zeros(b, dtype=np.int64)
        n = self.history.depth + 1
        if not len(rows):
            empty = np.zeros((0, n), dtype=bool)
            return ScanCounts(targets, peers, services, rows, empty,
                              np.zeros((0, n), dtype=f"S{UID_BYTES}"))
        m = seq.gather(seq.items["meta"], rows)  # [F, n, 3]
        counted = seq.valid[rows] & (m[:, :, 2] != 0)  # the current position always is
        # positions not counted take the current flow's own values, which count anyway:
        # the distinct values of a row are then exactly those of its counted positions
        peer = np.where(counted, m[:, :, 0], m[:, -1:, 0])
        svc = np.where(counted, m[:, :, 1], m[:, -1:, 1])
        pair = (peer.astype(np.int64) << 32) | (svc.astype(np.int64) & 0xFFFFFFFF)
        targets[rows] = _distinct(pair)
        peers[rows] = _distinct(peer)
        services[rows] = _distinct(svc)
        return ScanCounts(targets, peers, services, rows, counted,
                          seq.gather(seq.items["uid"], rows))

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.history.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.history.load_state_dict(state)
