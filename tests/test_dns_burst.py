"""The DNS burst detector (zeekml.windows.lookups, zeekml.models.dns_burst_scorer): counts
on hand-made flows (lookups only, horizon, depth), batch cuts and state round trips, card
validation, that it is bundled but not on by default, and what it finds on real captures:
the Simda DGA host (Zeek), a C&C-over-DNS capture read from nfcapd files by the nfdump
binary, no notice on a Windows host booting or on benign corpus captures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import (
    DATA,
    assert_cuts_and_state_keep_scores,
    changed_card,
    need,
    need_binary,
    scores_in_cuts,
)
from zeekml.errors import ModelError
from zeekml.models.card import load_card
from zeekml.models.dns_burst_scorer import DnsBurstScorer
from zeekml.models.registry import (
    ScorerOptions,
    bundled_models,
    load_scorers,
    optional_models,
    resolve_model,
)
from zeekml.records.schema import conform
from zeekml.sources import read_table
from zeekml.windows.lookups import NOT_LOOKUP_KEY, dns_lookups, lookup_keys

CARD = resolve_model("dns_burst")
SIMDA = DATA / "zeek" / "stratosphere-005-simda" / "conn.log"


def _flows(rows: list[tuple[float, str, int, str]]) -> pd.DataFrame:
    """(ts, orig, resp_p, proto) rows to one resolver as a canonical table."""
    df = pd.DataFrame(rows, columns=["ts", "orig_h", "resp_p", "proto"])
    df["resp_h"] = "10.0.0.53"
    df["uid"] = [f"C{i}" for i in range(len(df))]
    df["orig_p"] = 40000 + np.arange(len(df)) % 20000
    df["conn_state"] = "SF"
    return conform(df, with_labels=False)


def _scorer() -> DnsBurstScorer:
    return DnsBurstScorer(load_card(CARD), ScorerOptions())


def _scores(df: pd.DataFrame, scorer: DnsBurstScorer | None = None,
            cuts: int | None = None) -> np.ndarray:
    return scores_in_cuts(scorer or _scorer(), df, cuts)


def test_counts_an_originators_lookups_within_five_minutes() -> None:
    rows = []
    for i in range(250):  # a DGA-like host: 250 lookups in 125 s, web flows between
        rows.append((1000.0 + i / 2, "10.0.0.7", 53, "udp"))
        rows.append((1000.1 + i / 2, "10.0.0.7", 443, "tcp"))
    for i in range(150):  # a busy client: 150 lookups in 75 s
        rows.append((1000.0 + i / 2, "10.0.0.8", 53, "udp"))
    for i in range(400):  # one lookup every 6 s for 40 minutes: 50 within any 5 minutes
        rows.append((2000.0 + 6 * i, "10.0.0.9", 53, "tcp"))
    df = _flows(rows)
    s = _scores(df)
    orig, port = df["orig_h"].to_numpy(), df["resp_p"].to_numpy()
    assert (s[port == 443] == 0).all()  # not a lookup: never counted, never scored
    dga = s[(orig == "10.0.0.7") & (port == 53)]
    assert dga.tolist() == list(range(1, 251))
    assert s[orig == "10.0.0.8"].max() == 150
    assert s[orig == "10.0.0.9"].max() == 51  # 50 earlier within 300 s (inclusive) + itself
    flagged = s >= DnsBurstScorer(load_card(CARD), ScorerOptions()).threshold
    assert set(orig[flagged]) == {"10.0.0.7"} and flagged.sum() == 51


def test_window_is_capped_at_depth_and_lookups_are_port_53_or_dns_service() -> None:
    df = _flows([(1000.0 + i / 10, "10.0.0.7", 53, "udp") for i in range(600)])
    assert _scores(df).max() == 256  # 255 earlier lookups + the flow itself
    a = "10.0.0.7"
    named = _flows([(1.0, a, 5353, "udp"), (2.0, a, 53, "icmp"), (3.0, a, 53, "tcp"),
                    (4.0, a, 8053, "udp")])
    named["service"] = pd.Series([None, None, None, "dns"], dtype=named["service"].dtype)
    assert dns_lookups(named).tolist() == [False, False, True, True]
    assert lookup_keys(named).tolist() == [NOT_LOOKUP_KEY, NOT_LOOKUP_KEY, a, a]


def test_batch_cuts_and_a_saved_state_do_not_change_the_counts() -> None:
    rng = np.random.default_rng(3)
    rows = [(float(t), f"10.0.0.{h}", int(p), "udp")
            for t, h, p in zip(np.sort(rng.uniform(0, 900, 3000)), rng.integers(1, 4, 3000),
                               rng.choice([53, 53, 53, 123], 3000), strict=True)]
    df = _flows(rows)
    whole = _scores(df)
    assert whole.max() >= 200
    assert_cuts_and_state_keep_scores(_scorer, df, whole)


@pytest.mark.parametrize("marked", [False, True])
def test_inbound_lookups_to_a_local_server_are_not_counted(marked) -> None:
    """An outside resolver asking a local authoritative server 300 times in 100 s is the
    server's job, not a burst of the server's own lookups; the server's lookups out are."""
    rows = [(1000.0 + i / 3, "8.8.4.4", 53, "udp") for i in range(300)]
    rows += [(1000.0 + i / 3, "192.168.1.5", 53, "udp") for i in range(300)]
    df = _flows(rows)
    df["resp_h"] = ["192.168.1.53"] * 300 + ["9.9.9.9"] * 300
    if marked:  # Zeek's local marks decide where present (here: a public site network)
        df["orig_h"] = ["8.8.4.4"] * 300 + ["147.32.1.5"] * 300
        df["resp_h"] = ["147.32.1.53"] * 300 + ["9.9.9.9"] * 300
        df["local_orig"] = pd.array([False] * 300 + [True] * 300, dtype="boolean")
        df["local_resp"] = pd.array([True] * 300 + [False] * 300, dtype="boolean")
    s = _scores(df)
    assert (s[:300] == 0).all() and not dns_lookups(df)[:300].any()
    assert s[300:].max() == 256
    assert set(lookup_keys(df)[:300]) == {NOT_LOOKUP_KEY}


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "scan"}, "kind"),
    ({"window": {"key": "orig_failed", "depth": 255, "horizon": 300}}, "window key"),
    ({"window": {"key": "orig_dns", "depth": 0, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_dns", "depth": 10 ** 9, "horizon": 300}}, "depth"),
    ({"window": {"key": "orig_dns", "depth": 255, "horizon": "300"}}, "horizon"),
    ({"thresholds": {"dns_burst": 257}}, "threshold"),
    ({"thresholds": {"dns_burst": float("nan")}}, "threshold"),
    ({"thresholds": {}}, "threshold"),
])
def test_a_bad_card_is_refused(tmp_path, change, message) -> None:
    path = changed_card(tmp_path, CARD, change)
    with pytest.raises(ModelError, match=message):
        DnsBurstScorer(load_card(path), ScorerOptions())


def test_bundled_but_not_on_by_default() -> None:
    assert [p.name for p in optional_models()] == ["dns_burst.card.json"]
    assert "dns_burst" not in [s.name for s in load_scorers([])]
    assert all("optional" not in str(p) for p in bundled_models())
    assert [s.name for s in load_scorers(["dns_burst", "scan"])] == ["dns_burst", "scan"]


def _score_cli(tmp_path: Path, data: Path, *extra: str) -> pd.DataFrame:
    from zeekml.cli.main import main

    out = tmp_path / "v.json"
    assert main(["score", "--model", "dns_burst", "--all", "--suppress", "0", "--out-format",
                 "json", "--out", str(out), *extra, str(data)]) == 0
    return pd.read_json(out, lines=True)


def test_finds_the_simda_dga_host(tmp_path) -> None:
    """Simda (Stratosphere CTU-Malware-Capture-Botnet-355-1, not in the corpus) asks its
    IPv6 resolver for ~100 names a minute: the default models give it no notice."""
    need(SIMDA.is_file(), f"{SIMDA} (shared data)")
    v = _score_cli(tmp_path, SIMDA)
    flows = read_table(str(SIMDA))
    noticed = v[v["notice"].astype(bool)]
    bot = "fd77:48a1:c0bb:0:b96c:506d:6c7f:e8be"
    assert len(noticed) > 300 and set(noticed["id.orig_h"]) == {bot}
    assert set(noticed["verdict"]) == {"dns_burst"}
    assert (noticed["id.resp_p"] == 53).all()
    assert len(v) == len(flows)
    ctx = noticed["context"].iloc[0]
    assert len(ctx) == 5 and set(ctx) <= set(flows["uid"])


def test_finds_dns_c2_in_nfcapd_files(tmp_path) -> None:
    need_binary("nfdump")
    d = DATA / "nfdump" / "pcap-slips-test-cc-2" / "nfcapd"
    need(d.is_dir(), f"{d} (shared data)")
    v = _score_cli(tmp_path, d)
    noticed = v[v["notice"].astype(bool)]
    assert len(noticed) >= 40 and noticed["id.orig_h"].nunique() == 1


@pytest.mark.parametrize(("rel", "busiest"), [
    ("zeek/stratosphere-001-njrat/labeled-conn.log", 100),
    ("zeek/zat-sample/conn.log", 10),
    ("zeek/rita-rotated-archive/2024-04-19", 50)])
def test_no_notice_on_benign_hosts(tmp_path, rel, busiest) -> None:
    """A Windows host booting (113 lookups in 5 minutes), a small network's capture, and a
    day of an internet-facing server (its busiest 5 minutes: 81 lookups)."""
    path = DATA / rel
    need(path.exists(), f"{path} (shared data)")
    v = _score_cli(tmp_path, path)
    assert len(v) > 300 and not v["notice"].astype(bool).any()
    assert v["score"].max() >= busiest  # the lookups were counted
