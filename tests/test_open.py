"""The common entry point: detection from content, gzip, stdin, input expansion, summary."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import DATA
from zeekml.cli.main import main
from zeekml.errors import FormatError, ParseError
from zeekml.records import schema
from zeekml.sources import (
    PARSERS,
    SkipLog,
    expand_inputs,
    open_parser,
    read_flows,
    read_table,
    sniff_format,
)

Z = DATA / "zeek"
S008 = Z / "stratosphere-008-mixed" / "conn.log.labeled"
S003 = Z / "stratosphere-003-androidtester-rat" / "conn.log"
GZ = Z / "rita-proxy-rolling" / "conn.16:00:00-17:00:00.log.gz"
JSONLOG = Z / "stratosphere-002-portscan" / "conn.log"


def read(path, **kw) -> tuple[pd.DataFrame, SkipLog]:
    skips = kw.pop("skips", None) or SkipLog()
    return schema.concat(read_flows(path, skips=skips, **kw)), skips


def head(path, n: int = 65536) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


@pytest.mark.parametrize(
    "rel, fmt",
    [
        ("zeek/stratosphere-008-mixed/conn.log.labeled", "zeek_tsv"),
        ("zeek/zeek-btest-baselines/opt.basic/conn.log", "zeek_tsv"),
        ("zeek/slips-test10-mixed/conn.log", "zeek_tsv"),
        ("zeek/rita-truncated/conn_top.log", "zeek_tsv"),
        ("zeek/stratosphere-002-portscan/conn.log", "zeek_json"),
        ("zeek/rita-json-all-fields/conn.log", "zeek_json"),
        ("nfdump/slips-test1-malicious/test1-malicious.csv", "nfdump_csv"),
        ("nfdump/slips-test1-malicious/test1-malicious.json", "nfdump_json"),
        ("nfdump/slips-test1-malicious/test1-malicious.nfcapd", "nfcapd"),
        ("iot23-csv/CTU-Honeypot-Capture-7-1-labeled.csv", "zeek_csv"),
        ("cicids2017-improved-sample/Botnet_736.csv", "cicflowmeter_csv"),
    ],
)
def test_sniff_real_files(rel, fmt):
    assert sniff_format(head(DATA / rel)) == fmt


@pytest.mark.parametrize("data", [b"", b"\n\n", b"hello world\n", b"\x00\x01\x02binary"])
def test_sniff_rejects_unknown(data):
    with pytest.raises(FormatError):
        sniff_format(data)


def test_sniff_argus_binetflow_comma_and_tab():
    assert sniff_format(head(DATA / "binetflow" / "slips-test3-mixed.binetflow")) == "binetflow"
    assert sniff_format(head(DATA / "binetflow" / "slips-test5-mixed.binetflow")) == "binetflow"


def test_detection_ignores_names_and_gzip_by_content(tmp_path):
    # a JSON log named .tsv, a gzip without .gz, a TSV named .json
    a = tmp_path / "flows.tsv"
    shutil.copy(JSONLOG, a)
    b = tmp_path / "archive.log"
    shutil.copy(GZ, b)
    c = tmp_path / "x.json"
    shutil.copy(S003, c)
    assert len(read(a)[0]) == 4504
    assert len(read(b)[0]) == 7260
    assert len(read(c)[0]) == 361


def test_gzip_multi_member(tmp_path):
    p = tmp_path / "two.log.gz"
    p.write_bytes(gzip.compress(S003.read_bytes()) + gzip.compress(S008.read_bytes()))
    df, skips = read(p)
    assert skips.total == 0 and len(df) == 361 + 5663


def test_truncated_gzip_yields_rows_before_damage(tmp_path):
    raw = GZ.read_bytes()
    full, _ = read(GZ)
    p = tmp_path / "cut.log.gz"
    p.write_bytes(raw[: len(raw) * 2 // 3])
    df, skips = read(p)
    assert 0 < len(df) < len(full)
    cols = [c for c in full.columns if c != "source_file"]
    pd.testing.assert_frame_equal(df[cols], full[cols].iloc[: len(df)])
    assert skips.total == 1
    (skip,) = skips.examples
    assert skip.path == str(p) and "truncated gzip" in skip.reason
    assert skip.line == df["source_line"].iloc[-1] + 1
    with pytest.raises(ParseError, match="truncated gzip"):
        read(p, skips=SkipLog(strict=True))


def test_corrupt_gzip_is_a_clear_skip(tmp_path):
    raw = bytearray(GZ.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = b"\x00" * 64
    p = tmp_path / "bad.log.gz"
    p.write_bytes(bytes(raw))
    df, skips = read(p)
    assert len(df) < 7260 and skips.total >= 1
    # zeros inside a deflate block decode to junk lines (skipped), and the damage is
    # reported when zlib detects it (at the latest by the member's CRC)
    assert any("gzip" in r for r in skips.by_reason)


def test_stdin_plain_and_gzip():
    for path, rows in ((S003, 361), (GZ, 7260), (JSONLOG, 4504)):
        with open(path, "rb") as f:
            out = subprocess.run(
                [sys.executable, "-m", "zeekml.cli.main", "summary", "--json", "-"],
                stdin=f, capture_output=True, check=True,
            )  # fmt: skip
        assert json.loads(out.stdout)["rows"] == rows


def test_gzip_is_read_in_batches_as_large_as_plain(tmp_path):
    """A gzipped log is scored in batches as large as the same log plain: the decoder's
    small steps (~100 KB, ~350 rows) are joined first. Each batch used to be one step,
    and a zeekctl archive scored 14x slower than the same log uncompressed."""
    plain = tmp_path / "conn.log"
    plain.write_bytes(gzip.decompress(GZ.read_bytes()) * 4)
    packed = tmp_path / "conn.log.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    sizes = {p.name: [len(b) for b in read_flows(p, batch_rows=10_000)] for p in (plain, packed)}
    assert sum(sizes["conn.log"]) == 4 * 7260
    assert len(sizes["conn.log.gz"]) <= len(sizes["conn.log"]) + 1
    assert max(sizes["conn.log.gz"]) <= 2 * 10_000


def test_batches_are_bounded():
    sizes = [len(b) for b in read_flows(S008, batch_rows=700)]
    assert max(sizes) <= 700 and sum(sizes) == 5663


def test_expand_inputs(tmp_path):
    arch = Z / "rita-rotated-archive"
    files = expand_inputs([str(arch)])
    assert len(files) == 72 and files == sorted(files)
    days = expand_inputs([str(arch / "2024-04-19"), str(arch / "2024-04-2*")])
    assert days == files
    # a file named twice is read once; order of specs is kept; '-' passes through
    again = expand_inputs([str(S003), "-", str(S003), str(arch / "2024-04-19")])
    assert again[:2] == [str(S003), "-"] and len(again) == 2 + 24
    with pytest.raises(FileNotFoundError, match="nope"):
        expand_inputs([str(tmp_path / "nope.log")])
    with pytest.raises(FileNotFoundError):
        expand_inputs([str(tmp_path / "*.none")])
    # directories pick conn logs and nfcapd files, not READMEs or other logs
    (tmp_path / "d" / "2024-01-01").mkdir(parents=True)
    shutil.copy(GZ, tmp_path / "d" / "2024-01-01" / "conn.10:00:00-11:00:00.log.gz")
    shutil.copy(S003, tmp_path / "d" / "conn.log")
    shutil.copy(S003, tmp_path / "d" / "dns.log")
    (tmp_path / "d" / "README").write_text("not a log")
    got = expand_inputs([str(tmp_path / "d")])
    assert [os.path.relpath(g, tmp_path / "d") for g in got] == [
        "2024-01-01/conn.10:00:00-11:00:00.log.gz", "conn.log"]  # fmt: skip
    assert len(read_table([str(tmp_path / "d")])) == 7260 + 361


def test_parser_table_and_open_parser():
    assert set(PARSERS) == {"zeek_tsv", "zeek_json", "nfdump_csv", "nfdump_json", "zeek_csv",
                            "cicflowmeter_csv", "binetflow"}  # fmt: skip
    p = open_parser("zeek_tsv", "x", SkipLog())
    assert len(schema.concat(p.feed(S003.read_bytes()) + p.close())) == 361
    with pytest.raises(FormatError):
        open_parser("nope", "x", SkipLog())
    with pytest.raises(FormatError):
        open_parser("nfcapd", "x", SkipLog())


def test_read_table_concats_formats():
    df = read_table([str(S003), str(JSONLOG), str(S008)])
    schema.validate(df)
    assert len(df) == 361 + 4504 + 5663
    assert df["label"].notna().sum() == 5663


# -- zeekml summary ----------------------------------------------------------------------


def test_summary_text(capsys):
    assert main(["summary", str(Z / "iot23-34-1-mirai" / "conn.log.labeled"),
                 str(Z / "rita-truncated" / "conn.log")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "rows:       23203" in out
    assert "skipped:    1 (wrong field count (9 of 21)=1)" in out
    assert "rita-truncated/conn.log:67" in out
    assert "labels:     Malicious=21222; Benign=1923" in out
    assert "DDoS=14394; C&C=6706; -=1923; PartOfAHorizontalPortScan=122" in out
    assert "2018-01-30 18:14:02 .. 2018-12-22 14:50:13 UTC" in out


def test_summary_json(capsys):
    assert main(["summary", "--json", str(Z / "stratosphere-001-njrat" / "labeled-conn.log")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rows"] == 992 and d["skipped"] == 0
    assert d["labels"] == {"Background": 739, "Malicious": 244, "Benign": 9}
    assert d["detailed_labels"] == {"(empty)": 739, "CC": 244, "Google": 9}
    assert d["time_span"]["relative"] is True
    assert d["files"][0]["format"] == "zeek_tsv"


def test_summary_errors_are_one_line(capsys, tmp_path):
    assert main(["summary", str(tmp_path / "missing.log")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.log" in err[0]
    assert main(["summary", "--strict", str(Z / "rita-truncated" / "conn.log")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zeekml: error:") and "conn.log:67: wrong field count" in err[-1]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01hello\n")
    assert main(["summary", str(junk)]) == 1
    assert "junk.bin" in capsys.readouterr().err
