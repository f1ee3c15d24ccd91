"""What kind of service a flow talks to: a fixed table of application families.

The flow language model's words must generalize to networks it never saw. A learned
list of frequent ports and Zeek services does not: a web proxy on port 3128, an mDNS
responder, SSDP or NetBIOS on a network whose training data never showed them become
"unseen" words, and an unsupervised model flags what it has not seen (measured: the
earlier model flagged 88% of a proxied network and most DHCP/mDNS/NTP/ICMPv6 flows of
new networks). A fixed table of families maps every such service to a kind the model
has seen plenty of: every web port and proxy is ``web``, every local discovery and
configuration protocol (DHCP, DHCPv6, NTP, mDNS, LLMNR, NetBIOS, SSDP, WS-Discovery,
SNMP, syslog, ICMPv6 neighbour discovery and MLD) is ``infra``.

Rule, per flow (vectorized; the table is data, not learned, and its labels travel in
the model card so a card made with another table is refused):

1. ICMP: the ICMP type (Zeek and nfdump put it in ``orig_p``): echo request/reply
   (v4 0/8, v6 128/129) -> ``icmp-echo``; errors (v4 3/4/5/11/12, v6 1-4) ->
   ``icmp-error``; ICMPv6 neighbour discovery and multicast listener messages
   (130-137, 143) -> ``infra``; anything else -> ``icmp-other``;
2. the responder port, if it is in :data:`PORT_FAMILIES` (a port says more than a
   guessed service: Zeek calls mDNS on 5353 ``dns``);
3. else the first service of Zeek's ``service`` list that :data:`SERVICE_FAMILIES`
   knows (``http,ssl`` -> ``web``), so HTTP on an odd port is still ``web``;
4. else the responder port's IANA range: ``wk`` (< 1024), ``reg`` (< 49152), ``dyn``;
   ``-`` when the port is missing.

Last, a flow of neither TCP, UDP nor ICMP (the canonical ``unknown_transport``: Zeek
7.1+ logs these, NetFlow and Argus always did) to a multicast or broadcast address, or
into ``0.0.0.0/8`` (no host is there: Argus writes IGMP reports so), is group
management or routing (IGMP, MLD behind an IPv6 hop-by-hop header, PIM, OSPF, VRRP) ->
``infra``. Measured before this rule: an Android phone's day (Argus) got all 7 of its
notices from the flow LM for its IGMP reports (score 91.4, threshold 83.2; 71.9 after).
Other such flows (tunnels: GRE, ESP, 6in4 ...) keep the rules above: taken for ``vpn``,
CICIDS2017's three unicast ones scored 31-54 -> 76-78, nearer the threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.records.distinct import per_distinct

FAMILIES: tuple[str, ...] = (
    "-", "wk", "reg", "dyn",
    "dns", "web", "infra", "mail", "ssh", "telnet", "ftp", "remote-desktop", "file-share",
    "directory", "database", "irc", "vpn",
    "icmp-echo", "icmp-error", "icmp-other",
)
_CODE = {name: i for i, name in enumerate(FAMILIES)}

#: responder port -> family (any transport protocol)
PORT_FAMILIES: dict[str, tuple[int, ...]] = {
    "dns": (53, 853),
    "web": (80, 443, 591, 3128, 4443, 8000, 8008, 8080, 8081, 8088, 8118, 8443, 8880, 8888,
            9080, 9443),
    "infra": (67, 68, 123, 137, 138, 161, 162, 514, 520, 546, 547, 1900, 1985, 3702, 5351,
              5353, 5355),
    "mail": (25, 110, 143, 465, 587, 993, 995),
    "ssh": (22,),
    "telnet": (23, 2323),
    "ftp": (20, 21, 69),
    "remote-desktop": (3389, 5900, 5901, 5938),
    "file-share": (111, 135, 139, 445, 2049),
    "directory": (88, 389, 464, 636, 3268, 3269),
    "database": (1433, 1521, 3306, 5432, 6379, 9200, 11211, 27017),
    "irc": (6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667, 6668, 6669, 6697),
    "vpn": (500, 1194, 1701, 1723, 4500, 51820),
}

#: Zeek service name (lowercase) -> family
SERVICE_FAMILIES: dict[str, str] = {
    "dns": "dns",
    "http": "web", "ssl": "web", "quic": "web", "spdy": "web", "socks": "web",
    "dhcp": "infra", "ntp": "infra", "snmp": "infra", "syslog": "infra",
    "smtp": "mail", "pop3": "mail", "imap": "mail",
    "ssh": "ssh",
    "telnet": "telnet",
    "ftp": "ftp", "ftp-data": "ftp", "tftp": "ftp",
    "rdp": "remote-desktop", "vnc": "remote-desktop", "rfb": "remote-desktop",
    "smb": "file-share", "dce_rpc": "file-share", "ntlm": "file-share",
    "krb": "directory", "krb_tcp": "directory", "ldap": "directory", "ldap_udp": "directory",
    "gssapi": "directory",
    "mysql": "database", "postgresql": "database",
    "irc": "irc",
    "ayiya": "vpn", "teredo": "vpn",
}

#: TCP/UDP port numbers: 0..65535
PORTS = 1 << 16

_ICMP_ECHO = (0, 8, 128, 129)
_ICMP_ERROR = (1, 2, 3, 4, 5, 11, 12)
_ICMP_INFRA = (130, 131, 132, 133, 134, 135, 136, 137, 143)


def _port_table() -> np.ndarray:
    table = np.where(np.arange(PORTS) < 1024, _CODE["wk"],
                     np.where(np.arange(PORTS) < 49152, _CODE["reg"], _CODE["dyn"]))
    known = np.zeros(PORTS, dtype=bool)
    for fam, ports in PORT_FAMILIES.items():
        table[list(ports)] = _CODE[fam]
        known[list(ports)] = True
    return np.stack([table.astype(np.int64), known])


_PORTS = _port_table()


def _service_codes(service: pd.Series) -> np.ndarray:
    """Family code of the first known service of each row, -1 if none (per distinct value)."""
    codes, uniques = pd.factorize(service, use_na_sentinel=True)
    fam = np.full(len(uniques) + 1, -1, dtype=np.int64)
    for i, value in enumerate(uniques):
        for name in str(value).lower().split(","):
            f = SERVICE_FAMILIES.get(name.strip())
            if f is not None:
                fam[i] = _CODE[f]
                break
    return fam[codes]  # code -1 (missing) reads the last entry, -1


def family_codes(flows: pd.DataFrame) -> np.ndarray:
    """``[N]`` index into :data:`FAMILIES` of every flow (see the module docstring)."""
    n = len(flows)
    resp = flows["resp_p"].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    orig = flows["orig_p"].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(resp) & (resp >= 0) & (resp <= 65535)
    port = np.where(ok, resp, 0).astype(np.int64)
    by_port = np.where(ok, _PORTS[0][port], _CODE["-"])
    port_known = ok & _PORTS[1][port].astype(bool)
    svc = _service_codes(flows["service"]) if n else np.zeros(0, dtype=np.int64)
    out = np.where(port_known, by_port, np.where(svc >= 0, svc, by_port))
    icmp = per_distinct(flows["proto"], lambda s: s.str.lower().isin(("icmp", "icmp6", "ipv6-icmp"))
                        .to_numpy(dtype=bool), False).astype(bool)
    if icmp.any():
        t = np.where(np.isfinite(orig), orig, -1).astype(np.int64)
        ic = np.select(
            [np.isin(t, _ICMP_ECHO), np.isin(t, _ICMP_ERROR), np.isin(t, _ICMP_INFRA)],
            [_CODE["icmp-echo"], _CODE["icmp-error"], _CODE["infra"]],
            default=_CODE["icmp-other"],
        )
        out = np.where(icmp, ic, out)
    other = per_distinct(flows["proto"], lambda s: s.str.lower().eq("unknown_transport")
                         .to_numpy(dtype=bool), False).astype(bool)
    if other.any():
        from zeekml.records.addresses import group_addresses

        resp = flows["resp_h"]
        group = group_addresses(resp) | per_distinct(
            resp, lambda s: s.str.startswith("0.").to_numpy(dtype=bool, na_value=False), False
        ).astype(bool)
        out = np.where(other & group, _CODE["infra"], out)
    return out.astype(np.int64)
