"""nfdump CSV (``nfdump_csv``) -> canonical flow batches.

``-o csv`` of nfdump <= 1.7.4 (48 columns ``ts,te,td,sa,da,sp,dp,pr,flg,...``, a 3-line
``Summary`` trailer) and of nfdump >= 1.7.5 (``firstSeen,duration,proto,srcAddr,
srcPort,dstAddr,dstPort,packets,bytes,flows``, and any ``-o 'csv:%tsr,...'`` layout),
columns by header *name* (the machinery is :class:`~zeekml.sources.csv_parser.CsvParser`'s).
A header repeated mid-stream (concatenated outputs) re-reads the header; header-less
``-q`` output of <= 1.7.4 is read as the 48-column layout. ``No matching flows`` and
the trailer are not data. The mapping to the canonical table is
:mod:`zeekml.sources.nfdump_map`'s.

Tunnels: nfdump <= 1.7.4 CSV prints, before each tunnelled flow, a line for the tunnel
(protocol IPIP/IPv6/GRE, addresses 0.0.0.0, 0 packets); >= 1.7.5 prints the tunnel
with the outer addresses and the inner flow's counters. Such lines are not flows: they
are dropped and counted in ``tunnel_lines`` (JSON has one record per flow). The >= 1.7.5
form is recognised when the inner flow follows in the same batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml import defaults
from zeekml.errors import FormatError
from zeekml.sources.csv_parser import CsvParser, split_header
from zeekml.sources.nfdump_map import BIG, canonical_frame
from zeekml.sources.values import (
    Rejects,
    bad_value,
    bool_mask,
    column_text,
    parse_floats,
    parse_ints,
    value_at,
)

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


class NfdumpCsvParser(CsvParser):
    """Incremental ``nfdump -o csv`` parser, both header layouts (FlowParser interface)."""

    format = "nfdump_csv"

    def __init__(self, path: str, skips: Any = None, *, batch_rows: int = defaults.BATCH_ROWS) -> None:
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
                         ("in_pkts", BIG), ("in_bytes", BIG), ("out_pkts", BIG),
                         ("out_bytes", BIG)):  # fmt: skip
            if role in t:
                v, present, bad = parse_ints(t[role], 0, hi)
                rej.add(bad, bad_value(role, t[role]))
                raw[role] = (v, ~present)
        if "dport" in t:
            raw.update(_dport(t["dport"], rej))
        tunnel = self._tunnel_lines(raw, n)
        if tunnel.any():
            self.tunnel_lines += int(tunnel.sum())
            rej.mask |= tunnel  # dropped silently: not a flow, not a bad line
        return canonical_frame(raw, rej, lines, self.path, self.skips)

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
        return np.asarray(old | (tun & same))


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


def is_nfdump_csv(line: bytes) -> bool:
    """Whether an input's first line is nfdump CSV: a header whose names give the
    columns the reader needs (any ``-o 'csv:%sa,%da,%ts,%pr'`` order), or, without a
    header (``-q``), a 48-field line starting with a date-time."""
    roles = {CSV_ROLES.get(f.strip()) for f in split_header(line)}
    if all(r in roles for r in _REQUIRED):
        return True
    return line.count(b",") == len(LEGACY_FIELDS) - 1 and line[:4].isdigit() and line[4:5] == b"-"
