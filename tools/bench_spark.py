"""Benchmark the Spark engine (local mode) against the local engine, per core, same run.

Both engines score the same generated conn logs (``tools/gen_conn_log.py``: real rows of
the shared captures, varied) in fresh subprocesses, one after the other, in the same
invocation, so the ratios compare like with like on whatever machine runs it:

* local engine: ``zeekml score --all --threads T`` (one process; onnxruntime threads T);
* Spark engine: a driver process that starts a session on ``local[C]`` (timed and
  reported separately: the JVM start), then runs :func:`zeekml.runtime.spark.score_files`
  with the options ``zeekml score --engine spark --all`` uses (each Python worker runs
  onnxruntime on one thread). Only the scoring run is measured: its wall time, and the
  CPU time of the driver, the JVM and every Python worker during it (``/proc``: each
  process's own and reaped children's time, sampled before and after).

Throughput per core:

* local: flows per CPU-second of its process (flows/s divided by the cores it kept busy);
* Spark: flows/s divided by C (the cores it was given), and, because a shared machine
  does not give it C whole cores, also flows per CPU-second of the whole process tree.

The target of issue 14: Spark local[2] >= 0.6x the local engine's throughput per core.
Printed besides: the Spark stages' own timings (its debug log), the CPU split between the
JVM and the Python workers, peak RSS of the local process and of a Spark Python worker
(``VmHWM``: what an executor core needs besides the JVM heap). The engines must give the
same verdicts: every (uid, model, verdict, notice, n) equal, scores within 1e-5, or the
benchmark fails.

Usage: ``python tools/bench_spark.py [--rows 1000000] [--files 8] [--cores 2]
[--threads 2] [--model M ...] [--conf KEY=VALUE ...] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")

#: the Spark driver: start a session, wait for "go", score, report, wait for "stop"
DRIVER = r"""
import json, logging, os, sys, time, warnings
sys.path.insert(0, sys.argv[1])
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
logging.getLogger("zeekml.runtime.spark").setLevel(logging.DEBUG)
from zeekml.policy.notice import PolicyConfig
from zeekml.runtime.spark import SparkOptions, get_session, score_files
args = json.loads(sys.argv[2])
t = time.perf_counter()
conf = {"spark.ui.showConsoleProgress": "false", **args["conf"]}
spark = get_session(args["master"], conf=conf, jvm_log=args["jvm_log"])
print("ready", time.perf_counter() - t, flush=True)
sys.stdin.readline()
t = time.perf_counter()
counts = score_files(spark, args["inputs"], args["out"], models=args["models"] or None,
                     config=PolicyConfig(all_flows=True),
                     options=SparkOptions(threads=1, batch_rows=65536), out_format="zeek")
wall = time.perf_counter() - t
print("done", json.dumps({"wall": wall, "flows": counts.flows_scored,
                          "rows": counts.rows_written, "files": len(counts.outputs)}),
      flush=True)
sys.stdin.readline()
spark.stop()
"""


def _stat(pid: str) -> tuple[int, float, str] | None:
    """(parent pid, CPU seconds of the process and its reaped children, command line)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    # fields after the command: state ppid ... utime(14) stime(15) cutime(16) cstime(17)
    ticks = sum(int(x) for x in rest[11:15])
    return int(rest[1]), ticks / TICK, cmd


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of the process tree under ``root``, by kind (driver, jvm,
    python workers). A worker that exited counts through its parent's reaped time."""
    procs = {p: s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p))}
    children: dict[int, list[int]] = {}
    for p, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(int(p))
    out = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    todo = [root]
    while todo:
        pid = todo.pop()
        s = procs.get(str(pid))
        if s is None:
            continue
        _, cpu, cmd = s
        exe = os.path.basename(cmd.split(" ", 1)[0])
        kind = ("driver" if pid == root else "jvm" if exe == "java"
                else "workers" if "pyspark" in cmd else "driver")
        out[kind] += cpu
        todo.extend(children.get(pid, []))
    return out


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


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run ``cmd``: (wall s, CPU s, peak RSS MiB, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss // 1024, p.stderr


def run_spark(inputs: list[str], out: Path, cores: int, models: list[str],
              conf: dict[str, str], env: dict[str, str]) -> dict:
    """The Spark driver in a subprocess: session start, then the measured scoring run."""
    fd, jvm_log = tempfile.mkstemp(prefix="bench-spark-jvm-", suffix=".log")
    os.close(fd)
    args = {"master": f"local[{cores}]", "inputs": inputs, "out": str(out), "models": models,
            "conf": conf, "jvm_log": jvm_log}
    with subprocess.Popen([sys.executable, "-c", DRIVER, str(REPO), json.dumps(args)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as p:
        assert p.stdin is not None and p.stdout is not None and p.stderr is not None
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(p.stderr), daemon=True)
        reader.start()
        line = p.stdout.readline()
        if not line.startswith("ready"):
            p.kill()
            reader.join()
            sys.exit(f"the Spark driver failed: {line}{''.join(err)[-3000:]}\n"
                     f"(JVM log: {jvm_log})")
        session = float(line.split()[1])
        cpu0 = tree_cpu(p.pid)
        with WorkerPeak() as peak:
            p.stdin.write("go\n")
            p.stdin.flush()
            line = p.stdout.readline()
            cpu1 = tree_cpu(p.pid)
        if not line.startswith("done"):
            p.kill()
            reader.join()
            sys.exit(f"the Spark run failed: {''.join(err)[-3000:]}\n(JVM log: {jvm_log})")
        res = json.loads(line.split(" ", 1)[1])
        p.stdin.write("stop\n")
        p.stdin.flush()
        p.wait()
        reader.join()
    os.unlink(jvm_log)
    res.update(session=session, worker_mib=peak.kib / 1024,
               cpu={k: cpu1[k] - cpu0[k] for k in cpu0},
               stages=[ln for ln in "".join(err).splitlines() if re.search(r": [\d.]+ s$", ln)])
    return res


def read_verdicts(path: Path):
    """(uid, model, verdict, notice, n, score) of every row of Zeek log(s), sorted."""
    import pandas as pd

    files = [path] if path.is_file() else sorted(path.glob("part-*.log"))
    frames = []
    for f in files:
        with f.open() as fh:
            fields = next(ln for ln in fh if ln.startswith("#fields")).rstrip("\n").split("\t")[1:]
        frames.append(pd.read_csv(f, sep="\t", comment="#", header=None, names=fields,
                                  usecols=["uid", "model", "verdict", "notice", "n", "score"],
                                  dtype={"uid": str, "model": str, "verdict": str,
                                         "notice": str, "n": str}, na_filter=False,
                                  quoting=3))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["uid", "model"], kind="stable").reset_index(drop=True)


def same_verdicts(local: Path, spark: Path) -> str | None:
    """None when both outputs hold the same verdicts, else what differs."""
    import numpy as np

    a, b = read_verdicts(local), read_verdicts(spark)
    if len(a) != len(b):
        return f"{len(a)} local verdicts, {len(b)} from Spark"
    for c in ("uid", "model", "verdict", "notice", "n"):
        bad = np.nonzero(a[c].to_numpy() != b[c].to_numpy())[0]
        if len(bad):
            return f"column {c} differs in {len(bad)} rows, e.g. {a.iloc[bad[0]].to_dict()} vs " \
                   f"{b.iloc[bad[0]].to_dict()}"
    diff = np.abs(a["score"].to_numpy(float) - b["score"].to_numpy(float))
    if np.nanmax(diff, initial=0.0) > 1e-5:
        return f"scores differ by up to {np.nanmax(diff):.2e}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cores", type=int, default=2, help="Spark local[C]")
    ap.add_argument("--threads", type=int, default=2, help="the local engine's --threads")
    ap.add_argument("--model", action="append", default=[], help="model (default: bundled)")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Spark configuration for the Spark run")
    ap.add_argument("--keep", type=Path, help="generate the inputs into DIR and keep them "
                    "(reused when they are there)")
    args = ap.parse_args()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    models = [a for m in args.model for a in ("--model", m)]
    conf = dict(kv.split("=", 1) for kv in args.conf)
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        d = Path(tmp)
        src = args.keep or d / "in"
        src.mkdir(parents=True, exist_ok=True)
        per = args.rows // args.files
        inputs = []
        for i in range(args.files):
            out = src / f"conn.{per}.{i:04d}.log"
            if not out.exists():
                _run([sys.executable, str(REPO / "tools" / "gen_conn_log.py"), str(out),
                      "--rows", str(per), "--seed", str(i + 1)], env)
            inputs.append(str(out))
        flows = per * args.files
        load = os.getloadavg()
        zeekml = [sys.executable, "-m", "zeekml.cli.main"]
        l_wall, l_cpu, l_mib, _ = _run([*zeekml, "score", "--all", "--threads",
                                        str(args.threads), *models, "--out",
                                        str(d / "local.log"), *inputs], env)
        s = run_spark(inputs, d / "spark", args.cores, args.model, conf, env)
        load = tuple(max(a, b) for a, b in zip(load, os.getloadavg(), strict=True))
        differs = same_verdicts(d / "local.log", d / "spark")
        if differs:
            sys.exit(f"the engines' verdicts differ: {differs}")
        s_cpu = sum(s["cpu"].values())
        local_core = flows / l_cpu
        spark_core = flows / s["wall"] / args.cores
        spark_cpu_core = flows / s_cpu
        print(f"input: {flows:,} flows in {args.files} files; {s['rows']:,} verdicts, the same "
              f"from both engines; load average (max seen) {load[0]:.1f} on {os.cpu_count()} "
              "cores")
        print(f"local engine (--threads {args.threads}): {flows / l_wall:9,.0f} flows/s "
              f"({l_wall:.1f} s wall incl. start, {l_cpu:.1f} s CPU = {l_cpu / l_wall:.2f} "
              f"cores busy); peak RSS {l_mib:,} MiB")
        print(f"spark engine (local[{args.cores}]):   {flows / s['wall']:9,.0f} flows/s "
              f"({s['wall']:.1f} s wall without session start; {s_cpu:.1f} s CPU: JVM "
              f"{s['cpu']['jvm']:.1f}, Python workers {s['cpu']['workers']:.1f}, driver "
              f"{s['cpu']['driver']:.1f}); {s['files']} files written")
        print(f"spark session start (JVM), excluded above: {s['session']:.1f} s")
        print(f"peak RSS of a Spark Python worker: {s['worker_mib']:,.0f} MiB")
        print(f"per core: local {local_core:,.0f} flows/s per busy core (flows per CPU-s); "
              f"spark {spark_core:,.0f} flows/s per given core (flows/s / {args.cores}), "
              f"{spark_cpu_core:,.0f} flows per CPU-s")
        print(f"ratio spark/local per core: {spark_core / local_core:.2f} (spark per given "
              f"core), {spark_cpu_core / local_core:.2f} (both per CPU-second); target >= 0.6")
        print(f"ratio spark/local wall: {l_wall / s['wall']:.2f} (local wall incl. its start, "
              "spark without its session)")
        print("spark stages (driver's log):")
        for ln in s["stages"]:
            print("  " + ln)
        print(json.dumps({"flows": flows, "files": args.files, "cores": args.cores,
                          "load": load, "local_wall": l_wall, "local_cpu": l_cpu,
                          "spark_wall": s["wall"], "spark_cpu": s["cpu"],
                          "spark_session": s["session"], "worker_mib": s["worker_mib"],
                          "ratio_per_given_core": spark_core / local_core,
                          "ratio_per_cpu_second": spark_cpu_core / local_core}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
