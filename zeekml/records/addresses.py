"""Address facts the detectors share: which addresses are private (local) ones, and which
flows come in from outside.

Below ``features/``, ``windows/`` and ``policy/`` (which all ask it): an address test holds
no window and no feature, so it lives with the records it reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.records.distinct import per_distinct

#: RFC 1918, loopback, link-local (v4 and v6), unique-local IPv6 (fc00::/7)
PRIVATE_PREFIXES: tuple[str, ...] = (
    "10.", "192.168.", "127.", "169.254.", "fc", "fd", "fe80:", "::1",
    *(f"172.{i}." for i in range(16, 32)),
)


def is_private(addr: pd.Series) -> np.ndarray:
    """Vectorized RFC 1918 / ULA / link-local / loopback test on address strings (each
    distinct address tested once); a missing address is not private."""
    return per_distinct(addr, private_values, False).astype(bool)


def private_values(s: pd.Series) -> np.ndarray:
    """The private-address test on each value of a text Series (no missing values)."""
    out: np.ndarray = s.str.lower().str.startswith(PRIVATE_PREFIXES).to_numpy(dtype=bool)
    return out


#: address prefixes of multicast (IPv4 224/4, IPv6 ff00::/8) and limited broadcast
MULTICAST_PREFIXES = ("224.", "225.", "226.", "227.", "228.", "229.", "230.", "231.", "232.",
                      "233.", "234.", "235.", "236.", "237.", "238.", "239.",
                      "255.255.255.255", "ff")


def group_addresses(addr: pd.Series) -> np.ndarray:
    """Per value: a multicast or broadcast address (:data:`MULTICAST_PREFIXES`, or an IPv4
    address ending in ``.255``: a /24's broadcast, the commonest subnet; a host numbered .255
    in a larger subnet is taken for one too). A flow to one has no answer by design."""
    def test(s: pd.Series) -> np.ndarray:
        low = s.str.lower()
        return np.asarray((low.str.startswith(MULTICAST_PREFIXES) | low.str.endswith(".255"))
                          .to_numpy(dtype=bool, na_value=False), dtype=bool)
    return np.asarray(per_distinct(addr, test, False), dtype=bool)


def local_sides(flows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per flow: (originator local, responder local). Local as Zeek marked it
    (``local_orig``/``local_resp``, from ``Site::local_nets``) when it marked either side of
    the flow, else by address (:func:`is_private`)."""
    n = len(flows)

    def flag(col: str) -> np.ndarray:
        if col not in flows.columns:
            return np.zeros(n, dtype=bool)
        return np.asarray(flows[col].astype("boolean").fillna(False).to_numpy(dtype=bool), bool)

    lo, lr = flag("local_orig"), flag("local_resp")
    marked = lo | lr
    if n == 0 or marked.all():
        return lo, lr
    priv_o = is_private(flows["orig_h"]) if "orig_h" in flows.columns else np.zeros(n, bool)
    priv_r = is_private(flows["resp_h"]) if "resp_h" in flows.columns else np.zeros(n, bool)
    return (np.asarray(np.where(marked, lo, priv_o), dtype=bool),
            np.asarray(np.where(marked, lr, priv_r), dtype=bool))


def inbound_flows(flows: pd.DataFrame) -> np.ndarray:
    """Per flow: is it inbound (responder local, originator not; :func:`local_sides`)?
    The incident tracker, the notice policy's suppression key and the DNS burst detector
    ask it."""
    lo, lr = local_sides(flows)
    return np.asarray(lr & ~lo, dtype=bool)


def outbound_flows(flows: pd.DataFrame) -> np.ndarray:
    """Per flow: is it outbound (originator local, responder not; :func:`local_sides`)?"""
    lo, lr = local_sides(flows)
    return np.asarray(lo & ~lr, dtype=bool)


def subject_inbound(flows: pd.DataFrame, rows: np.ndarray, about: np.ndarray) -> np.ndarray:
    """Per flow-major scored row (row ``r``: flow ``r // k``, model ``r % k`` of the ``k``
    in ``about``): is its notice about the responder? ``about`` per model: 1 always (its
    notices are about the responder: ``ScoreBatch.about_responder``, the flood detector's
    victim), -1 never (about the originator: ``ScoreBatch.about_originator``, the scan
    detector's scanner), 0 (or a bool array's False) for an inbound flow
    (:func:`inbound_of`) only. The notice policy's suppression key and the incident
    tracker take it as their ``inbound``."""
    a = np.asarray(about).astype(np.int8)
    rows = np.asarray(rows, dtype=np.int64)
    k = max(len(a), 1)
    per_row = a[rows % k] if len(a) else np.zeros(len(rows), dtype=np.int8)
    out = per_row > 0
    ask = np.flatnonzero(per_row == 0)
    if len(ask):
        out[ask] = inbound_of(flows, rows[ask] // k)
    return np.asarray(out, dtype=bool)


def subject_by_direction(rows: np.ndarray, about: np.ndarray) -> np.ndarray:
    """Per flow-major scored row (as :func:`subject_inbound`'s): does whom its notice is
    about follow the flow's direction (its model's ``about`` is 0), rather than being fixed
    by the model (the flood detector's victim, the scan detector's scanner)? Only those
    rows can be a sweeper's (:mod:`zeekml.policy.sweep`)."""
    a = np.asarray(about).astype(np.int8)
    rows = np.asarray(rows, dtype=np.int64)
    if not len(a):
        return np.ones(len(rows), dtype=bool)
    return np.asarray(a[rows % len(a)] == 0, dtype=bool)


def inbound_of(flows: pd.DataFrame, flow: np.ndarray) -> np.ndarray:
    """:func:`inbound_flows` of the flows at positions ``flow`` (repeats allowed), each
    distinct flow tested once."""
    flow = np.asarray(flow, dtype=np.int64)
    if not len(flow):
        return np.zeros(0, dtype=bool)
    uf, inv = np.unique(flow, return_inverse=True)
    cols = [c for c in ("orig_h", "resp_h", "local_orig", "local_resp") if c in flows.columns]
    return np.asarray(inbound_flows(flows[cols].iloc[uf])[inv.ravel()], dtype=bool)
