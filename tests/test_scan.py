"""The scan detector (zeekml.windows.scan, zeekml.models.scan_scorer): counts on hand-made
flows (failed only, distinct targets, depth, horizon, classes), batch cuts and state round
trips, card validation, and what it finds on real captures: the bundled sample's udp/16464
fan-out, a SYN scan read from nfcapd files by the nfdump binary, no notice on benign ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, ZAT_SAMPLE, changed_card, need, need_binary, zat_sample
from zeekml.errors import ModelError
from zeekml.models.card import load_card
from zeekml.models.registry import ScorerOptions, bundled_dir, load_scorer, load_scorers
from zeekml.models.scan_scorer import ScanScorer
from zeekml.records.labels import binary_target
from zeekml.records.schema import conform
from zeekml.sources import read_table
from zeekml.windows.scan import (
    ANSWERED_KEY,
    SCAN_DEPTH,
    SCAN_HORIZON,
    ScanHistory,
    failed_flows,
    scan_keys,
)

SAMPLE = ZAT_SAMPLE
CARD = bundled_dir() / "scan.card.json"


def _flows(rows: list[tuple[float, str, str, int, str, str, int]]) -> pd.DataFrame:
    """(ts, orig, resp, resp_p, proto, conn_state, resp_pkts) rows as a canonical table."""
    df = pd.DataFrame(rows, columns=["ts", "orig_h", "resp_h", "resp_p", "proto", "conn_state",
                                     "resp_pkts"])
    df["uid"] = [f"C{i}" for i in range(len(df))]
    df["orig_p"] = 40000
    df["orig_pkts"] = 1
    return conform(df, with_labels=False)


def _scorer(**card: object) -> ScanScorer:
    return ScanScorer(load_card(CARD), ScorerOptions())


def _score(df: pd.DataFrame, scorer: ScanScorer | None = None) -> pd.DataFrame:
    scorer = scorer or _scorer()
    b = scorer.score(df)
    return pd.DataFrame({"score": b.score, "cls": b.cls, "threshold": b.threshold})


def test_counts_distinct_failed_targets_and_ignores_answered_flows() -> None:
    # 10.0.0.5: udp/16464 to 40 peers, every 4th answered, and web to one server between
    rows = []
    for i in range(40):
        rows.append((1000.0 + i, "10.0.0.5", f"198.51.100.{i}", 16464, "udp",
                     "SF" if i % 4 == 0 else "S0", 1 if i % 4 == 0 else 0))
        rows.append((1000.5 + i, "10.0.0.5", "203.0.113.9", 443, "tcp", "SF", 5))
    s = _score(_flows(rows))
    udp, web = s.iloc[0::2].reset_index(drop=True), s.iloc[1::2].reset_index(drop=True)
    assert (web["score"] == 0).all()  # answered: never counted, never scored
    assert (udp["score"][0::4] == 0).all()
    # answered flows do not dilute the window: the k-th failed flow sees k distinct targets
    failed = np.flatnonzero(np.arange(40) % 4 != 0)
    assert udp["score"][failed].tolist() == [float(k) for k in range(1, 31)]
    assert (s["cls"] == "address_scan").all()


def test_the_window_holds_the_last_failed_flows_only() -> None:
    rows = [(float(i), "10.0.0.6", f"192.0.2.{i}", 23, "tcp", "S0", 0) for i in range(50)]
    s = _score(_flows(rows))
    assert s["score"].tolist() == [float(min(i + 1, SCAN_DEPTH + 1)) for i in range(50)]


def _pings(times: list[float], orig: str = "10.0.0.238", typ: int = 8,
            resp_pkts: int = 0) -> pd.DataFrame:
    """Echo requests (ICMP type ``typ`` in ``orig_p``, as Zeek logs it) to a new address each."""
    df = _flows([(t, orig, f"192.0.2.{i}", 0, "icmp", "OTH", resp_pkts)
                 for i, t in enumerate(times)])
    df["orig_p"] = typ
    return df


def test_a_ping_sweep_counts_and_a_proxys_rtt_pinger_does_not() -> None:
    """Unanswered echo requests count within PING_SWEEP_HORIZON only: nmap's sweep sends
    dozens a second; a web proxy's RTT pinger (the RITA proxy capture) reaches 24 distinct
    addresses in 300 s but 8 in 10 s."""
    sweep = _score(_pings([i * 0.1 for i in range(40)]))
    assert sweep["score"].tolist() == [float(min(i + 1, SCAN_DEPTH + 1)) for i in range(40)]
    assert (sweep["cls"] == "address_scan").all()
    assert (sweep["score"] >= sweep["threshold"]).sum() == 21
    # one every 12 s: each is alone in its window, though all 25 are within 300 s
    slow = _score(_pings([i * 12.0 for i in range(25)], orig="10.0.0.239"))
    assert (slow["score"] == 1).all()
    # 3 a second for 10 s and more: the window holds the last PING_SWEEP_HORIZON seconds
    steady = _score(_pings([i / 3 for i in range(60)], orig="10.0.0.240"))
    assert steady["score"].max() == 31


def test_icmp_answers_errors_and_answered_pings_never_count() -> None:
    """Replies (type 0) and unreachable messages (3) are answers themselves; an answered
    echo request is no failure."""
    for typ, resp_pkts in ((0, 0), (3, 0), (8, 1), (128, 1)):
        s = _score(_pings([i * 0.1 for i in range(40)], typ=typ, resp_pkts=resp_pkts))
        assert (s["score"] == 0).all(), (typ, resp_pkts)
    for typ in (13, 17, 128):  # timestamp (nmap's discovery), address mask, ICMPv6 echo
        assert (_score(_pings([i * 0.1 for i in range(40)], typ=typ))["score"] > 0).all()


def test_pings_and_failed_connections_share_the_originators_window() -> None:
    """A sweep's pings and its TCP probes to the same hosts (nmap's host discovery) are
    distinct targets of one window; an old ping stops counting, an old TCP probe does not."""
    rows = [(float(i), "10.0.0.241", f"192.0.2.{i}", 443, "tcp", "S0", 0) for i in range(10)]
    tcp = _flows(rows)
    pings = _pings([10.0 + i for i in range(10)], orig="10.0.0.241")
    later = _flows([(100.0, "10.0.0.241", "192.0.2.200", 443, "tcp", "S0", 0)])
    df = pd.concat([tcp, pings, later], ignore_index=True)
    df["uid"] = [f"C{i}" for i in range(len(df))]
    s = _score(df)
    assert s["score"].tolist()[:20] == [float(i + 1) for i in range(20)]
    assert s["score"].iloc[-1] == 11  # the ten TCP probes and itself: the pings are 81 s old


def test_a_scan_state_written_before_pings_were_kept_loads() -> None:
    """A state file of the previous store (no ``ping`` field) loads: none of its flows
    was a ping, and the counts go on from it."""
    rows = [(float(i), "10.0.0.6", f"192.0.2.{i}", 23, "tcp", "S0", 0) for i in range(25)]
    df = _flows(rows)
    a = _scorer()
    _score(df.iloc[:10].reset_index(drop=True), a)
    full = a.state_dict()
    state = {k: v.copy() for k, v in full.items() if not k.endswith("_ping")}
    assert len(state) == len(full) - 1 and any(k.endswith("_uid") for k in state)
    b = _scorer()
    b.load_state_dict(state)
    rest = _score(df.iloc[10:].reset_index(drop=True), b)
    assert rest["score"].tolist() == [float(i + 1) for i in range(10, 25)]


def test_a_host_probing_many_ports_of_one_server_is_a_port_scan() -> None:
    rows = [(10.0 + i, "10.0.0.7", "10.0.0.1", 1 + i, "tcp", "REJ", 1) for i in range(30)]
    s = _score(_flows(rows))
    assert s["score"].tolist() == [float(min(i + 1, SCAN_DEPTH + 1)) for i in range(30)]
    # one target is one address and one service: a tie, called address_scan
    assert s["cls"][0] == "address_scan" and (s["cls"][1:] == "port_scan").all()
    assert (s["score"] >= s["threshold"]).sum() == 11  # from the 20th distinct target on


def test_repeats_of_one_target_count_once_and_other_hosts_do_not_mix() -> None:
    rows = []
    for i in range(60):  # a host retrying one dead server, another host scanning
        rows.append((float(i), "10.0.0.1", "192.0.2.1", 80, "tcp", "S0", 0))
        rows.append((float(i), "10.0.0.2", f"192.0.2.{i}", 23, "tcp", "S0", 0))
    counts = ScanHistory(max_keys=8).push(_flows(rows))
    assert (counts.targets[0::2] == 1).all()  # one target, however often it is tried
    assert counts.repeats[0::2].tolist() == [min(i + 1, SCAN_DEPTH + 1) for i in range(60)]
    assert counts.targets[1::2].max() == SCAN_DEPTH + 1 and (counts.repeats[1::2] == 1).all()
    s = _score(_flows(rows))
    assert (s["cls"][1::2] == "address_scan").all()
    assert s["score"][1::2].max() == SCAN_DEPTH + 1


def test_one_target_tried_again_and_again_is_repeated_attempts() -> None:
    """A bot whose C&C is gone retries it (the shared RemcosRAT capture: 718 rejected
    connections to one address and port in 8 minutes): from the 20th failed attempt at
    one target within the window, a notice of its own class, scored by that count."""
    rows = [(10.0 * i, "10.0.0.1", "192.0.2.1", 5888, "tcp", "REJ", 1) for i in range(25)]
    s = _score(_flows(rows))
    assert s["cls"][0] == "address_scan" and (s["cls"][1:] == "repeated_attempts").all()
    assert s["score"].tolist() == [float(i + 1) for i in range(25)]
    assert s["threshold"][1:].eq(20).all()
    assert np.flatnonzero(s["score"] >= s["threshold"]).tolist() == list(range(19, 25))


def test_repeated_attempts_leave_out_udp_inbound_and_answered_flows() -> None:
    """One-way UDP is normal (syslog, NetFlow export, SNMP traps, multicast), outside
    hosts retrying a local server are the scan classes' business, answered flows never
    count; and a card without the class scores as before."""
    rows = []
    for i in range(30):
        rows.append((float(i), "10.0.0.1", "192.0.2.1", 514, "udp", "S0", 0))  # syslog out
        rows.append((float(i), "198.51.100.7", "10.0.0.2", 22, "tcp", "S0", 0))  # inbound
        rows.append((float(i), "10.0.0.3", "192.0.2.9", 443, "tcp", "SF", 4))  # answered
    s = _score(_flows(rows))
    assert not (s["cls"] == "repeated_attempts").any()
    assert (s["score"] < s["threshold"]).all()


def test_a_card_without_repeated_attempts_never_names_it(tmp_path: Path) -> None:
    rows = [(float(i), "10.0.0.1", "192.0.2.1", 80, "tcp", "S0", 0) for i in range(40)]
    scorer = load_scorer(str(_card(tmp_path, thresholds={"address_scan": 20, "port_scan": 20})))
    assert scorer.notice_classes == ("address_scan", "port_scan")
    s = _score(_flows(rows), scorer)
    assert (s["cls"] == "address_scan").all() and (s["score"] == 1).all()


def test_a_repeated_attempts_notice_lists_earlier_attempts_at_its_target() -> None:
    rows = []
    for i in range(25):  # a retry every 10 s, after every 4th a failed probe elsewhere
        rows.append((10.0 * i, "10.0.0.1", "192.0.2.1", 5888, "tcp", "S0", 0))
        if i % 4 == 3:
            rows.append((10.0 * i + 5, "10.0.0.1", f"198.51.100.{i}", 80, "tcp", "S0", 0))
    df = _flows(rows)
    b = _scorer().score(df)
    last, probe = len(df) - 1, len(df) - 2
    assert b.cls[last] == "repeated_attempts" and b.score[last] == 25
    retries = df.loc[df["resp_h"] == "192.0.2.1", "uid"].tolist()
    ctx = b.extra["context"].take(np.array([last, probe]))
    assert ctx[0] == retries[-2:-7:-1]  # the same target's, newest first
    assert b.cls[probe] == "address_scan" and ctx[1][0] == retries[-2]  # every failure


def test_flows_beyond_the_horizon_do_not_count() -> None:
    step = SCAN_HORIZON / 10  # each flow sees the 10 before it, further ones are too old
    rows = [(i * step, "10.0.0.9", f"192.0.2.{i}", 23, "tcp", "S0", 0) for i in range(30)]
    s = _score(_flows(rows))
    assert s["score"].max() == 11


def test_any_cut_of_the_stream_and_a_state_round_trip_give_the_same_scores() -> None:
    path = DATA / "zeek" / "stratosphere-002-portscan" / "conn.log"
    need(path.exists(), f"{path} (shared data)")
    df = read_table(path).reset_index(drop=True)
    whole = _score(df)
    assert (whole["score"] > 0).any()
    a = _scorer()
    first = _score(df.iloc[:137].reset_index(drop=True), a)
    b = _scorer()
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    parts = [first]
    for lo in range(137, len(df), 251):
        parts.append(_score(df.iloc[lo:lo + 251].reset_index(drop=True), b))
    cut = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(whole, cut)


def test_failed_means_no_reply_or_a_rejected_state() -> None:
    df = _flows([(0.0, "a", "b", 1, "tcp", "S0", 0), (0.0, "a", "b", 1, "tcp", "REJ", 1),
                 (0.0, "a", "b", 1, "tcp", "SF", 3), (0.0, "a", "b", 1, "udp", "SF", 0),
                 (0.0, "a", "b", 1, "tcp", "OTH", 2), (0.0, "a", "b", 0, "icmp", "OTH", 0)])
    assert failed_flows(df).tolist() == [True, True, False, True, False, False]
    df["paired"] = pd.array([False, False, True, False, False, False], dtype="boolean")
    df["resp_pkts"] = pd.array([None, 1, 3, None, 2, 0], dtype="Int64")
    # a one-way NetFlow record (no reverse record found) was not answered
    assert failed_flows(df).tolist() == [True, True, False, True, False, False]


def test_a_probe_without_syn_answered_only_by_resets_failed() -> None:
    """nmap's FIN, Xmas and NULL probes to a closed port get a reset and nothing else;
    a reset to an ACK (a keep-alive to a server that forgot the connection), to data, or
    a lone reset whose sender was never seen is no failed attempt."""
    hist = ["Fr", "FQr", "r", "r", "Ar", "DFr", "Fr", "^r", "F", "ShR"]
    opk = [1, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    rpk = [1, 1, 1, 2, 1, 1, 1, 1, 1, 1]
    df = _flows([(0.0, "a", "b", 80, "tcp", "OTH", r) for r in rpk])
    df["history"] = pd.Series(hist, dtype=df["history"].dtype)
    df["orig_pkts"] = pd.array(opk, dtype=df["orig_pkts"].dtype)
    want = [True, True, True, False, False, False, True, False, False, False]
    assert failed_flows(df).tolist() == want
    rows = np.array([1, 3, 6])
    assert failed_flows(df, rows).tolist() == [want[i] for i in rows]


def test_a_fin_scan_is_a_port_scan() -> None:
    rows = [(1000.0 + 0.01 * i, "198.51.100.23", "192.168.50.10", 1 + i, "tcp", "OTH", 1)
            for i in range(40)]
    df = _flows(rows)
    df["history"] = pd.Series(["Fr"] * 40, dtype=df["history"].dtype)
    s = _score(df)
    assert s["score"].tolist() == [float(min(i + 1, SCAN_DEPTH + 1)) for i in range(40)]
    assert (s["cls"][1:] == "port_scan").all()
    assert (s["score"] >= s["threshold"]).sum() == 21  # from the 20th distinct target on


def test_spark_state_keys_put_a_failed_flow_with_its_originator() -> None:
    df = _flows([(0.0, "10.0.0.1", "b", 1, "tcp", "S0", 0), (0.0, "10.0.0.1", "b", 1, "tcp", "SF", 3)])
    assert scan_keys(df).tolist() == ["10.0.0.1", ANSWERED_KEY]


def test_the_bundled_sample_fan_out_is_found() -> None:
    """192.168.33.10's udp/16464 fan-out (202 addresses, 140 unanswered) raises a notice;
    nothing else in the sample does."""
    zat_sample()
    from zeekml.policy.notice import NoticePolicy, PolicyConfig
    from zeekml.runtime.pipeline import assemble

    df = read_table(SAMPLE)
    scorer = load_scorer("scan")
    policy = NoticePolicy(PolicyConfig())
    out = pd.concat([policy.decide(assemble(df, [scorer.score(df)])), policy.finish()])
    notices = out[out["notice"].fillna(False).astype(bool)]
    assert set(notices["orig_h"]) == {"192.168.33.10"}
    assert set(notices["resp_p"]) == {16464} and set(notices["verdict"]) == {"address_scan"}
    assert notices["n"].sum() >= 100  # the flows a notice stands for after suppression


@pytest.mark.parametrize("capture", ["nfdump/pcap-nfstream-synscan/nfcapd"])
def test_a_syn_scan_read_from_nfcapd_by_nfdump_is_flagged(capture: str) -> None:
    need_binary("nfdump")
    path = DATA / capture
    need(path.exists(), f"{path} (shared data)")
    df = read_table(path).reset_index(drop=True)
    s = _score(df)
    assert (s["score"] >= s["threshold"]).mean() >= 0.9


@pytest.mark.parametrize("capture, share", [
    ("zeek/slips-test18-ctu-sme-11/conn.log.labeled", 0.95),  # RemcosRAT: 718 REJ, one port
    ("zeek/stratosphere-001-njrat/labeled-conn.log", 0.85),  # njRAT: 237 S0 over 50 min
])
def test_windows_rats_retrying_a_dead_cc_are_found(capture: str, share: float) -> None:
    """Two Windows RATs of the shared data whose C&C no longer answers; neither neural
    model flags them (docs/models.md). Their C&C flows are repeated_attempts; no flow
    labeled benign is flagged."""
    path = DATA / capture
    need(path.exists(), f"{path} (shared data)")
    df = read_table(path).reset_index(drop=True)
    s = _score(df)
    flagged = (s["score"] >= s["threshold"]).to_numpy()
    mal = np.asarray(binary_target(df)) == 1
    assert flagged[mal].mean() >= share and not flagged[~mal].any()
    assert set(s["cls"][flagged]) == {"repeated_attempts"}


@pytest.mark.parametrize("capture", [
    "iot23-csv/CTU-Honeypot-Capture-5-1-labeled.csv",
    "zeek/rita-proxy-rolling",
    "zeek/stratosphere-010-mixed/conn.log.labeled",
])
def test_no_flag_on_benign_flows_of_real_captures(capture: str) -> None:
    path = DATA / capture
    need(path.exists(), f"{path} (shared data)")
    df = read_table(path).reset_index(drop=True)
    s = _score(df)
    flagged = (s["score"] >= s["threshold"]).to_numpy()
    benign = binary_target(df) == 0 if "label" in df else np.ones(len(df), dtype=bool)
    assert benign.any() and not flagged[benign].any()


def _card(tmp_path: Path, **changes: object) -> Path:
    return changed_card(tmp_path, CARD, changes, "mine.card.json")


@pytest.mark.parametrize("changes, message", [
    ({"window": {"key": "orig", "depth": 31, "horizon": 300}}, "window key"),
    ({"window": {"key": "orig_failed", "depth": 0, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_failed", "depth": True, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_failed", "depth": 10 ** 9, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_failed", "depth": 31, "horizon": -1}}, "horizon"),
    ({"window": {"key": "orig_failed", "depth": 31, "horizon": "300"}}, "horizon"),
    ({"window": None}, "window"),
    ({"thresholds": {"address_scan": 20}}, "port_scan"),
    ({"thresholds": {"address_scan": 0.5, "port_scan": 20}}, "address_scan"),
    ({"onnx_sha256": "00" * 32}, "give the .onnx file"),
    ({"kind": "amf_lstm"}, "needs its ONNX graph"),
])
def test_hostile_or_broken_cards_are_refused(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_scorer(str(_card(tmp_path, **changes)))


def test_a_card_of_its_own_is_a_model_by_path_and_is_bundled_by_default(tmp_path: Path) -> None:
    p = _card(tmp_path, thresholds={"address_scan": 5, "port_scan": 7}, name="mine")
    scorer = load_scorer(str(p))
    assert scorer.name == "mine" and scorer.thresholds == {"address_scan": 5, "port_scan": 7}
    assert [s.name for s in load_scorers([])] == ["amf_lstm", "bruteforce", "flood", "flow_lm", "scan"]


def test_zeekml_eval_of_the_scan_detector_on_a_labeled_capture(capsys) -> None:
    """``zeekml eval --model scan``: its flags on Stratosphere-008 are all malicious flows
    (an outside host scanning), none benign."""
    from zeekml.cli.main import main

    path = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
    need(path.exists(), f"{path} (shared data)")
    assert main(["eval", "--model", "scan", "--data", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "scan" and set(result["classes"]) == {"normal", "portscan", "c2"}
    counts = result["binary_counts"]
    assert counts["tp"] > 0 and counts["fp"] == 0
    assert result["binary"]["precision"] == 1.0


def test_a_batch_with_more_failed_originators_than_the_store_holds_is_counted() -> None:
    """--max-hosts 16: the store keeps 2 originators, a batch brings 300 (a tail batch is
    bounded by --max-hosts, not by the scan store's share): counted in pieces, no error;
    the scanner among them, seen in every piece, keeps its count."""
    rows = []
    for i in range(300):
        rows.append((float(i), f"10.1.{i // 256}.{i % 256}", "192.0.2.1", 80, "tcp", "S0", 0))
        rows.append((float(i) + 0.5, "10.0.0.99", f"198.51.100.{i % 200}", 23, "tcp", "S0", 0))
    scorer = ScanScorer(load_card(CARD), ScorerOptions(max_hosts=16))
    assert scorer.store.history.max_keys == 2
    s = _score(_flows(rows), scorer)
    assert (s["score"][0::2] == 1).all()
    assert s["score"][1::2].max() == SCAN_DEPTH + 1
    assert len(scorer.store.history) <= 2


def test_rows_of_a_random_sample_are_scored_alone() -> None:
    """CICIDS2017 port-scan rows are a random sample: scored alone, a failed flow is one
    target, never a scan, and the store is not touched."""
    path = DATA / "cicids2017-improved-sample" / "Portscan_2500.csv"
    need(path.exists(), f"{path} (shared data)")
    df = read_table(path).reset_index(drop=True)
    scorer = _scorer()
    b = scorer.score_alone(df)
    assert set(np.unique(b.score)) <= {0.0, 1.0} and b.score.sum() > 0
    assert (b.score < b.threshold).all() and len(scorer.store.history) == 0


def test_a_sweep_from_outside_is_one_notice_about_the_scanner(tmp_path: Path) -> None:
    """The default suppression keys an inbound flow by its local responder, but a scan's
    notices are about the scanner (``ScoreBatch.about_originator``): one outside host
    probing 40 local hosts is one notice, not one per host probed (nmap -sn of a /24 made
    in the lab gave 252 notices before)."""
    from tests.conftest import LABELED_CONN_HEAD
    from zeekml.cli.main import main

    rows = [f"{1000 + i}.0\tC{i}\t203.0.113.9\t40000\t192.168.1.{i + 1}\t22\ttcp\t-\t-\t0\t0"
            f"\tS0\tS\t1\t60\t0\t0\t-\t-" for i in range(40)]
    log = tmp_path / "conn.log"
    log.write_text("\n".join(LABELED_CONN_HEAD + rows) + "\n", encoding="utf-8")
    out = tmp_path / "n.json"
    for by, want in (("host", 1), ("orig", 1)):
        assert main(["score", "--model", "scan", "--suppress-by", by, "--out-format", "json",
                     "--out", str(out), str(log)]) == 0
        v = pd.read_json(out, lines=True)
        assert len(v) == want and v["id.orig_h"].tolist() == ["203.0.113.9"]
        assert v["n"].tolist() == [21] and v["verdict"].tolist() == ["address_scan"]
