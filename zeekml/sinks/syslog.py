"""Syslog sink: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).

``--sink syslog:udp://HOST[:PORT]?k=v&...``, ``syslog:tcp://HOST[:PORT]?...`` (port 514
by default) or ``syslog:tls://HOST[:PORT]?ca=CA.pem&...`` (port 6514 by default); IPv6
as ``[::1]:514``. TCP and TLS frame each message with octet counting (``LEN SP MSG``,
the framing RFC 5425 prescribes for TLS). One message per notice::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID k="v" ...] MSG

``TIMESTAMP`` is the flow's ``ts`` (log time, so a replayed archive sends the same
messages), ``MSGID`` the verdict class (printable ASCII, at most 32 characters), and
the structured data element carries every verdict field (ts, uid, orig_h, orig_p,
resp_h, resp_p, proto, model, verdict, score, threshold, notice, alt, alt_score, n,
context), each value escaped as RFC 5424 section 6.3.3 requires (``"``, ``\\`` and
``]`` get a backslash). With ``format=cef`` the structured data is ``-`` and MSG is a
CEF record (:mod:`zeekml.sinks.cef`).

Options (all optional):

=================  ===========================================================
format             ``rfc5424`` (default) or ``cef``
facility           name (``user``, ``local0`` ...) or 0-23; default ``user``
severity           severity of notices: name (``warning``) or 0-7; default warning
severity_normal    severity of non-notice rows (with ``only=all``); default info
severity.CLASS     severity for notices of one class, e.g. ``severity.ddos=crit``
hostname           HOSTNAME field; default this host's name
app                APP-NAME field; default ``zeekml``
sd_id              structured data ID; default ``zeekml@32473`` (RFC 5612 example PEN)
only               ``notices`` (default) or ``all`` verdict rows
buffer             TCP/TLS: records kept for re-sending while the collector is down (10000)
timeout            TCP/TLS: seconds a checkpoint or the end of a run waits for delivery
                   before failing (60; 0 = forever)
retry              TCP/TLS: seconds between reconnect attempts while writing (1, doubling)
ca                 TLS: PEM file (or hashed directory) of the CAs that sign the collector's
                   certificate; default the system's CA store
cert, key          TLS: client certificate and its unencrypted key (PEM), for collectors
                   that require one; ``key`` may be left out when ``cert`` holds both
servername         TLS: the name the collector's certificate must carry (default HOST)
=================  ===========================================================

TLS verification cannot be switched off: the collector's certificate must chain to
``ca`` (or the system store) and name the target host (an IP address must be an IP
subjectAltName). A refused certificate is an error at the first connection, one line
naming the collector and the reason, never retried.

Delivery guarantees are those of :mod:`zeekml.sinks.transport`: UDP best effort;
TCP/TLS at least once, bounded, drops counted. ``flush()`` writes what it can without
waiting for a collector that is down (a live ``tail`` keeps scoring, within
``buffer``); ``checkpoint()`` and ``close()`` wait up to ``timeout`` for the collector
to acknowledge everything, and a checkpoint fails (SinkError) otherwise, so ``--state``
commits only delivered notices. :meth:`SyslogSink.delivery` counts delivered, dropped
and still-queued records for the run summary and the metrics.

Exactly once across crashes (TCP/TLS with ``--state``): the sink counts the records of
the stream it has handed out; a commit stores that count (every record then
acknowledged). In a stateful run each batch waits for the collector's acknowledgement
and then writes the absolute count to its :class:`~zeekml.runtime.state.DeliveryJournal`
beside the state file, so after ``kill -9`` the next run skips the re-produced records
the journal says were delivered. Only a crash in the instant between the collector's
acknowledgement and that journal write (a system call) can make a record arrive
twice; none is ever lost. A collector that stays down makes the run fail (exit 1) with
every output cut back to the last commit, so the next run sends those notices once.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from zeekml.errors import SinkError
from zeekml.sinks.base import Delivery
from zeekml.sinks.cef import cef_records, column, message
from zeekml.sinks.incident_text import incident_cef, incident_message, incident_sd_values
from zeekml.sinks.registry import SinkOptions
from zeekml.sinks.textcols import as_text, concat, iso_time, joined_list, replace_all
from zeekml.sinks.transport import TcpTransport, TlsClient, UdpTransport

log = logging.getLogger(__name__)

FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
    "console": 14, "solaris-cron": 15, **{f"local{i}": 16 + i for i in range(8)},
}

SEVERITIES: dict[str, int] = {
    "emerg": 0, "emergency": 0, "alert": 1, "crit": 2, "critical": 2, "err": 3, "error": 3,
    "warning": 4, "warn": 4, "notice": 5, "info": 6, "informational": 6, "debug": 7,
}

#: Verdict fields carried as SD-PARAMs, in order (names are valid PARAM-NAMEs).
SD_FIELDS: tuple[str, ...] = (
    "ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "model", "candidate",
    "verdict", "score", "threshold", "notice", "decision", "alt", "alt_score", "n", "context",
)

_SD_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("]", "\\]"))
_SD_ID = re.compile(r'[\x21-\x7e]{1,32}')
_NOT_PRINTUSASCII = r"[^\x21-\x7e]"


def sd_escape(values: pd.Series) -> pd.Series:
    """Escape a ``str`` column as an RFC 5424 PARAM-VALUE (``"``, ``\\``, ``]``)."""
    return replace_all(values, _SD_ESCAPES)


def header_token(text: str, limit: int) -> str:
    """A header field (HOSTNAME, APP-NAME, PROCID): printable ASCII, no space, or ``-``."""
    token = re.sub(_NOT_PRINTUSASCII, "_", text)[:limit]
    return token or "-"


def _level(raw: str, table: dict[str, int], hi: int, what: str) -> int:
    value = table.get(raw.lower())
    if value is None and raw.isdigit() and int(raw) <= hi:
        value = int(raw)
    if value is None:
        raise ValueError(f"syslog {what} {raw!r}: a name ({', '.join(table)}) or 0-{hi}")
    return value


@dataclass(frozen=True)
class SyslogFormat:
    """How verdict rows become RFC 5424 messages (pure: no I/O)."""

    format: str = "rfc5424"
    facility: int = 1
    severity: int = 4
    severity_normal: int = 6
    class_severity: dict[str, int] = field(default_factory=dict)
    hostname: str = "-"
    app: str = "zeekml"
    procid: str = "-"
    sd_id: str = "zeekml@32473"
    #: ``notice`` (verdict rows) or ``incident`` (incident records, ``?unit=incident``)
    unit: str = "notice"

    def severities(self, df: pd.DataFrame) -> np.ndarray:
        """Per-row syslog severity: notices by class (or the default), others normal."""
        notice = _notices(df)
        sev = np.where(notice, self.severity, self.severity_normal).astype("int64")
        if self.class_severity and len(df):
            by_class = column(df, "verdict").map(self.class_severity)
            override = by_class.notna().to_numpy() & notice
            sev[override] = by_class[override].astype("int64").to_numpy()
        return sev

    def records(self, df: pd.DataFrame) -> pd.Series:
        """One RFC 5424 message (``str``, no framing) per row."""
        sev = self.severities(df)
        pri = as_text(pd.Series(self.facility * 8 + sev))
        ts = iso_time(column(df, "ts")).fillna("-")
        msgid = as_text(column(df, "verdict")).fillna("-")
        msgid = msgid.str.replace(_NOT_PRINTUSASCII, "_", regex=True).str.slice(0, 32)
        head: list[pd.Series | str] = ["<", pri, ">1 ", ts, f" {self.hostname} {self.app} "
                                       f"{self.procid} ", msgid, " "]
        incidents = self.unit == "incident"
        if self.format == "cef":
            return concat([*head, "- ", incident_cef(df, sev) if incidents else
                           cef_records(df, sev)])
        text = (incident_message(df) if incidents else message(df)).str.replace(
            r"[\x00-\x1f\x7f]", " ", regex=True)
        return concat([*head, self.structured_data(df), " ", text])

    def structured_data(self, df: pd.DataFrame) -> pd.Series:
        """``[SD-ID name="value" ...]``; a missing value leaves its parameter out."""
        parts: list[pd.Series | str] = ["[" + self.sd_id]
        if self.unit == "incident":
            for name, raw in incident_sd_values(df):
                parts.append(f' {name}="' + sd_escape(raw) + '"')
            parts.append("]")
            return concat(parts)
        for name in SD_FIELDS:
            if name == "context":
                raw = (as_text(joined_list(df["context"].reset_index(drop=True)))
                       if "context" in df.columns else as_text(column(df, name)))
            elif name == "ts":
                raw = as_text(column(df, name).astype("float64").round(6))
            else:
                raw = as_text(column(df, name))
            parts.append(f' {name}="' + sd_escape(raw) + '"')
        parts.append("]")
        return concat(parts)


def _notices(df: pd.DataFrame) -> np.ndarray:
    if "notice" not in df.columns:
        return np.ones(len(df), dtype=bool)
    return df["notice"].astype("boolean").fillna(False).to_numpy(dtype=bool)


class SyslogSink:
    """Sends verdicts to a syslog collector (see the module doc for options)."""

    def __init__(
        self, transport: UdpTransport | TcpTransport, fmt: SyslogFormat, only_notices: bool = True
    ) -> None:
        # unique per destination: the pipeline keys checkpoints by sink name
        self.name = f"syslog:{transport.where}" + ("/cef" if fmt.format == "cef" else "")
        self._transport = transport
        self._format = fmt
        self._only_notices = only_notices
        self._undeliverable = False  # the last delivery wait gave up: close does not wait again
        self._octet_counting = isinstance(transport, TcpTransport)
        self._records = 0  # records of the stream handed out (before this run: restored)
        self._skip = 0  # re-produced records the journal says were delivered
        self._journal: Any = None
        self._stateful = False

    def begin(self, run: Any) -> None:
        """A stateful run over TCP journals deliveries (see the module docstring)."""
        self._stateful = bool(run.stateful)
        if run.journal is not None and self._octet_counting:
            self._journal = run.journal(self.name)

    @property
    def where(self) -> str:
        return self._transport.where

    @property
    def unit(self) -> str:
        return self._format.unit

    def use_incidents(self) -> None:
        """Send incident records (``?unit=incident``), one message each."""
        self._format = replace(self._format, unit="incident")
        self._only_notices = False
        self.name += "/incident"

    def write(self, verdicts: pd.DataFrame) -> None:
        rows = verdicts[_notices(verdicts)] if self._only_notices else verdicts
        if not len(rows):
            return
        if self._skip:
            dropped = min(self._skip, len(rows))
            rows = rows.iloc[dropped:]
            self._skip -= dropped
            self._records += dropped
            if not len(rows):
                return
        texts = self._format.records(rows.reset_index(drop=True)).tolist()
        frames = [t.encode("utf-8", "replace") for t in texts]
        if self._octet_counting:
            frames = [b"%d %s" % (len(f), f) for f in frames]  # RFC 6587 3.4.1 / RFC 5425 4.3
        self._transport.send(frames)
        self._records += len(frames)
        if self._journal is not None:
            self._deliver()  # acknowledged, then journaled: a crash repeats nothing

    def flush(self) -> None:
        """Write what can be written now; never wait for a collector that is down."""
        if isinstance(self._transport, TcpTransport):
            self._transport.poke()

    def _deliver(self) -> None:
        """Wait (up to ``timeout``) until the collector acknowledged everything."""
        try:
            self._transport.flush()
        except SinkError:
            self._undeliverable = True
            raise
        self._undeliverable = False
        if self._journal is not None:
            # the collector has every record handed out, and the ones still to be
            # skipped (it got them before the crash): the journal never goes back
            self._journal.write(self._records + self._skip)

    def checkpoint(self) -> dict[str, Any]:
        """Everything written so far is delivered (else SinkError): the state may say so."""
        self._deliver()
        return {**self.stats(), "records": self._records}

    def restore(self, position: dict[str, Any]) -> None:
        """Continue the stream's count; skip what the journal says was delivered since."""
        records = position.get("records", 0)
        if not isinstance(records, int) or isinstance(records, bool) or records < 0:
            raise SinkError(f"{self.name}: malformed checkpoint {position!r}")
        self._records = records
        if self._journal is not None:
            delivered = self._journal.read()
            self._skip = max(0, delivered - records)
            if self._skip:
                log.info("%s: %d notices were delivered after the last commit; not sent again",
                         self.where, self._skip)

    def stats(self) -> dict[str, Any]:
        """Counters for the state file: delivered, dropped, still queued."""
        return {
            "sink": self.name,
            "sent": self._transport.sent,
            "dropped": self._transport.dropped,
            "queued": self._transport.pending(),
        }

    def delivery(self) -> Delivery:
        """Delivery accounting for the run summary and the metrics (see sinks.base)."""
        t = self._transport
        return Delivery(delivered=t.sent, dropped=t.dropped, queued=t.pending(),
                        unit="notices" if self._only_notices else "records",
                        error=getattr(t, "last_error", ""))

    def close(self) -> None:
        """Deliver what is queued (unless a wait just failed: no second long wait).

        Never raises for records that could not be delivered: they are counted in
        :meth:`delivery` (``queued`` after close = lost), which the CLI turns into an
        exit status and a message naming the collector.
        """
        try:
            if self._undeliverable:
                log.debug("%s: closing with %d records undelivered", self.where,
                          self._transport.pending())
            else:
                self._transport.flush()
        except SinkError as exc:
            log.debug("%s", exc)
        finally:
            self._transport.close()


def factory(target: str, options: dict[str, str]) -> SyslogSink:
    """``zeekml.sinks`` entry point: ``syslog:udp|tcp|tls://HOST[:PORT]``."""
    url = urlsplit(target)
    if url.scheme not in ("udp", "tcp", "tls") or not url.hostname or url.path not in ("", "/"):
        raise ValueError(f"syslog target {target!r}: use udp://HOST[:PORT], tcp://HOST[:PORT] "
                         "or tls://HOST[:PORT]")
    try:
        port = (6514 if url.scheme == "tls" else 514) if url.port is None else url.port
    except ValueError as exc:
        raise ValueError(f"syslog target {target!r}: {exc}") from None
    if port == 0:
        raise ValueError(f"syslog target {target!r}: port must be 1-65535")
    opts = SinkOptions(options, "syslog")
    sd_id = opts.text("sd_id", "zeekml@32473")
    if not _SD_ID.fullmatch(sd_id) or any(c in sd_id for c in '="] ') or "@" not in sd_id:
        raise ValueError(f"syslog sd_id {sd_id!r}: NAME@PEN, printable, no = ] \" or space")
    fmt = SyslogFormat(
        format=opts.choice("format", ("rfc5424", "cef"), "rfc5424"),
        facility=_level(opts.text("facility", "user"), FACILITIES, 23, "facility"),
        severity=_level(opts.text("severity", "warning"), SEVERITIES, 7, "severity"),
        severity_normal=_level(opts.text("severity_normal", "info"), SEVERITIES, 7, "severity"),
        class_severity={k: _level(v, SEVERITIES, 7, "severity")
                        for k, v in opts.prefixed("severity.").items()},
        hostname=header_token(opts.text("hostname", socket.gethostname()), 255),
        app=header_token(opts.text("app", "zeekml"), 48),
        procid=str(os.getpid()),
        sd_id=sd_id,
    )
    only = opts.choice("only", ("notices", "all"), "notices")
    stream_only = {k for k in ("buffer", "timeout", "retry") if k in options}
    tls_only = {k for k in ("ca", "cert", "key", "servername") if k in options}
    buffer = opts.integer("buffer", 10_000, lo=1)
    timeout = opts.number("timeout", 60.0)
    retry = opts.number("retry", 1.0, lo=0.01)
    ca, cert, key = (opts.text(k, "") for k in ("ca", "cert", "key"))
    servername = opts.text("servername", url.hostname)
    opts.done()
    if url.scheme == "udp" and stream_only:
        raise ValueError(f"syslog over UDP has no {', '.join(sorted(stream_only))} option "
                         "(TCP/TLS only)")
    if url.scheme != "tls" and tls_only:
        raise ValueError(f"syslog over {url.scheme.upper()} has no "
                         f"{', '.join(sorted(tls_only))} option (TLS only: use tls://)")
    if not servername or any(c.isspace() or ord(c) < 0x21 for c in servername):
        raise ValueError(f"syslog servername {servername!r}: a host name or address")
    transport: UdpTransport | TcpTransport
    if url.scheme == "udp":
        transport = UdpTransport(url.hostname, port)
    else:
        tls = (TlsClient.create(servername, ca=ca or None, cert=cert or None, key=key or None)
               if url.scheme == "tls" else None)
        transport = TcpTransport(url.hostname, port, buffer=buffer, timeout=timeout,
                                 retry=retry, tls=tls)
    return SyslogSink(transport, fmt, only_notices=(only == "notices"))
