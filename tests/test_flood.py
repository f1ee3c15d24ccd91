"""The flood detector (zeekml.windows.floods, zeekml.models.flood_scorer): counts on
hand-made flows (distinct sources, horizon, depth, which flows are kept), batch cuts and
state round trips, card validation, that it is on by default, the Spark engine's key, and
what it finds on real captures: the StopDDoS reflection attacks read from nfcapd files by
the nfdump binary, and no notice on benign corpus captures."""

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
from zeekml.models.card import load_card
from zeekml.models.flood_scorer import FloodScorer
from zeekml.models.registry import ScorerOptions, load_scorers, resolve_model
from zeekml.records.schema import conform
from zeekml.windows.floods import NOT_KEPT_KEY, flood_flows, flood_keys

CARD = resolve_model("flood")
VICTIM = "192.168.5.10"


def _flows(rows: list[tuple[float, str]], *, state: str = "S0", proto: str = "udp",
           victim: str = VICTIM) -> pd.DataFrame:
    """(ts, source) rows to one victim as a canonical table (unanswered unless ``state``
    says otherwise)."""
    df = pd.DataFrame(rows, columns=["ts", "orig_h"])
    df["resp_h"] = victim
    df["proto"] = proto
    df["uid"] = [f"C{i}" for i in range(len(df))]
    df["orig_p"] = 500
    df["resp_p"] = 40000 + np.arange(len(df)) % 20000
    df["conn_state"] = state
    df["orig_pkts"] = 1
    df["resp_pkts"] = 0 if state in ("S0", "REJ") else 3
    return conform(df, with_labels=False)


def _scorer(**options: int) -> FloodScorer:
    return FloodScorer(load_card(CARD), ScorerOptions(**options))


def _scores(df: pd.DataFrame, scorer: FloodScorer | None = None,
            cuts: int | None = None) -> np.ndarray:
    return scores_in_cuts(scorer or _scorer(), df, cuts)


def _src(i: int) -> str:
    return f"{1 + i // 250}.{i % 250}.7.9"


def test_counts_distinct_unanswered_sources_at_one_victim() -> None:
    # 20 distinct sources, each twice, 0.1 s apart: the count rises by one per new source
    rows = [(1000.0 + 0.1 * k, _src(k // 2)) for k in range(40)]
    s = _scores(_flows(rows))
    assert s.tolist() == [1 + k // 2 for k in range(40)]
    b = _scorer().score(_flows(rows))
    assert set(b.cls) == {"ddos"} and set(b.threshold) == {12.0}
    hit = np.flatnonzero(b.score >= b.threshold)
    assert hit[0] == 22  # the 12th distinct source
    uids = b.extra["context"].take(np.array([hit[0]]))[0]
    assert uids == ["C21", "C20", "C19", "C18", "C17"]  # the earlier flows counted, newest first


def test_only_unanswered_flows_that_are_not_outbound_count() -> None:
    n = 30
    answered = _flows([(1000.0 + 0.1 * i, _src(i)) for i in range(n)], state="SF")
    assert not flood_flows(answered).any() and (_scores(answered) == 0).all()
    icmp = _flows([(1000.0 + 0.1 * i, _src(i)) for i in range(n)], proto="icmp")
    assert not flood_flows(icmp).any()  # ICMP type 500: neither an echo request nor an error
    # unanswered echo requests from many sources are a ping flood; answered ones, ICMP
    # errors (a traceroute's time-exceeded from a dozen routers) and replies are not
    for typ, rpk, kept in ((8, 0, True), (128, 0, True), (8, 1, False), (11, 0, False),
                           (3, 0, False), (0, 0, False)):
        pings = icmp.assign(orig_p=pd.array([typ] * n, dtype=icmp["orig_p"].dtype),
                            resp_pkts=pd.array([rpk] * n, dtype=icmp["resp_pkts"].dtype))
        assert flood_flows(pings).all() == kept and _scores(pings).max() == (n if kept else 0)
    # local clients failing to reach one outside server: an outage, not a flood
    outage = _flows([(1000.0 + 0.1 * i, f"10.0.{i}.5") for i in range(n)], victim="8.8.8.8")
    assert not flood_flows(outage).any() and (_scores(outage) == 0).all()
    # Zeek's marks decide over the addresses: the same flows marked inbound count
    marked = outage.copy()
    marked["local_orig"] = pd.array([False] * n, dtype="boolean")
    marked["local_resp"] = pd.array([True] * n, dtype="boolean")
    assert _scores(marked).max() == n
    rejected = _flows([(1000.0 + 0.1 * i, _src(i)) for i in range(n)], state="REJ", proto="tcp")
    assert _scores(rejected).max() == n
    keys = flood_keys(pd.concat([answered, rejected], ignore_index=True))
    assert set(keys[:n]) == {NOT_KEPT_KEY} and set(keys[n:]) == {VICTIM}


def test_one_way_netflow_records_count_as_unanswered() -> None:
    """A one-way NetFlow record no reverse was found for has no reply (the reflection
    attacks as nfcapd); a paired one with a reply does not count."""
    df = _flows([(1000.0 + 0.01 * i, _src(i)) for i in range(20)], state="OTH")
    df["resp_pkts"] = pd.array([None] * 20, dtype=df["resp_pkts"].dtype)
    df["paired"] = pd.array([False] * 20, dtype="boolean")
    assert _scores(df).max() == 20
    df["paired"] = pd.array([True] * 20, dtype="boolean")
    df["resp_pkts"] = pd.array([2] * 20, dtype=df["resp_pkts"].dtype)
    assert _scores(df).max() == 0


def test_horizon_depth_and_victims_split_the_count() -> None:
    # a new source every 2 s: at most 6 within 10 s
    slow = _flows([(1000.0 + 2.0 * i, _src(i)) for i in range(40)])
    assert _scores(slow).max() == 6
    # 200 distinct sources at once: the window holds 64 flows
    fast = _flows([(1000.0 + 0.001 * i, _src(i)) for i in range(200)])
    assert _scores(fast).max() == 64
    # two victims, sources alternating between them: each counts its own
    two = pd.concat([_flows([(1000.0 + 0.01 * i, _src(i))], victim=f"192.168.5.{10 + i % 2}")
                     for i in range(40)], ignore_index=True)
    assert _scores(two).max() == 20


def test_batch_cuts_and_a_saved_state_do_not_change_the_counts() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    rows = [(float(t), _src(int(s))) for t, s in
            zip(np.sort(rng.uniform(0, 300, n)), rng.integers(0, 400, n), strict=True)]
    df = _flows(rows)
    df["resp_h"] = rng.choice(["192.168.5.10", "192.168.5.11", "192.168.5.12"], n)
    whole = _scores(df)
    assert whole.max() >= 16
    assert_cuts_and_state_keep_scores(_scorer, df, whole)


def test_score_alone_is_one_source_at_most() -> None:
    df = _flows([(1000.0 + 0.01 * i, _src(i)) for i in range(30)])
    alone = _scorer().score_alone(df)
    assert (alone.score == 1).all() and (alone.score < alone.threshold).all()


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "scan"}, "kind"),
    ({"window": {"key": "orig_failed", "depth": 63, "horizon": 10}}, "window key"),
    ({"window": {"key": "resp_flood", "depth": 0, "horizon": 10}}, "depth"),
    ({"window": {"key": "resp_flood", "depth": 10 ** 9, "horizon": 10}}, "depth"),
    ({"window": {"key": "resp_flood", "depth": 63, "horizon": -1}}, "horizon"),
    ({"thresholds": {"ddos": 65}}, "threshold"),
    ({"thresholds": {"ddos": 1}}, "threshold"),
    ({"thresholds": {"ddos": float("nan")}}, "threshold"),
    ({"thresholds": {}}, "threshold"),
    ({"thresholds": {"ddos": 16, "dos": 3}}, "unknown"),
])
def test_a_bad_card_is_refused(tmp_path, change, message) -> None:
    path = changed_card(tmp_path, CARD, change)
    with pytest.raises(ModelError, match=message):
        FloodScorer(load_card(path), ScorerOptions())


def test_on_by_default() -> None:
    assert "flood" in [s.name for s in load_scorers([])]


def test_more_victims_than_the_store_holds() -> None:
    """--max-hosts 32: the store keeps 2 victims, a batch brings 200: counted in pieces, no
    error; the flooded victim, seen in every piece, keeps its count."""
    parts = []
    for i in range(200):
        parts.append(_flows([(1000.0 + 0.01 * i, _src(i))], victim=f"192.168.{i // 250}.{i % 250}"))
        parts.append(_flows([(1000.005 + 0.01 * i, _src(1000 + i))]))
    df = pd.concat(parts, ignore_index=True)
    scorer = _scorer(max_hosts=32)
    assert scorer.store.history.max_keys == 2
    s = scorer.score(df).score
    victim = df["resp_h"].to_numpy() == VICTIM
    assert s[victim].max() == 64 and (s[~victim] == 1).all()
    assert len(scorer.store.history) <= 2


def test_spark_key_is_the_victim_of_a_kept_flow() -> None:
    from zeekml.runtime.spark.models import state_keys, state_layout

    assert state_layout(_scorer()) == ("resp_flood", 63)
    df = pd.concat([_flows([(1.0, "1.2.3.4")]), _flows([(2.0, "1.2.3.5")], state="SF")],
                   ignore_index=True)
    assert state_keys(df, "resp_flood").tolist() == [VICTIM, NOT_KEPT_KEY]


@pytest.mark.parametrize(("rel", "least"), [
    ("nfdump/pcap-stopddos-amp-udp-isakmp/nfcapd", 0.9),  # ISAKMP reflection, 2,767 reflectors
    ("nfdump/pcap-stopddos-amp-udp-bacnet-37810/nfcapd", 0.9),  # BACnet reflection
    # DNS reflection through 225 repeating reflectors: 58% in the nfcapd file's own order
    # (nfpcapd's hash order, records grouped by reflector), 89.5% read in end order
    ("nfdump/pcap-stopddos-amp-dns-rrsig-fragmented/nfcapd", 0.85),
])
def test_finds_reflection_attacks_in_nfcapd_files(tmp_path, rel, least) -> None:
    """Real DDoS events read as NetFlow by the real nfdump binary: one notice about the
    victim (the suppression key of an inbound flow), most flows over the threshold."""
    need_binary("nfdump")
    d = DATA / rel
    need(d.is_dir(), f"{d} (shared data)")
    v = score_json(tmp_path, "flood", d)
    flagged = v["score"] >= v["threshold"]
    assert len(v) > 600 and flagged.mean() >= least
    noticed = v[v["notice"].astype(bool)]
    assert len(noticed) == 1 and set(noticed["verdict"]) == {"ddos"}
    assert len(noticed["context"].iloc[0]) == 5
    assert (v["decision"] == "suppressed").sum() == flagged.sum() - 1  # folded into it


@pytest.mark.parametrize(("rel", "counted"), [
    ("zeek/stratosphere-008-mixed/conn.log.labeled", True),  # a Windows host's day
    ("zeek/rita-proxy-rolling", True),  # clients behind a web proxy
    # its only unanswered, not outbound flow is a DHCP request to 255.255.255.255: none kept
    ("zeek/zat-sample/conn.log", False),
])
def test_no_notice_on_benign_traffic(tmp_path, rel, counted) -> None:
    path = DATA / rel
    need(path.exists(), f"{path} (shared data)")
    v = score_json(tmp_path, "flood", path)
    assert len(v) > 300 and not v["notice"].astype(bool).any()
    assert (v["score"].max() >= 1) == counted


def test_zeekml_eval_of_the_flood_detector(tmp_path, capsys) -> None:
    """``zeekml eval --model flood`` on a labeled Zeek log: a SYN flood from 40 sources
    labeled DDoS beside benign HTTPS; its flags are predicted ``ddos``."""


    rows = []
    for i in range(40):
        rows.append(f"{1000 + 0.1 * i:.1f}\tCd{i}\t{_src(i)}\t{40000 + i}\t192.168.5.10\t80\ttcp"
                    "\t-\t-\t0\t0\tS0\tS\t1\t40\t0\t0\tMalicious\tDDoS")
        rows.append(f"{1000 + 0.1 * i + 0.05:.2f}\tCb{i}\t192.168.5.20\t{50000 + i}\t1.1.1.1"
                    "\t443\ttcp\tssl\t0.4\t600\t4000\tSF\tShADadFf\t8\t920\t7\t4300\tBenign\t-")
    result = eval_rows(tmp_path, capsys, "flood", rows)
    assert set(result["classes"]) == {"normal", "ddos"}
    ddos = result["classes"]["ddos"]
    assert ddos["precision"] == 1.0 and ddos["recall"] == pytest.approx(29 / 40)  # from the 12th
    assert result["binary_counts"]["fp"] == 0


def test_notices_are_about_the_victim_whatever_the_sources() -> None:
    """Spoofed sources from the local ranges make the flows look internal, not inbound: the
    suppression key is still the victim (``about_responder``), so 40 sources give one
    notice, and the incident is the victim's."""
    from zeekml.policy.incidents import flagged_from_decision
    from zeekml.policy.notice import NoticePolicy, PolicyConfig
    from zeekml.runtime.pipeline import notice_subjects, score_frame

    df = _flows([(1000.0 + 0.1 * i, f"10.{i}.0.7") for i in range(40)], victim="10.0.0.5")
    scorer = _scorer()
    policy = NoticePolicy(PolicyConfig())
    notices = pd.concat([score_frame(df, [scorer], policy, flagged_context=True), policy.finish()])
    assert len(notices) == 1 and notices["resp_h"].iloc[0] == "10.0.0.5"
    batch = scorer.score(df)
    assert notice_subjects([batch]).tolist() == [1]  # about the responder
    by_orig = NoticePolicy(PolicyConfig(suppress_by="orig"))  # the user's choice still holds
    assert len(pd.concat([score_frame(df, [_scorer()], by_orig), by_orig.finish()])) == 29
    # the incident tracker's input: every flagged row keyed as the victim's (inbound)
    x = flagged_from_decision(policy.decision, df, 1, notice_subjects([batch]))
    assert len(x) == 29 and x["inbound"].all()
    assert not flagged_from_decision(policy.decision, df, 1)["inbound"].any()


def test_missing_addresses_and_times_are_scored_never_errors() -> None:
    """A missing source, victim or timestamp: the flow is scored (a missing source is one
    source, "", a missing victim its own key), never an error."""
    df = _flows([(1000.0 + 0.1 * i, _src(i)) for i in range(20)])
    df["orig_h"] = df["orig_h"].astype("str").mask(pd.Series(np.arange(20) % 5 == 0))
    df.loc[3, "ts"] = np.nan
    s = _scores(df)
    # 15 real sources and the missing one: the row without a time is at 0, outside the
    # others' 10 s, and counts only itself
    assert len(s) == 20 and s.max() == 16 and s[3] == 1
    df["resp_h"] = df["resp_h"].astype("str").mask(pd.Series(np.arange(20) >= 10))
    s = _scores(df)
    assert s[:10].max() <= 10 and s[10:].max() <= 10


def test_broadcast_and_multicast_destinations_are_never_floods() -> None:
    """Many local hosts' announcements and name queries to their subnet's broadcast (or a
    multicast group) are never answered, by design: not kept, whatever Zeek's marks say."""
    for victim in ("192.168.5.255", "224.0.0.251", "239.255.255.250", "ff02::fb",
                   "255.255.255.255"):
        df = _flows([(1000.0 + 0.1 * i, f"192.168.5.{1 + i}") for i in range(30)], victim=victim)
        df["local_orig"] = pd.array([True] * 30, dtype="boolean")
        df["local_resp"] = pd.array([True] * 30, dtype="boolean")
        assert not flood_flows(df).any() and (_scores(df) == 0).all(), victim
    # the same hosts flooding a unicast local address are counted
    df = _flows([(1000.0 + 0.1 * i, f"192.168.5.{1 + i}") for i in range(30)], victim="192.168.5.254")
    assert _scores(df).max() == 30
