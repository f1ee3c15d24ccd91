"""Benchmark: NetFlow pairing against the reader's own cost, in the same run.

The input is real: the one-way records of every shared nfcapd capture (read through the
real ``nfdump -o json``), repeated until ``--rows`` records, each copy moved on in time
(so copies follow each other like more hours of the same networks) and given other
client ports (so a copy's records do not pair with another copy's), written as nfdump
NDJSON (``-o ndjson``, what zeekml reads nfcapd files through). Then, in one child
process per batch size:

* ``read``:   zeekml's nfdump reader over the file (records/s), batches kept in memory;
* ``pair``:   the same batches through one :class:`~zeekml.sources.biflow.Pairer`
              (push every batch, then finish): records/s, and the ratio pair/read
              (how much pairing adds to reading);
* ``held``:   the most records held (open, or decided but waiting behind an open one)
              after any push, and the peak RSS growth while pairing;
* ``passthrough``: Zeek conn.log rows (no NetFlow: nothing to pair) through a Pairer,
              rows/s against reading them (what pairing costs a Zeek-only run).

Usage: ``python tools/bench_pair.py [--rows 500000] [--batch-rows 65536 16384 1024]``.
The machine may be loaded: compare the ratios, which are measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "nfdump"

CHILD = r"""
import json, resource, sys, time
import numpy as np
path, zeek, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
from zeekml.sources import read_flows, SkipLog
from zeekml.sources.biflow import Pairer
def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
t0, c0 = time.perf_counter(), time.process_time()
batches = list(read_flows(path, skips=SkipLog(), batch_rows=batch_rows))
t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
records = sum(len(b) for b in batches)
base = rss_mb()
p = Pairer()
peak_held, peak_rss, flows, c_pair = 0, base, 0, 0.0
t0 = time.perf_counter()
for b in batches:
    c0 = time.process_time()
    flows += len(p.push(b))
    c_pair += time.process_time() - c0
    peak_held = max(peak_held, p.held + p.waiting)
    peak_rss = max(peak_rss, rss_mb())
c0 = time.process_time()
flows += len(p.finish())
c_pair += time.process_time() - c0
t_pair = time.perf_counter() - t0
zb = list(read_flows(zeek, skips=SkipLog(), batch_rows=batch_rows))
c0 = time.process_time()
zb2 = list(read_flows(zeek, skips=SkipLog(), batch_rows=batch_rows))
t_zread = time.process_time() - c0
q = Pairer()
c0 = time.process_time()
zrows = sum(len(q.push(b)) for b in zb) + len(q.finish())
t_zpair = time.process_time() - c0
print(json.dumps({"records": records, "flows": flows, "pairs": p.stats.pairs,
                  "t_read": t_read, "t_pair": t_pair, "c_read": c_read, "c_pair": c_pair,
                  "peak_held": peak_held,
                  "rss_growth_mb": peak_rss - base, "zeek_rows": zrows,
                  "t_zread": t_zread, "t_zpair": t_zpair}))
"""


def source_records() -> list[dict]:
    """Every record of the shared nfcapd captures, as nfdump's JSON objects."""
    env = {**os.environ, "TZ": "UTC"}
    out: list[dict] = []
    for d in sorted(SHARED.glob("*/nfcapd")):
        text = subprocess.run(["nfdump", "-R", str(d), "-o", "json"], env=env, check=True,
                              capture_output=True, text=True).stdout
        if text.strip().startswith("["):
            out.extend(r for r in json.loads(text) if r.get("type") == "FLOW")
    return out


def _shift(stamp: str, seconds: int) -> str:
    import datetime as dt

    t = dt.datetime.fromisoformat(stamp) + dt.timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds")


def make_input(path: Path, rows: int) -> int:
    """Write ``rows`` records (copies of the shared ones, moved on) as nfdump NDJSON."""
    recs = source_records()
    n = 0
    with open(path, "w") as fh:
        copy = 0
        while n < rows:
            shift = copy * 86400 * 7  # a week later per copy: never overlaps a copy
            for r in recs:
                if n >= rows:
                    break
                o = dict(r)
                o["first"], o["last"] = _shift(r["first"], shift), _shift(r["last"], shift)
                for k in ("src_port", "dst_port"):  # other client ports per copy
                    if k in o and o[k] >= 1024:
                        o[k] = 1024 + (o[k] + 7919 * copy) % 64000
                fh.write(json.dumps(o, separators=(",", ":")) + "\n")
                n += 1
            copy += 1
    return n


def make_zeek(path: Path, rows: int) -> None:
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_conn_log.py"), "--rows", str(rows),
                    str(path)], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--batch-rows", type=int, nargs="+", default=[65536, 16384, 1024])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pair-") as tmp:
        nf = Path(tmp) / "records.ndjson"
        zeek = Path(tmp) / "conn.log"
        n = make_input(nf, args.rows)
        make_zeek(zeek, min(args.rows, 200_000))
        print(f"input: {n} one-way NetFlow records (shared nfcapd captures, repeated), "
              f"nfdump NDJSON {nf.stat().st_size / 1e6:.0f} MB")
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
        for br in args.batch_rows:
            res = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(nf), str(zeek),
                                             str(br)], env=env, check=True,
                                            capture_output=True, text=True).stdout)
            n = res["records"]
            zn = res["zeek_rows"]
            print(f"batch {br:6d}: read {n / res['c_read']:9,.0f} records/s CPU "
                  f"({n / res['t_read']:9,.0f} wall) | pair {n / res['c_pair']:9,.0f} records/s "
                  f"CPU ({n / res['t_pair']:9,.0f} wall) | pairing/reading CPU "
                  f"{res['c_pair'] / res['c_read']:.2f}x (wall {res['t_pair'] / res['t_read']:.2f}x)")
            print(f"              {n} records -> {res['flows']} flows ({res['pairs']} pairs); "
                  f"most held {res['peak_held']} records, RSS +{res['rss_growth_mb']:.0f} MiB")
            print(f"              Zeek rows (nothing to pair): read {zn / res['t_zread']:10,.0f} "
                  f"rows/s CPU, through the pairer {zn / res['t_zpair']:12,.0f} rows/s CPU "
                  f"({res['t_zpair'] / res['t_zread']:.3f}x the reading time)")


if __name__ == "__main__":
    main()
