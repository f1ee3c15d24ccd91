"""CSV export readers on the real captures: IoT-23 Zeek-field CSV and CICIDS2017 CICFlowMeter CSV."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, need
from zeekml.errors import FormatError, ParseError, StateError, ZeekmlError
from zeekml.records import schema
from zeekml.sinks.csv_rows import format_csv_header, format_csv_rows
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.csv_export import CicFlowMeterParser, ZeekCsvParser, synth_uids

IOT = DATA / "iot23-csv"
CIC = DATA / "cicids2017-improved-sample"


def manifest() -> dict[str, tuple[int, dict[str, int], dict[str, int], str]]:
    """path -> (rows, label counts, detailed-label counts, time span) for the CSV exports."""
    need((DATA / "MANIFEST.md").is_file(), f"the shared captures at {DATA}")
    out = {}
    for line in (DATA / "MANIFEST.md").read_text().splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        path = cells[0].removeprefix("| ")
        if not path.startswith(("iot23-csv/", "cicids2017-improved-sample/")) or not path.endswith(".csv"):
            continue
        labels, _, details = cells[6].partition(" ‖ ")

        def counts(text: str) -> dict[str, int]:
            pairs = (p.rsplit("=", 1) for p in text.split("; ") if p)
            return {k: int(v) for k, v in pairs}

        out[path] = (int(cells[4]), counts(labels), counts(details), cells[7])
    return out


MANIFEST = manifest() if DATA.is_dir() else {}
IOT_FILES = sorted(p for p in MANIFEST if p.startswith("iot23-csv/"))
CIC_FILES = sorted(p for p in MANIFEST if p.startswith("cicids2017"))


def parse(parser, data: bytes, chunk: int = 1 << 20) -> pd.DataFrame:
    frames = []
    for i in range(0, len(data), chunk):
        frames += parser.feed(data[i : i + chunk])
    frames += parser.close()
    return schema.concat(frames) if frames else schema.empty_table(True)


def value_counts(s: pd.Series, missing: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in s.astype(object).fillna(missing).value_counts().items()}


def span(text: str) -> tuple[float, float]:
    a, _, b = text.removesuffix(" UTC").partition(" .. ")
    return pd.Timestamp(a, tz="UTC").timestamp(), pd.Timestamp(b, tz="UTC").timestamp()


# --------------------------------------------------------------------------- IoT-23


def test_found_every_export() -> None:
    assert len(IOT_FILES) == 7 and len(CIC_FILES) == 16


@pytest.mark.parametrize("rel", IOT_FILES)
def test_iot23_csv_rows_and_labels_match_manifest(rel: str) -> None:
    rows, labels, details, when = MANIFEST[rel]
    df = schema.concat(read_flows(DATA / rel, skips=SkipLog(strict=True)))
    schema.validate(df)
    assert len(df) == rows
    assert value_counts(df["label"], "<empty>") == labels
    assert value_counts(df["detailed_label"], "-") == details  # '-' is Zeek's unset: missing
    lo, hi = span(when)
    assert lo <= df["ts"].min() < lo + 1 and hi <= df["ts"].max() < hi + 1
    assert df["uid"].str.fullmatch(r"C[0-9A-Za-z]{14,20}").all()
    assert df["local_orig"].isna().all() and df["orig_ip_bytes"].notna().all()


def test_iot23_csv_agrees_with_the_zeek_original() -> None:
    """34-1 exists as the original conn.log.labeled and as a third-party CSV: same flows."""
    original = DATA / "zeek/iot23-34-1-mirai/conn.log.labeled"
    need(original.is_file(), str(original))
    a = schema.concat(read_flows(IOT / "CTU-Malware-Capture-34-1-labeled.csv", skips=SkipLog(strict=True)))
    b = schema.concat(read_flows(original, skips=SkipLog(strict=True)))
    cols = [*schema.COLUMNS, *schema.LABEL_COLUMNS]
    a = a[cols].sort_values("uid").reset_index(drop=True)
    b = b[cols].sort_values("uid").reset_index(drop=True)
    assert len(a) == len(b) == 23145
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------- CICIDS2017


@pytest.mark.parametrize("rel", CIC_FILES)
def test_cicids_csv_rows_and_labels_match_manifest(rel: str) -> None:
    rows, labels, _, when = MANIFEST[rel]
    df = schema.concat(read_flows(DATA / rel, skips=SkipLog(strict=True)))
    schema.validate(df)
    assert len(df) == rows
    assert value_counts(df["detailed_label"], "<empty>") == labels
    benign = list(labels) == ["BENIGN"]
    assert set(df["label"]) == {"Benign" if benign else "Malicious"}
    lo, hi = span(when)
    assert lo <= df["ts"].min() < lo + 1 and hi <= df["ts"].max() < hi + 1
    assert df["uid"].str.fullmatch(r"M[0-9A-Za-z]{17}").all() and df["uid"].is_unique
    assert df["proto"].isin(["tcp", "udp", "icmp", "unknown_transport"]).all()
    assert (df["duration"].dropna() >= 0).all() and df["orig_pkts"].notna().all()
    assert (df["orig_ip_bytes"].dropna() >= df["orig_bytes"][df["orig_ip_bytes"].notna()]).all()


def test_cicflowmeter_mapping_of_a_known_row() -> None:
    df = schema.concat(read_flows(CIC / "Botnet_736.csv"))
    row = df.iloc[0]
    # id 62557: 5 fwd / 4 bwd packets, 196 / 128 payload bytes, SYN 2, FIN 2, ACK 8, no RST
    assert row["orig_h"] == "192.168.10.5" and row["orig_p"] == 53709
    assert row["resp_h"] == "205.174.165.73" and row["resp_p"] == 8080 and row["proto"] == "tcp"
    assert row["ts"] == pd.Timestamp("2017-07-07 13:39:36.267908", tz="UTC").timestamp()
    assert row["duration"] == 0.081379
    assert (row["orig_pkts"], row["resp_pkts"], row["orig_bytes"], row["resp_bytes"]) == (5, 4, 196, 128)
    assert (row["orig_ip_bytes"], row["resp_ip_bytes"]) == (196 + 112 + 5 * 20, 128 + 92 + 4 * 20)
    assert row["history"] == "ShADdFf" and row["conn_state"] == "SF"
    assert (row["label"], row["detailed_label"]) == ("Malicious", "Botnet")


def test_cicflowmeter_states_are_plausible() -> None:
    scan = schema.concat(read_flows(CIC / "Portscan_2500.csv"))
    # a port scan is mostly unanswered or rejected SYNs
    assert scan["conn_state"].isin(["S0", "REJ", "RSTOS0", "RSTR", "RSTO", "SF", "S1"]).all()
    assert scan["conn_state"].isin(["S0", "REJ"]).mean() > 0.5
    dos = schema.concat(read_flows(CIC / "DoS_Hulk_2500.csv"))
    assert dos["history"].str.startswith("Sh").mean() > 0.9


def test_2017_spellings_and_dayfirst_times() -> None:
    """The 2017 originals: spaces in names, 'Source IP', day-first minute timestamps."""
    text = (CIC / "Botnet_736.csv").read_text().splitlines()
    names = text[0].split(",")
    ren = {"Src IP": " Source IP", "Dst IP": " Destination IP", "Src Port": " Source Port",
           "Dst Port": " Destination Port", "Total Bwd packets": " Total Backward Packets",
           "Total Fwd Packet": " Total Fwd Packets"}  # fmt: skip
    header = ",".join(ren.get(n, n) for n in names)
    ts_col = names.index("Timestamp")
    rows = []
    for line in text[1:50]:
        cells = line.split(",")
        t = pd.Timestamp(cells[ts_col])
        cells[ts_col] = f"{t.day}/{t.month}/{t.year} {t.hour}:{t.minute:02d}"
        rows.append(",".join(cells))
    df = parse(CicFlowMeterParser("old.csv", SkipLog(strict=True)), ("\n".join([header, *rows]) + "\n").encode())
    ref = schema.concat(read_flows(CIC / "Botnet_736.csv")).iloc[:49]
    assert len(df) == 49
    assert (df["ts"].to_numpy() == np.floor(ref["ts"].to_numpy() / 60) * 60).all()
    for c in ("orig_h", "resp_p", "resp_pkts", "history", "conn_state", "detailed_label"):
        assert df[c].reset_index(drop=True).equals(ref[c].reset_index(drop=True)), c


def test_cicflowmeter_without_addresses_is_refused() -> None:
    with pytest.raises(FormatError, match="Src/Dst IP"):
        parse(CicFlowMeterParser("m.csv"), b"Flow ID,Src IP,Destination Port,Flow Duration,Label\n1,2,3,4,5\n")


# --------------------------------------------------------------------------- bad input


def test_bad_lines_are_skipped_and_counted() -> None:
    lines = (IOT / "CTU-Malware-Capture-44-1-labeled.csv").read_bytes().split(b"\n")
    bad = {3: lines[2].replace(b",tcp,", b",tcp,extra,", 1), 7: lines[6].replace(b"1547", b"x547", 1),
           10: lines[9][:40], 11: lines[10] + b"\xff", 15: lines[14].replace(b",", b',"', 1)}  # fmt: skip
    for i, v in bad.items():
        lines[i - 1] = v
    data = b"\n".join(lines)
    skips = SkipLog()
    df = parse(ZeekCsvParser("iot.csv", skips), data, chunk=500)
    assert sorted(s.line for s in skips.examples) == sorted(bad)
    assert len(df) == MANIFEST["iot23-csv/CTU-Malware-Capture-44-1-labeled.csv"][0] - len(bad)
    with pytest.raises(ParseError, match=r"iot\.csv:3:"):
        parse(ZeekCsvParser("iot.csv", SkipLog(strict=True)), data)


def test_repeated_header_and_crlf() -> None:
    one = (IOT / "CTU-Honeypot-Capture-7-1-labeled.csv").read_bytes()
    data = (one + one).replace(b"\n", b"\r\n")  # cat a.csv b.csv, written on Windows
    df = parse(ZeekCsvParser("two.csv", SkipLog(strict=True)), data, chunk=2000)
    ref = schema.concat(read_flows(IOT / "CTU-Honeypot-Capture-7-1-labeled.csv"))
    cols = [*schema.COLUMNS, *schema.LABEL_COLUMNS]
    assert df[cols].equals(schema.concat([ref, ref])[cols])
    assert df["source_line"].tolist() == [*range(2, 132), *range(133, 263)]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=2000))
def test_hostile_bytes_never_crash(blob: bytes) -> None:
    heads = ((ZeekCsvParser, b"ts,uid,id.orig_h,id.orig_p,id.resp_h,id.resp_p,proto,label\n"),
             (CicFlowMeterParser, b"Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Label\n"),
             (ZeekCsvParser, b""))  # fmt: skip
    for cls, head in heads:
        try:
            parse(cls("h"), head + blob, chunk=61)
        except ZeekmlError:
            pass


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_random_corruption_keeps_every_good_line(data: st.DataObject) -> None:
    lines = (CIC / "Heartbleed_11.csv").read_bytes().split(b"\n")[:12]
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    broken = set(rng.sample(range(2, 13), data.draw(st.integers(1, 5))))
    for i in broken:
        raw = bytearray(lines[i - 1])
        raw[rng.randrange(len(raw))] = rng.choice([b for b in range(256) if b != 10])
        lines[i - 1] = bytes(raw)
    df = parse(CicFlowMeterParser("c", SkipLog()), b"\n".join(lines) + b"\n")
    assert set(range(2, 13)) - broken <= set(df["source_line"])


def test_state_roundtrip_and_validation() -> None:
    data = (IOT / "CTU-Malware-Capture-21-1-labeled.csv").read_bytes()
    whole = parse(ZeekCsvParser("x"), data)
    p = ZeekCsvParser("x")
    first = p.feed(data[: len(data) // 3])
    state = json.loads(json.dumps(p.get_state()))
    q = ZeekCsvParser("x")
    q.set_state(state)
    got = schema.concat(first + q.feed(data[state["consumed"] :]) + q.close())
    assert got.equals(whole)
    with pytest.raises(StateError):
        ZeekCsvParser("x").set_state({**state, "fields": "ts,uid"})
    with pytest.raises(FormatError):
        ZeekCsvParser("x").set_state({**state, "fields": ["uid", "proto"]})


# --------------------------------------------------------------------------- writer


def test_csv_writer_round_trips_hostile_strings() -> None:
    df = schema.concat(read_flows(IOT / "CTU-Malware-Capture-44-1-labeled.csv")).iloc[:8].copy()
    weird = ["a,b", 'say "hi"', "-", "(empty)", "", "tab\there\nnewline", "back\\slash", "ünï€ode"]
    df["service"] = pd.Series(weird, dtype=schema.STR)
    df.loc[0, "detailed_label"] = "C&C,FileDownload"
    data = format_csv_header(True) + format_csv_rows(df, True)
    back = parse(ZeekCsvParser("w.csv", SkipLog(strict=True)), data)
    cols = [*schema.COLUMNS, *schema.LABEL_COLUMNS]
    pd.testing.assert_frame_equal(back[cols], df[cols].reset_index(drop=True))


def test_synth_uids_are_stable_and_spread() -> None:
    keys = {"line": np.arange(50_000), "h": pd.Series(["10.0.0.1"] * 50_000, dtype=schema.STR)}
    a = synth_uids("N", "/x/capture.csv", keys)
    b = synth_uids("N", "/elsewhere/capture.csv", keys)
    c = synth_uids("N", "/x/other.csv", keys)
    assert a.equals(b) and a.is_unique and not (a == c).any()
    assert a.str.fullmatch(r"N[0-9A-Za-z]{17}").all()
    assert a.str[2].nunique() == 62 and a.str[13].nunique() == 62  # well spread digits


def test_sniff_csv_exports() -> None:
    from zeekml.sources.csv_export import sniff

    assert sniff((IOT / "CTU-Honeypot-Capture-7-1-labeled.csv").read_bytes()[:2048]) == "zeek_csv"
    assert sniff((CIC / "Heartbleed_11.csv").read_bytes()[:4096]) == "cicflowmeter_csv"
    assert sniff(b" Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp\n") == "cicflowmeter_csv"
    assert sniff(b"ts,te,td,sa,da,sp,dp,pr\n") is None


def test_cicflowmeter_detection_is_one_function() -> None:
    """Format detection and csv_export.sniff both ask cicflowmeter.is_cicflowmeter_header."""
    from zeekml.errors import FormatError
    from zeekml.sources.cicflowmeter import is_cicflowmeter_header
    from zeekml.sources.csv_export import sniff
    from zeekml.sources.detect import sniff_format

    need(CIC.is_dir(), f"the CICIDS2017 sample at {CIC}")
    real = (CIC / "Heartbleed_11.csv").read_bytes()[:4096]
    heads = [
        real,
        b" Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp\n",
        b'"Flow ID","Src IP","Dst IP","Label"\n',  # quoted, no Timestamp: claimed, then refused
        b"Flow ID,Src IP\n",  # too few fields
        b"ts,uid,id.orig_h,id.orig_p,id.resp_h\n",
        b"id,Flow Duration,Label,Other\n",  # one CICFlowMeter name only
    ]
    for head in heads:
        first = head.split(b"\n", 1)[0]
        claimed = is_cicflowmeter_header(first)
        assert (sniff(head) == "cicflowmeter_csv") == claimed, head
        try:
            detected = sniff_format(head) == "cicflowmeter_csv"
        except FormatError:
            detected = False
        assert detected == claimed, head
    assert [is_cicflowmeter_header(h.split(b"\n", 1)[0]) for h in heads] == [
        True, True, True, False, False, False]
