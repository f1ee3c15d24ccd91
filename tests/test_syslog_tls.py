"""Syslog over TLS (RFC 5425) against a real rsyslogd with its GnuTLS driver on loopback.

The test makes its own PKI with the openssl binary: a CA, a server certificate for
``IP:127.0.0.1, DNS:localhost``, a client certificate, and a second, unrelated CA (the
"wrong CA"). rsyslogd (Debian's ``rsyslog`` + ``rsyslog-gnutls``) runs in the
foreground with ``imtcp`` on the ``gtls`` stream driver and writes every message's
parsed parts as a JSON line (the helpers of ``tests/test_syslog.py``).
"""

from __future__ import annotations

import glob
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _verdicts import expected_text, real_verdicts
from conftest import REPO, need, need_binary
from test_syslog import (
    CRON_A,
    PARTS,
    Rsyslog,
    _free_port,
    _logged_notices,
    _received,
    check_structured,
    notices,
    octet_framed_records,
    parse_sd,
    read_up_to,
    small_buffer_listener,
)

from tests.test_pipeline import tiny_models  # noqa: F401 - fixture: a real tiny ONNX model
from zeekml.errors import SinkError
from zeekml.sinks.registry import make_sink
from zeekml.sinks.transport import TlsRefused

TLS_CONF = """\
global(workDirectory="{dir}" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.Authmode="{authmode}")
""" + PARTS + """input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="r")
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


def _openssl(binary: str, *args: str, cwd: Path) -> None:
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, server and client certificates signed by it, and an unrelated CA."""
    openssl = need_binary("openssl")
    d = tmp_path_factory.mktemp("pki")
    for name in ("ca", "wrong-ca"):
        _openssl(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj",
                 f"/CN=zeekml test {name}", cwd=d)
    exts = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                  "extendedKeyUsage=serverAuth\n",
        "client": "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    }
    for name, ext in exts.items():
        (d / f"{name}.ext").write_text(ext)
        _openssl(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
                 "ca.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
               d / "client.key", d / "wrong-ca.pem")


class RsyslogTls(Rsyslog):
    """rsyslogd with a TLS-only imtcp listener (``self.tcp``) on the gtls driver."""

    def __init__(self, binary: str, workdir: Path, pki: Pki, authmode: str = "anon") -> None:
        super().__init__(binary, workdir)
        self.conf.write_text(TLS_CONF.format(
            dir=workdir, out=self.out, tcp=self.tcp, ca=pki.ca, cert=pki.server_cert,
            key=pki.server_key, authmode=authmode))


def _need_gtls() -> None:
    found = glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so")
    need(bool(found), "rsyslog's GnuTLS driver (apt-get install rsyslog-gnutls)")


@pytest.fixture
def tls_rsyslog(tmp_path: Path, pki: Pki):
    binary = need_binary("rsyslogd")
    _need_gtls()
    collector = RsyslogTls(binary, tmp_path, pki)
    collector.start()
    yield collector
    collector.stop()


def test_tls_every_notice_arrives_intact(tls_rsyslog: RsyslogTls, pki: Pki) -> None:
    """Hostile values cross TLS with every field exact; delivery counts what arrived."""
    df = real_verdicts(hostile=True)
    want = notices(df)
    sink = make_sink(f"syslog:tls://127.0.0.1:{tls_rsyslog.tcp}?ca={pki.ca}"
                     "&hostname=sensor-1&severity.bot=crit")
    assert sink.name == f"syslog:tls://127.0.0.1:{tls_rsyslog.tcp}"
    transport = sink._transport
    seen: list[tuple[tuple[bytes, ...], int]] = []
    reap = transport._reap_acked

    def spy() -> None:  # what was written, as the acknowledgement count sees it
        seen.extend(g for g in transport._inflight if g not in seen)
        reap()

    transport._reap_acked = spy
    sink.write(df)
    # accounting on the wire: records took more bytes as TLS than as plaintext (SIOCOUTQ
    # counts those); none counts as delivered before its TLS bytes are acknowledged
    assert seen and all(size > sum(map(len, group)) for group, size in seen)
    assert sum(len(group) for group, _ in seen) == len(want)
    sink.checkpoint()  # waits until the collector's TCP acknowledged every record
    d = sink.delivery()
    assert (d.delivered, d.dropped, d.queued) == (len(want), 0, 0)
    recs = tls_rsyslog.wait_for(len(want))
    sink.close()
    assert len(recs) == len(want)
    by_uid = {parse_sd(r["sd"])[1]["uid"]: r for r in recs}
    assert len(by_uid) == len(want)
    for _, row in want.iterrows():
        rec = by_uid[expected_text(row["uid"])]
        check_structured(rec, row)  # octet framing held: no record split or merged
        assert rec["host"] == "sensor-1"
        assert int(rec["pri"]) % 8 == (2 if row["verdict"] == "bot" else 4)


def test_tls_collector_restart_loses_nothing_owed(tls_rsyslog: RsyslogTls, pki: Pki) -> None:
    """Stop the TLS collector mid-stream and start it again: every notice arrives.

    Records written while it was down (and any whose TLS bytes were not yet
    acknowledged when it went) are re-encrypted on the new session and sent again.
    """
    df = notices(real_verdicts())
    sink = make_sink(f"syslog:tls://127.0.0.1:{tls_rsyslog.tcp}?ca={pki.ca}"
                     "&retry=0.05&timeout=30")
    third = len(df) // 3
    sink.write(df.iloc[:third])
    sink.checkpoint()
    tls_rsyslog.wait_for(third)
    tls_rsyslog.stop()
    sink.write(df.iloc[third:2 * third])  # the broken session is noticed; queued
    sink.flush()  # never waits for the collector
    tls_rsyslog.start()
    sink.write(df.iloc[2 * third:])
    sink.checkpoint()
    sink.close()
    got = {parse_sd(r["sd"])[1]["uid"] for r in tls_rsyslog.wait_for(len(df))}
    assert got == set(df["uid"])
    d = sink.delivery()
    assert d.dropped == 0 and d.queued == 0
    assert d.delivered >= len(df)  # at least once: a re-sent record may count twice


def test_tls_wrong_ca_is_refused_at_once(tls_rsyslog: RsyslogTls, pki: Pki) -> None:
    sink = make_sink(f"syslog:tls://127.0.0.1:{tls_rsyslog.tcp}?ca={pki.wrong_ca}"
                     "&timeout=30&retry=0.05")
    with pytest.raises(TlsRefused) as err:
        sink.write(notices(real_verdicts()).iloc[:3])  # first connection: no retry loop
    text = str(err.value)
    assert "\n" not in text
    assert f"tls://127.0.0.1:{tls_rsyslog.tcp}" in text
    assert "certificate" in text and str(pki.wrong_ca) in text
    assert "unable to get local issuer certificate" in text
    sink.close()
    assert tls_rsyslog.records() == []


def test_tls_host_name_is_verified(tls_rsyslog: RsyslogTls, pki: Pki) -> None:
    """The certificate names 127.0.0.1 and localhost, not another name."""
    good = make_sink(f"syslog:tls://127.0.0.1:{tls_rsyslog.tcp}?ca={pki.ca}&servername=localhost")
    good.write(notices(real_verdicts()).iloc[:2])
    good.checkpoint()
    good.close()
    bad = make_sink(f"syslog:tls://127.0.0.1:{tls_rsyslog.tcp}?ca={pki.ca}"
                    "&servername=siem.example.org")
    with pytest.raises(TlsRefused, match="siem.example.org"):
        bad.write(notices(real_verdicts()).iloc[:2])
    bad.close()
    assert len(tls_rsyslog.wait_for(2)) == 2


def test_tls_client_certificate(tmp_path: Path, pki: Pki) -> None:
    """A collector that requires client certificates (x509/certvalid) gets ours."""
    binary = need_binary("rsyslogd")
    _need_gtls()
    collector = RsyslogTls(binary, tmp_path, pki, authmode="x509/certvalid")
    collector.start()
    try:
        df = notices(real_verdicts()).iloc[:40]
        sink = make_sink(f"syslog:tls://127.0.0.1:{collector.tcp}?ca={pki.ca}"
                         f"&cert={pki.client_cert}&key={pki.client_key}")
        sink.write(df)
        sink.checkpoint()
        sink.close()
        got = {parse_sd(r["sd"])[1]["uid"] for r in collector.wait_for(len(df))}
        assert got == set(df["uid"])
        # without one, the collector closes every session: never delivered, the
        # checkpoint fails (what its TCP acknowledged before closing may count as sent:
        # TCP acknowledgement is not processing, see zeekml.sinks.transport)
        anon = make_sink(f"syslog:tls://127.0.0.1:{collector.tcp}?ca={pki.ca}"
                         "&timeout=2&retry=0.05")
        anon.write(df)
        with pytest.raises(SinkError, match="not delivered"):
            anon.checkpoint()
        anon.close()
        assert len(collector.records()) == len(df)  # nothing of the second sink arrived
    finally:
        collector.stop()


@pytest.mark.parametrize("option, message", [
    ("ca={missing}", "cannot load CA"),
    ("ca={not_pem}", "cannot load CA"),
    ("ca={ca}&cert={missing}", "cannot load the client certificate"),
    ("ca={ca}&cert={client}&key={wrong_key}", "cannot load the client certificate"),
])
def test_tls_bad_certificate_files_name_the_file(pki: Pki, tmp_path: Path, option: str,
                                                 message: str) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    opt = option.format(missing=tmp_path / "nope.pem", not_pem=not_pem, ca=pki.ca,
                        client=pki.client_cert, wrong_key=pki.server_key)
    with pytest.raises(SinkError, match=message) as err:
        make_sink(f"syslog:tls://127.0.0.1:6514?{opt}")
    assert opt.split("&")[-1].split("=", 1)[1] in str(err.value)


def _zeekml(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zeekml.cli.main", *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=300)


def test_cli_wrong_ca_fails_with_one_line(tls_rsyslog: RsyslogTls, pki: Pki,
                                          tmp_path: Path) -> None:
    """``zeekml score`` and ``zeekml tail``: exit 1, one line naming collector and reason."""
    need(CRON_A.is_file(), f"the capture {CRON_A}")
    where = f"tls://127.0.0.1:{tls_rsyslog.tcp}"
    spec = f"syslog:{where}?ca={pki.wrong_ca}"
    for cmd in (["score", "--all"], ["tail", "--all"]):
        run = _zeekml([*cmd, "--out", str(tmp_path / "z.log"), "--sink", spec, str(CRON_A)],
                      tmp_path)
        assert run.returncode == 1, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith("zeekml: error: syslog collector " + where)
        assert "certificate refused" in lines[0] and "Traceback" not in run.stderr
        assert "unable to get local issuer certificate" in lines[0]
    assert tls_rsyslog.records() == []


def test_zeekml_score_over_tls(tls_rsyslog: RsyslogTls, pki: Pki, tiny_models,  # noqa: F811
                               tmp_path: Path) -> None:
    from zeekml.cli.main import main

    need(CRON_A.is_file(), f"the capture {CRON_A}")
    out = tmp_path / "zeekml.log"
    models = [a for m in tiny_models for a in ("--model", str(m))]
    rc = main(["score", *models, "--out", str(out), "--sink",
               f"syslog:tls://localhost:{tls_rsyslog.tcp}?ca={pki.ca}&format=cef", str(CRON_A)])
    assert rc == 0
    logged = _logged_notices(out)
    assert logged
    assert sorted(_received(tls_rsyslog.wait_for(len(logged)))) == sorted(logged)


def test_no_listener_on_tls_port_is_not_a_certificate_error(pki: Pki) -> None:
    port = _free_port(socket.SOCK_STREAM)
    sink = make_sink(f"syslog:tls://127.0.0.1:{port}?ca={pki.ca}&timeout=0.3&retry=0.05")
    sink.write(notices(real_verdicts()).iloc[:4])
    with pytest.raises(SinkError, match="4 records not delivered.*Connection refused"):
        sink.checkpoint()
    sink.close()



def test_tls_counts_as_delivered_only_what_the_peer_kernel_has(pki: Pki) -> None:
    """A collector that stops reading: what its kernel holds bounds what counts as sent.

    A real TLS server (Python's ssl, the test's certificate) with a small receive
    buffer completes the handshake and then does not read. The TLS bytes of the
    records the transport counts as delivered must fit in what the server's kernel
    acknowledged (FIONREAD on its socket: data it has not read); the rest stays
    queued until the server reads, and then every record arrives, once, in order.
    """
    import fcntl
    import ssl
    import struct
    import termios
    import threading

    from zeekml.sinks.transport import TcpTransport, TlsClient

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    srv = small_buffer_listener()
    frames = octet_framed_records(3000)
    want = b"".join(frames)
    ready, go = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    def serve() -> None:
        raw, _ = srv.accept()
        conn = server_ctx.wrap_socket(raw, server_side=True)
        box["conn"] = conn
        ready.set()
        go.wait(60)
        box["got"] = read_up_to(conn, len(want))
        conn.close()
        srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    t = TcpTransport("127.0.0.1", srv.getsockname()[1], timeout=30, retry=0.05,
                     connect_timeout=30, tls=TlsClient.create("127.0.0.1", ca=str(pki.ca)))
    counted_wire = [0]
    reap = t._reap_acked

    def spy() -> None:  # TLS bytes of the groups counted as delivered
        before = t._inflight_bytes
        reap()
        counted_wire[0] += before - t._inflight_bytes

    t._reap_acked = spy  # type: ignore[method-assign]
    try:
        t.send(frames[:1])  # connects (the handshake needs the server thread)
        assert ready.wait(30)
        t.send(frames[1:])
        time.sleep(0.5)
        t.poke()  # count acknowledgements now
        conn = box["conn"]
        held = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        assert t.sent < len(frames), "a collector that does not read cannot have everything"
        assert t.pending() == len(frames) - t.sent
        assert counted_wire[0] <= held  # never counted before the peer's kernel had it
        go.set()
        t.flush()  # the server reads now: everything is acknowledged
        assert t.sent == len(frames) and t.pending() == 0
    finally:
        go.set()
        t.close()
        thread.join(30)
    assert box["got"] == want
