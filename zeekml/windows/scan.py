"""Failed-connection fan-out of an originator: how many distinct targets its recent
attempts failed to reach.

A scan, a worm or a peer-to-peer bot looking for peers leaves the same trace in a conn
log: one host starting connections to many different (address, service) targets, most of
which nobody answers. Zeek's own ``scan.zeek`` counts exactly that (unsuccessful attempts
to distinct hosts on one port, or to distinct ports on one host, within 5 minutes). The
neural models do not see it: the AMF-LSTM's window of 10 flows cannot tell ten peers from
two hundred, and the flow LM scores each new peer as a new conversation without context.

Only failed flows (no reply, or rejected: see :func:`failed_flows`) are kept, per
originator: for each failed flow, its originator's last :data:`SCAN_DEPTH` failed flows
before it and the flow itself are looked at, those within :data:`SCAN_HORIZON` seconds
of it, and their distinct targets (responder address and service) are counted, in all and
on the flow's own responder, and so are the failed flows at the flow's own target (one
target tried again and again: a bot retrying its dead C&C). An answered flow gets zeros and costs
nothing more than the failure test: it never touches the store, so a busy client's
ordinary traffic neither dilutes a scan nor takes memory.

The state key is :data:`ScanHistory.key` (``orig_failed``): the originator for a failed
flow, :data:`ANSWERED_KEY` for an answered one (which needs no state). The Spark engine
cuts the stream by that key (:func:`scan_keys`), so every failed flow of an originator
meets its :data:`SCAN_DEPTH` failed predecessors in one group and the counts are exact.
Addresses and services are compared by 32-bit hashes and codes; no address identity is
kept beyond the hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zeekml.records.distinct import factorized, per_distinct, row_texts, texts_at
from zeekml.records.schema import one_way_records
from zeekml.windows.counted import (
    CONTEXT_FLOWS,
    CountedHistory,
    CountedPart,
    counted_context,
    store_keys,
)
from zeekml.windows.history import FieldSpec
from zeekml.windows.host_window import hash_values, service_codes

#: previous failed flows of the originator looked at (the window is these and the current one)
SCAN_DEPTH = 31
#: seconds: flows further from the current one (by ``ts``) do not count
SCAN_HORIZON = 300.0
#: connection states of an attempt that failed although packets came back (Zeek's
#: rejected and half-open states); a flow without any reply packet failed whatever its state
REJECTED_STATES = ("S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR")
#: the originator's Zeek history letters of a stealth probe (FIN; Q: several flags in one
#: packet, as an Xmas scan's FIN+PSH+URG): answered only by resets it failed. An ACK is not
#: one: a keep-alive to a server that forgot the connection is answered so too
STEALTH_PROBE = frozenset("FQ")
_STEALTH_LETTER = "[" + "".join(sorted(STEALTH_PROBE)) + "]"
#: a history of those letters and the responder's resets only, at least one reset
_RESET_ONLY = "[" + "".join(sorted(STEALTH_PROBE)) + r"\^]*r[" + "".join(sorted(STEALTH_PROBE)) + r"r\^]*"
#: the state key of an answered flow: no address is this, and such a flow needs no state
ANSWERED_KEY = "\x00answered"
#: ICMP request types that want a reply: IPv4 echo 8, timestamp 13, information 15,
#: address mask 17 (nmap's host discovery sends echo and timestamp requests); ICMPv6 echo
#: 128 (its neighbour and router solicitations are not counted: unanswered by design)
ICMP_REQUEST_TYPES = (8, 13, 15, 17, 128)
#: seconds: an unanswered ICMP request counts in a window only within this of the flow
#: (a ping sweep: nmap's 32 hosts in 2 s in Stratosphere-002, 252 of a /24 in the lab),
#: not the whole :data:`SCAN_HORIZON` (a web proxy's RTT pinger, the RITA proxy capture:
#: unanswered echo requests to 24 distinct addresses in 300 s, 14 in 60 s, 8 in 10 s)
PING_SWEEP_HORIZON = 10.0


def _reset_only(history: pd.Series) -> np.ndarray:
    """Per distinct Zeek ``history``: 0 not a probe answered by resets alone
    (:func:`failed_flows`), 1 one whose originator's letters say it (FIN, Xmas), 2 one whose
    originator has no letter (a NULL probe, or a lone reset whose sender Zeek never saw:
    the packet count tells)."""
    # Zeek's letters are A-Z (originator) and a-z (responder), plus "^" (flipped)
    probe = history.str.fullmatch(_RESET_ONLY).to_numpy(dtype=bool, na_value=False)
    mine = history.str.contains(_STEALTH_LETTER).to_numpy(dtype=bool, na_value=False)
    return np.where(probe, np.where(mine, 1, 2), 0).astype(np.int8)


def _reset_answered(flows: pd.DataFrame, rows: np.ndarray | None) -> np.ndarray:
    """Bool per row (or per ``rows``): :func:`_reset_only` applied, a letterless one only
    where the originator sent a packet."""
    if "history" not in flows.columns:
        return np.zeros(len(flows) if rows is None else len(rows), dtype=bool)
    kind = per_distinct(flows["history"], _reset_only, 0)
    if rows is not None:
        kind = kind[rows]
    out = kind == 1
    maybe = np.flatnonzero(kind == 2)
    if len(maybe):
        op = flows["orig_pkts"].iloc[maybe if rows is None else rows[maybe]]
        out[maybe] = pd.to_numeric(op, errors="coerce").to_numpy(dtype=np.float64,
                                                                 na_value=0.0) > 0
    return out


def failed_flows(flows: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """Bool ``[B]`` (or ``[len(rows)]``, for those batch rows only): an attempt that failed
    (no packet came back, or a rejected/half-open state). A one-way NetFlow record
    (``paired`` False: no reverse record was found) has no reply either. So has a TCP
    probe that opened with no SYN (FIN, Xmas: history letters of the originator only
    :data:`STEALTH_PROBE`; NULL: none, but a packet sent) and got only resets back
    (``Fr``, ``r``): how a closed port answers nmap's FIN, Xmas and NULL scans, which no
    state above names (Zeek and the NetFlow pairing call it ``OTH``). Other missing
    counters and states are not taken as failure. ICMP never is, as in Zeek's
    ``scan.zeek`` (connection attempts only): replies and unreachable messages are answers
    themselves; an unanswered ICMP request is the scan store's other kind of flow
    (:func:`unanswered_pings`, :func:`scan_flows`)."""
    def col(name: str) -> pd.Series:
        return flows[name] if rows is None else flows[name].iloc[rows]

    def at(codes: np.ndarray) -> np.ndarray:
        return codes if rows is None else codes[rows]

    rp = pd.to_numeric(col("resp_pkts"), errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)
    codes, values = factorized(flows["conn_state"])
    rejected = np.append(values.isin(REJECTED_STATES).to_numpy(dtype=bool), False)[at(codes)]
    one_way = one_way_records(flows, rows) & np.isnan(rp)
    reset_only = _reset_answered(flows, rows)
    return ((rp == 0) | rejected | one_way | reset_only) & ~at(icmp_flows(flows))


def unanswered_pings(flows: pd.DataFrame) -> np.ndarray:
    """Bool ``[B]``: an ICMP request (:data:`ICMP_REQUEST_TYPES`, an echo request above all:
    Zeek and the readers put the type in ``orig_p``) that got no reply: no responder
    packet, or a one-way NetFlow record no reverse was found for. ICMP errors and replies
    never: a traceroute draws time-exceeded messages from a dozen routers in a second.
    (In the shared data only the Stratosphere port scan sends the other request types.)"""
    rows = np.flatnonzero(icmp_flows(flows))
    out = np.zeros(len(flows), dtype=bool)
    if len(rows):  # the two columns at the ICMP rows, not a copy of the batch's rows
        typ = pd.to_numeric(flows["orig_p"].iloc[rows], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan)
        rp = pd.to_numeric(flows["resp_pkts"].iloc[rows], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan)
        silent = (rp == 0) | (one_way_records(flows, rows) & np.isnan(rp))
        out[rows] = np.isin(typ, ICMP_REQUEST_TYPES) & silent
    return out


def scan_flows(flows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(kept, ping) bool ``[B]``: the flows the scan store keeps, a failed attempt
    (:func:`failed_flows`) or an unanswered ICMP request (:func:`unanswered_pings`), and
    which of them are the latter (they count only within :data:`PING_SWEEP_HORIZON`)."""
    ping = unanswered_pings(flows)
    return failed_flows(flows) | ping, ping


def icmp_flows(flows: pd.DataFrame) -> np.ndarray:
    """Bool per flow: its protocol is ICMP, either version (the readers write ``icmp`` for
    both, as Zeek does; each distinct value tested once)."""
    return per_distinct(flows["proto"], lambda s: s.str.lower().str.startswith("icmp")
                        .to_numpy(dtype=bool, na_value=False), False)


def tcp_flows(flows: pd.DataFrame) -> np.ndarray:
    """Bool per flow: its protocol is TCP (each distinct value tested once)."""
    return per_distinct(flows["proto"],
                        lambda s: s.str.lower().eq("tcp").to_numpy(dtype=bool), False)


def row_hashes(col: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``uint32`` hash of ``col`` at ``rows`` as the windows hash peers (missing -> the hash
    of ``""``), from the column's factorization of the whole batch (shared with the other
    scorers), each distinct value of these rows hashed once."""
    codes, values = factorized(col)
    distinct, inv = np.unique(codes[rows], return_inverse=True)
    return hash_values(pd.Series(texts_at(values, distinct), dtype="str"))[inv.ravel()]


def target_sides(flows: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(originator key ``str``, missing -> ``""``; responder hash ``uint32``,
    :func:`row_hashes`) of the given rows: no per-row strings, no copy of the batch."""
    return row_texts(flows["orig_h"], rows), row_hashes(flows["resp_h"], rows)


def target_hash(peer_hash: np.ndarray, service: np.ndarray) -> np.ndarray:
    """int32 per flow: a hash of (responder hash, service), one value per target (a
    collision, about one in four billion pairs, can only undercount)."""
    h = (peer_hash.astype(np.uint64) << np.uint64(32)) | service.astype(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):  # splitmix64's finalizer
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h.astype(np.uint32).view(np.int32)


def distinct_per_row(values: np.ndarray) -> np.ndarray:
    """Distinct values per row of a 2-D array (sorted in place)."""
    if values.shape[1] == 0:
        return np.zeros(len(values), dtype=np.int64)
    values.sort(axis=1)
    return 1 + (values[:, 1:] != values[:, :-1]).sum(axis=1)


@dataclass
class ScanCounts:
    """Per flow of a batch: distinct failed ``targets`` in its window, how many of them
    are on the flow's own responder (``on_peer``: the services it probed there), and how
    many of the window's failed flows went to the flow's own target (``repeats``, the flow
    included: one target tried again and again); zero for answered flows; and what
    :meth:`context` needs (valid until the store's next push, like every
    :class:`~zeekml.models.base.Deferred`)."""

    targets: np.ndarray
    on_peer: np.ndarray
    repeats: np.ndarray
    parts: list[CountedPart]
    #: the same pieces with only the positions at each row's own target counted
    repeat_parts: list[CountedPart]

    def context(self, take: np.ndarray, repeated: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        """For ``take`` (batch rows): uids ``[len(take), CONTEXT_FLOWS]`` of the earlier
        failed flows each row counted (``repeated``: those at its own target), newest
        first, and how many of them are real."""
        return counted_context(self.repeat_parts if repeated else self.parts, take,
                               CONTEXT_FLOWS)


def scan_keys(flows: pd.DataFrame) -> pd.Series:
    """The state key of every flow (``str``): its originator (missing -> ``""``) when the
    store keeps it (:func:`scan_flows`), :data:`ANSWERED_KEY` otherwise (what the Spark
    engine partitions by)."""
    return store_keys(flows["orig_h"], scan_flows(flows)[0], ANSWERED_KEY)


class ScanHistory(CountedHistory):
    """Per-originator store of its last :data:`SCAN_DEPTH` kept flows' (ts, target, uid,
    whether an unanswered ping: :func:`scan_flows`)."""

    #: the state key: the originator of a failed flow (:func:`scan_keys`)
    key = "orig_failed"
    unkept = ANSWERED_KEY

    def __init__(self, *, max_keys: int, depth: int = SCAN_DEPTH,
                 horizon: float = SCAN_HORIZON) -> None:
        # the target (a hash of responder and service), the responder hash
        super().__init__(max_keys=max_keys, depth=depth, horizon=horizon,
                         fields={"meta": FieldSpec(np.dtype(np.int32), (2,)),
                                 "ping": FieldSpec(np.dtype(np.bool_))})

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """As the store's, and a state written before pings were kept (no ``ping``
        field) loads with none of its flows a ping, which none of them was."""
        if "held_ping" not in state and "buf_ping" not in state:
            state = dict(state)
            if "held_uid" in state:
                state["held_ping"] = np.zeros(np.shape(state["held_uid"])[:1], dtype=np.bool_)
            elif "buf_uid" in state:
                state["buf_ping"] = np.zeros(np.shape(state["buf_uid"])[:2], dtype=np.bool_)
        super().load_state_dict(state)

    def push(self, flows: pd.DataFrame) -> ScanCounts:
        """Append a canonical flow batch's kept flows (rows in arrival order,
        :func:`scan_flows`) and count each one's window; other flows get zeros."""
        b = len(flows)
        targets = np.zeros(b, dtype=np.int64)
        on_peer = np.zeros(b, dtype=np.int64)
        repeats = np.zeros(b, dtype=np.int64)
        kept, ping = scan_flows(flows)
        failed = np.flatnonzero(kept)
        parts, repeat_parts = [], []
        keys, peers = target_sides(flows, failed)
        meta = np.empty((len(failed), 2), dtype=np.int32)
        meta[:, 0] = target_hash(peers, service_codes(flows)[failed])
        meta[:, 1] = peers.view(np.int32)
        for rows, seq in self.extend_pieces(flows, failed, keys,
                                            {"meta": meta, "ping": ping[failed]}):
            m = seq.gather(seq.items["meta"])  # [F, n, 2]
            # the current position always is counted; a ping only within its horizon
            counted = seq.valid
            pinged = seq.gather(seq.items["ping"])
            if pinged.any():
                counted = counted & ~(pinged & (seq.ts[:, -1:] - seq.ts > PING_SWEEP_HORIZON))
            # positions not counted take the current flow's own target, which counts
            # anyway: the distinct values of a row are then those of its counted positions
            targets[rows] = distinct_per_row(np.where(counted, m[:, :, 0], m[:, -1:, 0]))
            # distinct targets on the current flow's own responder: its services probed
            same_peer = m[:, :, 1] == m[:, -1:, 1]
            on_peer[rows] = distinct_per_row(np.where(counted & same_peer, m[:, :, 0], m[:, -1:, 0]))
            # failed flows at the current flow's own target (address and service)
            again = counted & (m[:, :, 0] == m[:, -1:, 0])
            repeats[rows] = again.sum(axis=1)
            parts.append(CountedPart(rows, counted, seq))
            repeat_parts.append(CountedPart(rows, again, seq))
        return ScanCounts(targets, on_peer, repeats, parts, repeat_parts)
