"""Benchmark ``zeekml tail``: per-flow latency at a steady input rate, and sustained throughput.

Phase 1, latency: a real ``zeekml tail --all`` subprocess follows a conn.log that this
script writes at a steady rate (default 20,000 flows/s, in 10 ms chunks as a buffered
Zeek writer would). A reader thread polls the verdict log every few ms and records
when each flow's uid first appears. Latency = time seen in the output - time written.
Printed: p50 / p90 / p99 / max over every flow, and whether the output kept up.

Phase 2, throughput: a file of the same rows already on disk is followed from its
start (a backlog, as after a restart) until every verdict is out: flows/s of the tail
loop. The baseline, measured in the same run on the same file, is ``zeekml score
--all`` (batch, its own flows/s figure): the ratio tail/score shows what following
costs. Both exclude process start-up and model loading.

Phase 3, restart: tail with ``--state`` works through a backlog (the per-host windows
of every host in it go into the state), stops; new rows arrive; a new process starts.
Time from the process start to its first new verdict (imports, models, loading the
state, committing, catching up) against the same figure for a fresh start without a
state on a file of only the new rows, measured in the same run.

Rows come from ``tools/gen_conn_log.py`` (real rows of the shared captures, fresh
uids). Models: the bundled ones by default, ``--model PATH`` to choose; ``--tiny`` uses
the tiny real ONNX model of the tests (to exercise the loop before the bundled models
exist).

``--metrics-overhead`` adds phase 3: the phase-2 backlog followed three times without and
three times with ``--metrics`` (alternated; scraped every 0.5 s by a client thread, as a
busy Prometheus would), in the same run: the ratio of the medians is what the metrics
cost.

Usage: ``python tools/bench_tail.py [--rate 20000] [--seconds 15] [--tiny]
[--metrics-overhead]``
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

RUNNER = (
    "import sys\n"
    "from zeekml.models import registry\n"
    "registry.BUILTIN_KINDS.setdefault('tiny_linear', 'tests.test_pipeline:TinyScorer')\n"
    "from zeekml.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


#: the uid (second field) of every data line of a Zeek log
UID_RE = re.compile(rb"^[^#\t\n][^\t\n]*\t([^\t\n]+)", re.MULTILINE)


def zeekml_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def split_log(path: Path) -> tuple[bytes, list[bytes], list[bytes]]:
    """Header bytes, data lines (with newline) and their uids."""
    header, rows = [], []
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"#"):
                if not line.startswith(b"#close"):
                    header.append(line)
            else:
                rows.append(line)
    uids = [r.split(b"\t", 2)[1] for r in rows]
    return b"".join(header), rows, uids


class OutputWatcher(threading.Thread):
    """Polls the verdict log; records when each uid is first seen (wall clock)."""

    def __init__(self, path: Path, poll: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.poll = poll
        self.seen: dict[bytes, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        pos = 0
        tail = b""
        fh = None
        while not self.stop_flag.is_set():
            if fh is None:
                try:
                    fh = open(self.path, "rb")
                except FileNotFoundError:
                    time.sleep(self.poll)
                    continue
            fh.seek(pos)
            data = fh.read()
            now = time.time()
            if data:
                pos += len(data)
                buf = tail + data
                cut = buf.rfind(b"\n") + 1
                tail = buf[cut:]
                seen = self.seen
                for uid in UID_RE.findall(buf, 0, cut):
                    if uid not in seen:
                        seen[uid] = now
            else:
                time.sleep(self.poll)
        if fh is not None:
            fh.close()


def start_tail(live: Path, out: Path, models: list[str], extra: list[str], err: Path
               ) -> subprocess.Popen:
    return subprocess.Popen(
        zeekml_cmd("-v", "tail", "--all", "--out", str(out), *models, *extra, str(live)),
        cwd=str(REPO), env=env(), stdout=subprocess.DEVNULL, stderr=open(err, "wb"),
    )


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def latency_phase(tmp: Path, header: bytes, rows: list[bytes], uids: list[bytes], rate: float,
                  models: list[str], extra: list[str]) -> dict[str, float]:
    live, out, err = tmp / "live" / "conn.log", tmp / "lat.log", tmp / "lat.err"
    live.parent.mkdir()
    proc = start_tail(live, out, models, extra, err)
    wait_for(lambda: b"does not exist yet" in err.read_bytes(), 60, "tail to start")
    watcher = OutputWatcher(out)
    watcher.start()
    n = len(rows)
    t_write = np.zeros(n)
    tick = 0.01
    with open(live, "wb", buffering=0) as fh:
        fh.write(header)
        t0 = time.time()
        written = 0
        while written < n:
            due = min(n, int((time.time() - t0) * rate))
            if due > written:
                fh.write(b"".join(rows[written:due]))
                t_write[written:due] = time.time()
                written = due
            time.sleep(max(0.0, t0 + (written / rate) + tick - time.time()))
        t_end = time.time()
    wait_for(lambda: len(watcher.seen) >= n, 120, "every verdict")
    watcher.stop_flag.set()
    watcher.join()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    lat = np.array([watcher.seen[u] for u in uids]) - t_write
    return {
        "flows": n, "offered_rate": n / (t_end - t0), "rc": rc,
        "p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)), "max": float(lat.max()),
    }


def scraper(port: int, stop: threading.Event, got: list[int]) -> None:
    """GET /metrics every 0.5 s until ``stop``; counts the good answers in ``got``."""
    import urllib.request

    while not stop.wait(0.5):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                if b"zeekml_flows_scored_total" in r.read():
                    got[0] += 1
        except OSError:
            pass


def follow_backlog(tmp: Path, src: Path, n: int, models: list[str], extra: list[str],
                   name: str) -> float:
    """flows/s of ``zeekml tail`` following ``src`` from its start (start-up excluded)."""
    out, err = tmp / f"{name}.log", tmp / f"{name}.err"
    proc = start_tail(src, out, models, extra, err)
    wait_for(lambda: b"following" in err.read_bytes(), 60, "tail to start")
    t0 = time.time()
    watcher = OutputWatcher(out)
    watcher.start()
    wait_for(lambda: len(watcher.seen) >= n, 600, "every verdict")
    t1 = max(watcher.seen.values())
    watcher.stop_flag.set()
    watcher.join()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return n / (t1 - t0)


def metrics_phase(tmp: Path, src: Path, n: int, models: list[str], extra: list[str]
                  ) -> dict[str, float]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plain, with_metrics = [], []
    stop, got = threading.Event(), [0]
    t = threading.Thread(target=scraper, args=(port, stop, got), daemon=True)
    t.start()
    for i in range(3):  # alternated, medians: the machine's load drifts between runs
        plain.append(follow_backlog(tmp, src, n, models, extra, f"plain{i}"))
        with_metrics.append(follow_backlog(
            tmp, src, n, models, [*extra, "--metrics", f"127.0.0.1:{port}"], f"metrics{i}"))
    stop.set()
    t.join()
    p, m = float(np.median(plain)), float(np.median(with_metrics))
    return {"plain": p, "metrics": m, "ratio": m / p, "scrapes": got[0]}


def throughput_phase(tmp: Path, src: Path, n: int, models: list[str], extra: list[str]
                     ) -> dict[str, float]:
    out, err = tmp / "thr.log", tmp / "thr.err"
    proc = start_tail(src, out, models, extra, err)
    wait_for(lambda: b"following" in err.read_bytes(), 60, "tail to start")
    t0 = time.time()  # start-up (imports, model load) excluded: it follows the file now
    watcher = OutputWatcher(out)
    watcher.start()
    wait_for(lambda: len(watcher.seen) >= n, 600, "every verdict")
    t1 = max(watcher.seen.values())
    watcher.stop_flag.set()
    watcher.join()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    tail_fps = n / (t1 - t0)
    done = subprocess.run(zeekml_cmd("score", "--all", "--out", str(tmp / "score.log"),
                                     *models, str(src)), cwd=str(REPO), env=env(),
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"zeekml score failed: {done.stderr}")
    # score's own figure: from the pipeline's creation (models loaded) to the end
    m = re.search(r"speed: ([\d,]+) flows/s", done.stderr)
    if m is None:
        raise SystemExit(f"no speed in zeekml score's summary: {done.stderr}")
    score_fps = float(m.group(1).replace(",", ""))
    return {"tail_fps": tail_fps, "score_fps": score_fps, "ratio": tail_fps / score_fps}


def first_verdict_after_start(live: Path, out: Path, models: list[str], extra: list[str],
                              err: Path, want: set[bytes]) -> tuple[float, subprocess.Popen]:
    """Seconds from spawning ``zeekml tail`` to the first verdict of a flow in ``want``."""
    watcher = OutputWatcher(out)
    watcher.start()
    t0 = time.time()
    proc = start_tail(live, out, models, extra, err)
    wait_for(lambda: any(u in watcher.seen for u in want), 300, "a first new verdict")
    t1 = min(watcher.seen[u] for u in want if u in watcher.seen)
    watcher.stop_flag.set()
    watcher.join()
    return t1 - t0, proc


def restart_phase(tmp: Path, src: Path, n: int, models: list[str], extra: list[str]
                  ) -> dict[str, float]:
    from gen_conn_log import generate

    d = tmp / "restart"
    d.mkdir()
    live, out, state = d / "conn.log", d / "out.log", d / "state.npz"
    live.write_bytes(src.read_bytes())
    stateful = [*extra, "--state", str(state)]
    proc = start_tail(live, out, models, stateful, d / "1.err")
    watcher = OutputWatcher(out)
    watcher.start()
    wait_for(lambda: len(watcher.seen) >= n, 600, "the backlog")
    watcher.stop_flag.set()
    watcher.join()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    new = d / "new.log"
    generate(new, 1000, seed=3)
    _, new_rows, new_uids = split_log(new)
    with open(live, "ab") as fh:
        fh.write(b"".join(new_rows))
    restart, proc = first_verdict_after_start(live, out, models, stateful, d / "2.err",
                                              set(new_uids))
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    fresh_dir = d / "fresh"
    fresh_dir.mkdir()
    fresh_live = fresh_dir / "conn.log"
    fresh_live.write_bytes(new.read_bytes())
    fresh, proc = first_verdict_after_start(fresh_live, fresh_dir / "out.log", models, extra,
                                            d / "3.err", set(new_uids))
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    return {"restart": restart, "fresh": fresh, "state_bytes": state.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20000.0, help="flows/s written (phase 1)")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of phase 1")
    ap.add_argument("--backlog", type=int, default=300_000, help="rows of phase 2")
    ap.add_argument("--tiny", action="store_true", help="tiny test model, not the bundled ones")
    ap.add_argument("--model", action="append", default=[], metavar="PATH",
                    help="score with this model (repeatable; default: the bundled ones)")
    ap.add_argument("--max-latency", default="0.1", help="tail --max-latency (seconds)")
    ap.add_argument("--metrics-overhead", action="store_true",
                    help="phase 3: the backlog without and with --metrics (scraped)")
    args = ap.parse_args(argv)

    from gen_conn_log import generate

    with tempfile.TemporaryDirectory(prefix="bench_tail_") as d:
        tmp = Path(d)
        models: list[str] = []
        for m in args.model:
            models += ["--model", str(Path(m).resolve())]
        if args.tiny:
            from tests.test_pipeline import build_tiny_model

            for name, w in (("tiny", 4.0), ("tiny2", 3.0)):
                models += ["--model", str(build_tiny_model(tmp / f"{name}.onnx", name, w))]
        extra = ["--max-latency", args.max_latency]
        n1 = int(args.rate * args.seconds)
        src1 = tmp / "src1.log"
        generate(src1, n1, seed=1)
        header, rows, uids = split_log(src1)
        lat = latency_phase(tmp, header, rows, uids, args.rate, models, extra)
        src2 = tmp / "src2.log"
        generate(src2, args.backlog, seed=2)
        thr = throughput_phase(tmp, src2, args.backlog, models, extra)
        rst = restart_phase(tmp, src2, args.backlog, models, extra)
        met = (metrics_phase(tmp, src2, args.backlog, models, extra)
               if args.metrics_overhead else None)
    which = ("tiny test models" if args.tiny else
             ", ".join(Path(m).name for m in args.model) if args.model else "bundled models")
    print(f"zeekml tail benchmark ({which}, --max-latency {args.max_latency}, "
          f"{os.cpu_count()} CPUs)")
    print(f"  phase 1: {lat['flows']:,} flows written at {lat['offered_rate']:,.0f} flows/s; "
          f"write -> verdict latency p50 {lat['p50'] * 1000:.0f} ms, p90 "
          f"{lat['p90'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, max "
          f"{lat['max'] * 1000:.0f} ms (exit code {lat['rc']})")
    print(f"  phase 2: backlog of {args.backlog:,} flows: tail {thr['tail_fps']:,.0f} flows/s; "
          f"baseline zeekml score --all {thr['score_fps']:,.0f} flows/s (its own summary, "
          f"models loaded); ratio tail/score {thr['ratio']:.2f}")
    print(f"  phase 3: restart with a {rst['state_bytes'] / 1e6:,.1f} MB state (the backlog's "
          f"hosts): first new verdict {rst['restart']:.2f} s after the process started; "
          f"fresh start without a state {rst['fresh']:.2f} s (ratio "
          f"{rst['restart'] / rst['fresh']:.2f})")
    if met is not None:
        print(f"  phase 4: the same backlog: tail {met['plain']:,.0f} flows/s; with --metrics "
              f"scraped every 0.5 s ({met['scrapes']} scrapes) {met['metrics']:,.0f} flows/s "
              f"(medians of 3 alternated runs); ratio with/without {met['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
