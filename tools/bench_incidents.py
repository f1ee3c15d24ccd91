"""Benchmark what incidents cost: ``zeekml score`` with and without ``--incidents``.

Both runs are fresh subprocesses on the same input in the same invocation, alternated
``--repeat`` times (the machine may be busy: the best of each is compared, CPU time
of the child besides wall time). The ratio is the figure to read, not the absolute
speed. Default input: the RITA archive of the shared captures (three days of an
internet-facing server, many flagged flows), or ``--file``/``--rows`` (a file made by
``tools/gen_conn_log.py`` from real rows).

Also timed in this process: the incident tracker alone over the flagged rows of the
same input (recorded once through the real pipeline), as flagged rows per second.

Usage: ``python tools/bench_incidents.py [--file F | --rows N] [--repeat 3] [--all]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "zeek" / "rita-rotated-archive"


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode() if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.stderr.write(err)
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime


def _tracker_alone(inputs: list[str], threads: int) -> tuple[int, int, float]:
    """(flagged rows, batches, seconds) of the tracker fed the recorded flagged rows."""
    sys.path.insert(0, str(REPO))
    from zeekml.cli.score import build_scorers
    from zeekml.policy.budget import CandidatePolicy, CandidateRecorder
    from zeekml.policy.incidents import IncidentTracker
    from zeekml.policy.notice import PolicyConfig
    from zeekml.runtime.batch_run import score_inputs
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.sources import SkipLog, expand_inputs

    scorers = build_scorers(argparse.Namespace(model=[], threads=threads))
    rec = CandidateRecorder()
    score_inputs(expand_inputs(inputs), Pipeline(scorers, CandidatePolicy(PolicyConfig(), False),
                                                 [], incidents=rec),  # type: ignore[arg-type]
                 skips=SkipLog())
    frames = rec.frames
    tracker = IncidentTracker()
    t = time.perf_counter()
    for f in frames:
        tracker.update(f, float(f["act"].max()))
    tracker.finish()
    return sum(len(f) for f in frames), len(frames), time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, help="an input (file or directory) to use")
    ap.add_argument("--rows", type=int, help="generate a conn.log of this many real rows")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all", action="store_true", help="write every verdict (--all)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="zeekml-bench-inc-"))
    if args.rows:
        path = tmp / "conn.log"
        subprocess.run([sys.executable, str(REPO / "tools" / "gen_conn_log.py"), str(path),
                        "--rows", str(args.rows)], check=True)
    else:
        path = args.file or ARCHIVE
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "zeekml.cli.main", "-q", "score", str(path),
            "--out", str(tmp / "zeekml.log"), "--threads", str(args.threads),
            *(["--all"] if args.all else [])]
    runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    for _ in range(args.repeat):
        runs["without"].append(_run(base, env))
        runs["with"].append(_run([*base, "--incidents", str(tmp / "inc.log")], env))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    records = sum(1 for ln in (tmp / "inc.log").read_text().splitlines() if not ln.startswith("#"))
    flagged, batches, secs = _tracker_alone([str(path)], args.threads)
    result = {
        "input": str(path),
        "wall_without_s": round(best["without"][0], 2), "wall_with_s": round(best["with"][0], 2),
        "cpu_without_s": round(best["without"][1], 2), "cpu_with_s": round(best["with"][1], 2),
        "ratio_wall_with_over_without": round(best["with"][0] / best["without"][0], 3),
        "ratio_cpu_with_over_without": round(best["with"][1] / best["without"][1], 3),
        "incident_records": records,
        "tracker_flagged_rows": flagged, "tracker_batches": batches,
        "tracker_seconds": round(secs, 3),
        "tracker_flagged_rows_per_s": round(flagged / secs) if secs else None,
    }
    print(f"input: {path}  (best of {args.repeat}, alternated)")
    for k in ("without", "with"):
        print(f"score {k:7} --incidents: wall {best[k][0]:7.2f} s  cpu {best[k][1]:7.2f} s")
    print(f"ratio with/without: wall {result['ratio_wall_with_over_without']:.3f}x, "
          f"cpu {result['ratio_cpu_with_over_without']:.3f}x  ({records} incident records)")
    print(f"tracker alone: {flagged:,} flagged rows in {batches} batches, {secs:.3f} s "
          f"({result['tracker_flagged_rows_per_s']:,} rows/s)")
    print(json.dumps(result))
    for p in sorted(tmp.iterdir(), reverse=True):
        p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
