"""Every verdict field means one thing (docs/scoring.md's field table), checked on real runs.

The bundled sample and a held-out Slips capture go through the real pipeline with both
shipped models (``--all``, suppression on, one host allow-listed); the written log is read
back by its ``#fields`` header (zat's and zeek-cut's view of the same format are tested in
test_zeek_ascii) and each field's definition is checked row by row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, ZAT_SAMPLE, need, zat_sample
from test_incidents import zeek_rows

from zeekml.cli.main import main
from zeekml.records.verdicts import DECISIONS, NORMAL
from zeekml.sinks.cef import message

SAMPLE = ZAT_SAMPLE
#: lowered thresholds, so that these captures have notices, suppressed and allowed rows
#: (at the shipped thresholds neither capture gives a notice)
LOWER = ["--threshold", "amf_lstm:portscan=0.8", "--threshold", "amf_lstm:c2=0.8",
         "--threshold", "flow_lm:anomaly=50"]
HELD_OUT = DATA / "zeek" / "slips-test18-ctu-sme-11" / "conn.log.labeled"


def read_zeek_ascii(path: Path) -> pd.DataFrame:
    """A zeekml.log as text columns by its ``#fields`` header (``-`` unset -> NaN)."""
    df = zeek_rows(path).replace("-", np.nan)
    df["notice"] = df["notice"] == "T"
    return df


def _run(tmp: Path, src: Path, *extra: str) -> pd.DataFrame:
    out = tmp / "zeekml.log"
    assert main(["-q", "score", "--all", "--out", str(out), *LOWER, *extra, str(src)]) == 0
    return read_zeek_ascii(out)


def _notice_hosts(df: pd.DataFrame) -> list[str]:
    """Originators of notices, most notices first."""
    return [str(h) for h in df.loc[df["notice"].astype(bool), "id.orig_h"].value_counts().index]


@pytest.mark.parametrize("src", [SAMPLE, HELD_OUT], ids=["sample", "slips-test18"])
def test_fields_mean_one_thing(tmp_path: Path, src: Path) -> None:
    zat_sample()
    need(src.exists(), f"the capture {src}")
    first = _run(tmp_path, src)
    hosts = _notice_hosts(first)
    assert hosts
    allowed_host = hosts[-1]  # the quietest: the others keep their notices
    df = _run(tmp_path, src, "--allow", allowed_host)
    score = df["score"].astype(float).to_numpy()
    th = df["threshold"].astype(float).to_numpy()
    crossed = np.isfinite(score) & (score >= th)
    decision = df["decision"].astype(str)
    assert set(decision) <= set(DECISIONS)
    assert set(decision) >= {"below", "allowed"} | ({"notice"} if len(hosts) > 1 else set())
    # decision below exactly when the score is under the threshold
    assert ((decision == "below").to_numpy() == ~crossed).all()
    # notice is decision == notice, nothing else
    assert (df["notice"].astype(bool).to_numpy() == (decision == "notice").to_numpy()).all()
    # verdict: the candidate when crossed, normal otherwise; the candidate is always a class
    cand, verdict = df["candidate"].astype(str), df["verdict"].astype(str)
    assert (verdict[crossed] == cand[crossed]).all()
    assert (verdict[~crossed] == NORMAL).all()
    assert not (cand == NORMAL).any() and not df["candidate"].isna().any()
    # allow-listed rows are the crossings touching the allowed host, and only those
    touches = (df["id.orig_h"] == allowed_host) | (df["id.resp_h"] == allowed_host)
    assert ((decision == "allowed").to_numpy() == (crossed & touches.to_numpy())).all()
    # suppressed: crossings that are not notices and not allowed; each notice's n counts them
    supp = (decision == "suppressed").to_numpy()
    assert (supp == (crossed & ~touches.to_numpy() & ~df["notice"].astype(bool).to_numpy())).all()
    # the AMF-LSTM's alt is the runner-up attack class, never normal or the candidate
    amf = (df["model"] == "amf_lstm").to_numpy()
    assert amf.any()
    alt = df.loc[amf, "alt"]
    assert not (alt == NORMAL).any() and not (alt == df.loc[amf, "candidate"]).any()
    alt_score = df.loc[amf, "alt_score"].astype(float)
    assert (alt_score <= 1.0 - df.loc[amf, "score"].astype(float) + 1.0).all()
    assert (alt_score <= df.loc[amf, "score"].astype(float) + 1e-6).all()  # P(alt) <= P(attack)


def test_without_all_only_notices_are_written(tmp_path: Path) -> None:
    zat_sample()
    out = tmp_path / "z.log"
    assert main(["-q", "score", "--out", str(out), "--suppress", "0", *LOWER, str(SAMPLE)]) == 0
    df = read_zeek_ascii(out)
    assert len(df) and (df["decision"] == "notice").all() and df["notice"].astype(bool).all()


def test_message_says_the_decision(tmp_path: Path) -> None:
    """Syslog MSG / CEF Name / ECS message of a non-notice never claims a crossing."""
    zat_sample()
    df = _run(tmp_path, SAMPLE)
    msgs = message(df.rename(columns={"id.orig_h": "orig_h", "id.orig_p": "orig_p",
                                      "id.resp_h": "resp_h", "id.resp_p": "resp_p"}))
    for decision, needle in (("below", " < "), ("notice", " >= "), ("suppressed", "; suppressed)")):
        rows = (df["decision"] == decision).to_numpy()
        assert rows.any(), decision
        assert msgs[rows].str.contains(needle, regex=False).all(), decision
    assert not msgs[(df["decision"] == "below").to_numpy()].str.contains(">=", regex=False).any()


def test_context_of_notices_is_the_same_with_and_without_all(tmp_path: Path) -> None:
    """Context uids are built only for the rows that can be written (the crossings, or
    every row with --all): a notice's context does not depend on --all."""
    need(HELD_OUT.exists(), f"the capture {HELD_OUT}")
    every = _run(tmp_path, HELD_OUT, "--suppress", "0")
    out = tmp_path / "notices.log"
    assert main(["-q", "score", "--suppress", "0", "--out", str(out), *LOWER, str(HELD_OUT)]) == 0
    notices = read_zeek_ascii(out)
    assert len(notices) and notices["context"].notna().any()
    key = ["uid", "model"]
    both = notices.merge(every[every["notice"]], on=key, suffixes=("", "_all"), validate="1:1")
    assert len(both) == len(notices)
    assert (both["context"].fillna("") == both["context_all"].fillna("")).all()
