"""Notices per input of ../shared/data, each scored alone by ``zeekml score`` with the defaults.

The figure a policy or model change is judged by before it ships ("over the inputs of the
shared data, how many notices did each give, before and after"): one line per input (a Zeek
capture directory, an nfcapd directory, an Argus binetflow, an IoT-23 or CICIDS2017 CSV),
its notices and their verdicts, as ``zeekml score`` prints them. Extra arguments go to
``zeekml score``; ``--compare A.tsv B.tsv`` prints only the inputs whose line differs::

    python tools/notice_counts.py > before.tsv
    python tools/notice_counts.py --sweep-hosts 0 > no-sweep.tsv
    python tools/notice_counts.py --compare before.tsv after.tsv
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GLOBS = ("zeek/*", "nfdump/*/nfcapd", "binetflow/*.binetflow", "iot23-csv/*.csv",
         "cicids2017-improved-sample/*.csv")


def inputs() -> list[Path]:
    return [p for g in GLOBS for p in sorted(DATA.glob(g))]


def notices(path: Path, extra: list[str]) -> str:
    """``zeekml score``'s notices line for one input (``error`` and its last line if it fails)."""
    with tempfile.TemporaryDirectory() as d:
        run = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "score", *extra,
                              "--out", str(Path(d) / "out.log"), str(path)],
                             capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    if run.returncode:
        return "error: " + (lines[-1] if lines else f"exit {run.returncode}")
    hit = [ln.strip() for ln in lines if ln.strip().startswith("notices:")]
    return hit[0].removeprefix("notices:").strip() if hit else "-"


def compare(a: Path, b: Path) -> int:
    old = dict(ln.split("\t", 1) for ln in a.read_text().splitlines() if "\t" in ln)
    new = dict(ln.split("\t", 1) for ln in b.read_text().splitlines() if "\t" in ln)
    for k in sorted(old.keys() | new.keys()):
        if old.get(k) != new.get(k):
            print(f"{k}\t{old.get(k, '-')}\t->\t{new.get(k, '-')}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        if len(argv) != 3:
            print("usage: notice_counts.py --compare A.tsv B.tsv", file=sys.stderr)
            return 2
        return compare(Path(argv[1]), Path(argv[2]))
    if not DATA.is_dir():
        print(f"no shared data at {DATA}", file=sys.stderr)
        return 1
    for p in inputs():
        print(f"{p.relative_to(DATA)}\t{notices(p, argv)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
