"""Login guessing: one originator opening session after alike session to one login service.

A password-guessing tool (hydra, medusa, ncrack, a bot spreading over SSH or telnet)
leaves one trace in a conn log whatever the protocol: the same originator connecting to
the same service of the same host again and again, each connection answered, short and
of nearly the same size as the last (one failed login is the next one's twin). The
neural models did not see it where the payload is unknown: after the thresholds for
NetFlow input, the AMF-LSTM notices none of the held-out NetFlow brute-force traces
(docs/models.md), and the scan detector counts only failed connections.

Only *attempts* are kept: answered TCP flows (not :func:`~zeekml.windows.scan.failed_flows`)
to a login service (:data:`LOGIN_PORTS`, or a Zeek ``service`` in :data:`LOGIN_SERVICES`),
or to plain HTTP (:data:`WEB_PORTS`, where a login form is guessed at). Per originator,
for each attempt its last :data:`LOGIN_DEPTH` attempts before it and the attempt itself
are looked at, and those within :data:`LOGIN_HORIZON` seconds at the same target
(responder address and service) whose sizes are alike (:func:`alike_sizes`, both
directions) are counted. Every other flow scores zero and never touches the store.

Left out on purpose, because ordinary clients open many alike connections there (measured
on ``../shared/data``: the most alike connections one client made to one HTTPS server
within 300 s was 55, to a web proxy 36): TLS ports (443 and the like, where a login form
cannot be told from polling), proxies, Kerberos, LDAP and SMB (a Windows domain's
clients talk to their controllers all day), and SMTP (mail servers relay to each other).
A monitoring probe of a login service (an SSH banner check every minute) is alike too:
allow-list it (``--allow``) or raise the threshold with ``zeekml calibrate``.

The state key is :data:`LoginHistory.key` (``orig_login``): the originator of an attempt,
:data:`NOT_ATTEMPT_KEY` for any other flow; the Spark engine cuts the stream by it
(:func:`login_keys`), so the counts are exact there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zeekml.records.distinct import lists_name_any
from zeekml.windows.counted import CountedBatch, CountedHistory, CountedPart, store_keys
from zeekml.windows.history import FieldSpec
from zeekml.windows.host_window import service_codes
from zeekml.windows.scan import failed_flows, target_hash, target_sides, tcp_flows

#: previous attempts of the originator looked at (the window is these and the current one)
LOGIN_DEPTH = 63
#: seconds: attempts further from the current one (by ``ts``) do not count
LOGIN_HORIZON = 300.0
#: responder ports of services that take a password: FTP, SSH (and 2222), telnet, POP3,
#: IMAP (and their TLS ports: the handshake is the same size every time), SMTP submission,
#: VMware authd, MS SQL, Oracle, MySQL, RDP, PostgreSQL, VNC, Redis, WinRM, MongoDB
LOGIN_PORTS = (21, 22, 23, 110, 143, 465, 587, 902, 993, 995, 1433, 1521, 2222, 3306,
               3389, 5432, 5900, 5901, 5985, 5986, 6379, 27017)
#: Zeek ``service`` names of the same services on any port
LOGIN_SERVICES = ("ftp", "ssh", "telnet", "pop3", "imap", "rdp", "rfb", "mysql",
                  "postgresql", "tds", "redis")
#: plain HTTP ports: a login form guessed at (TLS ports are left out, see above)
WEB_PORTS = (80, 8000, 8080)
#: two sizes are alike when they differ by at most this many bytes ...
SIZE_SLACK = 32
#: ... or by at most this share of the larger one
SIZE_SHARE = 0.1
#: attempt kinds (:func:`login_attempts`)
NOT_ATTEMPT, LOGIN, WEB = 0, 1, 2
#: the state key of a flow that is no attempt: no address is this, and it needs no state
NOT_ATTEMPT_KEY = "\x00not_login"


def _named(flows: pd.DataFrame) -> np.ndarray:
    """Bool per flow: Zeek's ``service`` names a login service."""
    if "service" not in flows.columns:
        return np.zeros(len(flows), dtype=bool)
    return lists_name_any(flows["service"], LOGIN_SERVICES)


def login_attempts(flows: pd.DataFrame) -> np.ndarray:
    """int8 ``[B]``: :data:`LOGIN` for an answered TCP flow to a login service,
    :data:`WEB` for one to a plain HTTP port, :data:`NOT_ATTEMPT` for every other flow."""
    out = np.zeros(len(flows), dtype=np.int8)
    port = flows["resp_p"].to_numpy(dtype=np.float64, na_value=np.nan)
    out[np.isin(port, WEB_PORTS)] = WEB
    out[np.isin(port, LOGIN_PORTS) | _named(flows)] = LOGIN
    del port
    rows = np.flatnonzero(out)  # tested further only where a service matched
    out[rows[~tcp_flows(flows)[rows] | failed_flows(flows, rows)]] = NOT_ATTEMPT
    return out


def login_keys(flows: pd.DataFrame) -> pd.Series:
    """The state key of every flow (``str``): its originator (missing -> ``""``) when it
    is an attempt, :data:`NOT_ATTEMPT_KEY` otherwise (what the Spark engine partitions by)."""
    return store_keys(flows["orig_h"], login_attempts(flows) != NOT_ATTEMPT, NOT_ATTEMPT_KEY)


def flow_sizes(flows: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """int32 ``[len(rows), 2]``: bytes each side sent, payload bytes where known (Zeek)
    else IP bytes (NetFlow, Argus); -1 where neither is (alike only to another unknown)."""
    out = np.full((len(rows), 2), -1, dtype=np.int32)
    for i, side in enumerate(("orig", "resp")):
        size = np.full(len(rows), np.nan)
        for col in (f"{side}_bytes", f"{side}_ip_bytes"):
            if col in flows.columns and np.isnan(size).any():
                v = pd.to_numeric(flows[col].iloc[rows], errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan)
                size = np.where(np.isnan(size) & (v >= 0), v, size)
        known = np.isfinite(size)
        out[known, i] = np.minimum(size[known], np.iinfo(np.int32).max).astype(np.int32)
    return out


def alike_sizes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool, elementwise over the last axis (orig, resp) and all: two attempts whose sizes
    differ by at most :data:`SIZE_SLACK` bytes or :data:`SIZE_SHARE` of the larger, in
    both directions (unknown sizes, -1, are alike only to unknown ones)."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    near = np.abs(a64 - b64) <= np.maximum(SIZE_SLACK, SIZE_SHARE * np.maximum(a64, b64))
    near &= (a64 < 0) == (b64 < 0)
    return near.all(axis=-1)


@dataclass
class LoginCounts(CountedBatch):
    """Per flow of a batch: its attempt kind (``kind``), and the alike attempts at its
    own target within the horizon (``alike``, the flow included; zero for a flow that is
    no attempt); :meth:`context` the earlier alike attempts counted."""

    kind: np.ndarray
    alike: np.ndarray


class LoginHistory(CountedHistory):
    """Per-originator store of its last :data:`LOGIN_DEPTH` attempts' (ts, target,
    sizes, uid)."""

    #: the state key: the originator of an attempt (:func:`login_keys`)
    key = "orig_login"
    unkept = NOT_ATTEMPT_KEY

    def __init__(self, *, max_keys: int, depth: int = LOGIN_DEPTH,
                 horizon: float = LOGIN_HORIZON) -> None:
        # the target (a hash of responder and service), bytes sent each way
        super().__init__(max_keys=max_keys, depth=depth, horizon=horizon,
                         fields={"meta": FieldSpec(np.dtype(np.int32), (3,))})

    def push(self, flows: pd.DataFrame) -> LoginCounts:
        """Append a canonical flow batch's attempts (rows in arrival order) and count each
        one's alike attempts at its target; other flows get zeros."""
        kind = login_attempts(flows)
        alike = np.zeros(len(flows), dtype=np.int64)
        rows_all = np.flatnonzero(kind != NOT_ATTEMPT)
        parts = []
        keys, peers = target_sides(flows, rows_all)
        meta = np.empty((len(rows_all), 3), dtype=np.int32)
        meta[:, 0] = target_hash(peers, service_codes(flows)[rows_all])
        meta[:, 1:] = flow_sizes(flows, rows_all)
        for rows, seq in self.extend_pieces(flows, rows_all, keys, {"meta": meta}):
            m = seq.gather(seq.items["meta"])  # [F, n, 3]
            # sizes compared only where the target is the row's own (the current
            # position always counts: same target, same sizes)
            r, c = np.nonzero(seq.valid & (m[:, :, 0] == m[:, -1:, 0]))
            ok = alike_sizes(m[r, c, 1:], m[r, -1, 1:])
            again = np.zeros(seq.valid.shape, dtype=bool)
            again[r[ok], c[ok]] = True
            alike[rows] = again.sum(axis=1)
            parts.append(CountedPart(rows, again, seq))
        return LoginCounts(parts=parts, kind=kind, alike=alike)
