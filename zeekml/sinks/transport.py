"""Datagram and stream delivery of framed records to a collector (used by the syslog sink).

UDP (RFC 5426) sends one record per datagram and forgets it: delivery is best effort,
and a send the kernel refuses is counted as dropped.

TCP keeps every record until the collector's TCP stack has acknowledged it, so a
collector that restarts loses nothing that zeekml still holds:

* ``pending``   records not yet written (completely) to the socket;
* ``inflight``  records written to the socket but not yet acknowledged by the peer
  (Linux ``SIOCOUTQ`` says how many bytes are unacknowledged; elsewhere a record
  counts as acknowledged once written).

On any connection error, or when the peer is seen to have closed the connection,
``inflight`` goes back in front of ``pending`` and is sent again after reconnecting
(at least once: a collector may see a record twice, or a cut copy of the one being
written when the connection broke). ``pending`` is bounded by ``buffer`` records
(``inflight`` by the socket's send buffer); past the bound the oldest records are
dropped and counted, never silently.

:meth:`TcpTransport.flush` returns only when both queues are empty, i.e. every
record was acknowledged by the collector's host, so a pipeline with ``--state``
commits a notice as delivered only after that. It retries connecting until its
deadline and then raises :class:`~zeekml.errors.SinkError`, leaving the records
queued. (Acknowledged by the collector's TCP is not the same as processed by it: a
collector killed with data in its receive buffer loses that data; only an
application-level protocol such as RELP closes that gap.)

:meth:`TcpTransport.poke` is the non-blocking variant: it writes what can be written
now (respecting the reconnect back-off) and never waits for a collector that is down,
so a live follower keeps scoring while the bounded queue absorbs an outage.

TLS (RFC 5425) is the same stream under TLS 1.2+: ``TcpTransport(..., tls=TlsClient)``.
The TLS session runs over memory BIOs (:class:`ssl.SSLObject`), so the transport
knows the exact ciphertext length of everything it writes; ``SIOCOUTQ`` counts
ciphertext bytes, and a record is counted as acknowledged only once every byte of the
TLS records carrying it left the kernel's unacknowledged queue (handshake and control
bytes in that queue only make the count more cautious). A record encrypted for one
connection is never sent on another: after a reconnect it is encrypted again.

Records are written in groups of about 16 KiB (one write, one TLS record), not one
system call per record; a group is acknowledged, or re-queued, as a whole. The
collector's certificate is always verified against ``ca`` (or the system store)
and the target host name; a refused certificate, or any TLS alert that a retry
cannot fix, raises :class:`TlsRefused` (a SinkError) at once instead of retrying.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import socket
import ssl
import struct
import termios
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from zeekml.errors import SinkError

log = logging.getLogger(__name__)

#: records are written in groups of about this many bytes (one TLS record's worth)
GROUP_BYTES = 16 * 1024
#: Linux ``tcpi_state`` of a connection that was reset or closed (include/net/tcp_states.h)
_TCP_CLOSE = 7


def where(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port`` with an IPv6 host in brackets."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def resolve(host: str, port: int, kind: socket.SocketKind) -> tuple[int, tuple]:
    """(address family, socket address) of ``host:port``; SinkError when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=kind)
    except (socket.gaierror, UnicodeError) as exc:
        raise SinkError(f"cannot resolve syslog collector {host!r}: {exc}") from exc
    family, _, _, _, addr = infos[0]
    return family, addr


class UdpTransport:
    """One datagram per record, best effort (RFC 5426)."""

    def __init__(self, host: str, port: int) -> None:
        self.where = where("udp", host, port)
        family, self._addr = resolve(host, port, socket.SOCK_DGRAM)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sent = 0
        self.dropped = 0
        self.last_error = ""

    def send(self, frames: Sequence[bytes]) -> None:
        failed = 0
        for frame in frames:
            try:
                self._sock.sendto(frame, self._addr)
                self.sent += 1
            except OSError as exc:
                failed += 1
                last = exc
        if failed:
            self.dropped += failed
            self.last_error = str(last.strerror or last)
            log.warning("%s: %d records not sent (%s)", self.where, failed, last)

    def flush(self) -> None:
        """Nothing is queued: each datagram left in :meth:`send`."""

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        self._sock.close()


class TlsRefused(SinkError):
    """The TLS handshake or session failed in a way a retry cannot fix (certificate, alert)."""


#: SSL errors that mean "the connection went away", retried like a reset TCP connection
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


@dataclass(frozen=True)
class TlsClient:
    """How to talk TLS to a collector: a verifying context and the name to verify."""

    context: ssl.SSLContext
    server_name: str
    trust: str  # for messages: "ca=PATH" or "the system's CA store"

    @classmethod
    def create(cls, server_name: str, *, ca: str | None = None, cert: str | None = None,
               key: str | None = None) -> TlsClient:
        """A TLS 1.2+ client context that verifies the collector (never optional).

        ``ca`` is a PEM file (or a directory of hashed certificates) of the CAs to
        trust, default the system store; ``cert``/``key`` a client certificate for
        collectors that require one (``key`` may be omitted when ``cert`` holds it;
        an encrypted key is refused: there is nobody to type its passphrase).
        SinkError naming the file when one cannot be read or used.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2   # RFC 9662 (updates RFC 5425)
        if ca:
            try:
                if os.path.isdir(ca):
                    ctx.load_verify_locations(capath=ca)
                else:
                    ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise SinkError(f"syslog ca={ca}: cannot load CA certificates: "
                                f"{_ssl_reason(exc)}") from exc
            trust = f"ca={ca}"
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            trust = "the system's CA store"
        if key and not cert:
            raise ValueError("syslog option key= needs cert= (the client certificate)")
        if cert:
            def no_passphrase() -> bytes:
                raise SinkError(f"syslog key={key or cert}: the private key is encrypted; "
                                "give an unencrypted key readable only by zeekml")

            try:
                ctx.load_cert_chain(cert, key or None, password=no_passphrase)
            except (OSError, ssl.SSLError) as exc:
                raise SinkError(f"syslog cert={cert}" + (f" key={key}" if key else "")
                                + f": cannot load the client certificate: "
                                f"{_ssl_reason(exc)}") from exc
        return cls(ctx, server_name, trust)


def _ssl_reason(exc: BaseException) -> str:
    """A one-line reason for an ssl/OS error (no library codes or tuples)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class _TlsSession:
    """One TLS connection over memory BIOs on a connected (blocking) socket."""

    def __init__(self, client: TlsClient, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.client = client
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = client.context.wrap_bio(self.incoming, self.outgoing,
                                           server_hostname=client.server_name)

    def refused(self, exc: ssl.SSLError, during: str) -> TlsRefused:
        """The one-line error for a failure no retry fixes; the alert is sent if possible."""
        try:
            self._send_outgoing()  # our alert (e.g. unknown CA) tells the collector why
        except OSError:
            pass
        reason = _ssl_reason(exc).rstrip(".")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TlsRefused(
                f"syslog collector {self.where}: certificate refused in the TLS {during}: "
                f"{reason} (verified against {self.client.trust} for "
                f"{self.client.server_name!r})")
        return TlsRefused(f"syslog collector {self.where}: TLS {during} failed: {reason}")

    def handshake(self) -> None:
        """Run the handshake (blocking, with the socket's timeout)."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_outgoing()
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionResetError("collector closed the connection in the "
                                               "TLS handshake") from None
                self.incoming.write(data)
            except _TRANSIENT_SSL:
                raise
            except ssl.SSLError as exc:
                raise self.refused(exc, "handshake") from None
        self._send_outgoing()

    def encrypt(self, frame: bytes) -> bytes:
        """The TLS records carrying ``frame`` (to be sent in full, on this connection)."""
        self.obj.write(frame)
        return self.outgoing.read()

    def drain(self) -> bool:
        """Read what the collector sent (session tickets, alerts, close_notify).

        True when the collector closed the session or the connection; TlsRefused on
        an alert that a reconnect would not fix (e.g. it requires a client
        certificate). Called only between records, so control records this
        produces may be written at once.
        """
        try:
            # select before each recv: on a socket with a timeout, recv waits for data
            # even with MSG_DONTWAIT
            for _ in range(64):  # a collector that keeps talking cannot hold us here
                if not select.select([self.sock], [], [], 0)[0]:
                    break
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
                self.incoming.write(data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return True
        try:
            while self.obj.read(1 << 16):
                pass  # a syslog collector sends no application data: ignore any
        except ssl.SSLWantReadError:
            pass
        except _TRANSIENT_SSL:
            return True
        except ssl.SSLError as exc:
            raise self.refused(exc, "session") from None
        self._send_outgoing()
        return False

    def close_notify(self) -> None:
        """Best effort: tell the collector the session ends (no waiting for its reply)."""
        try:
            self.obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        try:
            self.sock.settimeout(0.5)
            self._send_outgoing()
        except OSError:
            pass

    def _send_outgoing(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)


class TcpTransport:
    """Octet-counted records over TCP (or TLS) with a bounded resend queue (module doc)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        buffer: int = 10_000,
        timeout: float = 60.0,
        retry: float = 1.0,
        connect_timeout: float = 5.0,
        tls: TlsClient | None = None,
    ) -> None:
        self.where = where("tls" if tls is not None else "tcp", host, port)
        self._host, self._port = host, port
        resolve(host, port, socket.SOCK_STREAM)  # fail early on a bad name
        self._bound = buffer
        self._timeout = timeout
        self._retry = retry
        self._connect_timeout = connect_timeout
        self._tls = tls
        self._session: _TlsSession | None = None
        self._sock: socket.socket | None = None
        self._pending: deque[bytes] = deque()
        # written groups of records and the bytes each took on the wire (over TLS more
        # than the records: SIOCOUTQ counts those); acknowledged group by group
        self._inflight: deque[tuple[tuple[bytes, ...], int]] = deque()
        self._inflight_bytes = 0
        self._inflight_records = 0
        self._wire: bytes | None = None  # the head group as sent on this connection
        self._wire_records = 0  # records (at the head of pending) in _wire
        self._head_sent = 0  # bytes of _wire already written on this connection
        self._next_try = 0.0
        self._last_try = 0.0
        self._last_cost = 0.0  # seconds the last connect attempt took
        self._failures = 0  # consecutive failed connects: the retry interval doubles
        self._dropping = False
        self.sent = 0  # acknowledged records
        self.dropped = 0
        self.reconnects = 0
        self.last_error = ""  # the last reason a connection failed or broke

    # -- public --------------------------------------------------------------------

    def send(self, frames: Sequence[bytes]) -> None:
        """Queue ``frames`` and deliver what can be delivered now without waiting."""
        self._pending.extend(frames)
        self.poke()

    def poke(self) -> None:
        """Write what can be written now; never wait for a collector that is down.

        Connects only when the back-off allows (or the queue is past its bound),
        then enforces the bound: the oldest unsent records are dropped and counted.
        """
        now = time.monotonic()
        # past the bound, try again after the plain retry interval (not the backed-off
        # one): a refused connect is cheaper than dropping records. A connect that
        # timed out cost seconds, so then wait ten times that, to keep writing.
        gap = max(self._retry, 10 * self._last_cost)
        overfull = len(self._pending) > self._bound and now - self._last_try >= gap
        if (self._pending or self._inflight) and (
                self._sock is not None or now >= self._next_try or overfull):
            try:
                self._pump()
            except OSError as exc:
                self._broken(exc)
        self._enforce_bound()

    def flush(self) -> None:
        """Return once every queued record is acknowledged; SinkError at the deadline."""
        deadline = None if self._timeout <= 0 else time.monotonic() + self._timeout
        pause = 0.05
        while self._pending or self._inflight:
            try:
                self._pump()
                if not self._pending:
                    self._await_acks(deadline)
                    continue
            except OSError as exc:
                self._broken(exc)
            if deadline is not None and time.monotonic() >= deadline:
                why = f": {self.last_error}" if self.last_error else ""
                raise SinkError(
                    f"{self.where}: {self.pending()} records not delivered within "
                    f"{self._timeout:g} s (collector unreachable{why})"
                )
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        if self._dropping:
            self._dropping = False
            log.warning("%s: %d records dropped so far (buffer bound %d)",
                        self.where, self.dropped, self._bound)

    def pending(self) -> int:
        return len(self._pending) + self._inflight_records

    def close(self) -> None:
        if self._session is not None:
            self._session.close_notify()
            self._session = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- internals -----------------------------------------------------------------

    def _pump(self) -> None:
        """Connect if needed, write pending records, and count what was acknowledged."""
        if self._sock is None:
            self._connect()
        else:
            self._reap_acked()  # before looking for a close: what was acked stays acked
            if self._peer_closed():
                self._reap_acked()  # and what was acknowledged with the close (_await_acks)
                raise ConnectionResetError("collector closed the connection")
        sock = self._sock
        assert sock is not None
        while self._pending:
            if self._wire is None:
                head = self._head_group()
                data = b"".join(head)
                self._wire = data if self._session is None else self._session.encrypt(data)
                self._wire_records = len(head)
                self._head_sent = 0
            wire = self._wire
            self._head_sent += sock.send(memoryview(wire)[self._head_sent:])
            if self._head_sent >= len(wire):
                group = tuple(self._pending.popleft() for _ in range(self._wire_records))
                self._inflight.append((group, len(wire)))
                self._inflight_bytes += len(wire)
                self._inflight_records += len(group)
                self._wire = None
                self._wire_records = 0
                self._head_sent = 0
        self._reap_acked()

    def _head_group(self) -> list[bytes]:
        """The records at the head of ``pending`` sent as one write (about 16 KiB).

        One write (and, over TLS, one record) per group instead of per record; a
        group is acknowledged, or re-sent after a broken connection, as a whole.
        """
        group: list[bytes] = []
        size = 0
        for frame in self._pending:
            if group and size + len(frame) > GROUP_BYTES:
                break
            group.append(frame)
            size += len(frame)
        return group

    def _connect(self) -> None:
        self._last_try = time.monotonic()
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=self._connect_timeout)
            try:
                if self._tls is not None:
                    session = _TlsSession(self._tls, sock, self.where)
                    session.handshake()
                    self._session = session
            except BaseException:
                sock.close()
                raise
        finally:
            self._last_cost = time.monotonic() - self._last_try
        self._failures = 0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(max(self._connect_timeout, 1.0))
        self._sock = sock
        self.reconnects += 1
        if self.reconnects > 1:
            log.info("%s: reconnected; re-sending %d queued records", self.where, self.pending())

    def _peer_closed(self) -> bool:
        """True when the collector closed its end (EOF or reset waiting on the socket).

        A syslog collector never sends, so anything readable means EOF or an error
        (over TLS: session tickets or alerts, read through the session).
        ``select`` first: ``recv`` on a socket with a timeout would wait for it.
        """
        assert self._sock is not None
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return False
            if self._session is not None:
                return self._session.drain()
            data = self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except TlsRefused:
            raise
        except OSError:
            return True
        return data == b""

    def _unacked_bytes(self) -> int | None:
        """Bytes written but not acknowledged by the peer (Linux SIOCOUTQ), else None."""
        assert self._sock is not None
        try:
            raw = fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return None
        return struct.unpack("i", raw)[0]

    def _reset(self) -> bool:
        """True when the connection was reset (Linux TCP_INFO state CLOSE).

        A reset empties the kernel's send queue, so SIOCOUTQ would then say 0 bytes
        unacknowledged for data the peer never acknowledged: nothing may be counted.
        """
        assert self._sock is not None
        try:
            info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        except (OSError, AttributeError):
            return False
        return bool(info) and info[0] == _TCP_CLOSE

    def _reap_acked(self) -> None:
        if self._sock is None or not self._inflight:
            return
        unacked = self._unacked_bytes()
        if unacked is not None and self._reset():
            return
        acked = self._inflight_bytes if unacked is None else self._inflight_bytes - unacked
        while self._inflight and self._inflight[0][1] <= acked:
            group, size = self._inflight.popleft()
            acked -= size
            self._inflight_bytes -= size
            self._inflight_records -= len(group)
            self.sent += len(group)

    def _await_acks(self, deadline: float | None) -> None:
        """Wait (polling the send queue) until the peer acknowledged every written byte."""
        while self._inflight:
            self._reap_acked()
            if not self._inflight:
                return
            if self._peer_closed():
                # a collector that read everything and closed: its last acknowledgement
                # may reach us with its close (the FIN carries it), after the count above.
                # Segments are taken in order, so once the close is seen every
                # acknowledgement sent before it is in the kernel's count (a reset empties
                # the send queue instead, and _reap_acked then counts nothing)
                self._reap_acked()
                if not self._inflight:
                    return
                raise ConnectionResetError("collector closed the connection")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("no acknowledgement from the collector")
            time.sleep(0.002)

    def _broken(self, exc: OSError) -> None:
        """Drop the connection; everything unacknowledged is sent again later."""
        self.last_error = _ssl_reason(exc)
        if self._sock is not None:
            log.warning("%s: connection lost (%s); %d records queued for re-sending",
                        self.where, self.last_error, self.pending())
            self._sock.close()
            self._sock = None
        else:
            self._failures += 1
            log.debug("%s: cannot connect (%s)", self.where, exc)
        self._session = None
        self._pending.extendleft(reversed([f for group, _ in self._inflight for f in group]))
        self._inflight.clear()
        self._inflight_bytes = 0
        self._inflight_records = 0
        self._wire = None
        self._wire_records = 0
        self._head_sent = 0
        # while writing, retry after retry, 2*retry, 4*retry ... at most 30 s apart, so
        # an unreachable collector does not stall the pipeline on every batch
        backoff = min(self._retry * (2 ** min(self._failures, 16)), max(self._retry, 30.0))
        self._next_try = time.monotonic() + backoff

    def _enforce_bound(self) -> None:
        """Drop the oldest unsent records past the bound (counted and logged).

        Only ``pending`` counts: ``inflight`` is already bounded by the socket's send
        buffer, and when a connection breaks it rejoins ``pending`` and counts again.
        A head record already (partly) put on the wire of a live connection is kept:
        cutting it would corrupt the octet framing (and, over TLS, the session).
        """
        excess = len(self._pending) - self._bound
        if excess <= 0:
            return
        if not self._dropping:
            log.warning("%s: collector unreachable and %d records queued: dropping the oldest",
                        self.where, self._bound)
        self._dropping = True
        keep = [self._pending.popleft() for _ in range(self._wire_records)]
        cut = min(excess, len(self._pending))
        for _ in range(cut):
            self._pending.popleft()
        self.dropped += cut
        self._pending.extendleft(reversed(keep))
