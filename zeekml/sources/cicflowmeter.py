"""CICFlowMeter CSV (``cicflowmeter_csv``) -> canonical flow batches, and its detection.

The flow exports of the CICIDS2017 data set (the improved CNS2022 copies and the 2017
originals) are CICFlowMeter CSV. :func:`is_cicflowmeter_header` is the one place that
decides whether an input is one (format detection,
:func:`~zeekml.sources.detect.sniff_format`, asks it); the machinery (one ``pyarrow.csv`` call per block, the careful
path for bad lines, a repeated header re-read) is
:class:`~zeekml.sources.csv_parser.CsvParser`'s.

Header names are matched case-insensitively with spaces trimmed, so the 2017
spellings (``Source IP``, ``Total Backward Packets``, ``Total Length of Fwd
Packets``) work too. Mapping to the canonical table:

==================  ============================================================
ts                  ``Timestamp`` (ISO ``2017-07-07 13:39:36.267908``; the
                    improved CSVs are in UTC). Day-first ``7/7/2017 13:39[:36]``
                    of the 2017 originals is accepted and also taken as written
                    (those were local time, UTC-3, minute resolution).
uid                 synthesized from ``Flow ID`` + the row ``id`` (or line), prefix ``M``
orig_h/p, resp_h/p  ``Src IP``/``Src Port``, ``Dst IP``/``Dst Port``; for ICMP
                    (protocol 1/58) orig_p/resp_p are ``ICMP Type``/``ICMP Code``
                    when present (Zeek's convention)
proto               ``Protocol`` 6 tcp, 17 udp, 1 and 58 icmp, else ``unknown_transport``
duration            ``Flow Duration`` (microseconds) / 1e6; missing for a
                    one-packet flow of duration 0 and for negative values
orig_pkts/resp_pkts ``Total Fwd Packet(s)`` / ``Total Bwd packets`` (CICFlowMeter
                    is bidirectional, so 0 is a real 0)
orig/resp_bytes     ``Total Length of Fwd/Bwd Packet(s)``: payload bytes
orig/resp_ip_bytes  payload + ``Fwd/Bwd Header Length`` (TCP/UDP headers) + 20
                    bytes of IPv4 header per packet (40 for IPv6): an
                    approximation (IP options are not counted); missing when a
                    header length is negative (a CICFlowMeter bug)
history (TCP)       approximated from flag counts, letters in Zeek's order:
                    ``S`` SYN >= 1; ``h`` SYN >= 2 with backward packets (SYN-ACK);
                    ``A`` ACK >= 1 and >= 2 forward packets; ``D``/``d`` forward/
                    backward payload > 0; ``F`` FIN >= 1; ``f`` FIN >= 2;
                    ``R``/``r`` ``Fwd``/``Bwd RST Flags`` > 0 (``RST Flag Count``
                    gives ``R`` when the split is absent). UDP: ``D``/``d`` from
                    payload. Other protocols, and no letter at all: missing.
conn_state (TCP)    no SYN: ``OTH``; SYN, nothing back: ``RSTOS0`` (with RST),
                    ``SH`` (with FIN), else ``S0``; SYN answered but no SYN-ACK:
                    ``REJ`` (backward RST), else ``OTH``; handshake (SYN >= 2):
                    ``RSTO``/``RSTR`` (forward/backward RST), ``SF`` (FIN >= 2),
                    ``S2`` (one FIN), ``S1``. UDP: ``SF`` both ways, ``S0`` one
                    way. Others ``OTH``.
label               ``Benign`` for ``BENIGN``, else ``Malicious``
detailed_label      the original ``Label`` (``DoS Hulk``, ``Botnet``...)
service, local_*,   missing (CICFlowMeter does not record them)
missed_bytes
==================  ============================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.errors import FormatError
from zeekml.records import schema
from zeekml.sources.csv_parser import CsvParser
from zeekml.sources.uids import synth_uids
from zeekml.sources.values import (
    ADDR_RE,
    Rejects,
    bad_value,
    bool_mask,
    column_text,
    join_letters,
    nullable_int,
    parse_ints,
    parse_times,
    present_mask,
    proto_names,
    value_at,
)

#: lower-cased header names that identify a CICFlowMeter export (two are enough)
_CIC_NAMES = frozenset({"flow id", "src ip", "source ip", "flow duration", "dst ip", "destination ip"})


def is_cicflowmeter_header(line: bytes) -> bool:
    """Whether an input's first line is a CICFlowMeter CSV header.

    More than three comma-separated fields, at least two of them names only
    CICFlowMeter writes (``Flow ID``, ``Src IP``/``Source IP``, ``Dst IP``/
    ``Destination IP``, ``Flow Duration``; any case, spaces and quotes around them
    ignored). A header that is CICFlowMeter's but lacks a column the reader needs is
    still claimed, so the reader can say which column is missing.
    """
    header = line.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    names = {n.strip().strip('"').lower() for n in header.split(",")}
    return len(header.split(",")) > 3 and len(names & _CIC_NAMES) >= 2


#: normalized CICFlowMeter header name -> role
_CIC_ROLES: dict[str, str] = {
    "id": "row_id",
    "flow id": "flow_id",
    "src ip": "src", "source ip": "src",
    "src port": "sport", "source port": "sport",
    "dst ip": "dst", "destination ip": "dst",
    "dst port": "dport", "destination port": "dport",
    "protocol": "proto",
    "timestamp": "ts",
    "flow duration": "duration",
    "total fwd packet": "fwd_pkts", "total fwd packets": "fwd_pkts",
    "total bwd packets": "bwd_pkts", "total backward packets": "bwd_pkts",
    "total length of fwd packet": "fwd_bytes", "total length of fwd packets": "fwd_bytes",
    "total length of bwd packet": "bwd_bytes", "total length of bwd packets": "bwd_bytes",
    "fwd header length": "fwd_hdr", "bwd header length": "bwd_hdr",
    "fin flag count": "fin", "syn flag count": "syn", "rst flag count": "rst",
    "ack flag count": "ack", "fwd rst flags": "fwd_rst", "bwd rst flags": "bwd_rst",
    "icmp type": "icmp_type", "icmp code": "icmp_code",
    "label": "label",
}  # fmt: skip
_CIC_REQUIRED = ("src", "dst", "ts", "proto")
_COUNTS = ("fwd_pkts", "bwd_pkts", "fwd_bytes", "bwd_bytes", "fin", "syn", "rst", "ack", "fwd_rst", "bwd_rst")


def _norm_cic(name: str) -> str:
    return " ".join(name.strip().lower().split())


class CicFlowMeterParser(CsvParser):
    """CICFlowMeter CSV (CICIDS2017 improved and original spellings)."""

    format = "cicflowmeter_csv"

    def _roles(self, fields: list[str]) -> dict[int, str]:
        roles: dict[int, str] = {}
        for i, f in enumerate(fields):
            role = _CIC_ROLES.get(_norm_cic(f))
            if role is not None and role not in roles.values():
                roles[i] = role
        missing = [r for r in _CIC_REQUIRED if r not in roles.values()]
        if missing:
            raise FormatError(
                f"{self.path}: CICFlowMeter header lacks {', '.join(missing)} "
                "(Src/Dst IP, Timestamp and Protocol are needed)"
            )
        return roles

    def _is_header(self, fields: list[str]) -> bool:
        roles = {_CIC_ROLES.get(_norm_cic(f)) for f in fields}
        return "src" in roles and "dst" in roles

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        n = len(lines)
        rej = Rejects(n)
        t = {role: column_text(a) for role, a in cols.items()}
        ts, bad = parse_times(t["ts"])
        rej.add(bad | np.isnan(ts), lambda i: f"bad Timestamp {value_at(t['ts'])(i)}")
        for role in ("src", "dst"):
            ok = bool_mask(pc.match_substring_regex(t[role], ADDR_RE))
            rej.add(~ok, bad_value("address", t[role]))
        ints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for role, lo, hi in (("sport", 0, 65535), ("dport", 0, 65535), ("proto", 0, 255),
                             ("icmp_type", -1, 255), ("icmp_code", -1, 255)):  # fmt: skip
            if role in t:
                v, present, bad = parse_ints(t[role], lo, hi)
                rej.add(bad, bad_value(role, t[role]))
                ints[role] = (v, present)
        for role in _COUNTS + ("fwd_hdr", "bwd_hdr", "duration"):
            if role in t:
                lo = 0 if role in _COUNTS else -(2**62)
                v, present, bad = parse_ints(t[role], lo, 2**62)
                rej.add(bad, bad_value(role, t[role]))
                ints[role] = (v, present)
        keep = rej.report(self.skips, self.path, lines)
        if not keep.any():
            return None

        def col(role: str) -> tuple[np.ndarray, np.ndarray]:
            v, present = ints.get(role, (np.zeros(n, np.int64), np.zeros(n, bool)))
            return v[keep], ~present[keep]

        df = _cic_frame(t, col, ts[keep], keep)
        df["source_line"] = lines[keep]
        ids = t["row_id"].filter(pa.array(keep)).to_pandas() if "row_id" in t else df["source_line"]
        flow = t["flow_id"].filter(pa.array(keep)).to_pandas() if "flow_id" in t else df["orig_h"]
        df["uid"] = synth_uids("M", self.path, {"flow": pd.Series(flow, dtype=object),
                                               "id": pd.Series(ids, dtype=object)})  # fmt: skip
        return schema.conform(df, source_file=self.path)


def _cic_frame(
    t: dict[str, pa.Array],
    col: Callable[[str], tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
    keep: np.ndarray,
) -> pd.DataFrame:
    """The canonical columns of the kept CICFlowMeter rows (see the module docstring)."""
    k = pa.array(keep)
    n = int(keep.sum())
    src = t["src"].filter(k)
    proto, proto_na = col("proto")
    sport, sport_na = col("sport")
    dport, dport_na = col("dport")
    itype, itype_na = col("icmp_type")
    icode, icode_na = col("icmp_code")
    icmp = ((proto == 1) | (proto == 58)) & ~itype_na & (itype >= 0) & ~icode_na & (icode >= 0)
    orig_p = np.where(icmp, itype, sport)
    resp_p = np.where(icmp, icode, dport)
    fp, fp_na = col("fwd_pkts")
    bp, bp_na = col("bwd_pkts")
    fb, fb_na = col("fwd_bytes")
    bb, bb_na = col("bwd_bytes")
    fh, fh_na = col("fwd_hdr")
    bh, bh_na = col("bwd_hdr")
    dur, dur_na = col("duration")
    v6 = bool_mask(pc.match_substring(src, ":"))
    ip_hdr = np.where(v6, 40, 20)
    duration = np.where(dur_na | (dur < 0) | ((dur == 0) & (fp + bp <= 1)), np.nan, dur / 1e6)
    df = pd.DataFrame(
        {
            "ts": ts,
            "orig_h": pd.Series(src.to_pandas(), dtype=schema.STR),
            "orig_p": nullable_int(orig_p, (sport_na & ~icmp), "Int32"),
            "resp_h": pd.Series(t["dst"].filter(k).to_pandas(), dtype=schema.STR),
            "resp_p": nullable_int(resp_p, (dport_na & ~icmp), "Int32"),
            "proto": proto_names(proto, proto_na),
            "duration": duration,
            "orig_bytes": nullable_int(fb, fb_na),
            "resp_bytes": nullable_int(bb, bb_na),
            "orig_pkts": nullable_int(fp, fp_na),
            "resp_pkts": nullable_int(bp, bp_na),
            "orig_ip_bytes": nullable_int(fb + fh + ip_hdr * fp, fb_na | fh_na | fp_na | (fh < 0)),
            "resp_ip_bytes": nullable_int(bb + bh + ip_hdr * bp, bb_na | bh_na | bp_na | (bh < 0)),
        }
    )
    syn, _ = col("syn")
    fin, _ = col("fin")
    ack, _ = col("ack")
    rst, _ = col("rst")
    frst, frst_na = col("fwd_rst")
    brst, brst_na = col("bwd_rst")
    fwd_r = np.where(frst_na, rst > 0, frst > 0)
    bwd_r = ~brst_na & (brst > 0)
    tcp, udp = proto == 6, proto == 17
    back = bp > 0
    hist = join_letters(
        [
            (tcp & (syn >= 1), "S"), (tcp & (syn >= 2) & back, "h"), (tcp & (ack >= 1) & (fp >= 2), "A"),
            (fb > 0, "D"), (bb > 0, "d"), (tcp & (fin >= 1), "F"), (tcp & (fin >= 2), "f"),
            (tcp & fwd_r, "R"), (tcp & bwd_r, "r"),
        ],
        n,
    )  # fmt: skip
    history = pd.Series(hist.to_pandas(), dtype=schema.STR)
    history[~(tcp | udp) | (history == "").to_numpy()] = np.nan
    hs = (syn >= 2) & back
    state = np.select(
        [
            tcp & (syn == 0),
            tcp & ~back & fwd_r, tcp & ~back & (fin > 0), tcp & ~back,
            tcp & ~hs & bwd_r, tcp & ~hs,
            tcp & fwd_r, tcp & bwd_r, tcp & (fin >= 2), tcp & (fin == 1), tcp,
            udp & back & (fp > 0), udp,
        ],
        ["OTH", "RSTOS0", "SH", "S0", "REJ", "OTH", "RSTO", "RSTR", "SF", "S2", "S1", "SF", "S0"],
        "OTH",
    )  # fmt: skip
    df["history"] = history
    df["conn_state"] = pd.Series(state, dtype=schema.STR)
    if "label" in t:
        original = t["label"].filter(k)
        benign = bool_mask(pc.equal(pc.utf8_upper(original), "BENIGN"))
        label = np.where(benign, "Benign", "Malicious").astype(object)
        empty = ~present_mask(original)
        label[empty] = None
        df["label"] = pd.Series(label, dtype=schema.STR)
        detail = pd.Series(original.to_pandas(), dtype=schema.STR)
        detail[empty] = np.nan
        df["detailed_label"] = detail
    return df
