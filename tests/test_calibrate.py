"""``zeekml calibrate`` (issue 12, item 6): an alert budget on real traffic, checked by
scoring the same traffic with the written policy.

The data is the RITA archive: three days of an internet-facing server (every third
hourly file of each day, so three UTC days stay in the data at a third of the cost).
The promise tested is the user's: ``zeekml score --config policy.json`` over that
traffic gives at most N notices (or incidents) on every UTC day, per model, and no
threshold went below the card's unless --allow-lower was asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, need
from test_incidents import incidents_of, zeek_rows

from zeekml.cli.main import main
from zeekml.models.card import load_card
from zeekml.models.registry import bundled_models
from zeekml.policy.budget import allowances, lowest_threshold

ARCHIVE = DATA / "zeek" / "rita-rotated-archive"
CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


def archive_files() -> list[str]:
    need(ARCHIVE.is_dir(), f"the archive {ARCHIVE}")
    files = sorted(ARCHIVE.glob("*/conn.*.log.gz"))
    return [str(p) for p in files if int(p.name.split(".")[1][:2]) % 3 == 0]


def cards() -> dict[str, object]:
    paths = bundled_models()
    need(bool(paths), "the bundled models")
    return {load_card(p).name: load_card(p) for p in paths}


def per_day(ts: pd.Series, models: pd.Series) -> pd.DataFrame:
    day = np.floor(ts.astype(float) / 86400).astype(int)
    return pd.DataFrame({"day": day, "model": models}).value_counts().rename("n").reset_index()


def calibrate(tmp: Path, data: list[str], *extra: str) -> tuple[dict, dict]:
    out = tmp / "policy.json"
    report = tmp / "report.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["-q", "calibrate", "--threads", "1", "--data", *data, "--out", str(out),
                     "--json", *extra]) == 0
    report.write_text(buf.getvalue())
    return json.loads(out.read_text()), json.loads(buf.getvalue())


def test_notice_budget_holds_when_the_policy_is_used(tmp_path: Path) -> None:
    data = archive_files()
    budget = 12
    policy, report = calibrate(tmp_path, data, "--budget", str(budget))
    assert report["days"] >= 3 and report["unit"] == "notice"  # UTC days of log time
    by_model = cards()
    # never below the card's threshold; raised where the traffic floods
    for key, value in policy["thresholds"].items():
        model, _, cls = key.partition(":")
        assert value >= by_model[model].threshold_for(cls), key
    # a class the card does not emit (threshold above the score range) is not repeated
    # in the policy file, which `score --config` would refuse; the card still applies
    silent = [f"amf_lstm:{c}" for c in by_model["amf_lstm"].thresholds
              if c != "default" and by_model["amf_lstm"].threshold_for(c) > 1.0]
    assert silent and not set(silent) & set(policy["thresholds"])
    # and the report says so, for those classes only (it printed "threshold 1 (kept)")
    assert {c["key"] for c in report["classes"] if c["not_emitted"]} == set(silent)
    raised = [c for c in report["classes"] if c["threshold"] > c["floor"]]
    assert raised and all(c["before"] > c["after"] and c["cut"] > 0 for c in raised)
    assert all(c["cut_low"] <= c["cut_high"] < c["threshold"] for c in raised)
    # every model ends within the budget; one already within it is left as it was
    assert any(m["before"] > budget for m in report["models"].values())
    for m in report["models"].values():
        assert m["after"] <= budget and (m["before"] > budget or m["after"] == m["before"])
    # the promise: scoring that traffic with the policy gives <= budget notices a day
    out = tmp_path / "scored.log"
    assert main(["-q", "score", "--threads", "1", "--config", str(tmp_path / "policy.json"),
                 "--out", str(out), *data]) == 0
    notices = zeek_rows(out)
    counts = per_day(notices["ts"], notices["model"])
    assert len(counts) and counts["n"].max() <= budget
    for model, m in report["models"].items():
        mine = counts[counts["model"] == model]["n"]
        assert (int(mine.max()) if len(mine) else 0) == m["after"]  # a silent model: no rows


def test_a_cut_beyond_the_score_range_is_written_as_never(tmp_path: Path) -> None:
    """A budget of 0 for the brute-force detector on the archive, whose SSH port takes
    the internet's guessers (scores up to 64, its window full): the threshold just above
    the highest score lies outside the score range [0, 64], which `score --config` refuses,
    so the policy says inf (never); scored with it, the archive has no such notice."""
    data = archive_files()
    policy, report = calibrate(tmp_path, data, "--budget", "0", "--model", "bruteforce")
    (cost,) = [c for c in report["classes"] if c["cls"] == "login_guessing"]
    assert cost["before"] > 0 and cost["after"] == 0 and cost["cut_high"] == 64
    assert policy["thresholds"] == {"bruteforce:login_guessing": float("inf")}
    out = tmp_path / "scored.log"
    assert main(["-q", "score", "--threads", "1", "--model", "bruteforce", "--config",
                 str(tmp_path / "policy.json"), "--out", str(out), *data]) == 0
    assert not len(zeek_rows(out))


def test_incident_budget_holds_when_the_policy_is_used(tmp_path: Path) -> None:
    """--unit incident: at most N incidents a day per model (counted by first_seen)."""
    data = archive_files()
    budget = 2
    policy, report = calibrate(tmp_path, data, "--budget", str(budget), "--unit", "incident",
                               "--incident-gap", "900")
    assert report["unit"] == "incident"
    assert any(m["before"] > budget for m in report["models"].values())
    inc = tmp_path / "inc.log"
    assert main(["-q", "score", "--threads", "1", "--config", str(tmp_path / "policy.json"),
                 "--out", str(tmp_path / "v.log"), "--incidents", str(inc),
                 "--incident-gap", "900", *data]) == 0
    recs = incidents_of(inc)
    closed = recs[recs["state"] == "closed"]
    assert len(closed)
    model = [m[0] for m in closed["models"]]  # the classes of the models are disjoint
    counts = per_day(closed["first_seen"], pd.Series(model, index=closed.index))
    assert counts["n"].max() <= budget
    for name, m in report["models"].items():
        mine = counts[counts["model"] == name]["n"]
        assert (int(mine.max()) if len(mine) else 0) == m["after"]  # a silent model: no rows


def test_a_generous_budget_costs_nothing_and_allow_lower_fills_it(tmp_path: Path) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    policy, report = calibrate(tmp_path, [str(CAPTURE)], "--budget", "100000")
    assert all(c["threshold"] == c["floor"] and c["cut"] == 0 for c in report["classes"])
    by_model = cards()
    for key, value in policy["thresholds"].items():
        model, _, cls = key.partition(":")
        assert value == by_model[model].threshold_for(cls)
    # --allow-lower: the flow LM's threshold may go below its card to fill 4000 a day
    budget = 4000
    policy, report = calibrate(tmp_path, [str(CAPTURE)], "--budget", str(budget),
                               "--allow-lower", "--model", "flow_lm")
    (lm,) = report["classes"]
    assert lm["threshold"] < lm["floor"] and lm["after"] <= budget
    out = tmp_path / "lower.log"
    assert main(["-q", "score", "--threads", "1", "--model", "flow_lm", "--config",
                 str(tmp_path / "policy.json"), "--out", str(out), str(CAPTURE)]) == 0
    notices = zeek_rows(out)
    counts = per_day(notices["ts"], notices["model"])
    assert counts["n"].max() <= budget
    assert len(notices) > report["models"]["flow_lm"]["before"] // 2  # lowered: more alerts


def test_search_and_shares() -> None:
    scores = np.array([0.5, 0.6, 0.6, 0.7, 0.9])
    count = lambda t: int((scores >= t).sum())  # noqa: E731 - a monotone curve
    assert lowest_threshold(scores, 0.55, 2, count) == (0.7, 2)
    assert lowest_threshold(scores, 0.55, 10, count) == (0.55, 4)
    t, n = lowest_threshold(scores, 0.55, 0, count)
    assert n == 0 and t > 0.9
    assert allowances({"a": 0, "b": 83, "c": 5691}, 20) == {"a": 0, "b": 10, "c": 10}
    assert allowances({"a": 3, "b": 50}, 20) == {"a": 3, "b": 17}
    assert allowances({"a": 5, "b": 5}, 20) == {"a": 5, "b": 5}
    assert sum(allowances({"a": 9, "b": 9, "c": 9}, 10).values()) == 10


def test_usage_errors(tmp_path: Path) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    assert main(["calibrate", "--data", str(CAPTURE), "--budget", "-1"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"thresholds": {"c2": "high"}}')
    assert main(["calibrate", "--data", str(CAPTURE), "--budget", "5", "--config",
                 str(bad)]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--data", str(CAPTURE), "--budget", "5", "--unit", "flows"])
    assert exc.value.code == 2


def test_a_class_held_to_two_thresholds_is_counted_as_held() -> None:
    """The AMF-LSTM holds flows whose payload bytes are unknown to a higher threshold than
    the others, and a policy threshold applies to all of a class's flows. Such a class is
    counted at the threshold each flow had: within the budget it is left to the card;
    cut, it gets one threshold from the highest up, so no flow's threshold is lowered and
    no flow the budget did not count becomes an alert."""
    from zeekml.policy.budget import CandidatePolicy, calibrate
    from zeekml.policy.notice import PolicyConfig

    base = PolicyConfig(suppress=0.0)
    n = 8
    scored = pd.DataFrame({
        "ts": np.arange(n, dtype=np.float64) * 10, "uid": [f"C{i}" for i in range(n)],
        "orig_h": "10.0.0.1", "orig_p": 1, "resp_h": "10.0.0.2", "resp_p": 22, "proto": "tcp",
        "model": "amf_lstm", "cls": ["bruteforce"] * 4 + ["ddos"] * 4,
        "score": [0.95, 0.96, 0.9999, 0.99995, 0.6, 0.7, 0.8, 0.9],
        "threshold": [0.9, 0.9, 0.9998, 0.9998, 0.55, 0.55, 0.55, 0.55]})

    def run(budget: int):
        pol = CandidatePolicy(base, allow_lower=False)
        pol.decide(scored)
        assert pol.floors[("amf_lstm", "bruteforce")] == 0.9998
        assert pol.mixed == {("amf_lstm", "bruteforce")}
        flagged = pol.decision.rows[pol.decision.flagged]
        rows = flagged.assign(act=flagged["ts"], opener=True, inbound=False, flow=0, context=None)
        result = calibrate(pol.with_in_force(rows), dict(pol.floors), base, budget,
                           mixed=pol.mixed)
        return {c.cls: c for c in result.classes}, result.policy_json(base)["thresholds"]

    by, policy = run(100)  # generous: nothing moves, the card stays for every flow
    assert by["bruteforce"].mixed and by["bruteforce"].before == 4 and by["bruteforce"].cut == 0
    assert policy == {}
    by, policy = run(4)  # 2 a class: bruteforce counted at 4 (two flows under the highest)
    bf = by["bruteforce"]
    assert bf.before == 4 and bf.after <= 2 and bf.cut == 2 and bf.named
    assert policy["amf_lstm:bruteforce"] >= 0.9998  # never below a threshold in force


def test_incident_counts_follow_the_sweep_rule() -> None:
    """Calibrating by incidents counts a sweeper's flows as the run does: one outside host
    flagged against 60 local hosts is 5 incidents (4 hosts, then the sweeper), not 60."""
    from zeekml.policy.budget import incident_times, swept_rows
    from zeekml.policy.incidents import IncidentConfig
    from zeekml.policy.notice import PolicyConfig

    n = 60
    rows = pd.DataFrame({
        "ts": np.arange(n, dtype=float), "uid": [f"C{i}" for i in range(n)],
        "orig_h": "198.51.100.23", "resp_h": [f"192.168.50.{i + 1}" for i in range(n)],
        "resp_p": 0, "model": "m", "verdict": "ddos", "score": 1.0,
        "context": pd.Series([[]] * n, dtype=object), "act": np.arange(n, dtype=float),
        "opener": False, "inbound": True, "flow": np.arange(n), "by_direction": True})
    end = float(n + 10_000)
    assert len(incident_times(rows, IncidentConfig(), end)) == n  # subjects as recorded
    assert len(incident_times(rows, IncidentConfig(), end, PolicyConfig())) == 5
    assert len(incident_times(rows, IncidentConfig(), end, PolicyConfig(sweep_hosts=0))) == n
    fixed = rows.assign(by_direction=False)  # the flood detector's: about the victim
    assert swept_rows(fixed, PolicyConfig())["inbound"].all()
