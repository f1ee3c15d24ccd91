"""Zeek flows as zeekml would read them from NetFlow: the format projected away.

Why: every NetFlow capture of the shared corpus is an attack, so a model trained on it
can learn the *format* (payload bytes unknown, TCP history approximated from flags,
one-way records) as a sign of attack, and it does: the shipped AMF-LSTM flags a fifth
of a benign phone day read from Argus. Benign NetFlow is what the corpus lacks, and
benign Zeek logs are what it has. :func:`netflow_view` turns a Zeek conn table into
the table zeekml would have given for the same traffic captured as NetFlow, so the
trainer can show a model both views of every capture, and the evaluation can say how a
model treats benign traffic it reads as NetFlow.

How: each flow becomes the unidirectional records an nfpcapd-like exporter writes,
then goes the way real NetFlow goes: the nfdump reader's mapping
(:func:`zeekml.sources.nfdump_map.canonical_frame`) and the pairing stage
(:func:`zeekml.sources.biflow.pair_table`), so fields, approximations and one-way
flows are made by the code that makes them for real input.

    originator's record   when the originator sent packets: first = ts, duration, the originator's packets and IP bytes,
                          TCP flags from the upper-case history letters: S, A (A, D or
                          F after a SYN, or any of them without one), P (D), F, R
    responder's record    only when the responder sent packets: first = ts + 1 ms (its
                          first packet answers the originator's), same duration, the
                          responder's packets and IP bytes, flags from the lower-case
                          letters: S+A (h), S (s), A (a, d, f, r), P (d), F (f), R (r);
                          ICMP requests answered with their reply type (echo 8 -> 0 ...)
    not reproduced        an exporter's active timeout splitting long flows, sampling,
                          flows of other protocols (dropped: NetFlow's
                          ``unknown_transport`` rows are a different population)

The pairing stage, like an exporter's collector, knows no "originator": the side whose
record carries the SYN (else the earlier record) becomes it, so a connection Zeek
joined mid-stream (history ``hADadFf``, no SYN seen) comes out reversed, as it would
from a router.

Each output row keeps the labels and the ``source_line`` of the Zeek row it came from
(``view_of``: that row's position in the input), so a projected capture is labeled as
its original. Only rows with what the projection needs are projected: a TCP row needs
its history (CICFlowMeter exports have none) and every row needs its IP byte counters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from zeekml.records import schema
from zeekml.records.distinct import per_distinct
from zeekml.sources.biflow import pair_table
from zeekml.sources.nfdump_map import canonical_frame
from zeekml.sources.skips import SkipLog
from zeekml.sources.values import Rejects

#: ICMP request type -> reply type (v4, then v6), as the pairing stage pairs them
_ICMP_REPLY = {1: {8: 0, 13: 14, 15: 16, 17: 18}, 58: {128: 129, 133: 134, 135: 136}}
#: the responder's first record starts this much after the originator's
RESPONSE_DELAY = 0.001


def _letters(hist: pd.Series, chars: str) -> np.ndarray:
    """Whether each row's history holds any of ``chars`` (missing: no), tested once per
    distinct history."""
    return per_distinct(hist, lambda v: v.str.contains("[" + chars + "]", regex=True)
                        .to_numpy(dtype=bool, na_value=False), False).astype(bool)


def _flags(parts: list[tuple[np.ndarray, str]], n: int) -> np.ndarray:
    """nfdump-style flag strings (``.A..S.``): one position per flag, ``.`` when unset."""
    out = np.full(n, "", dtype=object)
    for cond, letter in parts:
        out = np.char.add(out.astype(str), np.where(cond, letter, "."))
    return out.astype(object)


def projectable(flows: pd.DataFrame) -> np.ndarray:
    """Rows :func:`netflow_view` can project: TCP with a history, UDP and ICMP, each with
    its originator's IP byte and packet counters and a packet from either side."""
    proto = flows["proto"].to_numpy(dtype=object, na_value="")
    has_hist = flows["history"].notna().to_numpy()
    counted = (flows["orig_ip_bytes"].notna() & flows["orig_pkts"].notna()).to_numpy()
    sent = ((flows["orig_pkts"].fillna(0) > 0) | (flows["resp_pkts"].fillna(0) > 0)).to_numpy()
    return np.asarray(counted & sent & (((proto == "tcp") & has_hist) | (proto == "udp")
                                        | (proto == "icmp")), dtype=bool)


def netflow_view(flows: pd.DataFrame, path: str = "netflow-view") -> pd.DataFrame:
    """The canonical table zeekml would read for ``flows`` (a Zeek conn table) captured as
    NetFlow by a unidirectional exporter; see the module docstring. Output rows are in
    stream order, with a ``view_of`` column (input row position) and the input's labels."""
    keep = np.flatnonzero(projectable(flows))
    df = flows.iloc[keep].reset_index(drop=True)
    n = len(df)
    if not n:
        out = schema.empty_table(schema.has_labels(flows))
        out["view_of"] = pd.Series([], dtype=np.int64)
        return out
    proto_txt = df["proto"].to_numpy(dtype=object, na_value="")
    v6 = df["orig_h"].str.contains(":", regex=False).to_numpy(dtype=bool, na_value=False)
    icmp = proto_txt == "icmp"
    proto = np.select([icmp & v6, icmp, proto_txt == "tcp", proto_txt == "udp"], [58, 1, 6, 17])
    hist = df["history"]
    ts = df["ts"].to_numpy(dtype=np.float64)
    dur = df["duration"].to_numpy(dtype=np.float64, na_value=np.nan)
    dur = np.where(np.isfinite(dur), np.round(dur * 1e3) / 1e3, 0.0)

    def counts(col: str) -> tuple[np.ndarray, np.ndarray]:
        s = df[col]
        return s.fillna(0).to_numpy(dtype=np.int64), s.isna().to_numpy()

    opk, opk_na = counts("orig_pkts")
    oby, oby_na = counts("orig_ip_bytes")
    rpk, rpk_na = counts("resp_pkts")
    rby, rby_na = counts("resp_ip_bytes")
    replied = ~rpk_na & (rpk > 0)

    tcp = proto == 6
    syn = _letters(hist, "S")
    o_after = _letters(hist, "ADF")
    o_flags = _flags([(tcp & o_after, "A"), (tcp & _letters(hist, "D"), "P"),
                      (tcp & _letters(hist, "R"), "R"), (tcp & syn, "S"),
                      (tcp & _letters(hist, "F"), "F")], n)
    r_syn = _letters(hist, "hs")
    r_flags = _flags([(tcp & (_letters(hist, "hadfr")), "A"), (tcp & _letters(hist, "d"), "P"),
                      (tcp & _letters(hist, "r"), "R"), (tcp & r_syn, "S"),
                      (tcp & _letters(hist, "f"), "F")], n)

    op = df["orig_p"].fillna(0).to_numpy(dtype=np.int64)
    rp = df["resp_p"].fillna(0).to_numpy(dtype=np.int64)
    reply_type = op.copy()
    for number, replies in _ICMP_REPLY.items():
        for req, rep in replies.items():
            reply_type[(proto == number) & (op == req)] = rep

    # records interleaved: row i's originator record at 2i, its responder's at 2i + 1
    rows = np.repeat(np.arange(n), 2)
    is_resp = np.tile([False, True], n)
    sel = np.where(is_resp, replied[rows], opk[rows] > 0)
    rows, is_resp = rows[sel], is_resp[sel]

    def pick(o: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.where(is_resp, r[rows], o[rows])

    first = pick(ts, ts + np.minimum(RESPONSE_DELAY, dur))
    src = pick(df["orig_h"].to_numpy(dtype=object), df["resp_h"].to_numpy(dtype=object))
    dst = pick(df["resp_h"].to_numpy(dtype=object), df["orig_h"].to_numpy(dtype=object))
    m = len(rows)
    pr = proto[rows]
    is_icmp = (pr == 1) | (pr == 58)
    raw = {
        "first": pa.array(np.char.mod("%.3f", first)),
        "src": pa.array(src.astype(str)),
        "dst": pa.array(dst.astype(str)),
        "flags": pa.array(pick(o_flags, r_flags).astype(str)),
        "duration": np.where(is_resp, np.maximum(dur - RESPONSE_DELAY, 0.0)[rows], dur[rows]),
        "proto": (pr.astype(np.int64), np.zeros(m, bool)),
        "sport": (pick(op, rp), is_icmp),
        "dport": (pick(rp, op), is_icmp),
        "icmp_type": (pick(op, reply_type), ~is_icmp),
        "icmp_code": (pick(rp, rp), ~is_icmp),
        "in_pkts": (pick(opk, rpk), pick(opk_na, rpk_na)),
        "in_bytes": (pick(oby, rby), pick(oby_na, rby_na)),
    }
    lines = keep[rows].astype(np.int64)
    table = canonical_frame(raw, Rejects(m), lines, path, SkipLog())
    if table is None:  # pragma: no cover - every projected row is valid
        table = schema.empty_table(False)
    paired = pair_table(table)
    view_of = paired["source_line"].to_numpy(dtype=np.int64)
    if schema.has_labels(flows):
        for col, dtype in schema.LABEL_COLUMNS.items():
            paired[col] = pd.Series(flows[col].to_numpy(dtype=object)[view_of], dtype=dtype)
    paired["source_file"] = flows["source_file"].to_numpy(dtype=object)[view_of]
    paired["view_of"] = view_of
    return paired.reset_index(drop=True)


__all__ = ["RESPONSE_DELAY", "netflow_view", "projectable"]
