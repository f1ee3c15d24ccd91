"""``zeekml summary INPUT...``: read flows and print what they contain.

The first thing to run on a new capture: it shows that the input is read (rows per
file, detected format), what was skipped and why, the time span, protocols, the most
common connection states and, for labeled captures, the label counts. Counting is done
per batch, so memory stays bounded on archives of any size.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.sources.open import expand_inputs, pair_batches, read_flows
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog

#: timestamps below this (2001-09-09) are read as relative seconds, not epoch times
EPOCH_FLOOR = 1e9


@dataclass
class FlowSummary:
    """Counters filled batch by batch."""

    files: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    ts_min: float = np.inf
    ts_max: float = -np.inf
    ts_missing: int = 0
    proto: Counter[str] = field(default_factory=Counter)
    conn_state: Counter[str] = field(default_factory=Counter)
    label: Counter[str] = field(default_factory=Counter)
    detailed_label: Counter[str] = field(default_factory=Counter)
    labeled_rows: int = 0
    records: int = 0  # rows as read, before NetFlow pairing
    paired: int = 0  # flows joined from two NetFlow records
    one_way: int = 0  # NetFlow records left one-way

    def add(self, df: pd.DataFrame) -> None:
        self.rows += len(df)
        if "paired" in df.columns:
            p = df["paired"]
            self.paired += int(p.fillna(False).sum())
            self.one_way += int((~p.fillna(True)).sum())
        ts = df["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(ts)
        self.ts_missing += int((~ok).sum())
        if ok.any():
            self.ts_min = min(self.ts_min, float(ts[ok].min()))
            self.ts_max = max(self.ts_max, float(ts[ok].max()))
        for col, counter in (("proto", self.proto), ("conn_state", self.conn_state)):
            counter.update(_counts(df[col]))
        if "label" in df.columns:
            self.labeled_rows += len(df)
            self.label.update(_counts(df["label"]))
            self.detailed_label.update(_counts(df["detailed_label"]))

    def to_dict(self, skips: SkipLog, top: int) -> dict[str, Any]:
        span = None
        if self.ts_max >= self.ts_min:
            span = {"min": self.ts_min, "max": self.ts_max,
                    "relative": self.ts_max < EPOCH_FLOOR}  # fmt: skip
        return {
            "files": self.files,
            "rows": self.rows,
            "records": self.records,
            "netflow": ({"paired_flows": self.paired, "one_way_flows": self.one_way}
                        if self.paired or self.one_way else None),
            "skipped": skips.total,
            "skipped_by_reason": dict(skips.by_reason.most_common()),
            "skipped_examples": [str(s) for s in skips.examples],
            "time_span": span,
            "ts_missing": self.ts_missing,
            "protocols": dict(self.proto.most_common()),
            "conn_states": dict(self.conn_state.most_common(top)),
            "labels": dict(self.label.most_common()) if self.labeled_rows else None,
            "detailed_labels": dict(self.detailed_label.most_common(top))
            if self.labeled_rows
            else None,
        }


def _counts(s: pd.Series) -> dict[str, int]:
    vc = s.fillna("-").value_counts(sort=False)
    return {("(empty)" if k == "" else str(k)): int(v) for k, v in vc.items()}


def _fmt_ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_counts(counts: dict[str, int]) -> str:
    return "; ".join(f"{k}={v}" for k, v in counts.items()) or "-"


def format_text(d: dict[str, Any]) -> str:
    lines = []
    files = d["files"]
    by_fmt = Counter(f["format"] for f in files)
    lines.append(f"files:      {len(files)} ({', '.join(f'{k} {v}' for k, v in by_fmt.items())})")
    if len(files) <= 20:
        for f in files:
            lines.append(f"  {f['path']}  {f['format']}  {f['rows']} rows")
    lines.append(f"rows:       {d['rows']}")
    nf = d.get("netflow")
    if nf is not None:
        lines.append(f"netflow:    {d['records']} records -> {d['rows']} flows: "
                     f"{nf['paired_flows']} paired (both directions), "
                     f"{nf['one_way_flows']} one-way")
    skipped = d["skipped"]
    reasons = "; ".join(f"{r}={n}" for r, n in d["skipped_by_reason"].items())
    lines.append(f"skipped:    {skipped}" + (f" ({reasons})" if skipped else ""))
    for ex in d["skipped_examples"][:5]:
        lines.append(f"  {ex}")
    span = d["time_span"]
    if span is None:
        lines.append("time span:  -")
    elif span["relative"]:
        lines.append(f"time span:  relative ts {span['min']:.3f} .. {span['max']:.3f} s")
    else:
        lines.append(f"time span:  {_fmt_ts(span['min'])} .. {_fmt_ts(span['max'])} UTC "
                     f"({span['max'] - span['min']:.0f} s)")  # fmt: skip
    if d["ts_missing"]:
        lines.append(f"  rows without ts: {d['ts_missing']}")
    lines.append(f"protocols:  {_fmt_counts(d['protocols'])}")
    lines.append(f"conn_state: {_fmt_counts(d['conn_states'])}")
    if d["labels"] is not None:
        lines.append(f"labels:     {_fmt_counts(d['labels'])}")
        lines.append(f"detailed:   {_fmt_counts(d['detailed_labels'])}")
    return "\n".join(lines) + "\n"


def summarize(inputs: list[str], *, strict: bool = False, fmt: str | None = None,
              batch_rows: int = defaults.BATCH_ROWS, top: int = 10, options: ReadOptions | None = None
              ) -> tuple[dict[str, Any], SkipLog]:  # fmt: skip
    """Read every input and return the summary dict (what ``--json`` prints).

    ``options``: the reading options (``--tz`` for Argus binetflow, NetFlow pairing).
    ``files[].rows`` are rows as read; ``rows`` are flows after NetFlow pairing
    (``records`` before it; ``netflow`` counts paired and one-way flows).
    """
    skips = SkipLog(strict=strict)
    summ = FlowSummary()

    def batches() -> Iterator[pd.DataFrame]:
        for path in expand_inputs(inputs):
            info: dict[str, str] = {}
            rows = 0
            for batch in read_flows(path, skips=skips, batch_rows=batch_rows, fmt=fmt,
                                    info=info, options=options):
                rows += len(batch)
                yield batch
            summ.records += rows
            summ.files.append({"path": path, "format": info.get("format", "empty"),
                               "rows": rows})

    for batch in pair_batches(batches(), options):  # the inputs are one stream
        summ.add(batch)
    return summ.to_dict(skips, top), skips


def run(args: argparse.Namespace) -> int:
    from zeekml.cli.read_args import read_options_from

    result, _ = summarize(args.inputs, strict=args.strict, fmt=args.format, top=args.top,
                          options=read_options_from(args))
    if args.json:
        json.dump(result, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="read flows and print a summary (rows, skips, time span, protocols, labels)",
        description=(
            "Read Zeek conn logs (TSV or JSON, .gz too), nfdump output, Argus binetflow or "
            "flow CSV exports "
            "and print a flow summary: files and detected formats, rows, skipped lines with "
            "reasons, time span, protocols, top connection states and, for labeled "
            "captures, label counts. INPUT may be a file, a directory (searched for conn "
            "logs and nfcapd files), a glob, or - for stdin. The format is detected from "
            "the content, not the file name."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file, directory, glob or -")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first malformed line (exit 1 naming path:line)")  # fmt: skip
    from zeekml.cli.read_args import add_read_arguments
    from zeekml.sources.detect import FORMATS

    p.add_argument("--format", choices=list(FORMATS),
                   help="force the input format instead of detecting it")  # fmt: skip
    add_read_arguments(p)
    p.add_argument("--top", type=int, default=10, help="how many connection states to list")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
