"""nfdump records -> the canonical flow table: the mapping both nfdump readers share.

The CSV reader (:mod:`zeekml.sources.nfdump_csv`) and the JSON reader
(:mod:`zeekml.sources.nfdump_json`, also used for nfcapd files through the ``nfdump``
binary) turn their input into the same raw fields; :func:`canonical_frame` validates
them and maps them, column at a time.

Mapping to the canonical table (honest: what NetFlow cannot know stays missing)

    ==================  ================================================================
    ts                  first seen: CSV ``ts``/``firstSeen``, JSON ``first``. nfdump
                        prints *local* time; zeekml assumes it ran with ``TZ=UTC`` (as
                        the shared captures were made, and as :func:`iter_nfcapd` runs
                        it). Epoch values (``%tsr``) are read as such. <= 1.7.4 CSV has
                        whole seconds only (truncated); JSON and >= 1.7.5 CSV keep ms.
    duration            ``td``/``duration`` (ms resolution), else last - first; missing
                        for a one-packet flow of duration 0 (Zeek leaves it unset then)
                        and when last < first
    uid                 synthesized, deterministic: ``N`` + 17 base62 characters from a
                        keyed hash of the file's base name, the record's line (CSV,
                        JSON) or record index (nfcapd), the 5-tuple and the start time
                        (:func:`zeekml.sources.uids.synth_uids`)
    orig_h, resp_h      source / destination address (the exporter's direction)
    orig_p, resp_p      source / destination port; for ICMP and ICMPv6, Zeek's
                        convention: orig_p = ICMP type, resp_p = ICMP code, unpacked
                        from ``dp`` = type*256+code (<= 1.7.4 CSV), ``dstPort`` =
                        ``type.code`` (>= 1.7.5 CSV) or ``icmp_type``/``icmp_code`` (JSON)
    proto               6 tcp, 17 udp, 1/58 icmp (names ``TCP``, ``UDP``, ``ICMP``,
                        ``ICMP6`` too); any other protocol ``unknown_transport``
    orig_pkts           in packets (``ipkt``/``packets``/``in_packets``)
    orig_ip_bytes       in bytes: nfdump counts IP bytes (headers included)
    resp_pkts,          out packets/bytes when > 0 (bidirectional exporters, NSEL);
    resp_ip_bytes       missing otherwise: a unidirectional record (nfpcapd, NetFlow
                        v5/v9) has no responder counters, and the reverse direction is
                        a *separate* record with its own row
    orig_bytes,         missing: payload bytes are unknown to NetFlow
    resp_bytes
    history             approximated from the TCP flags of the record (union over its
                        packets), originator letters only: ``H`` for a lone SYN-ACK
                        packet, else ``S`` SYN; ``A`` ACK (unless the only packet also
                        carried FIN, RST or PSH); ``D`` PSH (data); ``F`` FIN; ``R``
                        RST. UDP: ``D`` when in bytes exceed the 28/48-byte IPv4/IPv6+UDP
                        headers, ``d`` likewise for out bytes. Other protocols, no flags
                        column (1.7.5 default CSV) or no letter: missing.
    conn_state          TCP, from the same flags: no SYN or a lone SYN-ACK ``OTH``; SYN
                        without ACK: ``RSTOS0`` (with RST), ``SH`` (with FIN), else
                        ``S0``; SYN and ACK: ``RSTO`` (RST), ``S2`` (FIN; ``SF`` for a
                        bidirectional record), else ``S1``. UDP: ``SF`` with out
                        packets, else ``S0``. Others ``OTH``. A unidirectional record
                        never sees the reply, so ``S0`` means "no reply *in this record*".
    service, local_*,   missing
    missed_bytes
    paired              False for a unidirectional record (it may be joined with its
                        reverse by :mod:`zeekml.sources.biflow`, on by default), missing
                        for a record that already has both directions' counters
    ==================  ================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.records import schema
from zeekml.sources.skips import SkipLog
from zeekml.sources.uids import synth_uids
from zeekml.sources.values import (
    Rejects,
    bad_value,
    bool_mask,
    join_letters,
    nullable_int,
    parse_times,
    proto_names,
    value_at,
)

#: largest packet or byte counter accepted (larger values are bad lines)
BIG = 2**62


def _tcp_flags(flags: pa.Array) -> dict[str, np.ndarray]:
    """Which of S, A, P, F, R appear in nfdump flag strings (``...AP.S.`` or ``0x12``)."""
    out = {c: bool_mask(pc.match_substring(flags, c)) for c in "SAPFR"}
    hexa = bool_mask(pc.match_substring_regex(flags, r"^0[xX][0-9a-fA-F]{1,2}$"))
    if hexa.any():
        bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
        for i in np.flatnonzero(hexa).tolist():
            v = int(flags[i].as_py(), 16)
            for c, b in bits.items():
                out[c][i] = bool(v & b)
    return out


def canonical_frame(
    raw: dict[str, Any], rej: Rejects, lines: np.ndarray, path: str, skips: SkipLog
) -> pd.DataFrame | None:
    """Validated raw nfdump fields -> a canonical batch (see the module docstring).

    ``raw`` holds text arrays (``first``, ``last``, ``src``, ``dst``, ``flags``), float
    ``duration`` and ``(values, missing)`` integer pairs for the rest.
    """
    n = len(lines)
    zeros = (np.zeros(n, np.int64), np.ones(n, bool))
    first = raw["first"]
    ts, bad = parse_times(first)
    rej.add(bad | np.isnan(ts), lambda i: f"bad first-seen time {value_at(first)(i)}")
    for role in ("src", "dst"):
        ok = bool_mask(pc.match_substring_regex(raw[role], r"^[0-9A-Fa-f:.]{2,45}$"))
        rej.add(~ok, bad_value(f"{role} address", raw[role]))
    proto, proto_na = raw["proto"]
    rej.add(proto_na, "missing protocol")
    if raw.get("duration") is not None:
        dur = raw["duration"].copy()
    elif raw.get("last") is not None:
        last, _ = parse_times(raw["last"])
        dur = np.round((last - ts) * 1e3) / 1e3  # nfdump keeps milliseconds
    else:
        dur = np.full(n, np.nan)
    keep = rej.report(skips, path, lines)
    if not keep.any():
        return None
    k = pa.array(keep)

    def ints(role: str) -> tuple[np.ndarray, np.ndarray]:
        v, m = raw.get(role) or zeros
        return v[keep], m[keep]

    ts, dur, lines = ts[keep], dur[keep], lines[keep]
    proto, proto_na = proto[keep], proto_na[keep]
    src, dst = raw["src"].filter(k), raw["dst"].filter(k)
    sport, sport_na = ints("sport")
    dport, dport_na = ints("dport")
    itype, itype_na = ints("icmp_type")
    icode, icode_na = ints("icmp_code")
    ipk, ipk_na = ints("in_pkts")
    iby, iby_na = ints("in_bytes")
    opk, opk_na = ints("out_pkts")
    oby, oby_na = ints("out_bytes")
    icmp = (proto == 1) | (proto == 58)
    packed = icmp & itype_na & ~dport_na  # <= 1.7.4: type*256+code in dp
    itype = np.where(packed, dport >> 8, itype)
    icode = np.where(packed, dport & 255, icode)
    itype_na, icode_na = itype_na & ~packed, icode_na & ~packed
    orig_p = np.where(icmp, itype, sport)
    resp_p = np.where(icmp, icode, dport)
    orig_p_na = np.where(icmp, itype_na, sport_na)
    resp_p_na = np.where(icmp, icode_na, dport_na)
    dur = np.where((dur < 0) | ((dur == 0) & (ipk <= 1) & ~ipk_na), np.nan, dur)
    bidir = ~opk_na & (opk > 0)
    n = len(ts)
    tcp, udp = proto == 6, proto == 17
    if raw.get("flags") is not None:
        f = _tcp_flags(raw["flags"].filter(k))
        syn, ack, psh, fin, rst = f["S"], f["A"], f["P"], f["F"], f["R"]
    else:
        syn = ack = psh = fin = rst = np.zeros(n, bool)
    has_flags = raw.get("flags") is not None
    one = (ipk == 1) & ~ipk_na
    lone_synack = syn & ack & one
    v6 = bool_mask(pc.match_substring(src, ":"))
    udp_hdr = np.where(v6, 48, 28)
    # PSH on packets of bare headers (nmap's Xmas probe: FIN+PSH+URG, 40 bytes) is no
    # data: Zeek's D needs payload
    tcp_hdr = np.where(v6, 60, 40)
    hist = join_letters(
        [
            (tcp & lone_synack, "H"), (tcp & syn & ~lone_synack, "S"),
            (tcp & ack & ~lone_synack & ~(one & (fin | rst | psh)), "A"),
            (tcp & psh & (iby_na | (iby > ipk * tcp_hdr)), "D"),
            (tcp & fin, "F"), (tcp & rst, "R"),
            (udp & ~iby_na & (iby > ipk * udp_hdr), "D"), (udp & bidir & (oby > opk * udp_hdr), "d"),
        ],
        n,
    )  # fmt: skip
    history = pd.Series(hist.to_pandas(), dtype=schema.STR)
    history[~((tcp & has_flags) | udp) | (history == "").to_numpy()] = np.nan
    state = np.select(
        [
            tcp & (~syn | lone_synack), tcp & ~ack & rst, tcp & ~ack & fin, tcp & ~ack,
            tcp & rst, tcp & fin & bidir, tcp & fin, tcp, udp & bidir, udp,
        ],
        ["OTH", "RSTOS0", "SH", "S0", "RSTO", "SF", "S2", "S1", "SF", "S0"],
        "OTH",
    )  # fmt: skip
    conn_state = pd.Series(state, dtype=schema.STR)
    if not has_flags:
        conn_state[tcp] = np.nan
    df = pd.DataFrame(
        {
            "ts": ts,
            "orig_h": pd.Series(src.to_pandas(), dtype=schema.STR),
            "orig_p": nullable_int(orig_p, orig_p_na, "Int32"),
            "resp_h": pd.Series(dst.to_pandas(), dtype=schema.STR),
            "resp_p": nullable_int(resp_p, resp_p_na, "Int32"),
            "proto": proto_names(proto, proto_na),
            "duration": dur,
            "conn_state": conn_state,
            "history": history,
            "orig_pkts": nullable_int(ipk, ipk_na),
            "orig_ip_bytes": nullable_int(iby, iby_na),
            "resp_pkts": nullable_int(opk, ~bidir),
            "resp_ip_bytes": nullable_int(oby, ~bidir | oby_na),
            # a one-way record (no responder counters) can be paired with its reverse
            "paired": pd.array(np.where(bidir, pd.NA, False), dtype="boolean"),
            "source_line": lines,
        }
    )
    df["uid"] = synth_uids(
        "N",
        path,
        {"line": lines, "ts": df["ts"], "orig_h": df["orig_h"], "orig_p": df["orig_p"],
         "resp_h": df["resp_h"], "resp_p": df["resp_p"], "proto": proto},
    )  # fmt: skip
    return schema.conform(df, source_file=path, with_labels=False)
