"""nfdump readers on the real captures: CSV (both layouts), JSON/NDJSON, nfcapd via nfdump."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, need, need_binary
from zeekml.errors import FormatError, ParseError, ZeekmlError
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.nfdump import NfdumpCsvParser, NfdumpJsonParser, iter_nfcapd

NF = DATA / "nfdump"
TEST1 = NF / "slips-test1-malicious"
IRC = NF / "pcap-iot23-34-1-irc"
FLOW_COLS = [c for c in schema.COLUMNS if c != "uid"]


def manifest_rows() -> dict[str, int]:
    """path -> rows of every nfdump entry of MANIFEST.md (directories end in '/')."""
    need((DATA / "MANIFEST.md").is_file(), f"the shared captures at {DATA}")
    out: dict[str, int] = {}
    for line in (DATA / "MANIFEST.md").read_text().splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if not line.startswith("| nfdump/") or len(cells) < 5 or not cells[4].isdigit():
            continue
        out[cells[0].removeprefix("| ").split(" (")[0]] = int(cells[4])
    return out


ROWS = manifest_rows() if DATA.is_dir() else {}
CSVS = sorted(p for p in ROWS if p.endswith(".csv"))
JSONS = sorted(p for p in ROWS if p.endswith(".json"))
NFCAPD = sorted(p for p in ROWS if p.endswith("/") or p.endswith(".nfcapd"))


def parse(parser, data: bytes, chunk: int = 1 << 20) -> pd.DataFrame:
    frames = []
    for i in range(0, len(data), chunk):
        frames += parser.feed(data[i : i + chunk])
    frames += parser.close()
    return schema.concat(frames) if frames else schema.empty_table()


def canon_sorted(df: pd.DataFrame, cols: list[str] = FLOW_COLS) -> pd.DataFrame:
    out = df[cols].copy()
    return out.sort_values(cols, na_position="first", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("rel", CSVS)
def test_every_nfdump_csv_matches_manifest(rel: str) -> None:
    path = DATA / rel
    skips = SkipLog(strict=True)
    p = NfdumpCsvParser(str(path), skips)
    df = parse(p, path.read_bytes())
    schema.validate(df)
    # the manifest counts data lines; <= 1.7.4 prints an extra line per tunnelled flow
    assert len(df) + p.tunnel_lines == ROWS[rel]
    # tunnel annotation lines, counted in the files by hand: 6in4 (IPv6 in IPv4), one GRE line
    expected_tunnels = {"6in4tunnel": 62, "amp.dns.RRSIG.fragmented": 1}
    assert p.tunnel_lines == next((n for k, n in expected_tunnels.items() if k in rel), 0)
    assert df["source_line"].iloc[0] >= 2 and df["source_line"].is_monotonic_increasing
    assert df["uid"].str.fullmatch(r"N[0-9A-Za-z]{17}").all() and df["uid"].is_unique
    assert df["orig_h"].notna().all() and (df["orig_pkts"] > 0).all()
    assert df["resp_pkts"].isna().all()  # nfpcapd writes unidirectional flows
    assert df["orig_bytes"].isna().all() and df["resp_bytes"].isna().all()


@pytest.mark.parametrize("rel", JSONS)
def test_every_nfdump_json_matches_manifest(rel: str) -> None:
    path = DATA / rel
    df = schema.concat(read_flows(path, skips=SkipLog(strict=True)))
    schema.validate(df)
    assert len(df) == ROWS[rel]
    # milliseconds survive in JSON
    assert (np.round(df["ts"] * 1000) % 1000 != 0).mean() > 0.9


@pytest.mark.parametrize("rel", NFCAPD)
def test_every_nfcapd_through_nfdump_matches_manifest(rel: str) -> None:
    need_binary("nfdump")
    skips = SkipLog(strict=True)
    frames = list(iter_nfcapd(str(DATA / rel), skips, batch_rows=1000))
    df = schema.concat(frames)
    schema.validate(df)
    # the manifest counts nfcapd records; the one GRE tunnel annotation record of the
    # RRSIG capture (0.0.0.0 -> 0.0.0.0, 0 packets: nfdump's own summary says 659 flows)
    # is not a flow
    tunnels = 1 if "amp-dns-rrsig" in rel else 0
    assert len(df) == ROWS[rel] - tunnels
    assert max((len(f) for f in frames), default=0) <= 1000
    # provenance: each row names its nfcapd file and its record index there
    files = df["source_file"].unique()
    for name in files[:5]:
        rows = df[df["source_file"] == name]
        assert rows["source_line"].tolist() == list(range(1, len(rows) + 1))
        appendix = f"{rel}{os.path.basename(name)}" if rel.endswith("/") else rel
        assert len(rows) == ROWS.get(appendix, len(rows) + tunnels) - tunnels


def test_nfcapd_directory_through_read_flows() -> None:
    need_binary("nfdump")
    from zeekml.sources import expand_inputs

    files = expand_inputs([str(IRC / "nfcapd")])
    assert len(files) == 288
    total = sum(len(b) for f in files for b in read_flows(f, skips=SkipLog(strict=True)))
    assert total == ROWS["nfdump/pcap-iot23-34-1-irc/nfcapd/"]


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("rel", [p for p in NFCAPD if p.endswith("/")])
def test_nfcapd_agrees_with_its_csv(rel: str) -> None:
    """Same flows from the binary (JSON, ms) and the CSV nfdump made of it (whole seconds)."""
    need_binary("nfdump")
    folder = DATA / rel
    csv = next(p for p in folder.parent.glob("*.csv"))
    a = schema.concat(iter_nfcapd(str(folder), SkipLog(strict=True)))
    b = schema.concat(read_flows(csv, skips=SkipLog(strict=True)))
    a["ts"] = np.floor(a["ts"])  # <= 1.7.4 CSV truncates to whole seconds
    assert canon_sorted(a).equals(canon_sorted(b))


def test_test1_csv_agrees_with_json_and_nfcapd() -> None:
    need_binary("nfdump")
    csv = schema.concat(read_flows(TEST1 / "test1-malicious.csv"))
    js = schema.concat(read_flows(TEST1 / "test1-malicious.json"))
    cap = schema.concat(read_flows(TEST1 / "test1-malicious.nfcapd"))
    assert canon_sorted(js).equals(canon_sorted(cap))  # same nfdump, same JSON
    js["ts"] = np.floor(js["ts"])
    assert canon_sorted(js).equals(canon_sorted(csv))
    udp = csv["proto"] == "udp"
    assert udp.sum() == 17
    assert (csv["history"][udp] == "D").all() and (csv["conn_state"][udp] == "S0").all()
    assert set(csv["conn_state"][~udp]) == {"S0", "OTH", "S2"}


def test_nfcapd_records_are_read_in_the_order_their_flows_ended() -> None:
    """``nfdump -O tend``: nfpcapd writes a file's records in hash order (a reflection
    attack's grouped by reflector); zeekml reads them as Zeek logs connections, by end."""
    need_binary("nfdump")
    for rel in ("pcap-stopddos-amp-dns-rrsig-fragmented/nfcapd", "pcap-iot23-34-1-irc/nfcapd"):
        for f in sorted((NF / rel).glob("nfcapd.*"))[:40]:
            df = schema.concat(iter_nfcapd(str(f)))
            end = (df["ts"] + df["duration"].fillna(0.0)).to_numpy()
            assert (np.diff(end) >= -1e-3).all(), f
    raw = nfdump_json(NF / "pcap-stopddos-amp-dns-rrsig-fragmented/nfcapd")
    firsts = [r["first"] for r in raw]
    assert firsts != sorted(firsts)  # the file itself is not in time order


def test_irc_json_of_directory_equals_nfcapd_directory() -> None:
    need_binary("nfdump")
    js = schema.concat(read_flows(IRC / "2018-12-21-15-50-14-192.168.1.195.irc.json"))
    cap = schema.concat(iter_nfcapd(str(IRC / "nfcapd")))
    # the same flows; zeekml reads nfcapd files in end order (nfdump -O tend), the JSON
    # export is in the files' order
    cols = [c for c in FLOW_COLS if c != "source_line"]
    assert canon_sorted(js, cols).equals(canon_sorted(cap, cols))


# --------------------------------------------------------------------------- mapping


def test_icmp_type_code_follow_zeek_convention() -> None:
    df = schema.concat(read_flows(NF / "pcap-slips-test12-icmp-portscan/test12-icmp-portscan.csv"))
    raw = pd.read_csv(NF / "pcap-slips-test12-icmp-portscan/test12-icmp-portscan.csv",
                      skipfooter=3, engine="python")  # fmt: skip
    icmp = (raw["pr"] == "ICMP").to_numpy()
    assert icmp.sum() > 10
    assert (df["proto"][icmp] == "icmp").all()
    assert (df["orig_p"][icmp].to_numpy() == (raw["dp"][icmp] // 256).to_numpy()).all()
    assert (df["resp_p"][icmp].to_numpy() == (raw["dp"][icmp] % 256).to_numpy()).all()
    assert set(df["orig_p"][icmp]) <= {0, 3, 8, 11}  # echo reply/request, unreachable, ...
    assert (df["conn_state"][icmp] == "OTH").all() and df["history"][icmp].isna().all()


def test_tcp_flags_give_history_and_state() -> None:
    df = schema.concat(read_flows(TEST1 / "test1-malicious.csv"))
    raw = pd.read_csv(TEST1 / "test1-malicious.csv", skipfooter=3, engine="python")
    syn_only = (raw["flg"] == "......S.").to_numpy()
    rst_ack = (raw["flg"] == "...A.R..").to_numpy() & (raw["ipkt"] == 1).to_numpy()
    assert syn_only.sum() > 1000 and rst_ack.sum() > 1000
    assert (df["history"][syn_only] == "S").all() and (df["conn_state"][syn_only] == "S0").all()
    assert (df["history"][rst_ack] == "R").all() and (df["conn_state"][rst_ack] == "OTH").all()
    one_packet = (df["orig_pkts"] == 1).to_numpy()
    assert df["duration"][one_packet].isna().all()  # Zeek leaves it unset too


def test_uids_are_deterministic() -> None:
    path = NF / "pcap-slips-test7-malicious/test7-malicious.csv"
    a = schema.concat(read_flows(path))
    b = schema.concat(read_flows(path, batch_rows=50))
    assert a["uid"].equals(b["uid"]) and a["uid"].is_unique


# --------------------------------------------------------------------------- nfdump >= 1.7.5


def _local(ms: str) -> str:
    return ms.replace("T", " ")


def csv_175(records: list[dict], trailer: bool = False) -> bytes:
    """nfdump >= 1.7.5 ``-o csv`` (``%ts,%td,%pr,%sa,%sp,%da,%dp,%pkt,%byt,%fl``), built as
    output_csv.c formats it: local time with ms, ``%.3f`` duration, numeric protocol,
    ICMP ``type.code`` in dstPort, and a tunnel line (outer addresses, inner counters)
    before each tunnelled flow."""
    lines = ["firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows"]
    for r in records:
        first = pd.Timestamp(r["first"])
        dur = (pd.Timestamp(r["last"]) - first).total_seconds()
        src = r.get("src4_addr") or r.get("src6_addr")
        dst = r.get("dst4_addr") or r.get("dst6_addr")
        proto = r["proto"]
        if proto in (1, 58):
            sp, dp = 0, f"{r['icmp_type']}.{r['icmp_code']}"
        else:
            sp, dp = r.get("src_port", 0), r.get("dst_port", 0)
        row = [_local(r["first"]), f"{dur:.3f}", proto, src, sp, dst, dp, r["in_packets"], r["in_bytes"], 1]
        if "tun proto" in r:  # a copy of the flow with the tunnel's protocol and addresses
            tdp = r["icmp_type"] * 256 + r["icmp_code"] if proto in (1, 58) else dp
            lines.append(",".join(map(str, [row[0], row[1], r["tun proto"], r["src4_tun_ip"], sp,
                                            r["dst4_tun_ip"], tdp, *row[7:]])))  # fmt: skip
        lines.append(",".join(map(str, row)))
    if trailer:
        lines += ["Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp", "1,2,3,4,5,6"]
    return ("\n".join(lines) + "\n").encode()


def nfdump_json(folder: Path) -> list[dict]:
    exe = need_binary("nfdump")
    out = subprocess.run([exe, "-R", str(folder), "-o", "json"], capture_output=True, check=True,
                         env={**os.environ, "TZ": "UTC"}).stdout  # fmt: skip
    return json.loads(out)


@pytest.mark.parametrize("capture", ["pcap-nfstream-6in4tunnel", "pcap-slips-test12-icmp-portscan",
                                     "pcap-slips-test-cc-2"])  # fmt: skip
def test_nfdump_175_csv_layout(capture: str) -> None:
    records = nfdump_json(NF / capture / "nfcapd")
    p = NfdumpCsvParser("new.csv", SkipLog(strict=True), batch_rows=100)
    new = parse(p, csv_175(records, trailer=True), chunk=777)
    ref = schema.concat(iter_nfcapd(str(NF / capture / "nfcapd")))
    assert len(new) == len(ref) == len(records)
    assert p.tunnel_lines == sum("tun proto" in r for r in records)
    same = [c for c in FLOW_COLS if c not in ("history", "conn_state", "source_line")]
    assert canon_sorted(new, same).equals(canon_sorted(ref, same))  # nfcapd: end order
    tcp = new["proto"] == "tcp"
    assert new["history"][tcp].isna().all() and new["conn_state"][tcp].isna().all()


def test_custom_csv_tokens_with_epoch_times() -> None:
    """``-o 'csv:%tsr,%ter,%pr,%sa,%sp,%da,%dp,%ipkt,%ibyt,%flg'`` headers are read by name."""
    records = json.loads((TEST1 / "test1-malicious.json").read_bytes())[:300]
    lines = ["firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,inPackets,inBytes,flags"]
    for r in records:
        f = pd.Timestamp(r["first"], tz="UTC").value // 1_000_000
        la = pd.Timestamp(r["last"], tz="UTC").value // 1_000_000
        lines.append(f"{f // 1000}.{f % 1000:03d},{la // 1000}.{la % 1000:03d},{r['proto']},"
                     f"{r['src4_addr']},{r['src_port']},{r['dst4_addr']},{r['dst_port']},"
                     f"{r['in_packets']},{r['in_bytes']},{r['tcp_flags']}")  # fmt: skip
    df = parse(NfdumpCsvParser("x.csv", SkipLog(strict=True)), ("\n".join(lines) + "\n").encode())
    ref = schema.concat(read_flows(TEST1 / "test1-malicious.json")).iloc[:300]
    assert df[FLOW_COLS].reset_index(drop=True).equals(ref[FLOW_COLS].reset_index(drop=True))


def test_ndjson_equals_json_array(tmp_path: Path) -> None:
    """``-o ndjson`` (nfdump >= 1.7.2; not in 1.7.1): one compact object per line."""
    records = json.loads((TEST1 / "test1-malicious.json").read_bytes())
    nd = ("\n".join(json.dumps(r, separators=(",", ":")) for r in records) + "\n").encode()
    a = parse(NfdumpJsonParser("x.ndjson", SkipLog(strict=True)), nd, chunk=65_537)
    b = schema.concat(read_flows(TEST1 / "test1-malicious.json"))
    assert a[FLOW_COLS].equals(b[FLOW_COLS])
    assert a["source_line"].tolist() == list(range(1, len(records) + 1))
    (tmp_path / "flows").write_bytes(nd)  # detected from content, whatever the name
    c = schema.concat(read_flows(tmp_path / "flows", skips=SkipLog(strict=True)))
    assert c[FLOW_COLS].equals(b[FLOW_COLS])


def test_headerless_q_output_uses_legacy_layout() -> None:
    data = (TEST1 / "test1-malicious.csv").read_bytes().split(b"\n", 1)[1]
    data = data[: data.index(b"Summary")]  # -q drops header and trailer in <= 1.7.4
    df = parse(NfdumpCsvParser("q.csv", SkipLog(strict=True)), data)
    assert len(df) == ROWS["nfdump/slips-test1-malicious/test1-malicious.csv"]


# --------------------------------------------------------------------------- streaming


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 30000), min_size=1, max_size=12))
def test_any_chunking_gives_the_same_rows(cuts: list[int]) -> None:
    for name, cls in (("test1-malicious.json", NfdumpJsonParser), ("test1-malicious.csv", NfdumpCsvParser)):
        data = (TEST1 / name).read_bytes()[:400_000]
        whole = parse(cls("x", SkipLog()), data)
        p = cls("x", SkipLog())
        frames, pos = [], 0
        for c in sorted(set(cuts)):
            frames += p.feed(data[pos:c])
            pos = max(pos, c)
        frames += p.feed(data[pos:]) + p.close()
        got = schema.concat(frames)
        assert got.equals(whole), name


@pytest.mark.parametrize("name,cls", [("test1-malicious.json", NfdumpJsonParser),
                                      ("test1-malicious.csv", NfdumpCsvParser)])  # fmt: skip
def test_resume_from_state(name: str, cls: type) -> None:
    data = (TEST1 / name).read_bytes()
    whole = parse(cls("x", SkipLog()), data)
    p = cls("x", SkipLog())
    first = p.feed(data[: len(data) // 2 + 17])
    state = json.loads(json.dumps(p.get_state()))
    assert 0 < p.consumed <= len(data) // 2 + 17
    q = cls("x", SkipLog())
    q.set_state(state)
    rest = q.feed(data[state["consumed"] :]) + q.close()
    got = schema.concat(first + rest)
    assert got.equals(whole)


def test_bad_state_is_refused() -> None:
    from zeekml.errors import StateError

    for bad in ({"format": "nfdump_json", "line_no": 1, "consumed": 5, "mode": "x"},
                {"format": "nfdump_csv", "line_no": -1, "consumed": 0},
                {"format": "nfdump_csv", "line_no": 1, "consumed": 0, "fields": [1, 2]},
                {"format": "zeek_tsv", "line_no": 1, "consumed": 0}):  # fmt: skip
        cls = NfdumpJsonParser if bad["format"] == "nfdump_json" else NfdumpCsvParser
        with pytest.raises(StateError):
            cls("x").set_state(bad)


# --------------------------------------------------------------------------- bad input


def test_bad_csv_lines_are_skipped_with_path_and_line() -> None:
    lines = (TEST1 / "test1-malicious.csv").read_bytes().split(b"\n")
    bad = {5: b"2018-01-12 15:37:30,2018-01-12 15:37:30,0.000,1.2.3.4", 9: lines[9].replace(b",52", b",5x", 1),
           12: b"\xff\xfe" + lines[12], 20: lines[20].replace(b"2018-01-12", b"2018-13-45", 1),
           30: lines[30].replace(b"147.32.80.119", b"evil;rm -rf", 1)}  # fmt: skip
    for i, v in bad.items():
        lines[i - 1] = v
    data = b"\n".join(lines)
    skips = SkipLog()
    df = parse(NfdumpCsvParser("bad.csv", skips), data)
    assert sorted(s.line for s in skips.examples) == sorted(bad)
    assert all(s.path == "bad.csv" for s in skips.examples)
    assert len(df) == ROWS["nfdump/slips-test1-malicious/test1-malicious.csv"] - len(bad)
    assert not set(df["source_line"]) & set(bad)
    with pytest.raises(ParseError, match=r"bad\.csv:5: wrong field count"):
        parse(NfdumpCsvParser("bad.csv", SkipLog(strict=True)), data)


def test_bad_json_records_are_skipped() -> None:
    text = (TEST1 / "test1-malicious.json").read_bytes()
    text = text.replace(b'"in_packets" : 1,', b'"in_packets" : "one",', 1)  # record 1 (line 2)
    pos = text.index(b'"src_port"', 50_000)
    text = text[:pos] + b"garbage" + text[pos:]
    skips = SkipLog()
    df = parse(NfdumpJsonParser("bad.json", skips), text, chunk=100_003)
    assert len(df) == ROWS["nfdump/slips-test1-malicious/test1-malicious.json"] - 2
    assert skips.total == 2 and skips.examples[0].line == 2
    assert "bad in_packets" in skips.examples[0].reason and "bad JSON" in skips.examples[1].reason


def test_truncated_json_array_reports_the_last_record() -> None:
    text = (TEST1 / "test1-malicious.json").read_bytes()[:100_000]
    skips = SkipLog()
    df = parse(NfdumpJsonParser("cut.json", skips), text)
    assert skips.total == 1 and "truncated JSON record" in skips.examples[0].reason
    assert len(df) == text.count(b"\n}")


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000))
def test_hostile_bytes_never_crash(blob: bytes) -> None:
    for cls, prefix in ((NfdumpCsvParser, b"ts,te,td,sa,da,sp,dp,pr,flg\n"), (NfdumpJsonParser, b"[\n{\n"),
                        (NfdumpJsonParser, b"{"), (NfdumpCsvParser, b"")):  # fmt: skip
        try:
            parse(cls("h", SkipLog()), prefix + blob, chunk=97)
        except ZeekmlError:
            pass  # a clear error (e.g. an unusable header) is fine; a crash is not


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_random_corruption_keeps_every_good_line(data: st.DataObject) -> None:
    lines = (TEST1 / "test1-malicious.csv").read_bytes().split(b"\n")[:201]
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    broken = set(rng.sample(range(2, 201), data.draw(st.integers(1, 20))))
    for i in broken:
        raw = bytearray(lines[i - 1])
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.choice([b for b in range(256) if b != 10])
        lines[i - 1] = bytes(raw)
    df = parse(NfdumpCsvParser("c", SkipLog()), b"\n".join(lines) + b"\n")
    good = set(range(2, 202)) - broken
    assert good <= set(df["source_line"])


# --------------------------------------------------------------------------- nfcapd errors


def test_truncated_and_foreign_nfcapd_files(tmp_path: Path) -> None:
    need_binary("nfdump")
    cut = tmp_path / "cut.nfcapd"
    cut.write_bytes((TEST1 / "test1-malicious.nfcapd").read_bytes()[:3000])
    skips = SkipLog()
    assert list(iter_nfcapd(str(cut), skips)) == []
    assert skips.total == 1 and skips.examples[0].path == str(cut)
    assert "nfdump could not read it completely" in skips.examples[0].reason
    with pytest.raises(ParseError, match="cut.nfcapd"):
        list(iter_nfcapd(str(cut), SkipLog(strict=True)))
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "nfcapd.current.123").write_bytes(b"in progress")
    (folder / "README").write_text("not a capture")
    assert list(iter_nfcapd(str(folder), SkipLog(strict=True))) == []


def test_missing_nfdump_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import zeekml.sources.nfcapd as nf

    monkeypatch.setattr(nf, "NFDUMP_CANDIDATES", ())
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FormatError, match="apt-get install nfdump"):
        list(iter_nfcapd(str(TEST1 / "test1-malicious.nfcapd")))


def test_sniff_recognises_every_nfdump_form() -> None:
    from zeekml.sources.nfdump import sniff

    assert sniff((TEST1 / "test1-malicious.nfcapd").read_bytes()[:64]) == "nfcapd"
    assert sniff((TEST1 / "test1-malicious.json").read_bytes()[:4096]) == "nfdump_json"
    assert sniff(b'{"type":"FLOW","first":"x","in_packets":1,"src4_addr":"1.2.3.4"}\n') == "nfdump_json"
    csv = (TEST1 / "test1-malicious.csv").read_bytes()
    assert sniff(csv[:4096]) == "nfdump_csv"
    assert sniff(csv.split(b"\n", 1)[1][:4096]) == "nfdump_csv"  # -q: no header
    assert sniff(b"srcAddr,dstAddr,firstSeen,proto\n1.2.3.4,5.6.7.8,2024-01-01 00:00:00.000,6\n") == "nfdump_csv"
    assert sniff(b'{"ts":1.5,"uid":"C1","id.orig_h":"1.2.3.4"}\n') is None  # Zeek JSON
    assert sniff(b"#separator \\x09\n") is None


def test_closing_the_stream_early_stops_nfdump() -> None:
    need_binary("nfdump")
    it = iter_nfcapd(str(IRC / "nfcapd"), SkipLog(strict=True), batch_rows=5)
    first = next(it)
    assert len(first) <= 5
    it.close()  # kills and reaps the running nfdump; nothing left behind
