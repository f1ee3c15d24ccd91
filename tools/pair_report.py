"""What NetFlow pairing does to the shared nfcapd captures, and how it depends on the hold.

For each ``../shared/data/nfdump/*/nfcapd`` directory (read through the real nfdump,
the directory as one stream, as ``zeekml score DIR`` reads it): records in, flows out,
flows made of two records, the share of records that found their reverse, and what
``nfdump -b`` (bidirectional aggregation over the whole input) makes of the same files.
With ``--holds``, the pairs made at each ``--pair-hold`` value (how long a record waits
for its reverse, in log time), against the most pairs the records allow (per 5-tuple
key, the smaller of its two directions' record counts).

Usage: ``python tools/pair_report.py [--holds 10 30 60 120 300 600]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "nfdump"
sys.path.insert(0, str(REPO))  # this checkout's zeekml, not an installed one


def nfdump_b(folder: Path) -> int:
    env = {**os.environ, "TZ": "UTC"}
    out = subprocess.run(["nfdump", "-R", str(folder), "-b", "-q", "-o", "csv"], env=env,
                         check=True, capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line and not line.startswith("No matching"))


def most_pairs(records: pd.DataFrame) -> int:
    """Per key (the pairer's own), min(records one way, records the other way)."""
    from zeekml.sources.pairing import classify

    cls = classify(records)
    if not cls.cand.any():
        return 0
    df = pd.DataFrame({"k": cls.key.to_pylist(), "d": cls.step})
    t = df.groupby(["k", "d"]).size().unstack(fill_value=0)
    return int(t.min(axis=1).sum()) if t.shape[1] == 2 else 0


def main() -> None:
    from zeekml.records import schema
    from zeekml.sources.biflow import PairOptions, paired_stream
    from zeekml.sources.open import read_flows

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--holds", type=float, nargs="*", default=[])
    args = ap.parse_args()
    rows = []
    for folder in sorted(SHARED.glob("*/nfcapd")):
        batches = [b for f in sorted(folder.glob("nfcapd.*")) for b in read_flows(f)]
        records = schema.concat(batches)
        flows = schema.concat(list(paired_stream(batches)))
        pairs = int(flows["paired"].fillna(False).sum())
        row = {"capture": folder.parent.name, "records": len(records), "flows": len(flows),
               "pairs": pairs, "paired share": f"{2 * pairs / max(1, len(records)):.0%}",
               "most pairs": most_pairs(records), "nfdump -b": nfdump_b(folder)}
        for h in args.holds:
            out = schema.concat(list(paired_stream(batches, PairOptions(hold=h))))
            row[f"hold {h:g}"] = int(out["paired"].fillna(False).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    total = {"capture": "all", **{c: int(table[c].sum()) for c in table.columns
                                   if c not in ("capture", "paired share")}}
    total["paired share"] = f"{2 * total['pairs'] / total['records']:.0%}"
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
