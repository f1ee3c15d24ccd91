"""Regenerate tests/golden/*.tsv: the whole pipeline's verdicts on a few shared captures.

Each golden file is what ``zeekml score --all`` writes for one capture with every bundled
models (default thresholds and suppression, one thread), cut to the fields that carry the
decision, scores rounded to 4 decimals. tests/test_golden.py runs the same pipeline and
compares; a change in verdicts (a reader, a feature, a model, the policy) is a failing test
and, once intended, a visible diff of these files::

    python tools/make_golden.py            # rewrite tests/golden/
    git diff --stat tests/golden/          # what changed, capture by capture

The captures are read from ../shared/data (never copied into the repository), the bundled
sample too (zat's conn.log there, of which zeekml/data/sample_conn.log is a byte-for-byte copy:
tests/test_docs.py checks it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GOLDEN = REPO / "tests" / "golden"

#: golden name -> input (a Zeek conn.log, an nfcapd directory, an Argus binetflow)
CAPTURES: dict[str, Path] = {
    "sample": DATA / "zeek" / "zat-sample" / "conn.log",
    "slips-test18-zeek": DATA / "zeek" / "slips-test18-ctu-sme-11" / "conn.log.labeled",
    "slips-test19-nfcapd": DATA / "nfdump" / "pcap-slips-test19-ssh-bruteforce" / "nfcapd",
    "zeek-ftp-bruteforce-nfcapd": DATA / "nfdump" / "pcap-zeek-ftp-bruteforce" / "nfcapd",
}

#: the fields compared: the flow's uid, the model and everything it decided
FIELDS = ("uid", "model", "candidate", "verdict", "decision", "score", "threshold", "alt", "n")
DECIMALS = 4


def verdict_table(src: Path) -> list[list[str]]:
    """``zeekml score --all`` on ``src`` -> rows of :data:`FIELDS` as text, in output order."""
    sys.path.insert(0, str(REPO))
    from zeekml.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "zeekml.log"
        code = main(["-q", "score", "--all", "--threads", "1", "--out", str(out), str(src)])
        if code != 0:
            raise SystemExit(f"zeekml score failed on {src} (exit {code})")
        lines = out.read_text().splitlines()
    fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    idx = [fields.index(f) for f in FIELDS]
    rows = []
    for ln in lines:
        if not ln or ln.startswith("#"):
            continue
        cells = ln.split("\t")
        row = [cells[i] for i in idx]
        for f in ("score", "threshold"):
            j = FIELDS.index(f)
            if row[j] != "-":
                row[j] = f"{float(row[j]):.{DECIMALS}f}"
        rows.append(row)
    return rows


def write(name: str, rows: list[list[str]]) -> Path:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    path = GOLDEN / f"{name}.tsv"
    path.write_text("\t".join(FIELDS) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t") != list(FIELDS):
        raise ValueError(f"{path}: not a golden file of fields {FIELDS}")
    return [ln.split("\t") for ln in lines[1:]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help=f"captures to regenerate (default all: {', '.join(CAPTURES)})")
    args = ap.parse_args(argv)
    for name in args.names or list(CAPTURES):
        src = CAPTURES[name]
        if not src.exists():
            print(f"{name}: {src} is missing; skipped", file=sys.stderr)
            continue
        path = write(name, verdict_table(src))
        print(f"{path.relative_to(REPO)}: {sum(1 for _ in path.open()) - 1} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
