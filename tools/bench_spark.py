"""Benchmark the Spark engine (local mode) against the local engine on the same files.

Both run ``zeekml score --all`` in fresh subprocesses, one after the other, on the same
generated conn logs in the same invocation, so the ratio compares like with like on
whatever machine runs it:

* local engine: ``zeekml score --all --threads T`` (one process, onnxruntime threads T);
* Spark engine: ``zeekml score --engine spark --spark-master local[C] --all`` (C cores;
  each Python worker runs onnxruntime with one thread).

Printed: flows/s of each, wall time including start-up (the Spark session alone takes
about 15 s), the Spark engine's own time from its summary line (reading, scoring,
suppression, writing; without session start-up), the ratios, and the peak RSS
(``VmHWM``) of the Spark engine's Python workers (the memory an executor core needs
besides the JVM). The inputs are made
with ``tools/gen_conn_log.py`` (real rows of the shared captures, varied): ``--files``
files of ``--rows / --files`` flows each, so the Spark engine can read them in
parallel (one task per file). Both engines must write the same number of verdicts.

Usage: ``python tools/bench_spark.py [--rows 400000] [--files 8] [--cores 2]
[--model M ...]``
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEED = re.compile(r"speed: ([\d,]+) flows/s \(([\d.]+) s")


class WorkerPeak:
    """Largest VmHWM (peak RSS) of any pyspark Python worker seen while running."""

    def __init__(self) -> None:
        self.kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        if b"pyspark.daemon" not in fh.read():  # workers are forked from it
                            continue
                    with open(f"/proc/{pid}/status") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                self.kib = max(self.kib, int(line.split()[1]))
                except OSError:
                    continue
            self._stop.wait(0.2)

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return wall, p.stderr


def _engine_seconds(stderr: str) -> float:
    m = SPEED.search(stderr)
    return float(m.group(2)) if m else float("nan")


def _count_rows(path: Path) -> int:
    files = [path] if path.is_file() else sorted(path.glob("part-*.log"))
    return sum(1 for f in files for line in f.open() if line and not line.startswith("#"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cores", type=int, default=2, help="Spark local[C] and local threads")
    ap.add_argument("--model", action="append", default=[], help="model (default: bundled)")
    args = ap.parse_args()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    models = [a for m in args.model for a in ("--model", m)]
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        d = Path(tmp)
        per = args.rows // args.files
        inputs = []
        for i in range(args.files):
            out = d / "in" / f"conn.{i:04d}.log"
            out.parent.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, str(REPO / "tools" / "gen_conn_log.py"), str(out),
                  "--rows", str(per), "--seed", str(i + 1)], env)
            inputs.append(str(out))
        flows = per * args.files
        zeekml = [sys.executable, "-m", "zeekml.cli.main"]
        local_wall, local_err = _run([*zeekml, "score", "--all", "--threads", str(args.cores),
                                      *models, "--out", str(d / "local.log"), *inputs], env)
        with WorkerPeak() as peak:
            spark_wall, spark_err = _run([*zeekml, "score", "--engine", "spark",
                                          "--spark-master", f"local[{args.cores}]", "--all",
                                          *models, "--out", str(d / "spark"), *inputs], env)
        n_local, n_spark = _count_rows(d / "local.log"), _count_rows(d / "spark")
        if n_local != n_spark:
            sys.exit(f"the engines wrote {n_local} and {n_spark} verdicts")
        spark_own = _engine_seconds(spark_err)
        print(f"input: {flows:,} flows in {args.files} files; {n_local:,} verdicts each")
        print(f"local engine (threads {args.cores}):  {flows / local_wall:10,.0f} flows/s "
              f"({local_wall:.1f} s wall)")
        print(f"spark engine (local[{args.cores}]):   {flows / spark_wall:10,.0f} flows/s "
              f"({spark_wall:.1f} s wall, incl. session start-up)")
        print(f"spark engine, own time:     {flows / spark_own:10,.0f} flows/s "
              f"({spark_own:.1f} s, without session start-up)")
        print(f"ratio spark/local: {local_wall / spark_wall:.2f} (wall), "
              f"{local_wall / spark_own:.2f} (spark's own time)")
        print(f"peak RSS of a Spark Python worker: {peak.kib / 1024:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
