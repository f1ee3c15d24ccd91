"""nfdump output -> canonical flow batches: CSV (both layouts), JSON, NDJSON, nfcapd files.

Inputs
    ``nfdump_csv``   ``-o csv`` of nfdump <= 1.7.4 (48 columns ``ts,te,td,sa,da,sp,dp,pr,
                     flg,...``, a 3-line ``Summary`` trailer) and of nfdump >= 1.7.5
                     (``firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,
                     bytes,flows``, and any ``-o 'csv:%tsr,...'`` layout), columns by
                     header *name*. A header repeated mid-stream (concatenated outputs)
                     re-reads the header; header-less ``-q`` output of <= 1.7.4 is read
                     as the 48-column layout. ``No matching flows`` and the trailer are
                     not data.
    ``nfdump_json``  ``-o json`` (one pretty-printed array, streamed record by record,
                     never the whole output in memory; a record is the lines from a
                     ``{`` to a ``}`` at the start of a line, as nfdump writes them) and
                     ``-o ndjson`` (one object per line); IPv4 and IPv6 keys
                     (``src4_addr``/``src6_addr``).
    nfcapd           files and directories, through the real ``nfdump`` binary
                     (:func:`iter_nfcapd`), its stdout streamed.

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

Tunnels: nfdump <= 1.7.4 CSV prints, before each tunnelled flow, a line for the tunnel
(protocol IPIP/IPv6/GRE, addresses 0.0.0.0, 0 packets); >= 1.7.5 prints the tunnel
with the outer addresses and the inner flow's counters. Such lines are not flows: they
are dropped and counted in ``tunnel_lines`` (JSON has one record per flow). The >= 1.7.5
form is recognised when the inner flow follows in the same batch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from zeekml.errors import FormatError, StateError
from zeekml.records import schema
from zeekml.sources.csv_parser import CsvParser, split_header
from zeekml.sources.lines import LineParser, line_spans
from zeekml.sources.sift import read_fast, sift
from zeekml.sources.skips import SkipLog
from zeekml.sources.uids import synth_uids
from zeekml.sources.values import (
    Rejects,
    bool_mask,
    column_text,
    join_letters,
    nullable_int,
    parse_floats,
    parse_ints,
    parse_times,
    proto_names,
    value_at,
)

log = logging.getLogger(__name__)

#: nfdump CSV header names (both layouts, and the ``csv:`` tokens' names) -> role
CSV_ROLES: dict[str, str] = {
    "ts": "first", "te": "last", "td": "duration", "sa": "src", "da": "dst",
    "sp": "sport", "dp": "dport", "pr": "proto", "flg": "flags",
    "ipkt": "in_pkts", "ibyt": "in_bytes", "opkt": "out_pkts", "obyt": "out_bytes",
    "firstSeen": "first", "lastSeen": "last", "duration": "duration", "proto": "proto",
    "srcAddr": "src", "dstAddr": "dst", "srcPort": "sport", "dstPort": "dport",
    "packets": "in_pkts", "inPackets": "in_pkts", "bytes": "in_bytes", "inBytes": "in_bytes",
    "outPackets": "out_pkts", "outBytes": "out_bytes", "flags": "flags",
    "icmpTYpe": "icmp_type", "icmpType": "icmp_type", "icmpCode": "icmp_code",
}  # fmt: skip
_REQUIRED = ("first", "src", "dst", "proto")

#: the <= 1.7.4 ``-o csv`` header (48 columns), assumed for header-less ``-q`` output
LEGACY_FIELDS: list[str] = (
    "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,"
    "dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,"
    "mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr"
).split(",")

#: protocol names nfdump prints -> IP protocol number (others map to unknown_transport)
PROTO_NUMBERS: dict[str, int] = {
    "ICMP": 1, "IGMP": 2, "IPIP": 4, "TCP": 6, "UDP": 17, "IPV6": 41, "RSVP": 46,
    "GRE": 47, "ESP": 50, "AH": 51, "ICMP6": 58, "IPV6-ICMP": 58, "SCTP": 132,
}  # fmt: skip
_TUNNEL_PROTOS = (4, 41, 47)
_TUNNEL_TOKENS = {b"4", b"41", b"47", b"IPIP", b"IPV6", b"GRE"}
_BIG = 2**62


# --------------------------------------------------------------------------- mapping


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


def _canonical(
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
        rej.add(~ok, lambda i, r=role: f"bad {r} address {value_at(raw[r])(i)}")
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
    hist = join_letters(
        [
            (tcp & lone_synack, "H"), (tcp & syn & ~lone_synack, "S"),
            (tcp & ack & ~lone_synack & ~(one & (fin | rst | psh)), "A"), (tcp & psh, "D"),
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


# --------------------------------------------------------------------------- CSV


class NfdumpCsvParser(CsvParser):
    """Incremental ``nfdump -o csv`` parser, both header layouts (FlowParser interface)."""

    format = "nfdump_csv"

    def __init__(self, path: str, skips: Any = None, *, batch_rows: int = 65536) -> None:
        super().__init__(path, skips, batch_rows=batch_rows)
        #: tunnel annotation lines dropped (not flows; see the module docstring)
        self.tunnel_lines = 0
        self._held = b""  # a last line that may be a tunnel line: decided with the next one

    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        # line_no and consumed exclude a held line, so first_line is its number
        old = self._held
        if old:
            block = old + block
        held = self._tunnel_candidate(block)
        if held:
            block = block[: -len(held)]
        self._held = held
        self.consumed -= len(held) - len(old)
        self.line_no -= held.count(b"\n") - old.count(b"\n")
        return super()._process(block, first_line) if block else []

    def close(self) -> list[pd.DataFrame]:
        out = super().close()
        held, self._held = self._held, b""
        if held:
            self.consumed += len(held)
            self.line_no += 1
            out += super()._process(held, self.line_no)
        return out

    def _tunnel_candidate(self, block: bytes) -> bytes:
        """The block's last line if its protocol is a tunnel's (its inner flow may follow)."""
        if len(block) < 2:
            return b""
        fields = self.fields
        if fields is None:  # the header is in this block (not parsed yet)
            head = split_header(block.lstrip(b"\r\n").split(b"\n", 1)[0])
            fields = head if self._is_header(head) else None
        last = block[block.rfind(b"\n", 0, len(block) - 1) + 1 :]
        return b"" if self._split_ok(last.rstrip(b"\r\n"), fields) else last

    def _split_ok(self, line: bytes, fields: list[str] | None = None) -> bool:
        fields = fields or self.fields
        if fields is None:
            return True
        try:
            roles = self._roles(fields)
        except FormatError:
            return True
        idx = next(i for i, r in roles.items() if r == "proto")
        parts = line.split(b",")
        return not (len(parts) == len(fields) and parts[idx].strip().upper() in _TUNNEL_TOKENS)

    def _roles(self, fields: list[str]) -> dict[int, str]:
        roles: dict[int, str] = {}
        for i, f in enumerate(fields):
            role = CSV_ROLES.get(f.strip())
            if role is not None and role not in roles.values():
                roles[i] = role
        missing = [r for r in _REQUIRED if r not in roles.values()]
        if missing:
            raise FormatError(f"{self.path}: nfdump CSV header lacks {', '.join(missing)}")
        return roles

    def _is_header(self, fields: list[str]) -> bool:
        roles = {CSV_ROLES.get(f.strip()) for f in fields}
        return "src" in roles and "dst" in roles

    def _default_fields(self) -> list[str] | None:
        return list(LEGACY_FIELDS)

    def _special(self, text: str) -> int | None:
        if text == "Summary":
            return 2  # "flows,bytes,packets,avg_bps,avg_pps,avg_bpp" and its values
        if text == "No matching flows":
            return 0
        return None

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        n = len(lines)
        rej = Rejects(n)
        t = {role: column_text(a, trim=False) for role, a in cols.items()}
        raw: dict[str, Any] = {r: t.get(r) for r in ("first", "last", "src", "dst", "flags")}
        if "duration" in t:
            raw["duration"], _, bad = parse_floats(t["duration"])
            rej.add(bad, lambda i: f"bad duration {value_at(t['duration'])(i)}")
        raw["proto"] = _proto_numbers(t["proto"])
        for role, hi in (("sport", 65535), ("icmp_type", 255), ("icmp_code", 255),
                         ("in_pkts", _BIG), ("in_bytes", _BIG), ("out_pkts", _BIG),
                         ("out_bytes", _BIG)):  # fmt: skip
            if role in t:
                v, present, bad = parse_ints(t[role], 0, hi)
                rej.add(bad, lambda i, r=role: f"bad {r} {value_at(t[r])(i)}")
                raw[role] = (v, ~present)
        if "dport" in t:
            raw.update(_dport(t["dport"], rej))
        tunnel = self._tunnel_lines(raw, n)
        if tunnel.any():
            self.tunnel_lines += int(tunnel.sum())
            rej.mask |= tunnel  # dropped silently: not a flow, not a bad line
        return _canonical(raw, rej, lines, self.path, self.skips)

    @staticmethod
    def _tunnel_lines(raw: dict[str, Any], n: int) -> np.ndarray:
        proto, _ = raw["proto"]
        pk, pk_na = raw.get("in_pkts") or (np.ones(n, np.int64), np.ones(n, bool))
        tun = np.isin(proto, _TUNNEL_PROTOS)
        if not tun.any():
            return tun
        old = tun & ~pk_na & (pk == 0)  # <= 1.7.4: zero counters, 0.0.0.0
        same = np.zeros(n, dtype=bool)  # >= 1.7.5: the inner flow follows with equal counters
        first = np.asarray(raw["first"].to_pylist(), dtype=object)
        dup = first[:-1] == first[1:]
        by, _ = raw.get("in_bytes") or (np.zeros(n, np.int64), None)
        dup &= (pk[:-1] == pk[1:]) & (by[:-1] == by[1:]) & ~np.isin(proto[1:], _TUNNEL_PROTOS)
        same[:-1] = dup
        return old | (tun & same)


def _proto_numbers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(protocol number, missing) from names (``TCP``) or numbers; unknown names -> -1."""
    num, present, not_num = parse_ints(text, 0, 255)
    names = pa.array(list(PROTO_NUMBERS), pa.string())
    idx = pc.index_in(pc.utf8_upper(text), value_set=names)
    idx_np = np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    by_name = np.asarray(list(PROTO_NUMBERS.values()), dtype=np.int64)
    named = np.where(idx_np >= 0, by_name[np.maximum(idx_np, 0)], -1)
    return np.where(not_num, named, num), ~present


def _dport(text: pa.Array, rej: Rejects) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``dstPort``: a port, or ICMP ``type.code`` (nfdump >= 1.7.5)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dotted = bool_mask(pc.match_substring_regex(text, r"^[0-9]{1,3}\.[0-9]{1,3}$"))
    plain = pc.if_else(pa.array(dotted), "", text)
    v, present, bad = parse_ints(plain, 0, 65535)
    rej.add(bad, lambda i: f"bad dport {value_at(text)(i)}")
    out["dport"] = (v, ~present)
    if dotted.any():
        parts = pc.split_pattern(pc.if_else(pa.array(dotted), text, "0.0"), ".")
        t, _, tbad = parse_ints(pc.list_element(parts, 0), 0, 255)
        c, _, cbad = parse_ints(pc.list_element(parts, 1), 0, 255)
        rej.add(dotted & (tbad | cbad), lambda i: f"bad ICMP type.code {value_at(text)(i)}")
        out["icmp_type"] = (t, ~dotted)
        out["icmp_code"] = (c, ~dotted)
    return out


# --------------------------------------------------------------------------- JSON

#: JSON keys read, with their types (everything else is ignored)
JSON_FIELDS: dict[str, pa.DataType] = {
    "first": pa.string(), "last": pa.string(), "proto": pa.int64(),
    "src4_addr": pa.string(), "dst4_addr": pa.string(),
    "src6_addr": pa.string(), "dst6_addr": pa.string(),
    "src_port": pa.int64(), "dst_port": pa.int64(),
    "icmp_type": pa.int64(), "icmp_code": pa.int64(),
    "in_packets": pa.int64(), "in_bytes": pa.int64(),
    "out_packets": pa.int64(), "out_bytes": pa.int64(), "tcp_flags": pa.string(),
}  # fmt: skip
_JSON_SCHEMA = pa.schema(list(JSON_FIELDS.items()))
_JSON_INTS = {  # key -> (role, max)
    "proto": ("proto", 255), "src_port": ("sport", 65535), "dst_port": ("dport", 65535),
    "icmp_type": ("icmp_type", 255), "icmp_code": ("icmp_code", 255),
    "in_packets": ("in_pkts", _BIG), "in_bytes": ("in_bytes", _BIG),
    "out_packets": ("out_pkts", _BIG), "out_bytes": ("out_bytes", _BIG),
}  # fmt: skip
#: longest JSON record kept while waiting for its end; a longer one is dropped and counted
MAX_RECORD = 1 << 20
_FRAMING = {b"", b"[", b"]", b",", b"No matching flows"}


class NfdumpJsonParser(LineParser):
    """Incremental nfdump ``-o json`` (array) and ``-o ndjson`` parser (FlowParser).

    The array is consumed record by record: ``consumed`` and ``line_no`` stop before a
    record that is not complete yet. ``record_numbers=True`` (nfcapd through nfdump)
    numbers rows by record index instead of text line.
    """

    format = "nfdump_json"

    def __init__(
        self, path: str, skips: Any = None, *, batch_rows: int = 65536, record_numbers: bool = False
    ) -> None:
        super().__init__(path, skips, batch_rows=batch_rows)
        self.record_numbers = record_numbers
        self.records = 0
        self._mode: str | None = None  # "array" (pretty-printed) or "lines" (ndjson)
        self._pending = b""
        self._pending_lines = 0

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["mode"] = self._mode
        state["records"] = self.records
        return state

    def _set_state_extra(self, state: dict[str, Any]) -> None:
        mode, records = state.get("mode"), state.get("records", 0)
        if mode not in (None, "array", "lines"):
            raise StateError(f"{self.path}: parser state has a bad JSON mode")
        if not isinstance(records, int) or isinstance(records, bool) or records < 0:
            raise StateError(f"{self.path}: parser state has a bad record count")
        self._mode, self.records, self._pending, self._pending_lines = mode, records, b"", 0

    def close(self) -> list[pd.DataFrame]:
        out = super().close()
        rest, self._pending = self._pending, b""
        if rest:
            self.consumed += len(rest)
            first = self.line_no + 1
            self.line_no += self._pending_lines
            leftover = [r.strip() for r in rest.split(b"\n")]
            if any(r not in _FRAMING for r in leftover):
                self.skips.add(self.path, first, "truncated JSON record at end of input")
        return out

    # -- parsing -------------------------------------------------------------------------
    def _process(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        if self._mode is None:
            for line in block.split(b"\n"):
                s = line.strip()
                if s:
                    self._mode = "lines" if s.startswith(b"{") and len(s) > 1 else "array"
                    break
            if self._mode is None:
                return []
        if self._mode == "lines":
            return self._lines(block, first_line)
        return self._array(block, first_line)

    def _lines(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        starts, ends = line_spans(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        firsts = arr[np.minimum(starts, len(arr) - 1)]
        lengths = ends - starts
        blank = (lengths == 0) | ((lengths == 1) & (firsts == 13))
        rec = np.flatnonzero(~blank)
        out: list[pd.DataFrame] = []
        for j in range(0, len(rec), self.batch_rows):
            idx = rec[j : j + self.batch_rows]
            run = block[int(starts[idx[0]]) : int(ends[idx[-1]]) + 1]
            lines = (idx + first_line).astype(np.int64)
            table = read_fast(partial(_read_json, run), len(idx)) if b"\r" not in run else None
            if table is None:
                texts = [block[int(starts[i]) : int(ends[i])] for i in idx.tolist()]
                table, lines = self._careful(texts, lines)
            self._emit(table, lines, out)
        return out

    def _array(self, block: bytes, first_line: int) -> list[pd.DataFrame]:
        old = len(self._pending)
        if self._pending:  # line_no excludes pending lines, so first_line is the first of them
            block = self._pending + block
        starts, ends = line_spans(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        firsts = np.where(ends > starts, arr[np.minimum(starts, len(arr) - 1)], 10)
        closers = np.flatnonzero(firsts == ord("}"))
        cut_line = int(closers[-1]) + 1 if len(closers) else 0
        cut = int(ends[cut_line - 1]) + 1 if cut_line else 0
        rest = block[cut:]
        if len(rest) > MAX_RECORD:
            self.skips.add(self.path, first_line + cut_line, f"JSON record longer than {MAX_RECORD} bytes")
            rest = b""
        # what is not complete yet is not consumed yet
        self._pending, self._pending_lines = rest, len(starts) - cut_line
        self.consumed -= len(rest) - old
        self.line_no = first_line - 1 + cut_line
        if not cut_line:
            return []
        return self._records(block[:cut], starts[:cut_line], ends[:cut_line], firsts[:cut_line], first_line)

    def _records(
        self, block: bytes, starts: np.ndarray, ends: np.ndarray, firsts: np.ndarray, first_line: int
    ) -> list[pd.DataFrame]:
        is_open = firsts == ord("{")
        is_close = firsts == ord("}")
        depth = np.cumsum(is_open) - (np.cumsum(is_close) - is_close)
        outside = depth == 0
        openers = np.flatnonzero(is_open)
        out: list[pd.DataFrame] = []
        well_formed = bool((depth <= 1).all() and (depth >= 0).all() and len(openers))
        well_formed &= int(is_close.sum()) == len(openers)
        for i in np.flatnonzero(outside & ~is_close).tolist():
            text = block[int(starts[i]) : int(ends[i])].strip()
            if text not in _FRAMING:
                self.skips.add(self.path, first_line + i, "text outside a JSON record")
        if not well_formed:
            self._careful_array(block, starts, ends, is_open, is_close, first_line, out)
            return out
        closers = np.flatnonzero(is_close)
        for j in range(0, len(openers), self.batch_rows):
            o, c = openers[j : j + self.batch_rows], closers[j : j + self.batch_rows]
            lines = self._numbers(o, first_line)
            body = _compact(block, starts, ends, is_close, outside, int(o[0]), int(c[-1]))
            table = read_fast(partial(_read_json, body), len(o)) if body is not None else None
            if table is None:
                texts = [
                    block[int(starts[a]) : int(starts[b]) + 1]
                    for a, b in zip(o.tolist(), c.tolist(), strict=True)
                ]
                table, lines = self._careful(texts, lines)
            self._emit(table, lines, out)
        return out

    def _numbers(self, openers: np.ndarray, first_line: int) -> np.ndarray:
        if self.record_numbers:
            nums = np.arange(self.records + 1, self.records + 1 + len(openers), dtype=np.int64)
            self.records += len(openers)
            return nums
        self.records += len(openers)
        return (openers + first_line).astype(np.int64)

    def _careful_array(
        self,
        block: bytes,
        starts: np.ndarray,
        ends: np.ndarray,
        is_open: np.ndarray,
        is_close: np.ndarray,
        first_line: int,
        out: list[pd.DataFrame],
    ) -> None:
        """Malformed nesting: pair each opener with the next closer; report the rest."""
        texts: list[bytes] = []
        opens: list[int] = []
        current: int | None = None
        for i in np.flatnonzero(is_open | is_close).tolist():
            if is_open[i]:
                if current is not None:
                    self.skips.add(self.path, first_line + current, "unterminated JSON record")
                current = i
            elif current is None:
                self.skips.add(self.path, first_line + i, "'}' outside a JSON record")
            else:
                texts.append(block[int(starts[current]) : int(starts[i]) + 1])
                opens.append(current)
                current = None
        if texts:
            lines = self._numbers(np.asarray(opens, dtype=np.int64), first_line)
            table, lines = self._careful(texts, lines)
            self._emit(table, lines, out)

    def _careful(self, texts: list[bytes], lines: np.ndarray) -> tuple[pa.Table | None, np.ndarray]:
        """Records one by one with :func:`json.loads`: bad ones skipped with a reason."""
        return sift(texts, lines, check=_check_text, read=_rows_table, skip=self._skip,
                    malformed="malformed JSON record")

    def _skip(self, line: int, reason: str) -> None:
        self.skips.add(self.path, line, reason)

    def _emit(self, table: pa.Table | None, lines: np.ndarray, out: list[pd.DataFrame]) -> None:
        if table is None or table.num_rows == 0:
            return
        frame = _json_frame(table, lines, self.path, self.skips)
        if frame is not None and len(frame):
            out.append(frame)


def _compact(
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    is_close: np.ndarray,
    outside: np.ndarray,
    a: int,
    b: int,
) -> bytes | None:
    """Records on lines ``a..b`` -> one object per line, in one vectorized pass.

    Every newline inside a record becomes a space (JSON whitespace; JSON strings hold no
    raw newlines) and the ``,``/``]`` after a closing ``}`` is blanked. None when the
    layout is not nfdump's (text between records): the caller then goes record by record.
    """
    if (outside[a : b + 1] & ~is_close[a : b + 1]).any():
        return None
    idx = np.arange(a, b + 1)
    close = is_close[a : b + 1]
    cl = idx[close]
    extra = ends[cl] - starts[cl] - 1
    if len(extra) and int(extra.max()) > 2:
        return None
    base = int(starts[a])
    buf = np.frombuffer(block, dtype=np.uint8)[base : int(ends[b]) + 1].copy()
    buf[ends[idx[~close]] - base] = 32
    for k in (1, 2):
        sel = cl[extra >= k]
        buf[starts[sel] + k - base] = 32
    return buf.tobytes()


def _read_json(data: bytes) -> pa.Table:
    """One pyarrow.json call over one-object-per-line records (raises on a bad one)."""
    return pajson.read_json(
        pa.py_buffer(data),
        read_options=pajson.ReadOptions(use_threads=True, block_size=max(1 << 20, len(data) + 1)),
        parse_options=pajson.ParseOptions(
            explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"
        ),
    )


def _check_text(text: bytes) -> str | None:
    """Why one JSON record is unusable, or None."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"bad JSON ({str(exc)[:60]})"
    return _check_record(obj)


def _rows_table(texts: Sequence[bytes]) -> pa.Table:
    """Checked records (:func:`_check_text`) as a table of the JSON fields read."""
    rows = [{k: obj.get(k) for k in JSON_FIELDS} for obj in map(json.loads, texts)]
    return pa.Table.from_pylist(rows, schema=_JSON_SCHEMA)


def _check_record(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "JSON value is not an object"
    for key, typ in JSON_FIELDS.items():
        v = obj.get(key)
        if v is None:
            continue
        if pa.types.is_integer(typ):
            if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
                return f"bad {key} {str(v)[:40]!r}"
        elif not isinstance(v, str):
            return f"bad {key} {str(v)[:40]!r}"
    return None


def _json_frame(table: pa.Table, lines: np.ndarray, path: str, skips: SkipLog) -> pd.DataFrame | None:
    n = table.num_rows
    rej = Rejects(n)

    def text(key: str) -> pa.Array:
        return column_text(table.column(key), trim=False)

    raw: dict[str, Any] = {
        "first": pc.fill_null(text("first"), ""),
        "last": pc.fill_null(text("last"), ""),
        "src": pc.fill_null(pc.coalesce(text("src4_addr"), text("src6_addr")), ""),
        "dst": pc.fill_null(pc.coalesce(text("dst4_addr"), text("dst6_addr")), ""),
        "flags": pc.fill_null(text("tcp_flags"), ""),
    }
    for key, (role, hi) in _JSON_INTS.items():
        col = table.column(key)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        missing = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        v = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        rej.add(~missing & ((v < 0) | (v > hi)), lambda i, k=key, vv=v: f"{k} out of range ({vv[i]})")
        raw[role] = (v, missing)
    if not bool_mask(pc.is_valid(table.column("tcp_flags"))).any():
        raw["flags"] = None
    return _canonical(raw, rej, lines, path, skips)


# --------------------------------------------------------------------------- sniffing

NFCAPD_MAGIC = b"\x0c\xa5"
_JSON_KEYS = (b'"src4_addr"', b'"src6_addr"', b'"in_packets"', b'"export_sysid"')


def sniff(head: bytes) -> str | None:
    """``nfcapd``, ``nfdump_json`` or ``nfdump_csv`` from an input's first bytes, else None.

    CSV is recognised by header *roles* (so ``-o 'csv:%sa,%da,%ts,%pr'`` orders work)
    or, without a header (``-q``), by a 48-field line starting with a date-time.
    """
    if head[:2] == NFCAPD_MAGIC:
        return "nfcapd"
    text = head.removeprefix(b"\xef\xbb\xbf")
    line = next((x.strip() for x in text.split(b"\n") if x.strip()), b"")
    if line.startswith((b"[", b"{")):
        if b'"id.orig_h"' not in text[:4096] and any(k in text[:4096] for k in _JSON_KEYS):
            return "nfdump_json"
        return None
    roles = {CSV_ROLES.get(f.strip()) for f in split_header(line)}
    if all(r in roles for r in _REQUIRED):
        return "nfdump_csv"
    if line.count(b",") == len(LEGACY_FIELDS) - 1 and line[:4].isdigit() and line[4:5] == b"-":
        return "nfdump_csv"
    return None


# --------------------------------------------------------------------------- nfcapd


#: where nfdump is looked for when it is not on PATH
NFDUMP_CANDIDATES: tuple[str, ...] = ("/usr/bin/nfdump", "/usr/local/bin/nfdump")


def nfdump_binary() -> str:
    """Path of the ``nfdump`` binary; :class:`FormatError` naming the package if absent."""
    for cand in (shutil.which("nfdump"), *NFDUMP_CANDIDATES):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FormatError("reading nfcapd files needs the nfdump binary (apt-get install nfdump)")


def nfcapd_files(path: str) -> list[str]:
    """The file itself, or a directory's closed ``nfcapd.<time>`` files in time order."""
    if os.path.isdir(path):
        from zeekml.sources.nfcapd_dir import closed_names

        return [os.path.join(path, n) for n in closed_names(path)]  # type: ignore[arg-type]
    return [path]


def iter_nfcapd(
    path: str, skips: SkipLog | None = None, batch_rows: int = 65536, *, chunk: int = 1 << 20
) -> Iterator[pd.DataFrame]:
    """Canonical batches of an nfcapd file (or directory) read by the real ``nfdump``.

    Runs ``nfdump -r FILE -o json`` per file (argument list, ``TZ=UTC`` in its
    environment) and streams its stdout through :class:`NfdumpJsonParser`, so memory is
    bounded by the batch size. JSON rather than ``-o csv``: millisecond timestamps
    (<= 1.7.4 CSV has whole seconds) and exactly one record per flow (its CSV adds a
    line per tunnel). Rows are numbered by record index within each file. A file nfdump
    cannot read (bad magic, short read) is recorded as a skip naming the file and
    nfdump's message (a :class:`~zeekml.errors.ParseError` in strict mode), after any
    rows it did yield; a directory reads only closed ``nfcapd.<time>`` files.
    """
    skips = skips if skips is not None else SkipLog()
    exe = nfdump_binary()
    files = nfcapd_files(path)
    if os.path.isdir(path) and not files:
        log.warning("%s: no closed nfcapd files in this directory", path)
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    for name in files:
        yield from _one_nfcapd(exe, name, skips, batch_rows, chunk, env)


def _one_nfcapd(
    exe: str, name: str, skips: SkipLog, batch_rows: int, chunk: int, env: dict[str, str]
) -> Iterator[pd.DataFrame]:
    if not os.path.isfile(name):
        raise FileNotFoundError(2, "no such nfcapd file", name)
    parser = NfdumpJsonParser(name, skips, batch_rows=batch_rows, record_numbers=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [exe, "-r", os.path.abspath(name), "-o", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        try:
            assert proc.stdout is not None
            while True:
                data = proc.stdout.read(chunk)
                if not data:
                    break
                yield from parser.feed(data)
            yield from parser.close()
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        message = err.read(4096).decode("utf-8", "replace").strip()
    if rc != 0 or message:
        first = message.splitlines()[0] if message else f"exit status {rc}"
        skips.add(name, None, f"nfdump could not read it completely: {first[:200]}")
