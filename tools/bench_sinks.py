"""Benchmark the alert sinks' formatting against a per-row Python baseline, in one run.

The alert sinks (ECS JSON, RFC 5424 syslog, CEF) format whole columns at a time so
that ``--all`` (a record for every scored flow) does not make formatting the slow
stage. This measures, on verdict rows made from a real capture (repeated to
``--rows``), records per second of:

* ``ecs``      :func:`zeekml.sinks.ecs.ecs_records` + encoding, vs a baseline that
               builds the same nested dict per row and calls ``json.dumps``;
* ``rfc5424``  :meth:`zeekml.sinks.syslog.SyslogFormat.records`;
* ``cef``      the same with ``format=cef``;
* ``tcp``      the syslog sink end to end over loopback TCP to a draining reader;
* ``tls``      the same over TLS (RFC 5425) to a draining TLS reader (certificates made
               with the ``openssl`` binary in a temporary directory), with its ratio to
               ``tcp`` measured in the same run.

and prints each rate (median of 3 runs after a warm-up) with its ratio to the
baseline measured in the same run.

    python tools/bench_sinks.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO.parent / "shared" / "data" / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


def verdict_rows(n: int) -> pd.DataFrame:
    from zeekml.records.verdicts import conform_verdicts
    from zeekml.sources.open import read_table

    flows = read_table(str(CAPTURE))
    reps = -(-n // len(flows))
    flows = pd.concat([flows] * reps, ignore_index=True).iloc[:n]
    rng = np.random.default_rng(1)
    score = rng.random(n)
    uids = flows["uid"].astype(str).to_numpy()
    context = [list(uids[max(0, i - 3):i]) for i in range(n)]
    return conform_verdicts(pd.DataFrame({
        "ts": flows["ts"], "uid": flows["uid"], "orig_h": flows["orig_h"],
        "orig_p": flows["orig_p"], "resp_h": flows["resp_h"], "resp_p": flows["resp_p"],
        "proto": flows["proto"], "model": "amf_lstm",
        "verdict": np.where(score >= 0.5, "c2", "normal"), "score": score,
        "threshold": 0.5, "notice": score >= 0.5, "alt": "normal", "alt_score": 1 - score,
        "n": 1, "context": context,
    }))


def baseline_ecs(df: pd.DataFrame) -> bytes:
    """The obvious implementation: the same document as one dict + json.dumps per row."""
    out = []
    for r in df.itertuples(index=False):
        ts = datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        resp_p = None if pd.isna(r.resp_p) else int(r.resp_p)
        doc = {
            "@timestamp": ts,
            "message": f"{r.verdict} from {r.orig_h}:{r.orig_p} to {r.resp_h}:{r.resp_p}/"
                       f"{r.proto} ({r.model} score {r.score} >= {r.threshold})",
            "event": {"kind": "alert", "module": "zeekml", "dataset": "zeekml.notice",
                      "category": ["intrusion_detection"], "type": ["info"], "id": r.uid,
                      "risk_score": float(r.score)},
            "rule": {"name": r.verdict, "category": r.model, "ruleset": "zeekml"},
            "source": {"ip": r.orig_h, "port": int(r.orig_p)},
            "destination": {"ip": r.resp_h, "port": resp_p},
            "network": {"transport": r.proto},
            "related": {"ip": [r.orig_h, r.resp_h]},
            "zeek": {"session_id": r.uid, "zeekml": {
                "model": r.model, "verdict": r.verdict, "score": float(r.score),
                "threshold": float(r.threshold), "notice": bool(r.notice), "alt": r.alt,
                "alt_score": float(r.alt_score), "n": int(r.n), "context": list(r.context)}},
            "observer": {"vendor": "zeekml", "product": "zeekml", "type": "ids"},
            "ecs": {"version": "8.11.0"},
        }
        out.append(json.dumps(doc, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def timed(fn, df: pd.DataFrame, repeat: int = 3) -> float:
    """Median seconds of ``repeat`` calls, after one warm-up call on 1,000 rows."""
    fn(df.iloc[:1000])
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(df)
        runs.append(time.perf_counter() - t)
    return sorted(runs)[len(runs) // 2]


def make_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for IP:127.0.0.1 (its own CA) and its key."""
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=bench",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def drain_server(tls: ssl.SSLContext | None = None) -> tuple[int, threading.Thread, list[int]]:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got = [0]

    def run() -> None:
        conn, _ = srv.accept()
        if tls is not None:
            conn = tls.wrap_socket(conn, server_side=True)
        with conn:
            while data := conn.recv(1 << 20):
                got[0] += len(data)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, t, got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()

    from zeekml.sinks.ecs import ecs_records
    from zeekml.sinks.registry import make_sink
    from zeekml.sinks.syslog import SyslogFormat
    from zeekml.sinks.textcols import encode_lines

    df = verdict_rows(args.rows)
    n = len(df)
    base = timed(baseline_ecs, df)
    rates = {
        "baseline ecs (per-row json.dumps)": n / base,
        "ecs": n / timed(lambda d: encode_lines(ecs_records(d)), df),
        "rfc5424": n / timed(lambda d: SyslogFormat(hostname="h").records(d), df),
        "cef": n / timed(lambda d: SyslogFormat(format="cef", hostname="h").records(d), df),
    }
    port, thread, got = drain_server()
    sink = make_sink(f"syslog:tcp://127.0.0.1:{port}?only=all")
    t = time.perf_counter()
    sink.write(df)
    sink.checkpoint()  # returns once the reader's TCP acknowledged every record
    rates["tcp syslog sink (format+send+ack)"] = n / (time.perf_counter() - t)
    sink.close()
    thread.join(timeout=10)
    tcp_bytes = got[0]
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        port, thread, got = drain_server(server)
        sink = make_sink(f"syslog:tls://127.0.0.1:{port}?only=all&ca={cert}")
        t = time.perf_counter()
        sink.write(df)
        sink.checkpoint()
        rates["tls syslog sink (format+encrypt+send+ack)"] = n / (time.perf_counter() - t)
        sink.close()
        thread.join(timeout=10)

    print(f"rows: {n:,} (from {CAPTURE.name}, repeated)")
    ref = rates["baseline ecs (per-row json.dumps)"]
    for name, rate in rates.items():
        print(f"{name:38s} {rate:12,.0f} records/s   x{rate / ref:5.1f} vs baseline")
    tcp = rates["tcp syslog sink (format+send+ack)"]
    print(f"tls / tcp: x{rates['tls syslog sink (format+encrypt+send+ack)'] / tcp:.2f}")
    print(f"bytes received by the drain: tcp {tcp_bytes:,}, tls plaintext {got[0]:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
