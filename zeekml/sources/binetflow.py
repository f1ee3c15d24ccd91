"""Argus bidirectional NetFlow ("binetflow") -> canonical flow batches.

The labeled captures of CTU-13 and most Stratosphere captures are published in this
format: ``ra -c ,`` output of Argus with the columns ``StartTime,Dur,Proto,SrcAddr,
Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes[,SrcPkts],Label``.
Columns are taken by header *name* (case-insensitive; ``SrcPkts`` and ``Label`` are
optional, ``sTos``/``dTos`` are not used); comma- and tab-separated files are both read
(the separator is that of the header line), with or without a final newline, CRLF or
LF, gzip or plain (:mod:`zeekml.sources.open` decompresses by content). The machinery
(one ``pyarrow.csv`` call per block, line-by-line fallback for bad lines, a repeated
header re-read) is :class:`~zeekml.sources.csv_parser.CsvParser`'s.

Mapping to the canonical table
    ==================  ================================================================
    ts                  ``StartTime`` ``YYYY/MM/DD hh:mm:ss[.ffffff]``, years 1900..2199 (ISO
                        8601 and epoch seconds are accepted too). Argus writes no zone: the time
                        is read as UTC unless ``--tz ZONE`` (:class:`ReadOptions.tz
                        <zeekml.sources.options.ReadOptions>`) names the zone it was
                        written in (an ambiguous wall time at the end of daylight saving
                        time is taken as the first, DST, one; a nonexistent one is moved
                        forward). Epoch seconds are never shifted. Relative times (the
                        ``1970/01/01 01:00:08`` of some Stratosphere files) are kept as
                        small numbers, as the Zeek reader keeps a relative ``ts``.
    duration            ``Dur`` seconds; missing for a one-packet flow of duration 0
                        (Zeek leaves it unset then) and for a negative value
    orig/resp           ``Dir`` decides who originated: ``->``, ``?>``, ``<->``, ``<?>``,
                        ``who`` (ARP) keep ``SrcAddr`` as the originator; ``<-`` and
                        ``<?`` (Argus saw or believes the destination started it) are
                        *reversed*: addresses, ports, counters and the two halves of
                        ``State`` are swapped. A ``Dir`` of anything else is a bad line.
    orig_p, resp_p      ``Sport``/``Dport``, decimal or Argus hex (``0x01bb``); empty for
                        protocols without ports (missing). ICMP (``icmp``,
                        ``ipv6-icmp``): Zeek's convention, orig_p = ICMP type, resp_p =
                        ICMP code. Argus writes ICMPv4 type and code packed in ``Sport``
                        as four hex digits, code in the high byte (``0x0303`` port
                        unreachable, ``0x0403`` fragmentation needed, ``0x0008`` echo);
                        its ``Dport`` is then the ICMP id and is not used. Otherwise
                        (ICMPv6 in decimal, short hex) ``Sport`` is the type and
                        ``Dport`` the code, as the nfdump reader maps ICMP.
    proto               ``tcp``, ``udp`` (also Argus' ``rtp``, ``rtcp``, ``udt``, which
                        are UDP flows), ``icmp`` (``icmp``, ``ipv6-icmp``), any other IP
                        protocol (``igmp``, ``gre``, ``esp``, a number ...)
                        ``unknown_transport``
    orig_ip_bytes       ``SrcBytes``; resp_ip_bytes = ``TotBytes - SrcBytes``. Argus
                        counts whole packets as captured (on Ethernet including the
                        14-byte link header), so these are a slight over-count of Zeek's
                        IP bytes. Payload bytes (orig_bytes, resp_bytes) are missing.
    orig_pkts           ``SrcPkts``; resp_pkts = ``TotPkts - SrcPkts``. Without
                        ``SrcPkts`` both are missing, except where the split is certain:
                        ``SrcBytes == TotBytes`` (all packets the source's) or
                        ``SrcBytes == 0`` (all the destination's).
    conn_state,         from ``State`` (table below)
    history
    label               ``Malicious`` for ``Botnet`` and ``Malware`` labels
                        (``flow=From-Botnet-V46-...``, ``flow=To-Botnet-...``,
                        ``flow=Malware-TCP``), ``Benign`` for ``Normal`` ones
                        (``flow=From-Normal-...``, ``flow=To-Normal-...``),
                        ``Background`` for ``flow=Background...``; empty or any other
                        text: missing (never benign; excluded from eval and training)
    detailed_label      the whole ``Label`` text (``flow=From-Botnet-V46-TCP-CC...``)
    uid                 synthesized: ``A`` + 17 base62 characters from a keyed hash of
                        the file's base name, the line, the start time and the 5-tuple
                        (:func:`~zeekml.sources.uids.synth_uids`)
    service, local_*,   missing
    missed_bytes
    ==================  ================================================================

``State`` -> ``conn_state`` / ``history`` (an approximation; Argus keeps the union of
TCP flags each side sent, Zeek the order of events)

    TCP with flags, ``<src flags>_<dst flags>`` (letters ``F S R P A U E C``, e.g.
    ``S_RA``, ``FSPA_FSPA``; after a reversal the halves are swapped). With o = the
    originator's flags and r = the responder's:

    ==========================================  ===========  =========================
    flags                                       conn_state   note
    ==========================================  ===========  =========================
    o without S; r with S+A and R               ``RSTRH``    SYN-ACK then RST, no SYN
    o without S; r with S+A and F               ``SHR``      SYN-ACK then FIN, no SYN
    o without S (otherwise)                     ``OTH``      midstream
    o with S, r empty, o with R                 ``RSTOS0``
    o with S, r empty, o with F                 ``SH``
    o with S, r empty                           ``S0``       attempt, no reply
    o with S, r without S: with R / without     ``REJ`` /    rejected / odd reply
                                                ``OTH``
    handshake (S both ways): o with R           ``RSTO``
    handshake: r with R                         ``RSTR``
    handshake: F both ways                      ``SF``
    handshake: F from o only / from r only      ``S2`` /
                                                ``S3``
    handshake (otherwise)                       ``S1``
    ==========================================  ===========  =========================

    history, letters in this fixed order: ``S`` o has SYN; ``h`` r has SYN+ACK (``s``
    SYN without ACK); ``A`` o has ACK; ``D`` o has PSH (data); ``a`` r has ACK; ``d``
    r has PSH; ``F``/``f`` FIN; ``R``/``r`` RST. ``FSPA_FSPA`` -> ``ShADadFf``.

    TCP with an Argus state word (Argus run without flag printing):

    =========  ===========  =========  ===========================================
    State      conn_state   history    Argus meaning
    =========  ===========  =========  ===========================================
    ``REQ``    ``S0``       ``S``      connection requested (SYN), no answer
    ``ACC``    ``S1``       ``Sh``     accepted (SYN-ACK seen)
    ``EST``,   ``S1``       ``ShA``    established / connected
    ``CON``
    ``FIN``    ``S2``       ``ShAF``   a FIN seen (closing)
    ``CLO``    ``SF``       ``ShAFf``  closed normally
    ``RST``    ``RSTOS0`` /  ``SR`` /   reset: with nothing back from the responder /
               ``REJ`` /    ``Sr`` /   with a reply in at most 2 packets in all (a
               ``RSTR``     ``ShAr``   refused SYN) / after a longer exchange
    other      ``OTH``      missing    ``TIM`` (timed out), ``INT``, ...
    =========  ===========  =========  ===========================================

    UDP (and rtp/rtcp/udt): from which side sent bytes (``SrcBytes``, ``TotBytes -
    SrcBytes``), as Zeek does: both ``SF`` / ``Dd``; originator only ``S0`` / ``D``;
    responder only ``OTH`` / ``d``. Without byte counts, the state word decides:
    ``CON`` both sides, ``INT``/``REQ`` the originator only, else missing.
    ICMP and other IP protocols: ``OTH`` (``ECO``, ``ECR``, ``URP``, ``URF`` ... name
    the ICMP message, already in orig_p/resp_p), history missing.

Records that are not IP flows (``arp``, ``rarp``, ``llc``, ``ipx/spx``, other
ethertypes, an unknown protocol name whose addresses are not IP addresses, and Argus
management records ``man``) are skipped and counted with the reason ``non-IP record
(arp)`` / ``Argus management record (man)``; they are valid records, so ``--strict``
does not stop at them. Bad lines (unparsable time, address, port or counter,
``SrcBytes > TotBytes``, an unknown ``Dir``) are skipped with path, line and reason, or
stop the read under ``--strict``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml import defaults
from zeekml.errors import FormatError, StateError
from zeekml.sources.background import Background
from zeekml.sources.binetflow_state import (
    ICMP,
    OTHER,
    TCP,
    UDP,
    UNKNOWN,
    normalize_label,
    state_parts,
    zeek_state,
)
from zeekml.sources.binetflow_values import (
    ADDR_CHARS,
    bytes_ok,
    dictionary,
    gather,
    packed_icmp,
    parse_ports,
    parse_start_times,
    value_lengths,
)
from zeekml.sources.csv_parser import CsvParser, split_header
from zeekml.sources.lines import arrow_to_canonical
from zeekml.sources.options import ReadOptions
from zeekml.sources.uids import synth_uids
from zeekml.sources.values import ADDR_RE, Rejects, bad_number, bad_value, bool_mask, value_at

log = logging.getLogger(__name__)

#: lowercased header name -> role
ROLES: dict[str, str] = {
    "starttime": "start", "dur": "dur", "proto": "proto", "srcaddr": "src",
    "sport": "sport", "dir": "dir", "dstaddr": "dst", "dport": "dport", "state": "state",
    "totpkts": "tot_pkts", "totbytes": "tot_bytes", "srcbytes": "src_bytes",
    "srcpkts": "src_pkts", "label": "label",
}  # fmt: skip
_REQUIRED = ("start", "proto", "src", "dst")

#: Argus protocol names of IP flows -> (canonical proto, IP protocol number)
IP_PROTOCOLS: dict[str, tuple[str, int]] = {
    "tcp": ("tcp", 6), "udp": ("udp", 17), "icmp": ("icmp", 1),
    "ipv6-icmp": ("icmp", 58), "icmp6": ("icmp", 58), "ipv6icmp": ("icmp", 58),
    "rtp": ("udp", 17), "rtcp": ("udp", 17), "udt": ("udp", 17),
    "igmp": ("unknown_transport", 2), "ggp": ("unknown_transport", 3),
    "ipnip": ("unknown_transport", 4), "ipip": ("unknown_transport", 4),
    "ipencap": ("unknown_transport", 4), "st": ("unknown_transport", 5),
    "egp": ("unknown_transport", 8), "igp": ("unknown_transport", 9),
    "pup": ("unknown_transport", 12), "xns-idp": ("unknown_transport", 22),
    "rdp": ("unknown_transport", 27), "ipv6": ("unknown_transport", 41),
    "ipv6-route": ("unknown_transport", 43), "ipv6-frag": ("unknown_transport", 44),
    "rsvp": ("unknown_transport", 46), "gre": ("unknown_transport", 47),
    "esp": ("unknown_transport", 50), "ah": ("unknown_transport", 51),
    "ipv6-nonxt": ("unknown_transport", 59), "ipv6-opts": ("unknown_transport", 60),
    "eigrp": ("unknown_transport", 88), "ospf": ("unknown_transport", 89),
    "ospfigp": ("unknown_transport", 89), "etherip": ("unknown_transport", 97),
    "encap": ("unknown_transport", 98), "pim": ("unknown_transport", 103),
    "ipcomp": ("unknown_transport", 108), "vrrp": ("unknown_transport", 112),
    "carp": ("unknown_transport", 112), "l2tp": ("unknown_transport", 115),
    "isis": ("unknown_transport", 124), "sctp": ("unknown_transport", 132),
    "udplite": ("unknown_transport", 136), "pfsync": ("unknown_transport", 240),
    "unas": ("unknown_transport", -1),
}  # fmt: skip
#: Argus names of records that are not IP flows (Ethernet types, management records)
NON_IP: frozenset[str] = frozenset({
    "arp", "rarp", "llc", "ipx/spx", "ipx", "lat", "aarp", "802.1q", "lldp", "stp", "loop",
    "loopback", "pppoe", "pppoed", "pppoes", "ppp", "mpls", "vman", "eapol", "atalk",
    "appletalk", "dec", "decnet", "moprc", "mopdl", "sca", "lanbridge", "ns", "pup-eth",
})  # fmt: skip
MANAGEMENT = "man"

_IPV4_RE = r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$"
_IPV6_RE = r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[0-9A-Za-z_.-]{1,32})?$"
_MAC_RE = r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"
_DIR_RE = re.compile(r"^(<?[-?|]>?|who)?$")
_BIG = 2**62


# --------------------------------------------------------------------------- parser


def _role(name: str) -> str | None:
    return ROLES.get(name.strip().lower())


class BinetflowParser(CsvParser):
    """Incremental Argus binetflow parser (comma or tab separated; FlowParser interface)."""

    format = "binetflow"

    def __init__(self, path: str, skips: Any = None, *, batch_rows: int = defaults.BATCH_ROWS,
                 options: ReadOptions | None = None) -> None:
        super().__init__(path, skips, batch_rows=batch_rows)
        self.options = options or ReadOptions(batch_rows=batch_rows)
        self._zone = self.options.tz
        self._header_delimiter = ","

    # -- header ----------------------------------------------------------------------
    def _header_fields(self, raw: bytes) -> list[str]:
        delim = "\t" if raw.count(b"\t") > raw.count(b",") else ","
        self._header_delimiter = delim
        return split_header(raw, delim)

    def _set_header(self, fields: list[str], line: int) -> None:
        super()._set_header(fields, line)
        self.delimiter = self._header_delimiter

    def _roles(self, fields: list[str]) -> dict[int, str]:
        roles: dict[int, str] = {}
        for i, f in enumerate(fields):
            role = _role(f)
            if role is not None and role not in roles.values():
                roles[i] = role
        missing = [r for r in _REQUIRED if r not in roles.values()]
        if missing:
            names = {v: k for k, v in ROLES.items()}
            raise FormatError(f"{self.path}: binetflow header lacks "
                              f"{', '.join(names[r] for r in missing)}")
        return roles

    def _is_header(self, fields: list[str]) -> bool:
        roles = {_role(f) for f in fields}
        return "start" in roles and "src" in roles and "dst" in roles

    # -- state -----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["delimiter"] = self.delimiter
        state["tz"] = self._zone or "UTC"
        return state

    def _set_state_extra(self, state: dict[str, Any]) -> None:
        delim = state.get("delimiter", ",")
        if delim not in (",", "\t"):
            raise StateError(f"{self.path}: parser state has a bad delimiter")
        zone = state.get("tz", "UTC")
        if zone != (self._zone or "UTC"):  # one input, one reading of its times
            shown = zone if isinstance(zone, str) and len(zone) < 64 else "?"
            raise StateError(f"{self.path}: this input was started with --tz {shown}; "
                             f"continue it with the same zone, not {self._zone or 'UTC'}")
        super()._set_state_extra(state)
        self.delimiter = delim
        self._plan = None

    # -- rows ------------------------------------------------------------------------
    def _arrow_type(self, role: str) -> pa.DataType:
        return _ARROW_TYPES.get(role, pa.string())

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        t: dict[str, pa.Array] = {}
        for role, arr in cols.items():
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
            t[role] = arr
        return binetflow_frame(t, lines, self.path, self.skips, self._zone)


def _proto_kinds(text: pa.Array) -> dict[str, np.ndarray]:
    """Per row: protocol class, number, canonical name index, and why it is not a flow."""
    values, idx = dictionary(text)
    n = len(values)
    kind = np.full(n, OTHER, dtype=np.int64)
    number = np.full(n, -1, dtype=np.int64)
    canon: list[str | None] = [None] * n
    status = np.zeros(n, dtype=np.int64)  # 0 IP flow, 1 non-IP, 2 man, 3 decide by address, 4 bad
    reason: list[str] = [""] * n
    for i, v in enumerate(values):
        name = (v or "").strip().lower()
        if name in IP_PROTOCOLS:
            canon[i], number[i] = IP_PROTOCOLS[name]
        elif re.fullmatch(r"[0-9]{1,3}", name) and int(name) <= 255:
            number[i] = int(name)
            canon[i] = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}.get(number[i], "unknown_transport")
        elif name == MANAGEMENT:
            status[i], reason[i] = 2, "Argus management record (man)"
        elif name in NON_IP:
            status[i], reason[i] = 1, f"non-IP record ({name})"
        elif name:
            status[i], reason[i] = 3, "non-IP record (other protocol)"
            canon[i] = "unknown_transport"
        else:
            status[i] = 4
        kind[i] = {"tcp": TCP, "udp": UDP, "icmp": ICMP}.get(canon[i] or "", OTHER)
    names = sorted({c for c in canon if c is not None})
    name_idx = np.array([names.index(c) if c is not None else -1 for c in canon], dtype=np.int64)
    reasons = list(dict.fromkeys(reason))  # distinct texts; a row holds the index of its own
    reason_idx = [reasons.index(r) for r in reason]
    return {
        "kind": gather(list(kind), idx, np.int64), "number": gather(list(number), idx, np.int64),
        "name_idx": gather(list(name_idx), idx, np.int64), "names": np.array(names, dtype=object),
        "status": gather(list(status), idx, np.int64) if n else np.full(len(idx), 4),
        "reason": gather(reason_idx, idx, np.int64) if n else np.zeros(len(idx), np.int64),
        "reasons": np.array(reasons or [""], dtype=object),
    }  # fmt: skip


_WORDS = pa.dictionary(pa.int32(), pa.string())
#: roles pyarrow parses as numbers, and the few-valued text roles it dictionary-encodes
#: while parsing (the others are read as text and validated here)
_ARROW_TYPES: dict[str, pa.DataType] = {
    "dur": pa.float64(), "tot_pkts": pa.int64(), "tot_bytes": pa.int64(),
    "src_bytes": pa.int64(), "src_pkts": pa.int64(),
    "proto": _WORDS, "dir": _WORDS, "state": _WORDS, "label": _WORDS,
}  # fmt: skip
_HEADER_NAMES = {"dur": "Dur", "tot_pkts": "TotPkts", "tot_bytes": "TotBytes",
                 "src_bytes": "SrcBytes", "src_pkts": "SrcPkts"}  # fmt: skip


def _numbers(t: dict[str, pa.Array], role: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of a numeric column (pyarrow parsed it; all missing if absent)."""
    arr = t.get(role)
    if arr is None:
        return np.zeros(n, _ARROW_TYPES[role].to_pandas_dtype()), np.ones(n, bool)
    if not pa.types.is_floating(arr.type) and not pa.types.is_integer(arr.type):
        arr = pc.cast(arr, _ARROW_TYPES[role])  # an all-empty column pyarrow typed as null
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    values = arr.fill_null(0).to_numpy(zero_copy_only=False)
    return values, missing


def _counter(t: dict[str, pa.Array], role: str, n: int, rej: Rejects, ip: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of a counter column; a negative count is a bad line."""
    v, missing = _numbers(t, role, n)
    bad = ~missing & ((v < 0) | (v > _BIG))
    rej.add(bad & ip, bad_number(_HEADER_NAMES[role], v))
    return v, missing | bad


def binetflow_frame(t: dict[str, pa.Array], lines: np.ndarray, path: str, skips: Any,
                    zone: str | None) -> pd.DataFrame | None:
    """Text columns by role of one block of binetflow rows -> a canonical batch."""
    n = len(lines)
    rej = Rejects(n)
    times = Background(parse_start_times, t["start"], zone)  # meanwhile: the other columns
    proto = _proto_kinds(t["proto"])
    status = proto["status"]
    guess = status == 3
    if guess.any():  # an unknown protocol name: a flow only if both addresses are IP
        for role in ("src", "dst"):
            a = t[role]
            is_ip = bool_mask(pc.match_substring_regex(a, _IPV4_RE)) | (
                bool_mask(pc.match_substring_regex(a, _IPV6_RE))
                & ~bool_mask(pc.match_substring_regex(a, _MAC_RE))
            )
            status = np.where(guess & ~is_ip, 1, status)
        status = np.where(status == 3, 0, status)
    nonip = (status == 1) | (status == 2)
    ip = ~nonip
    rej.add(status == 4, "missing protocol")
    addr_ok: dict[str, np.ndarray] = {}
    for role in ("src", "dst"):
        lengths = value_lengths(t[role])
        if bytes_ok(t[role], ADDR_CHARS):  # the usual case: one pass over the bytes
            addr_ok[role] = (lengths >= 2) & (lengths <= 45)
        else:
            addr_ok[role] = bool_mask(pc.match_substring_regex(t[role], ADDR_RE))
    if "dir" in t:
        dirs, didx = dictionary(t["dir"])
        dir_ok = [bool(_DIR_RE.match((d or "").strip())) for d in dirs]
        rev_u = [(d or "").strip() in ("<-", "<?", "<|") for d in dirs]
        dir_bad = ~gather(dir_ok, didx, bool) if dirs else np.zeros(n, bool)
        rev = gather(rev_u, didx, bool) if dirs else np.zeros(n, bool)
    else:
        dir_bad, rev = np.zeros(n, bool), np.zeros(n, bool)
    zeros = np.zeros(n, np.int64)
    no_ports = (zeros, np.zeros(n, bool), np.zeros(n, bool))
    sport, sport_ok, sbad = parse_ports(t["sport"]) if "sport" in t else no_ports
    dport, dport_ok, dbad = parse_ports(t["dport"]) if "dport" in t else no_ports
    shex4 = np.zeros(n, bool)
    icmp_rows = np.flatnonzero(proto["kind"] == ICMP)
    if len(icmp_rows) and "sport" in t:
        shex4[icmp_rows] = packed_icmp(t["sport"], icmp_rows)
    ts, bad_ts = times.result()
    # reasons in a fixed order (a row bad in several ways is reported with the first)
    rej.add(bad_ts & ip, lambda i: f"bad StartTime {value_at(t['start'])(i)}")
    for role in ("src", "dst"):
        rej.add(~addr_ok[role] & ip, bad_value("SrcAddr" if role == "src" else "DstAddr", t[role]))
    rej.add(dir_bad & ip, lambda i: f"bad Dir {value_at(t['dir'])(i)}")
    rej.add(sbad & ip, lambda i: f"bad Sport {value_at(t['sport'])(i)}")
    rej.add(dbad & ip, lambda i: f"bad Dport {value_at(t['dport'])(i)}")
    dur, dur_na = _numbers(t, "dur", n)
    rej.add(ip & ~dur_na & ~np.isfinite(dur), lambda i: f"bad Dur {dur[i]}")
    dur = np.where(dur_na | ~np.isfinite(dur), np.nan, dur)
    tot_p, tot_p_na = _counter(t, "tot_pkts", n, rej, ip)
    tot_b, tot_b_na = _counter(t, "tot_bytes", n, rej, ip)
    src_b, src_b_na = _counter(t, "src_bytes", n, rej, ip)
    src_p, src_p_na = _counter(t, "src_pkts", n, rej, ip)
    rej.add(ip & ~src_b_na & ~tot_b_na & (src_b > tot_b), "SrcBytes > TotBytes")
    rej.add(ip & ~src_p_na & ~tot_p_na & (src_p > tot_p), "SrcPkts > TotPkts")
    keep = rej.report(skips, path, lines) & ip
    if nonip.any():
        codes, skipped = proto["reason"][nonip], lines[nonip]
        for code in pd.unique(codes):  # in order of first appearance
            skips.add_many(path, skipped[codes == code], proto["reasons"][code], malformed=False)
    if not keep.any():
        return None
    return _canonical(t, lines, path, keep, proto, ts, rev, (sport, sport_ok, shex4),
                      (dport, dport_ok), dur, (tot_p, tot_p_na, tot_b, tot_b_na, src_b, src_b_na,
                                               src_p, src_p_na))


def _canonical(t: dict[str, pa.Array], lines: np.ndarray, path: str, keep: np.ndarray,
               proto: dict[str, np.ndarray], ts: np.ndarray, rev: np.ndarray,
               sp: tuple[np.ndarray, ...], dp: tuple[np.ndarray, ...], dur: np.ndarray,
               counts: tuple[np.ndarray, ...]) -> pd.DataFrame:
    """The kept rows, validated, as a canonical DataFrame (see the module docstring)."""
    k = pa.array(keep)
    sel = np.flatnonzero(keep)
    every = len(sel) == len(keep)

    def pick(a: np.ndarray) -> np.ndarray:
        return a if every else a[sel]

    lines, ts, rev, dur = pick(lines), pick(ts), pick(rev), pick(dur)
    kind, number = pick(proto["kind"]), pick(proto["number"])
    sport, sport_ok, shex4 = (pick(a) for a in sp)
    dport, dport_ok = (pick(a) for a in dp)
    tot_p, tot_p_na, tot_b, tot_b_na, src_b, src_b_na, src_p, src_p_na = (pick(a) for a in counts)
    m = len(sel)
    reversed_any = bool(rev.any())

    def swap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(originator's, responder's) from (source's, destination's) values."""
        if not reversed_any:
            return a, b
        return np.where(rev, b, a), np.where(rev, a, b)

    o_port, r_port = swap(sport, dport)
    o_port_ok, r_port_ok = swap(sport_ok, dport_ok)
    icmp = kind == ICMP
    if icmp.any():  # type/code; Argus packs both in a 4-hex-digit Sport, code in the high byte
        packed = icmp & shex4
        itype = np.where(packed, sport & 255, sport)
        icode = np.where(packed, sport >> 8, dport)
        o_port, r_port = np.where(icmp, itype, o_port), np.where(icmp, icode, r_port)
        o_port_ok = np.where(icmp, packed | (sport_ok & (sport <= 255)), o_port_ok)
        r_port_ok = np.where(icmp, packed | (dport_ok & (dport <= 255)), r_port_ok)
    uid = Background(  # meanwhile: counters, states, labels; the line makes it unique in its file, the rest content-dependent
        synth_uids, "A", path,
        {"line": lines, "ts": ts, "orig_p": np.where(o_port_ok, o_port, -1),
         "resp_p": np.where(r_port_ok, r_port, -1), "proto": number},
    )  # fmt: skip
    dst_b, dst_b_na = tot_b - src_b, tot_b_na | src_b_na
    if src_p_na.any():  # without SrcPkts the split is known only when one side sent nothing
        exact = src_p_na & ~src_b_na & ~tot_b_na & ~tot_p_na
        all_src = exact & (dst_b == 0)
        all_dst = exact & (src_b == 0) & (tot_b > 0)
        src_pk = np.where(all_src, tot_p, np.where(all_dst, 0, src_p))
        src_pk_na = src_p_na & ~(all_src | all_dst)
        dst_pk = np.where(all_src, 0, np.where(all_dst, tot_p, tot_p - src_p))
    else:
        src_pk, src_pk_na, dst_pk = src_p, src_p_na, tot_p - src_p
    dst_pk_na = src_pk_na | tot_p_na
    (o_b, r_b), (o_b_na, r_b_na) = swap(src_b, dst_b), swap(src_b_na, dst_b_na)
    (o_p, r_p), (o_p_na, r_p_na) = swap(src_pk, dst_pk), swap(src_pk_na, dst_pk_na)
    dur = np.where((dur < 0) | ((dur == 0) & ~tot_p_na & (tot_p <= 1)), np.nan, dur)
    src, dst = (t["src"], t["dst"]) if every else (t["src"].filter(k), t["dst"].filter(k))
    if reversed_any:
        rev_a = pa.array(rev)
        orig_h, resp_h = pc.if_else(rev_a, dst, src), pc.if_else(rev_a, src, dst)
    else:
        orig_h, resp_h = src, dst
    names = proto["names"]
    proto_name = pc.take(pa.array(list(names), pa.string()), pa.array(pick(proto["name_idx"])))
    conn_state, history = _states(t.get("state"), k, every, kind, rev, (o_b, o_b_na, o_p, o_p_na),
                                  (r_b, r_b_na, r_p, r_p_na), tot_p, tot_p_na)

    def ints(v: np.ndarray, missing: np.ndarray, dtype: type = np.int64) -> Any:
        """A nullable integer column straight from numpy (no round trip through Arrow)."""
        return pd.arrays.IntegerArray(np.where(missing, 0, v).astype(dtype), missing.copy())

    cols: dict[str, Any] = {
        "ts": ts, "orig_h": orig_h, "orig_p": ints(o_port, ~o_port_ok, np.int32),
        "resp_h": resp_h, "resp_p": ints(r_port, ~r_port_ok, np.int32), "proto": proto_name,
        "duration": dur,
        "conn_state": conn_state, "history": history,
        "orig_pkts": ints(o_p, o_p_na), "orig_ip_bytes": ints(o_b, o_b_na),
        "resp_pkts": ints(r_p, r_p_na), "resp_ip_bytes": ints(r_b, r_b_na),
    }  # fmt: skip
    if "label" in t:
        labels, lidx = dictionary(t["label"] if every else t["label"].filter(k))
        detail = [(v or "").strip() or None for v in labels]
        norm = [normalize_label(v) for v in detail]
        li = pa.array(np.where(lidx < 0, 0, lidx)) if len(labels) else pa.nulls(m, pa.int32())
        cols["label"] = pc.take(pa.array(norm, pa.string()), li)
        cols["detailed_label"] = pc.take(pa.array(detail, pa.string()), li)
    cols["uid"] = uid.result().array
    # what Argus does not record (service, payload bytes, local_*, missed_bytes) is left
    # out: arrow_to_canonical makes those columns all-missing
    return arrow_to_canonical(cols, lines, path)


def _states(state: pa.Array | None, k: pa.Array, every: bool, kind: np.ndarray,
            rev: np.ndarray, orig: tuple[np.ndarray, ...], resp: tuple[np.ndarray, ...],
            tot_p: np.ndarray, tot_p_na: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """conn_state and history of the kept rows, computed once per distinct combination."""
    m = len(kind)
    if state is not None:
        values, sidx = dictionary(state if every else state.filter(k))
    else:
        values, sidx = [], np.full(m, -1, np.int64)
    parts = [state_parts(v or "") for v in values]
    has_flags = np.array([p[0] is not None for p in parts] + [False], dtype=bool)[sidx]
    sbits = np.array([p[0][0] if p[0] else 0 for p in parts] + [0], dtype=np.int64)[sidx]
    dbits = np.array([p[0][1] if p[0] else 0 for p in parts] + [0], dtype=np.int64)[sidx]
    obits, rbits = np.where(rev, dbits, sbits), np.where(rev, sbits, dbits)

    def active(side: tuple[np.ndarray, ...]) -> np.ndarray:
        b, b_na, p, p_na = side
        known = ~b_na | ~p_na
        sent = (~b_na & (b > 0)) | (~p_na & (p > 0))
        return np.where(known, sent.astype(np.int64), UNKNOWN)

    o_act, r_act = active(orig), active(resp)
    short = (~tot_p_na & (tot_p <= 2)).astype(np.int64)
    word = np.where(has_flags, -1, sidx)  # -1: flags (or no State column)
    key = (kind << 60) | (has_flags.astype(np.int64) << 59) | (o_act << 56) | (r_act << 53) \
        | (short << 52) | (obits << 40) | (rbits << 28) | (word + 1)
    inverse, uniq = pd.factorize(key)
    states: list[str | None] = []
    hists: list[str | None] = []
    for u in uniq.tolist():
        kd, fl = u >> 60, (u >> 59) & 1
        oa, ra, sh = (u >> 56) & 7, (u >> 53) & 7, (u >> 52) & 1
        ob, rb, w = (u >> 40) & 0xFFF, (u >> 28) & 0xFFF, (u & 0xFFFFFFF) - 1
        text = parts[w][1] if w >= 0 and not fl else ""
        cs, hist = zeek_state(int(kd), (int(ob), int(rb)) if fl else None, text, int(oa),
                              int(ra), bool(sh))
        states.append(cs)
        hists.append(hist)
    inv = pa.array(inverse.astype(np.int64))
    return pc.take(pa.array(states, pa.string()), inv), pc.take(pa.array(hists, pa.string()), inv)


# --------------------------------------------------------------------------- sniffing


def sniff(head: bytes) -> bool:
    """Whether an input's first line is a binetflow header (comma or tab separated)."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    line = next((x for x in text.split(b"\n") if x.strip()), b"")
    delim = "\t" if line.count(b"\t") > line.count(b",") else ","
    roles = {_role(f) for f in split_header(line, delim)}
    return all(r in roles for r in _REQUIRED) and ("dir" in roles or "tot_bytes" in roles)
