"""Benchmark: zeekml's Zeek TSV reader against zat's LogToDataFrame, in the same run.

Each reader runs in its own child process (so each peak RSS is its own) over the same
file, after one untimed warm-up read that puts the file in the page cache. Printed:
rows, seconds, rows/s for both, the ratio zeekml/zat, and peak RSS of each process.
A third child times a bare ``pyarrow.csv`` stream over the same data lines with the
same column types (the floor for any pyarrow-based reader), so zeekml's own overhead
shows as a ratio too; on a loaded machine, ratios are the figures to compare.
zeekml's peak is also measured on the first half of the file: a reader whose memory
is bounded by the batch size shows (about) the same peak for both sizes.

Usage: ``python tools/bench_read.py [--file F] [--rows 1000000] [--batch-rows 65536]``
(the file is generated with tools/gen_conn_log.py when missing).

Gzip mode, ``python tools/bench_read.py --format gzip``: the same Zeek TSV conn.log plain
and gzipped (as zeekctl archives it), read by zeekml in child processes, alternately;
printed: rows/s and batches of each and the ratio gzip/plain (a gzipped log must be read
in batches as large as the plain one: the scorers' cost per batch is fixed).

Binetflow mode, ``python tools/bench_read.py --format binetflow [--rows 500000]``: an
Argus binetflow file of ``--rows`` real rows of the shared captures
(``../shared/data/binetflow``, resampled with replacement, start times made increasing,
the tab-separated and SrcPkts-less files brought to the common comma layout) and a Zeek
TSV conn.log with the same number of rows (tools/gen_conn_log.py) are read by zeekml in
child processes, alternately; printed: rows/s of each and the ratio binetflow/Zeek TSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
which, path, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0 = cpu()
if which == "zeekml":
    from zeekml.sources import read_flows, SkipLog
    from zeekml.records import schema
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0, t0 = cpu(), time.perf_counter()
    rows = batches = 0
    skips = SkipLog()
    for batch in read_flows(path, skips=skips, batch_rows=batch_rows):
        rows += len(batch)
        batches += 1
        last = batch
    secs = time.perf_counter() - t0
    schema.validate(last)
    extra = {"skipped": skips.total, "batches": batches}
elif which == "pyarrow":
    # the floor: one pyarrow.csv stream over the data lines with the same column types,
    # no header handling, no pandas conversion, no validation of anything
    import pyarrow as pa, pyarrow.csv as pacsv
    from zeekml.sources.zeek_tsv import STANDARD_FIELDS, ZeekHeader, _make_plan
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0, t0 = cpu(), time.perf_counter()
    plan = _make_plan(ZeekHeader(fields=list(STANDARD_FIELDS)), path)
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                               double_quote=False, invalid_row_handler=lambda row: "skip")
    reader = pacsv.open_csv(path, pacsv.ReadOptions(column_names=plan.names, skip_rows=8,
                            block_size=1 << 22), parse, plan.convert_opts)
    rows = sum(b.num_rows for b in reader)  # the #close line is dropped as invalid
    secs = time.perf_counter() - t0
    extra = {}
else:
    from zat.log_to_dataframe import LogToDataFrame
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0, t0 = cpu(), time.perf_counter()
    df = LogToDataFrame().create_dataframe(path)
    secs = time.perf_counter() - t0
    rows = len(df)
    extra = {}
cpu_secs = cpu() - c0  # includes the reader's imports, the same for all but small
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "secs": secs, "cpu": cpu_secs, "peak_mb": peak / 1024,
                  "import_mb": rss0 / 1024, **extra}))
"""


def run_child(which: str, path: Path, batch_rows: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(path), str(batch_rows)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def half_file(path: Path) -> Path:
    """The header plus the first half of the data lines (for the memory-bound check)."""
    half = path.with_name(path.stem + ".half" + path.suffix)
    if half.exists() and half.stat().st_mtime >= path.stat().st_mtime:
        return half
    size = path.stat().st_size
    with open(path, "rb") as src, open(half, "wb") as dst:
        dst.write(src.read(size // 2))
        dst.write(src.readline())
    return half


BINETFLOW_DIR = (HERE.parent / ".." / "shared" / "data" / "binetflow").resolve()
BINETFLOW_HEADER = ("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,"
                    "TotPkts,TotBytes,SrcBytes,SrcPkts,Label")


def gen_binetflow(out: Path, rows: int, seed: int = 1) -> None:
    """``rows`` real binetflow rows, resampled, in one comma-separated file (see the doc)."""
    names = BINETFLOW_HEADER.split(",")
    pool: list[list[str]] = []
    for src in sorted(BINETFLOW_DIR.glob("*.binetflow")):
        text = src.read_text()
        delim = "\t" if text.split("\n", 1)[0].count("\t") > 3 else ","
        reader = csv.DictReader(io.StringIO(text), delimiter=delim)
        for rec in reader:
            pool.append([rec.get(n, "") or "" for n in names])
    if not pool:
        raise SystemExit(f"no binetflow rows in {BINETFLOW_DIR}")
    rng = random.Random(seed)
    t = 1_554_394_980.0  # 2019-04-04 16:23:00 UTC, increasing at about 1000 flows/s
    with open(out, "w", newline="") as fh:
        fh.write(BINETFLOW_HEADER + "\n")
        for _ in range(rows):
            rec = list(rng.choice(pool))
            t += rng.expovariate(1000.0)
            whole = int(t)
            micro = int(round((t - whole) * 1e6)) % 1_000_000
            rec[0] = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(whole)) + f".{micro:06d}"
            fh.write(",".join(rec) + "\n")


def alternate(files: dict[str, Path], args: argparse.Namespace) -> dict[str, dict]:
    """zeekml reading each file ``args.repeat`` times, the files alternating (so all see the
    same machine load): the fastest run of each."""
    runs: dict[str, list[dict]] = {name: [] for name in files}
    for _ in range(args.repeat):
        for name, path in files.items():
            runs[name].append(run_child("zeekml", path, args.batch_rows))
    return {k: min(v, key=lambda r: r["secs"]) for k, v in runs.items()}


def ensure_conn_log(path: Path, rows: int) -> None:
    """Generate ``path`` (tools/gen_conn_log.py, ``rows`` rows) unless it exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "gen_conn_log.py"), str(path),
                        "--rows", str(rows)], check=True)


def rate(r: dict) -> float:
    return r["rows"] / r["secs"]


def run_line(path: Path, r: dict) -> str:
    """The file, its size, and a child's rows, seconds and rows/s."""
    return (f"{path} ({path.stat().st_size / 1e6:.1f} MB) rows={r['rows']:>9d} "
            f"secs={r['secs']:.3f} rows/s={rate(r):>12,.0f}")


def bench_binetflow(args: argparse.Namespace) -> int:
    folder = Path("/tmp/zeekml-bench")
    folder.mkdir(parents=True, exist_ok=True)
    bnf = folder / f"bench-{args.rows}.binetflow"
    zeek = folder / f"conn-{args.rows}.log"
    if not bnf.exists():
        gen_binetflow(bnf, args.rows)
    ensure_conn_log(zeek, args.rows)
    bnf.read_bytes(), zeek.read_bytes()  # warm the page cache
    best = alternate({"zeek_tsv": zeek, "binetflow": bnf}, args)
    for name, path in (("binetflow", bnf), ("zeek_tsv", zeek)):
        r = best[name]
        print(f"{name:9s} {run_line(path, r)} rows/cpu-s={r['rows'] / r['cpu']:>12,.0f} "
              f"skipped={r.get('skipped', 0)} peak_rss={r['peak_mb']:.0f} MB")
    print(f"ratio binetflow/zeek_tsv rows/s: {rate(best['binetflow']) / rate(best['zeek_tsv']):.2f}x "
          f"(best of {args.repeat} alternating runs each)")
    return 0


def bench_gzip(args: argparse.Namespace) -> int:
    import gzip

    ensure_conn_log(args.file, args.rows)
    packed = args.file.with_name(args.file.name + ".gz")
    if not packed.exists() or packed.stat().st_mtime < args.file.stat().st_mtime:
        packed.write_bytes(gzip.compress(args.file.read_bytes(), compresslevel=6))
    args.file.read_bytes(), packed.read_bytes()  # warm the page cache
    best = alternate({"plain": args.file, "gzip": packed}, args)
    for name, path in (("plain", args.file), ("gzip", packed)):
        r = best[name]
        print(f"{name:5s} {run_line(path, r)} batches={r['batches']} "
              f"peak_rss={r['peak_mb']:.0f} MB")
    print(f"ratio gzip/plain rows/s: {rate(best['gzip']) / rate(best['plain']):.2f}x; batches "
          f"{best['gzip']['batches']} vs {best['plain']['batches']} (best of {args.repeat} "
          "alternating runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=Path("/tmp/zeekml-bench/conn.log"))
    ap.add_argument("--rows", type=int, default=None,
                    help="rows when generating (default 1000000; 500000 for binetflow)")
    ap.add_argument("--batch-rows", type=int, default=65536)
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed runs per reader, best kept (default 2; 3 for binetflow)")
    ap.add_argument("--format", choices=("zeek", "binetflow", "gzip"), default="zeek",
                    help="zeek: zeekml vs zat vs raw pyarrow (default); binetflow: the Argus "
                         "reader vs the Zeek TSV reader on files of equal row count; gzip: "
                         "the Zeek TSV file plain vs gzipped")
    args = ap.parse_args(argv)
    if args.format == "binetflow":
        args.rows = args.rows or 500_000
        args.repeat = args.repeat or 3
        return bench_binetflow(args)
    args.rows = args.rows or 1_000_000
    args.repeat = args.repeat or 2
    if args.format == "gzip":
        return bench_gzip(args)
    ensure_conn_log(args.file, args.rows)
    args.file.read_bytes()  # warm the page cache
    results = {}
    for which in ("zat", "pyarrow", "zeekml"):
        runs = [run_child(which, args.file, args.batch_rows) for _ in range(args.repeat)]
        results[which] = min(runs, key=lambda r: r["secs"])
    half = run_child("zeekml", half_file(args.file), args.batch_rows)
    size_mb = args.file.stat().st_size / 1e6
    print(f"file: {args.file} ({size_mb:.1f} MB, {results['zeekml']['rows']} rows)")
    for which in ("zat", "pyarrow", "zeekml"):
        r = results[which]
        print(
            f"{which:7s} rows={r['rows']:>9d} secs={r['secs']:.3f} rows/s={r['rows'] / r['secs']:>12,.0f} "
            f"cpu={r['cpu']:.3f}s rows/cpu-s={r['rows'] / r['cpu']:>12,.0f} "
            f"peak_rss={r['peak_mb']:.0f} MB (after imports {r['import_mb']:.0f} MB)"
        )
    z, b = results["zeekml"], results["zat"]
    f = results["pyarrow"]
    print(
        f"ratio zeekml/zat rows per CPU-second: {(z['rows'] / z['cpu']) / (b['rows'] / b['cpu']):.2f}x"
    )
    print(f"ratio zeekml/zat rows/s: {(z['rows'] / z['secs']) / (b['rows'] / b['secs']):.2f}x")
    print(
        f"ratio zeekml/raw-pyarrow rows/s: {(z['rows'] / z['secs']) / (f['rows'] / f['secs']):.2f}x "
        "(raw pyarrow: parse only, no header handling, validation or pandas conversion)"
    )
    print(
        f"zeekml peak RSS: full file {z['peak_mb']:.0f} MB, half file {half['peak_mb']:.0f} MB "
        f"(batch_rows={args.batch_rows})"
    )
    if z["rows"] != b["rows"]:
        print(f"WARNING: row counts differ (zeekml {z['rows']}, zat {b['rows']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
