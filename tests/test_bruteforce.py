"""The brute-force detector (zeekml.windows.logins, zeekml.models.bruteforce_scorer): counts
on hand-made flows (alike sizes, targets, horizon, depth, what is an attempt), batch cuts and
state round trips, card validation, that it is on by default, and what it finds on real
captures: Zeek's FTP brute-force trace and Stratosphere's SSH brute force read from nfcapd
files by the nfdump binary, internet SSH guessing at a server in a Zeek archive, and no
notice on benign corpus captures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import (
    DATA,
    assert_cuts_and_state_keep_scores,
    changed_card,
    eval_rows,
    need,
    need_binary,
    score_json,
    scores_in_cuts,
)
from zeekml.errors import ModelError
from zeekml.models.bruteforce_scorer import BruteforceScorer
from zeekml.models.card import load_card
from zeekml.models.registry import ScorerOptions, load_scorers, resolve_model
from zeekml.records.schema import conform
from zeekml.windows.logins import (
    LOGIN,
    NOT_ATTEMPT,
    NOT_ATTEMPT_KEY,
    WEB,
    alike_sizes,
    login_attempts,
    login_keys,
)

CARD = resolve_model("bruteforce")
GUESSER, ADMIN, PROBE = "10.0.0.7", "10.0.0.8", "10.0.0.9"


def _flows(rows: list[tuple[float, str, int, int, int]], *, state: str = "SF",
           proto: str = "tcp", server: str = "10.0.0.22") -> pd.DataFrame:
    """(ts, orig, resp_p, orig_bytes, resp_bytes) rows to one server as a canonical table."""
    df = pd.DataFrame(rows, columns=["ts", "orig_h", "resp_p", "orig_bytes", "resp_bytes"])
    df["resp_h"] = server
    df["proto"] = proto
    df["uid"] = [f"C{i}" for i in range(len(df))]
    df["orig_p"] = 40000 + np.arange(len(df)) % 20000
    df["conn_state"] = state
    df["orig_pkts"] = 12
    df["resp_pkts"] = 0 if state == "S0" else 10
    return conform(df, with_labels=False)


def _scorer() -> BruteforceScorer:
    return BruteforceScorer(load_card(CARD), ScorerOptions())


def _scores(df: pd.DataFrame, scorer: BruteforceScorer | None = None,
            cuts: int | None = None) -> np.ndarray:
    return scores_in_cuts(scorer or _scorer(), df, cuts)


def test_counts_alike_sessions_to_one_login_service() -> None:
    rows = []
    for i in range(40):  # hydra on SSH: a session every 2 s, sizes a few bytes apart
        rows.append((1000.0 + 2 * i, GUESSER, 22, 1250 + i % 7, 1694))
    for i in range(30):  # an admin's scripts: 30 sessions, each transferring more
        rows.append((1000.0 + 9 * i, ADMIN, 22, 2000 + 900 * i, 3000 + 5000 * i))
    for i in range(20):  # a banner check every minute: alike, but 6 in any 5 minutes
        rows.append((1000.0 + 60 * i, PROBE, 22, 21, 39))
    df = _flows(rows)
    s = _scores(df)
    orig = df["orig_h"].to_numpy()
    assert s[orig == GUESSER].tolist() == list(range(1, 41))
    assert s[orig == ADMIN].max() <= 3
    assert s[orig == PROBE].max() == 6  # 300 s inclusive: t, t-60, ..., t-300
    batch = _scorer().score(df)
    flagged = batch.score >= batch.threshold
    assert set(orig[flagged]) == {GUESSER} and flagged.sum() == 40 - 7
    assert set(batch.cls) == {"login_guessing"}
    ctx = batch.extra["context"].take(np.array([39]))
    assert list(ctx[0]) == ["C38", "C37", "C36", "C35", "C34"]


def test_attempts_are_answered_tcp_to_a_login_service_or_plain_http() -> None:
    a = GUESSER
    df = _flows([(1.0, a, 22, 10, 10), (2.0, a, 443, 10, 10), (3.0, a, 80, 10, 10),
                 (4.0, a, 2022, 10, 10), (5.0, a, 8080, 10, 10), (6.0, a, 3389, 10, 10)])
    df["service"] = pd.Series([None, None, None, "ssh", None, None], dtype=df["service"].dtype)
    assert login_attempts(df).tolist() == [LOGIN, NOT_ATTEMPT, WEB, LOGIN, WEB, LOGIN]
    assert login_keys(df).tolist() == [a, NOT_ATTEMPT_KEY, a, a, a, a]
    failed = _flows([(1.0, a, 22, 0, 0)], state="S0")
    assert login_attempts(failed).tolist() == [NOT_ATTEMPT]  # the scan detector's business
    udp = _flows([(1.0, a, 22, 10, 10)], proto="udp")
    assert login_attempts(udp).tolist() == [NOT_ATTEMPT]


def test_web_guessing_has_its_own_class_and_threshold() -> None:
    df = _flows([(1000.0 + i / 4, GUESSER, 80, 310 + i % 9, 4120) for i in range(100)])
    batch = _scorer().score(df)
    assert set(batch.cls) == {"http_guessing"}
    assert batch.score.max() == 64  # 63 earlier attempts + the flow itself
    assert (batch.threshold == 32).all() and (batch.score >= 32).sum() == 100 - 31


def test_alike_sizes() -> None:
    a = np.array([[1250, 1694], [100, 40], [-1, -1], [5000, 90000], [0, 0]])
    b = np.array([[1281, 1694], [100, 73], [-1, -1], [5400, 81500], [-1, 0]])
    # within 32 bytes; 33 apart on a small reply; both unknown; within 10%; unknown vs 0
    assert alike_sizes(a, b).tolist() == [True, False, True, True, False]


def test_netflow_sizes_are_ip_bytes() -> None:
    """Paired NetFlow records have no payload counts: IP bytes are compared instead."""
    rows = [(1000.0 + i, GUESSER, 21, 0, 0) for i in range(10)]
    df = _flows(rows)
    df["orig_bytes"] = pd.array([pd.NA] * 10, dtype=df["orig_bytes"].dtype)
    df["resp_bytes"] = pd.array([pd.NA] * 10, dtype=df["resp_bytes"].dtype)
    df["orig_ip_bytes"] = pd.array([600 + 3 * i for i in range(10)], dtype="Int64")
    df["resp_ip_bytes"] = pd.array([900 + 200 * (i == 9) for i in range(10)], dtype="Int64")
    s = _scores(df)
    assert s[:9].tolist() == list(range(1, 10)) and s[9] == 1


def test_horizon_and_targets_split_the_count() -> None:
    rows = [(1000.0 + 100 * i, GUESSER, 22, 500, 700) for i in range(10)]  # 1 per 100 s
    rows += [(5000.0 + i, GUESSER, 21, 500, 700) for i in range(5)]  # another service
    df = _flows(rows)
    s = _scores(df)
    assert s[:10].max() == 4 and s[10:].tolist() == [1, 2, 3, 4, 5]
    other = _flows([(1000.0 + i, GUESSER, 22, 500, 700) for i in range(6)])
    other["resp_h"] = [f"10.0.0.{20 + i % 2}" for i in range(6)]  # two servers
    assert _scores(other).tolist() == [1, 1, 2, 2, 3, 3]


def test_batch_cuts_and_a_saved_state_do_not_change_the_counts() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    rows = [(float(t), f"10.0.0.{h}", int(p), int(ob), 900)
            for t, h, p, ob in zip(np.sort(rng.uniform(0, 900, n)), rng.integers(1, 4, n),
                                   rng.choice([22, 21, 80, 443], n), rng.integers(400, 460, n),
                                   strict=True)]
    df = _flows(rows)
    whole = _scores(df)
    assert whole.max() >= 20  # window positions are shared by the three services
    assert_cuts_and_state_keep_scores(_scorer, df, whole)


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "scan"}, "kind"),
    ({"window": {"key": "orig_failed", "depth": 63, "horizon": 300}}, "window key"),
    ({"window": {"key": "orig_login", "depth": 0, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_login", "depth": 10 ** 9, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_login", "depth": 63, "horizon": -1}}, "horizon"),
    ({"thresholds": {"login_guessing": 65, "http_guessing": 32}}, "threshold"),
    ({"thresholds": {"login_guessing": float("nan"), "http_guessing": 32}}, "threshold"),
    ({"thresholds": {"login_guessing": 8}}, "http_guessing"),
    ({"thresholds": {"login_guessing": 8, "http_guessing": 32, "dos": 3}}, "unknown"),
])
def test_a_bad_card_is_refused(tmp_path, change, message) -> None:
    path = changed_card(tmp_path, CARD, change)
    with pytest.raises(ModelError, match=message):
        BruteforceScorer(load_card(path), ScorerOptions())


def test_on_by_default() -> None:
    assert "bruteforce" in [s.name for s in load_scorers([])]


@pytest.mark.parametrize(("rel", "port", "least"), [
    # Zeek's FTP brute-force test trace: 30 control connections (60 records)
    ("nfdump/pcap-zeek-ftp-bruteforce/nfcapd", 21, 0.6),
    # Stratosphere's SSH brute force at VMware authd: 67 connections in 13 s
    ("nfdump/pcap-slips-test19-ssh-bruteforce/nfcapd", 902, 0.5),
])
def test_finds_brute_force_in_nfcapd_files(tmp_path, rel, port, least) -> None:
    """Brute force read as NetFlow by the real nfdump binary and paired: no default neural
    model notices it (docs/models.md)."""
    need_binary("nfdump")
    d = DATA / rel
    need(d.is_dir(), f"{d} (shared data)")
    v = score_json(tmp_path, "bruteforce", d)
    attempts = v[v["id.resp_p"] == port]
    flagged = attempts["score"] >= attempts["threshold"]
    assert len(attempts) >= 30 and flagged.mean() >= least
    noticed = v[v["notice"].astype(bool)]
    assert len(noticed) == 1 and set(noticed["verdict"]) == {"login_guessing"}
    assert len(noticed["context"].iloc[0]) == 5


def test_finds_internet_ssh_guessing_at_a_server(tmp_path) -> None:
    """A day of an internet-facing server (RITA's archive): its port 22 takes hundreds of
    1250/1694-byte sessions from each of a few dozen internet addresses."""
    day = DATA / "zeek" / "rita-rotated-archive" / "2024-04-19"
    need(day.is_dir(), f"{day} (shared data)")
    v = score_json(tmp_path, "bruteforce", day)
    noticed = v[v["notice"].astype(bool)]
    assert len(noticed) >= 5
    assert set(noticed["id.resp_p"]) == {22} and set(noticed["id.resp_h"]) == {"64.225.56.201"}


@pytest.mark.parametrize("rel", [
    "zeek/stratosphere-008-mixed/conn.log.labeled",  # a Windows host's day, HTTPS polling
    "zeek/rita-proxy-rolling",  # clients behind a web proxy
    "binetflow/slips-test2-malicious.binetflow",  # a phone's day as Argus records
    "zeek/zat-sample/conn.log",
])
def test_no_notice_on_benign_traffic(tmp_path, rel) -> None:
    path = DATA / rel
    need(path.exists(), f"{path} (shared data)")
    v = score_json(tmp_path, "bruteforce", path)
    assert len(v) > 300 and not v["notice"].astype(bool).any()
    assert v["score"].max() >= 2  # attempts were counted


def test_zeekml_eval_of_the_bruteforce_detector(tmp_path, capsys) -> None:
    """``zeekml eval --model bruteforce`` on a labeled Zeek log: a guessing run labeled
    SSH-Patator beside benign HTTPS polling; its flags are predicted ``bruteforce``."""

    rows = []
    for i in range(40):
        rows.append(f"{1000 + 2 * i}.5\tCg{i}\t10.0.0.7\t{40000 + i}\t10.0.0.22\t22\ttcp\tssh"
                    f"\t3.5\t{1250 + i % 5}\t1694\tSF\tShADadFf\t14\t1990\t12\t2320"
                    "\tMalicious\tSSH-Patator")
        rows.append(f"{1000 + 2 * i}.7\tCb{i}\t10.0.0.8\t{50000 + i}\t10.0.0.44\t443\ttcp\tssl"
                    "\t0.4\t600\t4000\tSF\tShADadFf\t8\t920\t7\t4300\tBenign\t-")
    result = eval_rows(tmp_path, capsys, "bruteforce", rows)
    assert set(result["classes"]) == {"normal", "bruteforce"}
    brute = result["classes"]["bruteforce"]
    assert brute["precision"] == 1.0 and brute["recall"] == pytest.approx(33 / 40)
    assert result["binary_counts"]["fp"] == 0


def test_more_originators_than_the_store_holds() -> None:
    """--max-hosts 32: the store keeps 2 originators, a batch brings 200 attempting ones:
    counted in pieces, no error; the guesser, seen in every piece, keeps its count."""
    rows = []
    for i in range(200):
        rows.append((1000.0 + i, f"10.1.{i // 250}.{i % 250}", 22, 500, 700))
        rows.append((1000.5 + i, GUESSER, 22, 1250, 1694))
    df = _flows(rows)
    scorer = BruteforceScorer(load_card(CARD), ScorerOptions(max_hosts=32))
    assert scorer.store.history.max_keys == 2
    s = scorer.score(df).score
    guesser = df["orig_h"].to_numpy() == GUESSER
    assert s[guesser].max() == 64 and (s[~guesser] == 1).all()
    assert len(scorer.store.history) <= 2


def test_hostile_counters_and_ports_are_attempts_or_not_never_errors() -> None:
    """Byte counters beyond int32, negative or missing, a missing port or timestamp: the
    flow is scored (sizes clamped, unknown ones alike only to unknown ones), never an
    error."""
    df = _flows([(1000.0 + i, GUESSER, 22, 0, 0) for i in range(6)])
    df["orig_bytes"] = pd.array([2**40, 2**40, -5, None, None, 10], dtype="Int64")
    df["resp_bytes"] = pd.array([1, 1, 7, None, None, 10], dtype="Int64")
    df["orig_ip_bytes"] = pd.array([None] * 6, dtype="Int64")
    df["resp_ip_bytes"] = pd.array([None] * 6, dtype="Int64")
    df.loc[5, "ts"] = np.nan
    s = _scores(df)
    # clamped twins; a negative count is unknown; rows 3 and 4 are unknown both ways
    assert s.tolist()[:5] == [1, 2, 1, 1, 2]
    nan_port = _flows([(1.0, GUESSER, 22, 10, 10)])
    nan_port["resp_p"] = pd.array([None], dtype=nan_port["resp_p"].dtype)
    assert login_attempts(nan_port).tolist() == [NOT_ATTEMPT]
