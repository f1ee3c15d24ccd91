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
"""

from __future__ import annotations

import fcntl
import logging
import select
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Sequence

from zeekml.errors import SinkError

log = logging.getLogger(__name__)


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
            log.warning("%s: %d records not sent (%s)", self.where, failed, last)

    def flush(self) -> None:
        """Nothing is queued: each datagram left in :meth:`send`."""

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        self._sock.close()


class TcpTransport:
    """Octet-counted records over TCP with a bounded resend queue (see module doc)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        buffer: int = 10_000,
        timeout: float = 60.0,
        retry: float = 1.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.where = where("tcp", host, port)
        self._host, self._port = host, port
        resolve(host, port, socket.SOCK_STREAM)  # fail early on a bad name
        self._bound = buffer
        self._timeout = timeout
        self._retry = retry
        self._connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._pending: deque[bytes] = deque()
        self._inflight: deque[bytes] = deque()
        self._inflight_bytes = 0
        self._head_sent = 0  # bytes of pending[0] already written on this connection
        self._next_try = 0.0
        self._last_try = 0.0
        self._last_cost = 0.0  # seconds the last connect attempt took
        self._failures = 0  # consecutive failed connects: the retry interval doubles
        self._dropping = False
        self.sent = 0  # acknowledged records
        self.dropped = 0
        self.reconnects = 0

    # -- public --------------------------------------------------------------------

    def send(self, frames: Sequence[bytes]) -> None:
        """Queue ``frames`` and deliver what can be delivered now without waiting."""
        self._pending.extend(frames)
        now = time.monotonic()
        # past the bound, try again after the plain retry interval (not the backed-off
        # one): a refused connect is cheaper than dropping records. A connect that
        # timed out cost seconds, so then wait ten times that, to keep writing.
        gap = max(self._retry, 10 * self._last_cost)
        overfull = len(self._pending) > self._bound and now - self._last_try >= gap
        if self._sock is not None or now >= self._next_try or overfull:
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
                raise SinkError(
                    f"{self.where}: {self.pending()} records not delivered within "
                    f"{self._timeout:g} s (collector unreachable; they stay queued)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        if self._dropping:
            self._dropping = False
            log.warning("%s: %d records dropped so far (buffer bound %d)",
                        self.where, self.dropped, self._bound)

    def pending(self) -> int:
        return len(self._pending) + len(self._inflight)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- internals -----------------------------------------------------------------

    def _pump(self) -> None:
        """Connect if needed, write pending records, and count what was acknowledged."""
        if self._sock is None:
            self._connect()
        elif self._peer_closed():
            raise ConnectionResetError("collector closed the connection")
        sock = self._sock
        assert sock is not None
        while self._pending:
            frame = self._pending[0]
            self._head_sent += sock.send(memoryview(frame)[self._head_sent:])
            if self._head_sent >= len(frame):
                self._pending.popleft()
                self._inflight.append(frame)
                self._inflight_bytes += len(frame)
                self._head_sent = 0
        self._reap_acked()

    def _connect(self) -> None:
        self._last_try = time.monotonic()
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=self._connect_timeout)
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

        A syslog collector never sends, so anything readable means EOF or an error.
        ``select`` first: ``recv`` on a socket with a timeout would wait for it.
        """
        assert self._sock is not None
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return False
            data = self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
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

    def _reap_acked(self) -> None:
        unacked = self._unacked_bytes() if self._sock is not None else None
        acked = self._inflight_bytes if unacked is None else self._inflight_bytes - unacked
        while self._inflight and len(self._inflight[0]) <= acked:
            frame = self._inflight.popleft()
            acked -= len(frame)
            self._inflight_bytes -= len(frame)
            self.sent += 1

    def _await_acks(self, deadline: float | None) -> None:
        """Wait (polling the send queue) until the peer acknowledged every written byte."""
        while self._inflight:
            if self._peer_closed():
                raise ConnectionResetError("collector closed the connection")
            self._reap_acked()
            if not self._inflight:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("no acknowledgement from the collector")
            time.sleep(0.002)

    def _broken(self, exc: OSError) -> None:
        """Drop the connection; everything unacknowledged is sent again later."""
        if self._sock is not None:
            log.warning("%s: connection lost (%s); %d records queued for re-sending",
                        self.where, exc, self.pending())
            self._sock.close()
            self._sock = None
        else:
            self._failures += 1
            log.debug("%s: cannot connect (%s)", self.where, exc)
        self._pending.extendleft(reversed(self._inflight))
        self._inflight.clear()
        self._inflight_bytes = 0
        self._head_sent = 0
        # while writing, retry after retry, 2*retry, 4*retry ... at most 30 s apart, so
        # an unreachable collector does not stall the pipeline on every batch
        backoff = min(self._retry * (2 ** min(self._failures, 16)), max(self._retry, 30.0))
        self._next_try = time.monotonic() + backoff

    def _enforce_bound(self) -> None:
        """Drop the oldest unsent records past the bound (counted and logged).

        Only ``pending`` counts: ``inflight`` is already bounded by the socket's send
        buffer, and when a connection breaks it rejoins ``pending`` and counts again.
        """
        excess = len(self._pending) - self._bound
        if excess <= 0:
            return
        if not self._dropping:
            log.warning("%s: collector unreachable and %d records queued: dropping the oldest",
                        self.where, self._bound)
        self._dropping = True
        self.dropped += excess
        for _ in range(excess):
            self._pending.popleft()
        self._head_sent = 0
