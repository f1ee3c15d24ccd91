"""CEF records: hostile strings (``|``, ``=``, ``\\``, newlines) can never add a field."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from _verdicts import HOSTILE, expected_text, parse_cef, real_verdicts
from hypothesis import given, settings
from hypothesis import strategies as st

from zeekml import __version__
from zeekml.sinks.cef import CEF_SEVERITY, cef_records, extension_escape, header_escape

EXTENSION_KEYS = {
    "rt", "src", "dst", "c6a2", "c6a2Label", "c6a3", "c6a3Label", "spt", "dpt", "proto",
    "externalId", "cnt", "cs1", "cs1Label", "cfp1", "cfp1Label", "cfp2", "cfp2Label", "cs2",
    "cs2Label", "cfp3", "cfp3Label", "cs3", "cs3Label",
}


def _one(**fields: object) -> pd.DataFrame:
    base: dict[str, object] = {
        "ts": 1601998366.785668, "uid": "CNgrt04tHika5Pgpfi", "orig_h": "10.0.0.5",
        "orig_p": 49152, "resp_h": "1.2.3.4", "resp_p": 443, "proto": "tcp",
        "model": "amf_lstm", "verdict": "ddos", "score": 0.97, "threshold": 0.5,
        "notice": True, "alt": "normal", "alt_score": 0.03, "n": 1, "context": ["Ca", "Cb"],
    }
    base.update(fields)
    df = pd.DataFrame({k: [v] for k, v in base.items()})
    df["orig_p"] = df["orig_p"].astype("Int32")
    df["resp_p"] = df["resp_p"].astype("Int32")
    return df


def _unescaped_pipes(text: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", text))


def test_header_and_extension_escaping_exact() -> None:
    s = pd.Series(["a|b", "c\\d", "e=f", "g\nh", "i\r\nj"], dtype="str")
    assert header_escape(s).tolist() == ["a\\|b", "c\\\\d", "e=f", "g h", "i j"]
    assert extension_escape(s).tolist() == ["a|b", "c\\\\d", "e\\=f", "g\\nh", "i\\nj"]


def test_record_layout() -> None:
    rec = cef_records(_one(), np.array([4]))[0]
    head, ext = parse_cef(rec)
    assert rec.startswith(f"CEF:0|zeekml|zeekml|{__version__}|ddos|ddos from 10.0.0.5:49152 "
                          "to 1.2.3.4:443/tcp (amf_lstm score 0.97 >= 0.5)|5|rt=")
    assert head == ["0", "zeekml", "zeekml", __version__, "ddos",
                    "ddos from 10.0.0.5:49152 to 1.2.3.4:443/tcp (amf_lstm score 0.97 >= 0.5)",
                    "5"]
    assert ext["src"] == "10.0.0.5" and ext["dst"] == "1.2.3.4"
    assert ext["spt"] == "49152" and ext["dpt"] == "443" and ext["proto"] == "TCP"
    assert ext["rt"] == "1601998366786" and ext["externalId"] == "CNgrt04tHika5Pgpfi"
    assert ext["cs3"] == "Ca,Cb" and ext["cs3Label"] == "context"
    assert set(ext) <= EXTENSION_KEYS


def test_ipv6_uses_ipv6_fields_and_missing_values_drop_keys() -> None:
    rec = cef_records(_one(orig_h="fe80::1", resp_h="ff02::fb", resp_p=pd.NA, alt=None,
                           alt_score=np.nan, context=[]), np.array([2]))[0]
    head, ext = parse_cef(rec)
    assert head[6] == "8"
    assert ext["c6a2"] == "fe80::1" and ext["c6a2Label"] == "Source IPv6 Address"
    assert ext["c6a3"] == "ff02::fb" and "src" not in ext and "dst" not in ext
    assert not {"dpt", "cs2", "cs2Label", "cfp3", "cfp3Label", "cs3", "cs3Label"} & set(ext)
    assert "[fe80::1]:" in head[5]


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("column", ["verdict", "uid", "model", "alt"])
def test_hostile_strings_round_trip(text: str, column: str) -> None:
    rec = cef_records(_one(**{column: text}), np.array([4]))[0]
    assert "\n" not in rec and "\r" not in rec
    head, ext = parse_cef(rec)
    assert len(head) == 7 and head[0] == "0" and head[6] == "5"
    assert set(ext) <= EXTENSION_KEYS
    want = expected_text(text)
    if column == "verdict":
        assert head[4] == want.replace("\r", " ").replace("\n", " ")
        assert head[5].startswith(want.replace("\r", " ").replace("\n", " ")[:400])
    key = {"verdict": None, "uid": "externalId", "model": "cs1", "alt": "cs2"}[column]
    if key:
        assert ext[key] == want
    # the 7 header fields are the only unescaped pipes before the extension
    assert _unescaped_pipes(rec.split("|rt=", 1)[0] + "|") == 7


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=0, max_size=60), st.text(min_size=1, max_size=60))
def test_any_text_round_trips(verdict: str, uid: str) -> None:
    rec = cef_records(_one(verdict=verdict, uid=uid), np.array([4]))[0]
    assert "\n" not in rec and "\r" not in rec
    head, ext = parse_cef(rec)
    assert head[4] == re.sub(r"\r\n|\r|\n", " ", verdict)
    # an extension value keeps line breaks as \n escapes; CRLF is one line break (on purpose)
    assert ext["externalId"] == uid.replace("\r\n", "\n")
    assert set(ext) <= EXTENSION_KEYS


def test_every_real_notice_parses(tmp_path) -> None:
    df = real_verdicts(hostile=True)
    sev = np.full(len(df), 4)
    recs = cef_records(df, sev)
    assert len(recs) == len(df)
    for rec, (_, row) in zip(recs, df.iterrows(), strict=True):
        head, ext = parse_cef(rec)
        assert ext["externalId"] == expected_text(row["uid"])
        assert ext.get("src", ext.get("c6a2")) == row["orig_h"]


def test_severity_table_covers_syslog() -> None:
    assert sorted(CEF_SEVERITY) == list(range(8))
    assert all(0 <= v <= 10 for v in CEF_SEVERITY.values())
    assert CEF_SEVERITY[0] > CEF_SEVERITY[4] > CEF_SEVERITY[7]
