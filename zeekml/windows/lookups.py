"""DNS lookup bursts: how many DNS lookups an originator made in the last five minutes.

A domain-generation-algorithm bot (Simda, Conficker, Necurs) asks its resolver for
hundreds of made-up names a minute, most of which do not exist, and a DNS tunnel (iodine,
DNS exfiltration) carries its data in a stream of queries. In a conn log both leave the
same trace: one host sending far more DNS lookups than a person at a workstation makes.
The neural models do not see it: each lookup is an ordinary small UDP flow to the
resolver, and the flow LM learns a host's DNS conversation as the most predictable one.

Measured on ``../shared/data`` (the most lookups one originator made within any 300 s):
the Simda capture 573, a C&C-over-DNS capture 247, an iodine tunnel 222 (both nfcapd); a
Windows host booting 113, the busiest ordinary client 190, an internet server 81. A web proxy or a resolver that forwards its clients' lookups makes
as many as a bot (the RITA proxy: 673): such hosts are to be allow-listed, which is why
this detector is bundled but not on by default (docs/models.md).

Only DNS lookups (a TCP or UDP flow to responder port 53, or Zeek's ``dns`` service, not
inbound: see :func:`dns_lookups`) are kept, per originator: for each lookup, its
originator's last :data:`LOOKUP_DEPTH` lookups before it and the lookup itself are looked
at, and those within :data:`LOOKUP_HORIZON` seconds of it (by ``ts``) are counted. Every other flow scores zero and never touches the
store. The state key is :data:`LookupHistory.key` (``orig_dns``): the originator of a
lookup, :data:`NOT_LOOKUP_KEY` for any other flow (which needs no state); the Spark engine
cuts the stream by it (:func:`lookup_keys`), so the counts are exact there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zeekml.records.addresses import inbound_of
from zeekml.records.distinct import factorized, lists_name_any, row_texts
from zeekml.windows.counted import CountedBatch, CountedHistory, CountedPart, store_keys

#: previous lookups of the originator looked at (the window is these and the current one)
LOOKUP_DEPTH = 255
#: seconds: lookups further from the current one (by ``ts``) do not count
LOOKUP_HORIZON = 300.0
#: the responder port of a DNS lookup
DNS_PORT = 53
#: the state key of a flow that is no lookup: no address is this, and it needs no state
NOT_LOOKUP_KEY = "\x00not_dns"


def dns_lookups(flows: pd.DataFrame) -> np.ndarray:
    """Bool ``[B]``: a DNS lookup, i.e. a TCP or UDP flow to responder port 53, or a flow
    Zeek's protocol detection called ``dns`` (on any port), that is not inbound. mDNS
    (5353) and LLMNR (5355) are multicast name resolution on the local link, not lookups
    sent to a resolver. An inbound lookup (an outside host asking a local server:
    :func:`~zeekml.records.addresses.inbound_flows`) is a resolver on the internet doing
    its job for its clients, not a bot inside: a local authoritative server would
    otherwise see every busy public resolver as a burst."""
    port = pd.to_numeric(flows["resp_p"], errors="coerce").to_numpy(dtype=np.float64,
                                                                      na_value=np.nan)
    pcodes, pvalues = factorized(flows["proto"])
    tcp_udp = np.append(pvalues.str.lower().isin(("tcp", "udp")).to_numpy(dtype=bool),
                        False)[pcodes]
    out = tcp_udp & (port == DNS_PORT)
    if "service" in flows.columns:
        out |= lists_name_any(flows["service"], ("dns",))
    rows = np.flatnonzero(out)
    if len(rows):  # tested on the lookups' address columns only
        out[rows] = ~inbound_of(flows, rows)
    return out


def lookup_keys(flows: pd.DataFrame) -> pd.Series:
    """The state key of every flow (``str``): its originator (missing -> ``""``) when it
    is a DNS lookup, :data:`NOT_LOOKUP_KEY` otherwise (what the Spark engine partitions
    by)."""
    return store_keys(flows["orig_h"], dns_lookups(flows), NOT_LOOKUP_KEY)


@dataclass
class LookupCounts(CountedBatch):
    """Per flow of a batch: DNS lookups of its originator within the horizon (``lookups``,
    the flow included; zero for a flow that is no lookup); :meth:`context` the earlier
    lookups counted."""

    lookups: np.ndarray


class LookupHistory(CountedHistory):
    """Per-originator store of its last :data:`LOOKUP_DEPTH` DNS lookups' (ts, uid)."""

    #: the state key: the originator of a DNS lookup (:func:`lookup_keys`)
    key = "orig_dns"
    unkept = NOT_LOOKUP_KEY

    def __init__(self, *, max_keys: int, depth: int = LOOKUP_DEPTH,
                 horizon: float = LOOKUP_HORIZON) -> None:
        super().__init__(max_keys=max_keys, depth=depth, horizon=horizon)

    def push(self, flows: pd.DataFrame) -> LookupCounts:
        """Append a canonical flow batch's DNS lookups (rows in arrival order) and count
        each one's window; other flows get zeros."""
        lookups = np.zeros(len(flows), dtype=np.int64)
        rows_all = np.flatnonzero(dns_lookups(flows))
        parts = []
        keys = row_texts(flows["orig_h"], rows_all)
        for rows, seq in self.extend_pieces(flows, rows_all, keys):
            lookups[rows] = seq.valid.sum(axis=1)  # the current position always counts
            parts.append(CountedPart(rows, seq.valid, seq))
        return LookupCounts(parts=parts, lookups=lookups)
