"""Flood fan-in of a victim: how many distinct sources its recent unanswered flows came from.

A distributed denial of service leaves one trace in a conn log whatever the vector (a SYN
flood from spoofed sources, DNS, NTP or ISAKMP reflection, a botnet's UDP flood): one host
receiving, within seconds, flows from many different addresses that it does not answer
(or that a one-way NetFlow export shows without reply). The neural models see a window of
the victim's last 10 flows; they cannot tell ten sources from thousands, and on NetFlow
their thresholds are strict: held out, the AMF-LSTM named 3,971 of the 3,978 flows of a
real ISAKMP reflection attack ``ddos`` and noticed 17.5% of them (docs/models.md).

Only *unanswered flows that are not outbound* are kept (:func:`flood_flows`: a failed flow,
:func:`~zeekml.windows.scan.failed_flows`, or an unanswered ICMP request (echo, timestamp),
unless its originator is local and its responder outside: an outbound failure is a local
client's, and many local clients failing to reach one outside server is an outage, not an
attack; and never a flow to a multicast or broadcast address, which nobody answers by
design). Per victim (the
responder), for each such flow its victim's last :data:`FLOOD_DEPTH` kept flows before it
and the flow itself are looked at, those within :data:`FLOOD_HORIZON` seconds of it, and
their distinct originator addresses are counted. Every other flow scores zero and never
touches the store, so a busy server's answered clients neither dilute a flood nor take
memory.

The state key is :data:`FloodHistory.key` (``resp_flood``): the responder of a kept flow,
:data:`NOT_KEPT_KEY` for any other flow; the Spark engine cuts the stream by it
(:func:`flood_keys`), so the counts are exact there too. Originators are compared by 32-bit
hashes (a collision, about one in four billion pairs, can only undercount).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zeekml.records.addresses import group_addresses, outbound_flows
from zeekml.records.distinct import row_texts
from zeekml.windows.counted import CountedBatch, CountedHistory, CountedPart, store_keys
from zeekml.windows.history import FieldSpec
from zeekml.windows.scan import distinct_per_row, row_hashes, scan_flows

#: previous kept flows of the victim looked at (the window is these and the current one)
FLOOD_DEPTH = 63
#: seconds: flows further from the current one (by ``ts``) do not count
FLOOD_HORIZON = 10.0
#: the state key of a flow that is not kept: no address is this, and it needs no state
NOT_KEPT_KEY = "\x00not_flood"


def flood_flows(flows: pd.DataFrame) -> np.ndarray:
    """Bool ``[B]``: a failed flow (:func:`~zeekml.windows.scan.failed_flows`: no reply,
    rejected, or a one-way NetFlow record; ICMP not) or an unanswered ICMP request
    (:func:`~zeekml.windows.scan.unanswered_pings`: a ping flood from spoofed sources,
    which the victim does not or cannot answer), together the scan store's kept flows
    (:func:`~zeekml.windows.scan.scan_flows`), that is not outbound
    (:func:`~zeekml.records.addresses.outbound_flows`) and not to a multicast or broadcast
    address (:func:`~zeekml.records.addresses.group_addresses`: announcements and name
    queries of many local hosts to their subnet's broadcast are never answered), both
    tested only for the failed ones."""
    out = scan_flows(flows)[0]  # the scan store's kept flows (a fresh array)
    rows = np.flatnonzero(out)
    if len(rows):
        cols = [c for c in ("orig_h", "resp_h", "local_orig", "local_resp") if c in flows.columns]
        some = flows[cols].iloc[rows]
        out[rows[outbound_flows(some) | group_addresses(some["resp_h"])]] = False
    return out


def flood_keys(flows: pd.DataFrame) -> pd.Series:
    """The state key of every flow (``str``): its responder (missing -> ``""``) when it is
    kept, :data:`NOT_KEPT_KEY` otherwise (what the Spark engine partitions by)."""
    return store_keys(flows["resp_h"], flood_flows(flows), NOT_KEPT_KEY)


@dataclass
class FloodCounts(CountedBatch):
    """Per flow of a batch: kept or not (``kept``), distinct sources among its victim's
    window (``sources``, the flow included; zero for a flow not kept); :meth:`context` the
    earlier flows counted."""

    kept: np.ndarray
    sources: np.ndarray


class FloodHistory(CountedHistory):
    """Per-victim store of its last :data:`FLOOD_DEPTH` kept flows' (ts, source hash, uid)."""

    #: the state key: the responder of a kept flow (:func:`flood_keys`)
    key = "resp_flood"
    unkept = NOT_KEPT_KEY

    def __init__(self, *, max_keys: int, depth: int = FLOOD_DEPTH,
                 horizon: float = FLOOD_HORIZON) -> None:
        super().__init__(max_keys=max_keys, depth=depth, horizon=horizon,
                         fields={"src": FieldSpec(np.dtype(np.int32))})

    def push(self, flows: pd.DataFrame) -> FloodCounts:
        """Append a canonical flow batch's kept flows (rows in arrival order) and count
        each one's distinct sources; other flows get zeros."""
        kept = flood_flows(flows)
        sources = np.zeros(len(flows), dtype=np.int64)
        rows_all = np.flatnonzero(kept)
        parts = []
        keys = row_texts(flows["resp_h"], rows_all)
        src = row_hashes(flows["orig_h"], rows_all).view(np.int32)
        for rows, seq in self.extend_pieces(flows, rows_all, keys, {"src": src}):
            src_w = seq.gather(seq.items["src"])  # [F, n]
            # positions not counted take the current flow's own source, which counts
            # anyway: the distinct values of a row are then those of its counted positions
            sources[rows] = distinct_per_row(np.where(seq.valid, src_w, src_w[:, -1:]))
            parts.append(CountedPart(rows, seq.valid, seq))
        return FloodCounts(parts=parts, kept=kept, sources=sources)
