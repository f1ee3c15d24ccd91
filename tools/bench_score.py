"""Benchmark ``zeekml score`` end to end against zat merely loading the same file.

Both run in fresh subprocesses, one after the other, on the same file in the same
invocation, so the ratio compares like with like on whatever machine runs it:

* ``zeekml score`` (default: every bundled model; ``--model`` to choose) reading the
  file, scoring every flow, writing notices (``--all``: every verdict) to a Zeek log,
  with ``--state`` so the per-host state is saved and can be measured;
* zat's ``LogToDataFrame().create_dataframe(FILE)``: parsing into a DataFrame only.

Printed: flows/s of each and the ratio, peak RSS of each process, and the saved
per-host state of each model (bytes per tracked key, from the state file's arrays).
The input is generated with ``tools/gen_conn_log.py`` (real rows of the shared
captures, varied) unless ``--file`` names an existing conn.log.

``--hosts`` makes the input ``--rows`` distinct local hosts (10.0.0.0/8) each sending one
SYN to a distinct outside address (100.64.0.0/10), so every flow opens a new key in each
model's per-host (local side) and per-conversation state: the memory worst case (target
< 1.5 GB at 1M hosts).

``--archive DIR`` measures many small inputs instead: a zeekctl archive (dated folders of
hourly gzipped conn logs; default the shared RITA archive, 72 files) scored as it is and
the same flows as one plain conn.log (data lines joined under the first file's header),
alternately ``--repeat`` times, both with ``--state``; printed: flows/s of each and the
ratio archive/one file (small inputs are joined into scoring batches: it should be near 1).

Usage: ``python tools/bench_score.py [--rows 1000000] [--file F] [--hosts] [--model M ...] [--all]``
``python tools/bench_score.py --archive [DIR] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

ZAT_CODE = """
import sys, time
from zat.log_to_dataframe import LogToDataFrame
t = time.perf_counter()
df = LogToDataFrame().create_dataframe(sys.argv[1])
print(len(df), time.perf_counter() - t)
"""


SCAN_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
    "#path\tconn\n#open\t2024-01-01-00-00-00\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\t"
    "duration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tmissed_bytes\thistory\t"
    "orig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\t"
    "count\tstring\tbool\tcount\tstring\tcount\tcount\tcount\tcount\ttable[string]\n"
)


def _dotted(addr: np.ndarray) -> list[str]:
    return [f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}" for a in addr.tolist()]


def write_scan(path: Path, rows: int, start: float = 1_700_000_000.0) -> None:
    """``rows`` distinct local hosts (10.0.0.0/8 upward), each sending one SYN to a distinct
    outside address (100.64.0.0/10 upward), 1 ms apart."""
    i = np.arange(rows, dtype=np.int64)
    src = _dotted(0x0A000000 + 1 + i)
    dotted = _dotted(0x64400000 + 1 + i)
    ts = start + i * 0.001
    with path.open("w") as fh:
        fh.write(SCAN_HEADER)
        for k in range(0, rows, 100_000):
            fh.write("".join(
                f"{ts[j]:.6f}\tCscan{j:013d}\t{src[j]}\t{40000 + j % 20000}\t{dotted[j]}"
                "\t23\ttcp\t-\t-\t-\t-\tS0\t-\t0\tS\t1\t44\t0\t0\t(empty)\n"
                for j in range(k, min(rows, k + 100_000))))
        fh.write("#close\t2024-01-01-00-00-00\n")


def _child_peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``cmd`` in a fresh process: (seconds, peak RSS MiB, stdout). One at a time:
    RUSAGE_CHILDREN's maximum is over all children so far, so the larger run goes last
    or the figure is read from /proc when the kernel provides it."""
    t = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          text=True) as p:
        peak = 0
        status = f"/proc/{p.pid}/status"
        while p.poll() is None:
            try:
                with open(status) as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)
        out, err = p.communicate()
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        sys.stderr.write(err)
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    peak = max(peak, 0) or _child_peak_kib()
    return seconds, peak // 1024, out + err


def _state_bytes_per_key(state_path: Path) -> dict[str, tuple[int, int]]:
    """Per model: (tracked keys, bytes of its state arrays) from a saved state file."""
    from zeekml.runtime.state import StateStore

    st = StateStore(state_path).load()
    out = {}
    for name, arrays in (st.scorers if st else {}).items():
        # keys as UTF-8 bytes with n + 1 offsets (state version 2), or a str array (1)
        keys = max([len(a) - 1 for k, a in arrays.items() if k.endswith("keys_offsets")]
                   + [len(a) for k, a in arrays.items() if k == "keys" or k.endswith("_keys")]
                   + [0])
        out[name] = (keys, sum(int(np.asarray(a).nbytes) for a in arrays.values()))
    return out


ARCHIVE = REPO.parent / "shared" / "data" / "zeek" / "rita-rotated-archive"


def _archive_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*/conn.*.log.gz")) or sorted(root.glob("*/conn.*.log"))
    if not files:
        raise SystemExit(f"no zeekctl archive (DIR/YYYY-MM-DD/conn.*.log.gz) under {root}")
    return files


def _one_file(files: list[Path], out: Path) -> None:
    """The archive's flows as one plain conn.log: the first file's header, every file's
    data lines in order, one #close."""
    import gzip

    def lines(p: Path) -> list[str]:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt") as fh:
            return fh.read().splitlines()

    first = lines(files[0])
    with out.open("w") as fh:
        fh.write("\n".join(x for x in first if x.startswith("#") and not x.startswith("#close")))
        fh.write("\n")
        for p in files:
            body = [x for x in lines(p) if x and not x.startswith("#")]
            if body:
                fh.write("\n".join(body) + "\n")
        fh.write("#close\t2024-01-01-00-00-00\n")


def bench_archive(root: Path, repeat: int, threads: int) -> int:
    files = _archive_files(root)
    tmp = Path(tempfile.mkdtemp(prefix="zeekml-bench-"))
    plain = tmp / "conn.log"
    _one_file(files, plain)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    runs: dict[str, list[float]] = {"archive": [], "one file": []}
    flows = 0
    for _ in range(repeat):
        for name, inp in (("archive", root), ("one file", plain)):
            state = tmp / "state.npz"
            state.unlink(missing_ok=True)
            secs, _, out = _run([sys.executable, "-m", "zeekml.cli.main", "score", str(inp),
                                 "--out", str(tmp / "zeekml.log"), "--state", str(state),
                                 "--threads", str(threads)], env)
            flows = int(next(x for x in out.splitlines() if "flows read" in x).split()[-1])
            runs[name].append(flows / secs)
    print(f"{len(files)} files, {flows:,} flows ({root})")
    for name, rates in runs.items():
        print(f"{name:9s} " + " / ".join(f"{r:,.0f}" for r in rates) + " flows/s "
              "(whole process, --state)")
    ratio = [a / b for a, b in zip(runs["archive"], runs["one file"], strict=True)]
    print("ratio archive / one file: " + " / ".join(f"{r:.2f}" for r in ratio))
    print(json.dumps({"files": len(files), "flows": flows, **{
        k.replace(" ", "_"): [round(r) for r in v] for k, v in runs.items()},
        "ratio": [round(r, 2) for r in ratio]}))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--file", type=Path, help="an existing conn.log to use instead")
    ap.add_argument("--model", action="append", default=[], help="model (default: bundled)")
    ap.add_argument("--all", action="store_true", help="write every verdict, not only notices")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the generated file and outputs")
    ap.add_argument("--hosts", action="store_true",
                    help="input: a scan of --rows distinct hosts (memory worst case)")
    ap.add_argument("--archive", type=Path, nargs="?", const=ARCHIVE,
                    help="a zeekctl archive scored as it is vs as one file (default: the "
                         "shared RITA archive)")
    ap.add_argument("--repeat", type=int, default=2, help="--archive: alternating runs")
    args = ap.parse_args(argv)
    if args.archive is not None:
        return bench_archive(args.archive, args.repeat, args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="zeekml-bench-"))
    path = args.file
    if path is None and args.hosts:
        path = tmp / "scan.log"
        write_scan(path, args.rows)
    elif path is None:
        path = tmp / "conn.log"
        subprocess.run([sys.executable, str(REPO / "tools" / "gen_conn_log.py"), str(path),
                        "--rows", str(args.rows)], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    score_cmd = [sys.executable, "-m", "zeekml.cli.main", "score", str(path),
                 "--out", str(tmp / "zeekml.log"), "--state", str(tmp / "state.npz"),
                 "--threads", str(args.threads)]
    for m in args.model:
        score_cmd += ["--model", m]
    if args.all:
        score_cmd.append("--all")

    zat_s, zat_mib, zat_out = _run([sys.executable, "-c", ZAT_CODE, str(path)], env)
    rows = int(zat_out.split()[0])
    zat_load = float(zat_out.split()[1])
    score_s, score_mib, score_out = _run(score_cmd, env)
    per_key = _state_bytes_per_key(tmp / "state.npz")

    result = {
        "file": str(path),
        "flows": rows,
        "zeekml_score_seconds": round(score_s, 2),
        "zeekml_score_flows_per_s": round(rows / score_s),
        "zeekml_peak_rss_mib": score_mib,
        "zat_load_seconds_in_process": round(zat_load, 2),
        "zat_process_seconds": round(zat_s, 2),
        "zat_flows_per_s": round(rows / zat_s),
        "zat_peak_rss_mib": zat_mib,
        "ratio_zeekml_time_over_zat_time": round(score_s / zat_s, 2),
        "state_per_model": {m: {"keys": k, "bytes": b, "bytes_per_key": round(b / k) if k else None}
                            for m, (k, b) in per_key.items()},
    }
    print(f"flows: {rows:,}  ({path})")
    print(f"zeekml score: {score_s:7.2f} s  {rows / score_s:>10,.0f} flows/s  peak {score_mib} MiB")
    print(f"zat load:     {zat_s:7.2f} s  {rows / zat_s:>10,.0f} flows/s  peak {zat_mib} MiB "
          f"(DataFrame build alone {zat_load:.2f} s)")
    print(f"ratio: zeekml score takes {score_s / zat_s:.2f}x zat's load time "
          f"({'faster' if score_s < zat_s else 'slower'} than zat loads)")
    for m, (k, b) in per_key.items():
        print(f"state {m}: {k:,} keys, {b / 1e6:.1f} MB, {b / k if k else 0:.0f} bytes per key")
    print("summary of the zeekml run:\n" + "\n".join("  " + ln for ln in score_out.splitlines()))
    print(json.dumps(result))
    if not args.keep:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
