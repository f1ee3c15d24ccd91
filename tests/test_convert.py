"""``zeekml convert``: round trips through zeekml and zat on real captures, streaming, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, need, need_binary, need_module
from zeekml.cli.main import main
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.biflow import pair_table

NF = DATA / "nfdump"
ZEEK = DATA / "zeek"
CANON = [*schema.COLUMNS, *schema.LABEL_COLUMNS]


def read(*paths: Path, **kw: object) -> pd.DataFrame:
    df = schema.concat(b for p in paths for b in read_flows(p, skips=SkipLog(strict=True), **kw))
    return df[[c for c in CANON if c in df.columns]].reset_index(drop=True)


def paired(df: pd.DataFrame) -> pd.DataFrame:
    """What convert writes for NetFlow input: records joined with their reverse."""
    return pair_table(df)[list(df.columns)]


def convert(tmp_path: Path, to: str, *inputs: Path, extra: tuple[str, ...] = ()) -> Path:
    out = tmp_path / f"out.{to}"
    assert main(["convert", *map(str, inputs), "--to", to, "--out", str(out), *extra]) == 0
    return out


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def zat_frame(path: Path) -> pd.DataFrame:
    need_module("zat")
    from zat.log_to_dataframe import LogToDataFrame

    return LogToDataFrame().create_dataframe(str(path))


def check_zat(path: Path, ref: pd.DataFrame) -> None:
    """zat's DataFrame reader sees the same flows (its own types: UInt, category, timedelta)."""
    z = zat_frame(path)
    assert len(z) == len(ref)
    assert (z["uid"].to_numpy() == ref["uid"].to_numpy()).all()
    seconds = (z.index - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
    assert np.allclose(seconds, ref["ts"], atol=1e-6, rtol=0)
    z = z.reset_index(drop=True)
    for zc, c in (("id.orig_h", "orig_h"), ("id.resp_h", "resp_h"), ("proto", "proto"),
                  ("conn_state", "conn_state"), ("history", "history")):  # fmt: skip
        assert z[zc].astype(object).fillna("-").tolist() == ref[c].astype(object).fillna("-").tolist(), c
    for zc, c in (("id.orig_p", "orig_p"), ("id.resp_p", "resp_p"), ("orig_pkts", "orig_pkts"),
                  ("orig_ip_bytes", "orig_ip_bytes"), ("resp_pkts", "resp_pkts")):  # fmt: skip
        assert z[zc].astype("Int64").equals(ref[c].astype("Int64")), c
    dur = z["duration"].dt.total_seconds().to_numpy(dtype=float, na_value=np.nan)
    assert np.allclose(dur, ref["duration"].to_numpy(dtype=float, na_value=np.nan), equal_nan=True, atol=1e-6)


# --------------------------------------------------------------------------- nfdump -> zeek


@pytest.mark.parametrize("rel", ["slips-test1-malicious/test1-malicious.csv",
                                 "pcap-nfstream-6in4tunnel/6in4tunnel.csv",
                                 "slips-test1-malicious/test1-malicious.json"])  # fmt: skip
def test_nfdump_to_zeek_reads_back_unchanged(tmp_path: Path, rel: str) -> None:
    src = NF / rel
    out = convert(tmp_path, "zeek", src)
    text = out.read_text()
    assert text.startswith("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n")
    assert text.splitlines()[-1].startswith("#close\t")
    ref = paired(read(src))
    assert ref["paired"].any() and len(ref) < len(read(src))
    assert_same(read(out), ref)
    check_zat(out, ref)


def test_nfcapd_directory_to_zeek(tmp_path: Path) -> None:
    need_binary("nfdump")
    folder = NF / "pcap-iot23-34-1-irc/nfcapd"
    out = convert(tmp_path, "zeek", folder)
    records = read(*sorted(folder.glob("nfcapd.*")))
    assert len(records) == 7147
    ref = paired(records)  # one stream: replies in the next 5-minute file are joined too
    assert len(ref) == 4970 and int(ref["paired"].sum()) == 2177  # read in end order
    assert_same(read(out), ref)
    check_zat(out, ref)
    need_module("zat")
    from zat.zeek_log_reader import ZeekLogReader

    rows = list(ZeekLogReader(str(out)).readrows())
    assert len(rows) == 4970 and rows[0]["uid"] == ref["uid"][0]
    assert {r["paired"] for r in rows} == {True, False}
    # --no-pair: one flow per record, as nfdump prints them
    raw = convert(tmp_path, "zeek", folder, extra=("--no-pair",))
    assert_same(read(raw), records)


def test_labeled_csv_export_to_zeek_keeps_labels(tmp_path: Path) -> None:
    src = DATA / "cicids2017-improved-sample/Web_Attack_-_XSS_18.csv"
    out = convert(tmp_path, "zeek", src)
    fields = next(line for line in out.read_text().splitlines() if line.startswith("#fields"))
    assert fields.endswith("\ttunnel_parents\tpaired\tlabel\tdetailed-label")
    back = read(out)
    assert_same(back, read(src))
    assert set(back["detailed_label"]) == {"Web Attack - XSS"}


# --------------------------------------------------------------------------- zeek -> csv / json


@pytest.mark.parametrize("to", ["csv", "json"])
def test_zeek_to_csv_and_json_read_back_unchanged(tmp_path: Path, to: str) -> None:
    sources = [ZEEK / "slips-test18-ctu-sme-11/conn.log.labeled", ZEEK / "rita-proxy/conn.log"]
    for s in sources:
        need(s.is_file(), str(s))
    out = convert(tmp_path, to, *sources)
    ref = read(*sources)
    assert ref["label"].notna().sum() > 0 and ref["label"].isna().sum() > 0  # 2nd input unlabeled
    assert_same(read(out), ref)


def test_zeek_json_input_with_hostile_strings_round_trips(tmp_path: Path) -> None:
    src = ZEEK / "rita-json-all-fields/conn.log"
    need(src.is_file(), str(src))
    ref = read(src)
    for to in ("zeek", "csv", "json"):
        assert_same(read(convert(tmp_path, to, src)), ref)


# --------------------------------------------------------------------------- CLI behaviour


def test_default_output_is_stdout_and_streams_in_batches(tmp_path: Path) -> None:
    src = NF / "slips-test1-malicious/test1-malicious.json"
    proc = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "convert", str(src), "--to", "json",
                           "--batch-rows", "100"], capture_output=True, check=True)  # fmt: skip
    whole = convert(tmp_path, "json", src).read_bytes()
    assert proc.stdout == whole and proc.stdout.count(b"\n") == 2398  # 4593 records paired
    csv_small = convert(tmp_path, "csv", src, extra=("--batch-rows", "500")).read_bytes()
    assert csv_small == convert(tmp_path, "csv", src).read_bytes()


def test_errors_are_one_line_and_leave_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never.log"
    assert main(["convert", str(tmp_path / "missing.csv"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0]
    bad = tmp_path / "bad.csv"
    lines = (NF / "pcap-slips-test8-malicious/test8-malicious.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",UDP,", ",UDP,oops,", 1)
    bad.write_text("\n".join(lines) + "\n")
    assert main(["convert", str(bad), "--strict", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zeekml: error: {bad}:3: wrong field count (49 of 48)"]
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    assert main(["convert", str(bad), "--out", str(out)]) == 0  # not strict: skipped, counted
    assert len(read(out)) == 1


def test_bad_option_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "x", "--to", "parquet"])
    assert exc.value.code == 2
