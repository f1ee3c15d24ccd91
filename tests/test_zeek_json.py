"""Zeek JSON reader on real NDJSON logs and real logs altered the way pipelines alter them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import DATA
from zeekml.errors import ParseError
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.zeek_json import ZeekJsonParser

Z = DATA / "zeek"
PORTSCAN = Z / "stratosphere-002-portscan" / "conn.log"
RITA = Z / "rita-json-all-fields" / "conn.log"
DUPS = Z / "slips-test14-malicious" / "conn.log"
SLIPS9 = Z / "slips-test9-mixed" / "conn.log"


def parse(
    data: bytes, path: str = "mem.json", strict: bool = False
) -> tuple[pd.DataFrame, SkipLog]:
    skips = SkipLog(strict=strict)
    p = ZeekJsonParser(path, skips)
    frames = p.feed(data) + p.close()
    df = schema.concat(frames) if frames else schema.empty_table()
    schema.validate(df)
    return df, skips


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in b.columns if c not in ("source_file", "source_line")]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


def records(path) -> list[dict]:
    return [json.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def test_values_match_the_json_objects():
    df, skips = parse(PORTSCAN.read_bytes())
    recs = records(PORTSCAN)
    assert skips.total == 0 and len(df) == len(recs) == 4504
    for i in (0, 1, 777, len(recs) - 1):
        r, row = recs[i], df.iloc[i]
        assert row["ts"] == r["ts"]
        assert row["uid"] == r["uid"]
        assert (row["orig_h"], row["orig_p"], row["resp_h"], row["resp_p"]) == (
            r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"])  # fmt: skip
        for key in ("duration", "orig_bytes", "service", "history", "local_orig"):
            if key in r:
                assert row[key] == r[key]
            else:
                assert pd.isna(row[key])  # absent key: missing, not 0/False/""
        assert row["source_line"] == i + 1


def test_absent_keys_stay_missing():
    df, _ = parse(SLIPS9.read_bytes())
    recs = records(SLIPS9)
    for key, col in (("duration", "duration"), ("orig_bytes", "orig_bytes"),
                     ("local_orig", "local_orig"), ("history", "history")):  # fmt: skip
        absent = [key not in r for r in recs]
        assert any(absent)
        assert df[col].isna().tolist() == absent


def test_duplicates_are_kept_and_spaces_after_separators():
    df, _ = parse(DUPS.read_bytes())
    assert len(df) == 5 and df["uid"].duplicated().sum() >= 3
    df, skips = parse(RITA.read_bytes())
    assert b'", "' in RITA.read_bytes()
    assert (len(df), skips.total) == (29, 0)


def test_iso8601_ts_gives_the_same_epoch():
    recs = records(PORTSCAN)[:300]
    want, _ = parse(b"\n".join(json.dumps(r).encode() for r in recs))
    iso = []
    for r in recs:
        r = dict(r)
        r["ts"] = pd.Timestamp(r["ts"], unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        iso.append(json.dumps(r).encode())
    got, skips = parse(b"\n".join(iso))
    assert skips.total == 0
    assert (got["ts"] - want["ts"]).abs().max() < 1e-6
    # mixed numeric and ISO ts in one block
    mixed = b"\n".join(iso[:10] + [json.dumps(r).encode() for r in recs[10:20]])
    got, skips = parse(mixed)
    assert skips.total == 0 and (got["ts"] - want["ts"].iloc[:20]).abs().max() < 1e-6


def test_labels_and_aliases():
    out = []
    for i, r in enumerate(records(RITA)):
        r = dict(r)
        r["id_orig_h"] = r.pop("id.orig_h")
        r["label"] = "Malicious" if i % 2 else "Benign"
        r["detailed-label" if i % 3 else "detailedlabel"] = "C&C" if i % 2 else "-"
        out.append(json.dumps(r).encode())
    df, skips = parse(b"\n".join(out))
    assert skips.total == 0 and schema.has_labels(df)
    assert df["orig_h"].notna().all()
    assert df["label"].tolist() == ["Malicious" if i % 2 else "Benign" for i in range(len(out))]
    assert df["detailed_label"].notna().all()


def test_bad_lines_are_skipped_and_counted():
    lines = PORTSCAN.read_bytes().split(b"\n")
    bad = {
        5: (b"{not json", "bad JSON"),
        6: (b"[1, 2, 3]", "not an object"),
        7: (
            lines[7].replace(b'"id.orig_p":', b'"id.orig_p":"x",  "old":', 1),
            "bad integer in id.orig_p",
        ),
        8: (lines[8].replace(b'"uid":"', b'"uid":"\xff', 1), "not UTF-8"),
        9: (
            lines[9].replace(b'"local_orig":true', b'"local_orig":"yes"', 1),
            "bad bool in local_orig",
        ),
        10: (lines[10][: len(lines[10]) // 2], "bad JSON"),
        11: (b'{"ts":"yesterday","uid":"C1"}', "bad ts"),
    }
    for k, (line, _) in bad.items():
        lines[k] = line
    df, skips = parse(b"\n".join(lines), path="p.json")
    want, _ = parse(PORTSCAN.read_bytes())
    assert skips.total == len(bad)
    for s in skips.examples:
        assert bad[s.line - 1][1] in s.reason, s
    keep = ~want["source_line"].isin([k + 1 for k in bad])
    same_rows(df, want[keep])
    with pytest.raises(ParseError, match=r"p\.json:6:"):
        parse(b"\n".join(lines), path="p.json", strict=True)


def test_chunked_feed_and_state():
    raw = RITA.read_bytes()
    want, _ = parse(raw)
    p = ZeekJsonParser("x", SkipLog())
    frames = []
    for k in range(0, len(raw), 333):
        frames += p.feed(raw[k : k + 333])
    frames += p.close()
    same_rows(schema.concat(frames), want)
    assert p.consumed == len(raw)


def test_read_flows_detects_json_named_conn_log():
    skips = SkipLog()
    df = schema.concat(read_flows(Z / "zat-sample-json" / "conn.log", skips=skips))
    assert (len(df), skips.total) == (50, 0)
