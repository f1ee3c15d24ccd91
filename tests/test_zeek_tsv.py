"""Zeek ASCII reader on real logs and on real logs altered the way real pipelines alter them."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA
from zeekml.errors import ParseError, StateError
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.zeek_tsv import ZeekTsvParser, canonical_name, unescape

Z = DATA / "zeek"
S008 = Z / "stratosphere-008-mixed" / "conn.log.labeled"
S003 = Z / "stratosphere-003-androidtester-rat" / "conn.log"
ZAT = Z / "zat-sample" / "conn.log"
IOT = Z / "iot23-34-1-mirai" / "conn.log.labeled"
PROXY = Z / "rita-proxy" / "conn.log"
BTEST = Z / "zeek-btest-baselines"


def parse(
    data: bytes, path: str = "mem.log", strict: bool = False, **kw
) -> tuple[pd.DataFrame, SkipLog]:
    skips = SkipLog(strict=strict)
    p = ZeekTsvParser(path, skips, **kw)
    frames = p.feed(data) + p.close()
    df = schema.concat(frames) if frames else schema.empty_table()
    schema.validate(df)
    return df, skips


def read(path) -> tuple[pd.DataFrame, SkipLog]:
    skips = SkipLog()
    return schema.concat(read_flows(path, skips=skips)), skips


def data_lines(raw: bytes) -> list[bytes]:
    return [x for x in raw.split(b"\n") if x and not x.startswith(b"#")]


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c not in ("source_file", "source_line")]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


# -- values -----------------------------------------------------------------------------


def test_types_and_values_of_a_real_row():
    df, skips = read(S008)
    assert skips.total == 0
    first = df.iloc[0]
    # 1655071198.444458 CHLXQF2OBY4onAR0Ug 147.32.81.167 62771 40.74.108.123 443 tcp ssl 1.135424
    # 1596 4039 SF T F 5138 ShADdaFf 14 1016 16 1226 (empty) Benign Microsoft
    assert first["ts"] == pytest.approx(1655071198.444458, abs=1e-6)
    assert first["uid"] == "CHLXQF2OBY4onAR0Ug"
    assert (first["orig_h"], first["orig_p"], first["resp_h"], first["resp_p"]) == (
        "147.32.81.167", 62771, "40.74.108.123", 443)  # fmt: skip
    assert (first["proto"], first["service"], first["conn_state"], first["history"]) == (
        "tcp", "ssl", "SF", "ShADdaFf")  # fmt: skip
    assert first["duration"] == pytest.approx(1.135424)
    assert (first["orig_bytes"], first["resp_bytes"], first["missed_bytes"]) == (1596, 4039, 5138)
    assert bool(first["local_orig"]) is True and bool(first["local_resp"]) is False
    assert (first["label"], first["detailed_label"]) == ("Benign", "Microsoft")
    assert first["source_line"] == 9  # 8 header lines before it


def test_unset_stays_missing_and_empty_is_empty_string():
    df, _ = read(S008)
    raw = data_lines(S008.read_bytes())
    fields = [line.split(b"\t") for line in raw]
    service_unset = np.array([f[7] == b"-" for f in fields])
    duration_unset = np.array([f[8] == b"-" for f in fields])
    assert service_unset.any() and duration_unset.any()
    assert df["service"].isna().to_numpy().tolist() == service_unset.tolist()
    assert df["duration"].isna().to_numpy().tolist() == duration_unset.tolist()
    assert df["orig_bytes"].isna().to_numpy().tolist() == [f[9] == b"-" for f in fields]
    # 60 Background rows have detailedlabel (empty): the empty string, not missing
    empty = df["detailed_label"] == ""
    assert int(empty.sum()) == 60
    assert df["detailed_label"].notna().all()


def test_old_bro_layout_without_local_resp():
    df, skips = read(ZAT)
    assert skips.total == 0 and len(df) == 360
    assert df["local_resp"].isna().all()  # no such column: missing, not False
    assert df["local_orig"].isna().all()  # written as '-' in this capture
    assert df["orig_bytes"].notna().any()


def test_separator_with_tab_variant_and_leading_whitespace_header():
    df, skips = read(Z / "zat-sample" / "conn_date_issue.log")
    assert (len(df), skips.total) == (3, 0)
    df, skips = read(Z / "slips-test10-mixed" / "conn.log")
    assert (len(df), skips.total) == (141, 0)


def test_iot23_three_space_quirk():
    df, _ = read(IOT)
    assert df["label"].isin(["Benign", "Malicious"]).all()
    benign = df["label"] == "Benign"
    assert df.loc[benign, "detailed_label"].isna().all()  # '-' is unset
    assert (df.loc[~benign, "detailed_label"] != "").all()
    # the last row has no final newline and is still read
    last = data_lines(IOT.read_bytes())[-1].split(b"\t")
    assert df.iloc[-1]["uid"] == last[1].decode()


def test_hash_inside_a_value_is_data(tmp_path):
    raw = S003.read_bytes()
    lines = raw.split(b"\n")
    i = next(k for k, x in enumerate(lines) if x and not x.startswith(b"#"))
    f = lines[i].split(b"\t")
    f[7] = b"http#frag"  # service
    f[15] = b"#ShAD"  # history
    lines[i] = b"\t".join(f)
    df, skips = parse(b"\n".join(lines))
    assert skips.total == 0
    assert df.iloc[0]["service"] == "http#frag"
    assert df.iloc[0]["history"] == "#ShAD"
    assert df.iloc[0]["orig_h"] == f[2].decode()  # the rest of the row is intact


def test_escapes_decode(tmp_path):
    raw = S003.read_bytes()
    lines = raw.split(b"\n")
    i = next(k for k, x in enumerate(lines) if x and not x.startswith(b"#"))
    f = lines[i].split(b"\t")
    f[7] = rb"a\x09b\x5cc"  # tab and backslash inside a value
    f[15] = rb"\x2d"  # a history that *is* '-' (not unset)
    f[11] = rb"\x28empty)"  # a conn_state that *is* '(empty)'
    f[1] = rb"C\xc3\xa9uid"  # UTF-8 bytes written escaped
    lines[i] = b"\t".join(f)
    df, skips = parse(b"\n".join(lines))
    assert skips.total == 0
    row = df.iloc[0]
    assert row["service"] == "a\tb\\c"
    assert row["history"] == "-"
    assert row["conn_state"] == "(empty)"
    assert row["uid"] == "Céuid"


def test_unescape_reference():
    assert unescape(r"\x41\x42") == "AB"
    assert unescape(r"no escapes") == "no escapes"
    assert unescape(r"\xff") == r"\xff"  # not UTF-8 after decoding: kept escaped
    for bad in (r"\x4", r"\q", "\\", r"\xZZ"):
        with pytest.raises(ValueError):
            unescape(bad)


def test_field_names_map_by_name():
    assert canonical_name("id.orig_h") == canonical_name("id_orig_h") == "orig_h"
    assert canonical_name("detailedlabel") == canonical_name("detailed-label") == "detailed_label"
    assert canonical_name("Label") == "label"
    assert canonical_name("_node_name") is None and canonical_name("ip_proto") is None


def _unmask(path) -> bytes:
    """A btest baseline with its masked timestamps replaced by real-looking ones."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out = []
    k = 0
    for line in lines:
        if line and not line.startswith(b"#"):
            k += 1
            line = line.replace(b"XXXXXXXXXX.XXXXXX", b"1700000%03d.000001" % k)
        out.append(line)
    return b"\n".join(out)


@pytest.mark.parametrize(
    "name",
    ["opt.basic", "scripts.base.frameworks.logging.scope_sep",
     "scripts.base.frameworks.logging.field-extension-complex", "core.tunnels.teredo"],
)  # fmt: skip
def test_btest_layouts_by_name(name):
    """Zeek 7.1+ ip_proto, id_orig_h scope separator, prepended extension fields."""
    path = BTEST / name / "conn.log"
    masked, skips = read(path)
    assert len(masked) == 0 and skips.total == len(data_lines(path.read_bytes()))
    df, skips = parse(_unmask(path))
    assert skips.total == 0
    assert len(df) == len(data_lines(path.read_bytes()))
    assert df["ts"].between(1_700_000_000, 1_700_001_000).all()  # ts, not _write_ts
    assert df["orig_h"].notna().all() and df["resp_p"].notna().all()
    assert set(df["proto"]) <= {"tcp", "udp", "icmp"}
    assert df["uid"].str.startswith("C").all()


def test_cluster_node_name_first():
    path = sorted((Z / "rita-rotated-archive").rglob("conn.*.log.gz"))[0]
    with gzip.open(path, "rb") as f:
        head = f.read(4096)
    assert b"#fields\t_node_name\tts" in head
    df, _ = read(path)
    assert df["orig_h"].str.contains(r"^\d+\.\d+\.\d+\.\d+$|:").all()
    assert (df["ts"] > 1.7e9).all()


def test_rita_truncated_cut_row_is_skipped():
    df, skips = read(Z / "rita-truncated" / "conn.log")
    assert len(df) == 58
    assert skips.total == 1
    assert skips.examples[0].line == 67 and "wrong field count" in skips.examples[0].reason
    with pytest.raises(ParseError, match=r"rita-truncated/conn\.log:67"):
        list(read_flows(Z / "rita-truncated" / "conn.log", skips=SkipLog(strict=True)))


def test_headerless_file_assumes_standard_layout(caplog):
    with caplog.at_level("WARNING"):
        df, skips = read(Z / "rita-truncated" / "conn_top.log")
    assert "assuming the standard Zeek conn.log layout" in caplog.text
    assert len(df) == 58 and skips.total == 1
    full, _ = read(Z / "rita-truncated" / "conn.log")
    # the same capture: same first rows as the file with a header
    same_rows(df.head(5), full.head(5))


def test_crlf_and_missing_final_newline():
    raw = S003.read_bytes()
    want, _ = parse(raw)
    crlf, skips = parse(raw.replace(b"\n", b"\r\n"))
    assert skips.total == 0
    same_rows(crlf, want)
    cut, skips = parse(raw.rstrip(b"\n"))
    assert skips.total == 0 and len(cut) == len(want)


def test_concatenated_header_blocks():
    """cat of rotated logs with different layouts: each block's header is re-read."""
    a, b, c = ZAT.read_bytes(), S008.read_bytes(), S003.read_bytes()
    df, skips = parse(a + b + c)
    assert skips.total == 0
    wa, wb, wc = read(ZAT)[0], read(S008)[0], read(S003)[0]
    assert len(df) == len(wa) + len(wb) + len(wc)
    same_rows(df.iloc[: len(wa)].drop(columns=["label", "detailed_label"]), wa)
    same_rows(df.iloc[len(wa) : len(wa) + len(wb)], wb)
    assert df.iloc[len(wa) + len(wb) :]["label"].isna().all()
    # line numbers continue across blocks
    assert df["source_line"].is_monotonic_increasing
    assert df["source_line"].iloc[len(wa)] == len(a.split(b"\n")) - 1 + 9


def test_blank_lines_are_not_rows():
    df, skips = read(Z / "rita-open-conns" / "closed" / "conn.log")
    assert (len(df), skips.total) == (59, 0)
    raw = S003.read_bytes()
    lines = raw.split(b"\n")
    lines.insert(20, b"")
    lines.insert(30, b"\r")
    df, skips = parse(b"\n".join(lines))
    want, _ = parse(raw)
    assert skips.total == 0
    same_rows(df, want)


def test_malformed_lines_are_skipped_and_counted():
    raw = S008.read_bytes()
    lines = raw.split(b"\n")
    data_idx = [k for k, x in enumerate(lines) if x and not x.startswith(b"#")]

    def setf(i: int, value: bytes):
        def mutate(line: bytes) -> bytes:
            f = line.split(b"\t")
            f[i] = value
            return b"\t".join(f)

        return mutate

    bad = {
        data_idx[3]: (lambda x: b"\t".join(x.split(b"\t")[:10]), "wrong field count (10 of 23)"),
        data_idx[10]: (setf(9, b"12x"), "bad int in orig_bytes"),
        data_idx[20]: (setf(7, b"bad\\escape"), "bad escape in service"),
        data_idx[30]: (setf(1, b"C\xff\xfeuid"), "not UTF-8"),
        data_idx[40]: (setf(12, b"X"), "bad bool in local_orig"),
        data_idx[50]: (setf(0, b"16550712xx.1"), "bad float in ts"),
        data_idx[60]: (setf(3, b"99999999999999999999999"), "orig_p out of range"),
    }
    for k, (mutate, _) in bad.items():
        lines[k] = mutate(lines[k])
    df, skips = parse(b"\n".join(lines), path="x.log")
    want, _ = read(S008)
    assert skips.total == len(bad)
    assert {s.line for s in skips.examples} == {k + 1 for k in bad}
    for s in skips.examples:
        assert bad[s.line - 1][1] in s.reason, (s, bad[s.line - 1][1])
        assert s.path == "x.log"
    keep = ~want["source_line"].isin([k + 1 for k in bad])
    same_rows(df, want[keep])
    assert df["source_line"].tolist() == want.loc[keep, "source_line"].tolist()
    with pytest.raises(ParseError, match=rf"x\.log:{min(bad) + 1}:"):
        parse(b"\n".join(lines), path="x.log", strict=True)


def test_batches_respect_batch_rows():
    p = ZeekTsvParser(str(S008), SkipLog(), batch_rows=500)
    frames = p.feed(S008.read_bytes()) + p.close()
    assert max(len(f) for f in frames) <= 500
    same_rows(schema.concat(frames), read(S008)[0])


def test_state_resume_mid_file():
    raw = S008.read_bytes()
    want, _ = parse(raw)
    p = ZeekTsvParser("x", SkipLog())
    first = p.feed(raw[: len(raw) // 2])
    state = p.get_state()
    import json

    state = json.loads(json.dumps(state))  # JSON-able
    assert state["line_no"] == p.line_no and state["consumed"] == p.consumed
    q = ZeekTsvParser("x", SkipLog())
    q.set_state(state)
    rest = q.feed(raw[state["consumed"] :]) + q.close()
    got = schema.concat(first + rest)
    same_rows(got, want)
    assert got["source_line"].tolist() == want["source_line"].tolist()
    assert q.consumed == len(raw)


@pytest.mark.parametrize(
    "state",
    [None, [], {"format": "zeek_json", "line_no": 1, "consumed": 1},
     {"format": "zeek_tsv", "line_no": -1, "consumed": 0},
     {"format": "zeek_tsv", "line_no": 1, "consumed": "9"},
     {"format": "zeek_tsv", "line_no": 1, "consumed": 1, "header": {"separator": "ab"}},
     {"format": "zeek_tsv", "line_no": 1, "consumed": 1, "header": {"fields": [1, 2]}},
     {"format": "zeek_tsv", "line_no": 1, "consumed": 1, "header": {"split3": "yes"}}],
)  # fmt: skip
def test_bad_state_is_rejected(state):
    p = ZeekTsvParser("x", SkipLog())
    with pytest.raises(StateError):
        p.set_state(state)
    assert p.line_no == 0 and p.consumed == 0


def test_consumed_counts_complete_lines_only():
    raw = S003.read_bytes()
    p = ZeekTsvParser("x", SkipLog())
    cut = len(raw) - 50
    p.feed(raw[:cut])
    assert p.consumed == raw[:cut].rfind(b"\n") + 1
    assert p.line_no == raw[:cut].count(b"\n")
    p.feed(raw[cut:])
    p.close()
    assert p.consumed == len(raw)


def test_overlong_line_is_dropped_not_buffered():
    from zeekml.sources.lines import MAX_LINE

    raw = S003.read_bytes()
    junk = b"x" * (MAX_LINE + 10)
    p = ZeekTsvParser("x", SkipLog())
    frames = p.feed(raw)
    for k in range(0, len(junk), 65536):
        frames += p.feed(junk[k : k + 65536])
        assert len(p._tail) <= MAX_LINE
    frames += p.feed(b"\n" + raw.split(b"\n", 8)[8]) + p.close()
    assert p.skips.total == 1 and "longer than" in p.skips.examples[0].reason
    assert len(schema.concat(frames)) == 2 * len(read(S003)[0])


def test_values_only_pyarrow_rejects_are_found_by_bisection():
    """'1_000' passes Python's int() but not pyarrow: those lines alone are skipped."""
    lines = S008.read_bytes().split(b"\n")
    bad = set()
    for k in range(20, 5000, 97):
        f = lines[k].split(b"\t")
        f[9] = b"1_000"
        lines[k] = b"\t".join(f)
        bad.add(k + 1)
    df, skips = parse(b"\n".join(lines))
    want, _ = read(S008)
    assert skips.total == len(bad) and set(skips.by_reason) == {"bad int in orig_bytes"}
    keep = ~want["source_line"].isin(bad)
    same_rows(df, want[keep])
