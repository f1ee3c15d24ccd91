"""Every Zeek TSV/JSON capture in ../shared/data is read; rows and labels match MANIFEST.md.

The manifest's ``rows`` counts data lines, including lines that are malformed on
purpose (rita-truncated's cut row) and btest baselines whose ``ts`` is masked as
``XXXXXXXXXX.XXXXXX``: for those, rows read + lines skipped equals the manifest, and
every skip is accounted for. Everything else must read with no skip at all.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA
from zeekml.records import schema
from zeekml.sources import SkipLog, expand_inputs, read_flows, read_table, sniff_format

MANIFEST = DATA / "MANIFEST.md"
ZEEK_FORMATS = {"Zeek TSV": "zeek_tsv", "Zeek JSON (NDJSON)": "zeek_json"}


def manifest_rows() -> list[dict[str, str]]:
    """Every table row of MANIFEST.md (main table and appendix tables), as dicts."""
    if not MANIFEST.exists():
        return []
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "path":
            header = cells
            continue
        if header is None or set(cells[0]) <= {"-"}:
            continue
        rows.append(dict(zip(header, cells, strict=False)))
    return rows


def zeek_entries() -> list[dict[str, str]]:
    out = []
    for r in manifest_rows():
        if (
            r.get("format") in ZEEK_FORMATS
            and r["path"].startswith("zeek/")
            and "(" not in r["path"]
        ):
            out.append(r)
    return out


def parse_label_counts(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """``A=1; B=2 ‖ x=1; y=2`` -> ({A:1, B:2}, {x:1, y:2})."""
    parts = text.split(" ‖ ")

    def one(s: str) -> dict[str, int]:
        out = {}
        for item in filter(None, (x.strip() for x in s.split("; "))):
            k, _, v = item.rpartition("=")
            out[k] = int(v)
        return out

    return one(parts[0]), one(parts[1]) if len(parts) > 1 else {}


def observed_counts(s: pd.Series) -> dict[str, int]:
    """Label counts as the manifest writes them: unset ``-``, empty string ``(empty)``."""
    vals = s.fillna("-").replace({"": "(empty)"})
    return {str(k): int(v) for k, v in vals.value_counts().items()}


ENTRIES = zeek_entries()


def test_manifest_lists_zeek_files():
    assert MANIFEST.exists(), f"missing {MANIFEST}"
    assert len(ENTRIES) >= 100  # 28 top-level Zeek files + 72 rotated archive files


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_zeek_file_matches_manifest(entry):
    path = DATA / entry["path"]
    expected_rows = int(entry["rows"])
    notes = entry.get("notes", "")
    skips = SkipLog()
    batches = list(read_flows(path, skips=skips))
    df = schema.concat(batches) if batches else schema.empty_table()
    schema.validate(df)
    assert len(df) + skips.total == expected_rows
    if "btest baseline" in notes:
        # masked timestamps: every data line is a counted skip, none is silently lost
        assert len(df) == 0
        assert set(skips.by_reason) == {"bad float in ts"}
    elif "malformed" in notes:
        assert skips.total == 1
        assert [r.startswith("wrong field count") for r in skips.by_reason] == [True]
    else:
        assert skips.total == 0, skips.summary()
    # the detected format is the manifest's, whatever the name says
    assert sniff_format(_head(path)) == ZEEK_FORMATS[entry["format"]]
    if len(df):
        assert (df["source_file"] == str(path)).all()
        assert df["source_line"].is_monotonic_increasing
        assert df["uid"].notna().all()
        assert df["orig_h"].notna().all() and df["resp_h"].notna().all()
    # labels: same counts as the manifest
    labels = entry.get("label counts (label ‖ detailed label)", "")
    if entry.get("label columns"):
        assert schema.has_labels(df)
        want_label, want_detailed = parse_label_counts(labels)
        assert observed_counts(df["label"]) == want_label
        assert observed_counts(df["detailed_label"]) == want_detailed
    # time span (absolute spans only; the manifest prints whole seconds)
    span = entry.get("time span", "")
    m = re.match(r"(\S+ \S+) \.\. (\S+ \S+) UTC", span)
    if m and len(df):
        lo = pd.Timestamp(m.group(1), tz="UTC").timestamp()
        hi = pd.Timestamp(m.group(2), tz="UTC").timestamp()
        ts = df["ts"].to_numpy()
        assert lo <= np.nanmin(ts) < lo + 1
        assert hi <= np.nanmax(ts) < hi + 1


def _head(path) -> bytes:
    import gzip

    with open(path, "rb") as f:
        raw = f.read(2)
    opener = gzip.open if raw == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read(65536)


def test_rotated_archive_directory_total():
    """The 72-file zeekctl archive read as one directory: sorted, README left out."""
    entry = next(r for r in manifest_rows() if r["path"].startswith("zeek/rita-rotated-archive/ ("))
    files = expand_inputs([str(DATA / "zeek" / "rita-rotated-archive")])
    assert len(files) == 72
    assert files == sorted(files)
    assert not any(f.endswith("README") for f in files)
    df = read_table(files)
    assert len(df) == int(entry["rows"]) == 105918
    # cluster logs put _node_name first: columns are still taken by name
    assert df["orig_h"].str.match(r"^[0-9a-f.:]+$").all()
