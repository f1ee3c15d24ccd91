"""Argus binetflow reader: the shared captures against MANIFEST.md, hand-made edge cases
(hex ports, every Dir, each State family, missing SrcPkts, tab, CRLF, gzip, --tz),
hostile lines, incremental feeding and resumable state."""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, need
from tests.test_read_all_shared import manifest_rows, parse_label_counts
from zeekml.errors import ConfigError, FormatError, ParseError, StateError
from zeekml.records import schema
from zeekml.records.labels import binary_target, class_target
from zeekml.sources import SkipLog, read_flows, sniff_format
from zeekml.sources.binetflow import BinetflowParser
from zeekml.sources.binetflow_state import normalize_label, tcp_flag_state
from zeekml.sources.options import ReadOptions

BNF = DATA / "binetflow"
HEADER = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,SrcPkts,Label"
FLOW_COLS = [c for c in schema.COLUMNS if c != "uid"]


def entries() -> list[dict[str, str]]:
    return [r for r in manifest_rows() if r["path"].startswith("binetflow/")]


def parse(text: str | bytes, *, path: str = "x.binetflow", skips: SkipLog | None = None,
          tz: str | None = None, chunk: int | None = None, batch_rows: int = 65536) -> pd.DataFrame:
    data = text.encode() if isinstance(text, str) else text
    p = BinetflowParser(path, skips if skips is not None else SkipLog(keep=1000),
                        batch_rows=batch_rows, options=ReadOptions(tz=tz))
    frames = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        frames += p.feed(data[i : i + step])
    frames += p.close()
    return schema.concat(frames) if frames else schema.empty_table(with_labels=True)


def one(row: str, header: str = HEADER, **kw: object) -> pd.Series:
    df = parse(header + "\n" + row + "\n", **kw)  # type: ignore[arg-type]
    assert len(df) == 1, df
    return df.iloc[0]


def na(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


# --------------------------------------------------------------------------- shared files


def test_manifest_lists_the_binetflow_files() -> None:
    need(BNF.is_dir(), f"the shared captures at {BNF}")
    assert sorted(r["path"] for r in entries()) == sorted(f"binetflow/{p.name}" for p in BNF.iterdir())


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e["path"])
def test_every_shared_file_matches_manifest(entry: dict[str, str]) -> None:
    """Rows read + records skipped (non-IP, bad) = the manifest's rows; labels of both
    together = the manifest's label counts; time span as the manifest gives it."""
    path = DATA / entry["path"]
    skips = SkipLog(keep=10_000)
    info: dict[str, str] = {}
    df = schema.concat(read_flows(path, skips=skips, info=info))
    schema.validate(df)
    assert info["format"] == "binetflow"
    assert len(df) + skips.total == int(entry["rows"])
    assert df["uid"].str.fullmatch(r"A[0-9A-Za-z]{17}").all() and df["uid"].is_unique
    assert df["orig_h"].notna().all() and df["proto"].isin(["tcp", "udp", "icmp", "unknown_transport"]).all()
    assert (df["orig_ip_bytes"] + df["resp_ip_bytes"] > 0).all()
    assert df["orig_bytes"].isna().all() and df["resp_bytes"].isna().all()
    # what was skipped, read independently with the csv module
    text = path.read_text()
    delim = "\t" if text.split("\n", 1)[0].count("\t") > 3 else ","
    raw = list(csv.reader(io.StringIO(text), delimiter=delim))
    names = raw[0]
    skipped = {s.line: s.reason for s in skips.examples}
    assert len(skipped) == skips.total
    for line, reason in skipped.items():
        rec = dict(zip(names, raw[line - 1], strict=True))
        if rec["Proto"] in ("arp", "llc", "man"):
            assert reason.startswith(("non-IP record", "Argus management record")), reason
        else:
            assert reason.startswith("bad Dir") and rec["Dir"].strip() not in ("->", "<-", "<->"), rec
    # labels
    labels = Counter(df["detailed_label"].fillna("<empty>"))
    labels.update(dict(zip(names, raw[line - 1], strict=True))["Label"] or "<empty>" for line in skipped)
    text_counts = entry["label counts (label ‖ detailed label)"]
    counts = {} if "empty in every row" in text_counts else parse_label_counts(text_counts)[0]
    if counts:
        assert dict(labels) == counts
    else:  # "column present but empty in every row"
        assert set(labels) == {"<empty>"} and df["label"].isna().all()
    span = entry["time span"]
    if not span.startswith("relative"):
        fmt = "%Y-%m-%d %H:%M:%S"
        lo = datetime.fromtimestamp(float(df["ts"].min()), UTC).strftime(fmt)
        hi = datetime.fromtimestamp(float(df["ts"].max()), UTC).strftime(fmt)
        assert f"{lo} .. {hi} UTC" == span


def test_real_rows_are_mapped_as_documented() -> None:
    need(BNF.is_dir(), f"the shared captures at {BNF}")
    t2 = schema.concat(read_flows(BNF / "slips-test2-malicious.binetflow"))
    by_line = t2.set_index("source_line")
    # line 13: icmp 0x0008 (echo request, type 8 code 0), ECO, one packet
    r = by_line.loc[13]
    assert (r["proto"], r["orig_p"], r["resp_p"], r["conn_state"]) == ("icmp", 8, 0, "OTH")
    assert na(r["history"]) and na(r["duration"]) and r["orig_pkts"] == 1 and r["resp_pkts"] == 0
    # line 32: 0x0403 = type 3 (unreachable) code 4 (fragmentation needed), URF
    assert (by_line.loc[32, "orig_p"], by_line.loc[32, "resp_p"]) == (3, 4)
    # line 2: udp <-> CON 2 packets 142 bytes, SrcBytes 63, SrcPkts 1
    r = by_line.loc[2]
    assert (r["orig_p"], r["resp_p"], r["conn_state"], r["history"]) == (48427, 53, "SF", "Dd")
    assert (r["orig_ip_bytes"], r["resp_ip_bytes"], r["orig_pkts"], r["resp_pkts"]) == (63, 79, 1, 1)
    assert r["ts"] == pytest.approx(datetime(2019, 4, 4, 16, 23, 0, 325010, UTC).timestamp(), abs=1e-6)
    # line 5: tcp SPA_SRPA: handshake, the responder reset
    assert (by_line.loc[5, "conn_state"], by_line.loc[5, "history"]) == ("RSTR", "ShADadr")
    # igmp: no ports
    igmp = t2[t2["proto"] == "unknown_transport"]
    assert len(igmp) == 7 and igmp["orig_p"].isna().all() and igmp["resp_p"].isna().all()
    # test4 has no SrcPkts: packets only where the split is certain
    t4 = schema.concat(read_flows(BNF / "slips-test4-malicious.binetflow"))
    one_way = t4["resp_ip_bytes"] == 0
    assert one_way.sum() > 200
    assert (t4.loc[one_way, "orig_pkts"] >= 1).all() and (t4.loc[one_way, "resp_pkts"] == 0).all()
    assert t4.loc[~one_way, "orig_pkts"].isna().all() and t4.loc[~one_way, "resp_pkts"].isna().all()
    assert set(t4.loc[t4["proto"] == "tcp", "conn_state"]) >= {"S0", "S1"}


def test_stratosphere_labels_in_eval_and_training_targets() -> None:
    """test5: Malware -> malicious (c2), Background and an unknown label excluded, none benign."""
    need(BNF.is_dir(), f"the shared captures at {BNF}")
    df = schema.concat(read_flows(BNF / "slips-test5-mixed.binetflow"))
    b = binary_target(df)
    assert int((b == 1).sum()) == 197 + 80
    assert int((b == 0).sum()) == 0
    assert int((b == -1).sum()) == len(df) - 277
    assert set(df.loc[b == -1, "label"].fillna("-")) == {"Background", "-"}
    assert (class_target(df)[b == 1] == 4).all()  # CLASSES[4] == "c2"


@pytest.mark.parametrize("text, label", [
    ("flow=From-Botnet-V46-TCP-CC1-HTTP-Not-Encrypted", "Malicious"),
    ("flow=To-Botnet-V46-UDP-DNS", "Malicious"),
    ("flow=Malware-UDP-DNS", "Malicious"),
    ("flow=From-Normal-V46-Grill", "Benign"),
    ("flow=To-Normal-V42-Stribrek", "Benign"),
    ("flow=Normal-V42-Jist", "Benign"),
    ("flow=Background-UDP-Established", "Background"),
    ("flow=Background-TCP-Established-To-Botnet", "Background"),
    ("flow=TCP-Established-To-Microsoft-7", None),
    ("", None),
    ("   ", None),
])  # fmt: skip
def test_normalize_label(text: str, label: str | None) -> None:
    assert normalize_label(text) == label


# --------------------------------------------------------------------------- Dir and ports


ROW = "2019/04/04 16:23:00.000000,{dur},{proto},10.0.0.1,{sport},{dir},10.0.0.2,{dport},{state},0,0,{tp},{tb},{sb},{sp},{label}"


def row(**kw: object) -> str:
    base: dict[str, object] = dict(dur="1.5", proto="tcp", sport="51000", dir="   ->", dport="80",
                                   state="FSPA_FSPA", tp=10, tb=1000, sb=300, sp=6, label="")
    base.update(kw)
    return ROW.format(**base)


@pytest.mark.parametrize("d, reversed_", [
    ("   ->", False), ("  <->", False), ("  <?>", False), ("  ?>", False), ("->", False),
    ("   <-", True), ("  <?", True),
])  # fmt: skip
def test_dir_decides_the_originator(d: str, reversed_: bool) -> None:
    r = one(row(dir=d, state="SPA_FSPA"))
    if not reversed_:
        assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) == ("10.0.0.1", 51000, "10.0.0.2", 80)
        assert (r["orig_ip_bytes"], r["resp_ip_bytes"], r["orig_pkts"], r["resp_pkts"]) == (300, 700, 6, 4)
        assert (r["conn_state"], r["history"]) == ("S3", "ShADadf")
    else:  # everything swapped: the destination started it
        assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) == ("10.0.0.2", 80, "10.0.0.1", 51000)
        assert (r["orig_ip_bytes"], r["resp_ip_bytes"], r["orig_pkts"], r["resp_pkts"]) == (700, 300, 4, 6)
        assert (r["conn_state"], r["history"]) == ("S2", "ShADadF")


def test_unknown_dir_is_a_bad_line_and_arp_who_is_not_a_flow() -> None:
    skips = SkipLog(keep=100)
    text = "\n".join([HEADER, row(dir=" get_message  ->"), row(proto="arp", dir="  who", sport="", dport=""),
                      row()])  # fmt: skip
    df = parse(text + "\n", skips=skips)
    assert len(df) == 1 and df["source_line"].tolist() == [4]
    assert [(s.line, s.reason) for s in skips.examples] == [
        (2, "bad Dir ' get_message  ->'"), (3, "non-IP record (arp)")]
    with pytest.raises(ParseError, match=r"x\.binetflow:2: bad Dir"):
        parse(text, skips=SkipLog(strict=True))
    strict = SkipLog(strict=True)  # a valid non-IP record is counted, never an error
    assert len(parse("\n".join([HEADER, row(proto="arp", dir="  who"), row(proto="man"), row()]),
                     skips=strict)) == 1
    assert strict.total == 2 and set(strict.by_reason) == {"non-IP record (arp)",
                                                           "Argus management record (man)"}


@pytest.mark.parametrize("proto, sport, dport, expect", [
    ("udp", "0x0035", "0x1f90", (53, 8080)),  # Argus hex ports
    ("tcp", "0x01bb", "443", (443, 443)),
    ("icmp", "0x0303", "0x97af", (3, 3)),  # packed: type 3 (unreachable), code 3 (port)
    ("icmp", "0x0008", "0x7208", (8, 0)),  # echo request; Dport is the ICMP id
    ("icmp", "0x0b00", "0x0000", (0, 11)),  # code in the high byte
    ("icmp", "0x03", "0x03", (3, 3)),  # short hex: Sport type, Dport code
    ("ipv6-icmp", "135", "0", (135, 0)),  # ICMPv6 in decimal: type, code
    ("igmp", "", "", (None, None)),  # no ports: missing
    ("gre", "", "", (None, None)),
])  # fmt: skip
def test_ports_decimal_hex_and_icmp(proto: str, sport: str, dport: str, expect: tuple) -> None:
    r = one(row(proto=proto, sport=sport, dport=dport, state="ECO" if "icmp" in proto else "CON"))
    got = tuple(None if na(r[c]) else int(r[c]) for c in ("orig_p", "resp_p"))
    assert got == expect
    assert r["proto"] == {"udp": "udp", "tcp": "tcp"}.get(proto, "icmp" if "icmp" in proto else "unknown_transport")


@pytest.mark.parametrize("bad, reason", [
    (row(sport="80x"), "bad Sport '80x'"),
    (row(dport="70000"), "bad Dport '70000'"),
    (row(sport="0x1ffff"), "bad Sport '0x1ffff'"),
    (row(sb=2000), "SrcBytes > TotBytes"),
    (row(sp=11), "SrcPkts > TotPkts"),
    (row(tb=-5, sb=0), "bad TotBytes -5"),
    (row().replace("2019/04/04 16:23:00.000000", "2019/02/30 16:23:00.000000"), "bad StartTime '2019/02/30 16:23:00.000000'"),
    (row().replace("2019/04/04 16:23:00.000000", "yesterday"), "bad StartTime 'yesterday'"),
    (row().replace("10.0.0.1", "not-an-ip"), "bad SrcAddr 'not-an-ip'"),
    (row(proto=""), "missing protocol"),
    (row(tp="x"), None),  # pyarrow refuses the line: a bad line with pyarrow's reason
    (row() + ",extra", "wrong field count (17 of 16)"),
])  # fmt: skip
def test_bad_lines_are_skipped_with_path_line_and_reason(bad: str, reason: str | None) -> None:
    skips = SkipLog(keep=100)
    df = parse("\n".join([HEADER, row(), bad, row(sport="1")]) + "\n", skips=skips)
    assert df["source_line"].tolist() == [2, 4]
    assert skips.total == 1 and skips.examples[0].line == 3
    if reason is not None:
        assert skips.examples[0].reason == reason
    with pytest.raises(ParseError) as err:
        parse("\n".join([HEADER, row(), bad]), skips=SkipLog(strict=True))
    assert str(err.value).startswith("x.binetflow:3:")


# --------------------------------------------------------------------------- State


@pytest.mark.parametrize("state, conn_state, history", [
    ("S_", "S0", "S"),
    ("S_RA", "REJ", "Sar"),
    ("S_R", "REJ", "Sr"),
    ("SR_", "RSTOS0", "SR"),
    ("FS_", "SH", "SF"),
    ("SRPA_", "RSTOS0", "SADR"),
    ("SA_SA", "S1", "ShAa"),
    ("SPA_SPA", "S1", "ShADad"),
    ("FSPA_FSPA", "SF", "ShADadFf"),
    ("FSPA_SPA", "S2", "ShADadF"),
    ("SPA_FSPA", "S3", "ShADadf"),
    ("FSRPA_FSPA", "RSTO", "ShADadFfR"),
    ("SPA_SRPA", "RSTR", "ShADadr"),
    ("PA_PA", "OTH", "ADad"),
    ("_SA", "OTH", "ha"),
    ("_SRA", "RSTRH", "har"),
    ("_FSA", "SHR", "haf"),
    ("SEC_SEA", "S1", "Sha"),  # ECE/CWR letters are read and ignored
])  # fmt: skip
def test_tcp_flag_states(state: str, conn_state: str, history: str) -> None:
    r = one(row(state=state))
    assert (r["conn_state"], r["history"]) == (conn_state, history)


@pytest.mark.parametrize("proto, state, tp, tb, sb, sp, conn_state, history", [
    ("tcp", "REQ", 1, 60, 60, 1, "S0", "S"),
    ("tcp", "ACC", 2, 120, 60, 1, "S1", "Sh"),
    ("tcp", "CON", 10, 1000, 300, 6, "S1", "ShA"),
    ("tcp", "EST", 10, 1000, 300, 6, "S1", "ShA"),
    ("tcp", "FIN", 10, 1000, 300, 6, "S2", "ShAF"),
    ("tcp", "CLO", 10, 1000, 300, 6, "SF", "ShAFf"),
    ("tcp", "RST", 2, 120, 120, 2, "RSTOS0", "SR"),  # nothing back
    ("tcp", "RST", 2, 120, 60, 1, "REJ", "Sr"),  # a one-packet answer: refused
    ("tcp", "RST", 12, 1200, 600, 6, "RSTR", "ShAr"),  # a longer exchange, then reset
    ("tcp", "TIM", 3, 180, 180, 3, "OTH", None),
    ("udp", "CON", 2, 142, 63, 1, "SF", "Dd"),
    ("udp", "INT", 3, 1770, 1770, 3, "S0", "D"),
    ("udp", "REQ", 1, 80, 80, 1, "S0", "D"),
    ("icmp", "ECO", 1, 98, 98, 1, "OTH", None),
    ("icmp", "ECR", 2, 196, 98, 1, "OTH", None),
    ("icmp", "URP", 1, 70, 70, 1, "OTH", None),
])  # fmt: skip
def test_state_words(proto: str, state: str, tp: int, tb: int, sb: int, sp: int,
                     conn_state: str, history: str | None) -> None:
    r = one(row(proto=proto, state=state, tp=tp, tb=tb, sb=sb, sp=sp,
                sport="0x0008" if proto == "icmp" else "51000"))
    assert r["conn_state"] == conn_state
    assert (None if na(r["history"]) else r["history"]) == history


def test_udp_without_byte_counts_uses_the_state_word() -> None:
    hdr = "StartTime,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State"
    df = parse("\n".join([hdr, "2019/04/04 16:23:00,udp,10.0.0.1,5353,  <->,10.0.0.2,53,CON",
                          "2019/04/04 16:23:01,udp,10.0.0.1,5353,   ->,10.0.0.2,53,INT",
                          "2019/04/04 16:23:02,udp,10.0.0.1,5353,   ->,10.0.0.2,53,TIM"]))
    assert df["conn_state"].fillna("-").tolist() == ["SF", "S0", "-"]
    assert df["history"].fillna("-").tolist() == ["Dd", "D", "-"]
    assert df["orig_ip_bytes"].isna().all() and df["orig_pkts"].isna().all()
    assert "label" not in df.columns  # no Label column: an unlabeled capture


def test_tcp_flag_state_table_is_total() -> None:
    """Every combination of S, A, F, R, P from each side has a Zeek state."""
    known = {"S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"}
    for o in range(32):
        for r in range(32):
            assert tcp_flag_state(o, r) in known


# --------------------------------------------------------------------------- layout variants


def test_missing_srcpkts_keeps_packets_missing_unless_certain() -> None:
    hdr = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label"
    rows = ["2018/09/27 23:44:06.271738,0.000000,tcp,192.168.2.12,49824,   ->,220.37.164.30,23,REQ,0,,1,60,60,",
            "2018/09/27 22:40:52.403669,0.008364,udp,192.168.2.12,56343,  <->,192.168.2.1,53,CON,0,0,2,208,72,",
            "2018/09/27 22:40:52.403669,0.008364,udp,192.168.2.12,56343,   <-,192.168.2.1,53,CON,0,0,3,208,0,"]
    df = parse("\n".join([hdr, *rows]))
    assert df["orig_pkts"].tolist()[0] == 1 and df["resp_pkts"].tolist()[0] == 0
    assert df["orig_pkts"].isna().tolist() == [False, True, False]
    assert df["resp_pkts"].isna().tolist() == [False, True, False]
    assert df["orig_ip_bytes"].tolist() == [60, 72, 208] and df["resp_ip_bytes"].tolist() == [0, 136, 0]
    assert df["orig_pkts"].tolist()[2] == 3  # reversed: all packets were the destination's


def test_columns_by_name_in_any_order_and_case() -> None:
    hdr = "label,srcaddr,DSTADDR,Proto,Dport,Sport,StartTime,Dir,State,TotBytes,SrcBytes,TotPkts,SrcPkts,Dur"
    df = parse(hdr + "\nflow=From-Botnet-V1,10.0.0.1,10.0.0.2,tcp,80,51000,2019/04/04 16:23:00,   ->,S_,60,60,1,1,0\n")
    r = df.iloc[0]
    assert (r["orig_h"], r["orig_p"], r["resp_p"], r["conn_state"], r["label"]) == \
        ("10.0.0.1", 51000, 80, "S0", "Malicious")


def test_header_without_an_address_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="lacks dstaddr"):
        parse("StartTime,Dur,Proto,SrcAddr,Sport,Dir,Dport,State\n2019/04/04 16:23:00,1,tcp,10.0.0.1,1,->,2,S_\n")


def test_tab_crlf_no_final_newline_and_gzip_read_the_same(tmp_path: Path) -> None:
    rows = [row(), row(dir="   <-", state="SPA_FSPA", label="flow=From-Normal-V1"),
            row(proto="icmp", sport="0x0303", dport="0x1234", state="URP", label="flow=Background"),
            row(proto="arp", dir="  who", sport="", dport="")]
    comma = "\n".join([HEADER, *rows]) + "\n"
    ref = parse(comma)
    assert len(ref) == 3
    variants = {
        "tab": comma.replace(",", "\t"),
        "crlf": comma.replace("\n", "\r\n"),
        "no final newline": comma.rstrip("\n"),
        "tab crlf, no final newline": comma.replace(",", "\t").replace("\n", "\r\n").rstrip("\r\n"),
    }
    for name, text in variants.items():
        got = parse(text)
        pd.testing.assert_frame_equal(got, ref, obj=name)
    gz = tmp_path / "capture.txt"  # content, not the name, decides
    gz.write_bytes(gzip.compress(variants["tab"].encode()))
    got = schema.concat(read_flows(gz))
    assert sniff_format(variants["tab"].encode()) == "binetflow"
    pd.testing.assert_frame_equal(got[FLOW_COLS], ref[FLOW_COLS])


def test_repeated_header_and_sniffing() -> None:
    text = "\n".join([HEADER, row(), HEADER, row(sport="2")]) + "\n"
    assert parse(text)["orig_p"].tolist() == [51000, 2]
    assert sniff_format(text.encode()) == "binetflow"
    assert sniff_format(text.replace(",", "\t").encode()) == "binetflow"
    with pytest.raises(FormatError):  # a header line of another format is not claimed
        sniff_format(b"StartTime,Dur,Foo,Bar\n1,2,3,4\n")


def test_incremental_feeding_and_resumed_state_equal_one_read() -> None:
    rng = random.Random(7)
    states = ["S_", "S_RA", "FSPA_FSPA", "CON", "INT", "REQ", "RST", "PA_PA"]
    protos = ["tcp", "udp", "tcp", "icmp", "arp"]
    lines = [HEADER]
    for _ in range(3000):
        p = rng.choice(protos)
        lines.append(row(proto=p, sport="0x0303" if p == "icmp" else rng.randint(1, 65535),
                         dir=rng.choice(["   ->", "   <-", "  <->", "  who" if p == "arp" else "  ?>"]),
                         state=rng.choice(states), sb=rng.randint(0, 1000), tb=1000,
                         label=rng.choice(["", "flow=From-Botnet-V1", "flow=Background"])))
    text = ("\n".join(lines) + "\n").replace(",", "\t")
    whole = parse(text)
    assert len(whole) == sum(1 for ln in lines[1:] if ",arp," not in ln)
    for chunk in (1, 7, 4096):
        pd.testing.assert_frame_equal(parse(text, chunk=chunk, batch_rows=100), whole)
    # stop in the middle of a line, save the state, resume in a new parser
    data = text.encode()
    cut = len(data) // 2 + 5
    p1 = BinetflowParser("x.binetflow", SkipLog(), options=ReadOptions(tz="Europe/Prague"))
    first = p1.feed(data[:cut])
    state = p1.get_state()
    assert state["delimiter"] == "\t" and state["tz"] == "Europe/Prague"
    p2 = BinetflowParser("x.binetflow", SkipLog(), options=ReadOptions(tz="Europe/Prague"))
    p2.set_state(state)
    rest = p2.feed(data[p1.consumed:]) + p2.close()
    ref = parse(text, tz="Europe/Prague")
    pd.testing.assert_frame_equal(schema.concat(first + rest), ref)
    with pytest.raises(StateError, match="started with --tz Europe/Prague"):
        BinetflowParser("x.binetflow", SkipLog()).set_state(state)
    with pytest.raises(StateError):
        BinetflowParser("x.binetflow", SkipLog()).set_state({**state, "tz": "UTC", "delimiter": ";"})


# --------------------------------------------------------------------------- time


def test_start_time_utc_by_default_and_tz_shifts_wall_clock_only() -> None:
    rows = [row(),  # 2019/04/04 16:23:00 (CEST in Prague, UTC+2)
            row().replace("2019/04/04 16:23:00.000000", "2019/01/15 12:00:00.123456"),  # CET, UTC+1
            row().replace("2019/04/04 16:23:00.000000", "2019/10/27 02:30:00"),  # ambiguous: DST
            row().replace("2019/04/04 16:23:00.000000", "1970/01/01 01:00:08.140073"),  # relative
            row().replace("2019/04/04 16:23:00.000000", "1554394980.5"),  # epoch: never shifted
            row().replace("2019/04/04 16:23:00.000000", "2019-04-04T16:23:00")]  # ISO
    text = "\n".join([HEADER, *rows]) + "\n"
    utc = parse(text)["ts"].tolist()
    prague = parse(text, tz="Europe/Prague")["ts"].tolist()
    z = ZoneInfo("Europe/Prague")
    assert utc[0] == datetime(2019, 4, 4, 16, 23, tzinfo=UTC).timestamp()
    assert prague[0] == datetime(2019, 4, 4, 16, 23, tzinfo=z).timestamp() == utc[0] - 7200
    assert utc[1] == pytest.approx(datetime(2019, 1, 15, 12, 0, 0, 123456, UTC).timestamp(), abs=1e-6)
    assert prague[1] == pytest.approx(utc[1] - 3600, abs=1e-6)
    assert prague[2] == datetime(2019, 10, 27, 2, 30, tzinfo=z, fold=0).timestamp() == utc[2] - 7200
    assert utc[3] == pytest.approx(3608.140073, abs=1e-6) and prague[3] == pytest.approx(8.140073, abs=1e-6)
    assert utc[4] == prague[4] == 1554394980.5
    assert utc[5] == utc[0] and prague[5] == prague[0]


def test_start_times_outside_1900_2199_are_bad_lines_with_or_without_tz() -> None:
    """Far-off years are no capture's time (pandas could not even hold them): skipped, not
    wrapped around into a plausible-looking negative epoch."""
    odd = ["0001/01/01 00:00:00", "9999/12/31 23:59:59.5", "0001-01-01T00:00:00", "2300-01-01 00:00:00"]
    text = "\n".join([HEADER, *(row().replace("2019/04/04 16:23:00.000000", t) for t in odd), row()])
    for tz in (None, "Europe/Prague"):
        skips = SkipLog(keep=10)
        df = parse(text, skips=skips, tz=tz)
        assert df["source_line"].tolist() == [6]
        assert [s.line for s in skips.examples] == [2, 3, 4, 5]
        assert all(s.reason.startswith("bad StartTime") for s in skips.examples)
    west = row().replace("2019/04/04 16:23:00.000000", "1969/12/31 19:00:08.5")  # relative, EST
    assert one(west, tz="America/New_York")["ts"] == 8.5


def test_bad_zone_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        ReadOptions(tz="Mars/Olympus")


def test_skiplog_counts_records_that_are_not_flows_in_bulk() -> None:
    skips = SkipLog(keep=3)
    skips.add_many("f", [5, 6, 7, 8, 9], "non-IP record (arp)", malformed=False)
    skips.add("f", 10, "bad Dir 'x'")
    assert skips.total == 6 and skips.by_reason["non-IP record (arp)"] == 5
    assert [s.line for s in skips.examples] == [5, 6, 7]
    strict = SkipLog(strict=True)
    strict.add_many("f", [1, 2], "non-IP record (arp)", malformed=False)
    assert strict.total == 2
    with pytest.raises(ParseError, match="f:3: bad"):
        strict.add_many("f", [3, 4], "bad")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=80),
    st.sampled_from([row(), row(dir="   <-"), row(proto="icmp", sport="0x0303"), row(proto="arp"),
                     row(sport="0xZZ"), row(state="\x00\xff"), row(label="a\tb,c\"d")]).map(str.encode),
), max_size=30), st.sampled_from([b"\n", b"\r\n"]), st.integers(1, 64))
def test_hostile_lines_never_crash_the_reader(lines: list[bytes], nl: bytes, chunk: int) -> None:
    """Any bytes after a header: every line is a row or a counted skip, never an exception;
    chunking changes nothing."""
    data = HEADER.encode() + nl + nl.join(lines) + nl
    skips = SkipLog(keep=0)
    df = parse(data, skips=skips)
    schema.validate(df)
    # blank = empty or a lone CR (a CRLF line end); "\r\r" is a line with a stray CR (a skip)
    n_lines = sum(1 for ln in data.split(b"\n")[1:] if ln not in (b"", b"\r"))
    assert len(df) + skips.total <= n_lines
    assert df["source_line"].is_monotonic_increasing
    pd.testing.assert_frame_equal(parse(data, chunk=chunk, skips=SkipLog(keep=0)), df)
