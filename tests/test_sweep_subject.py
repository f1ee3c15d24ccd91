"""Sweepers (zeekml.policy.sweep): against a per-row reference, cut into any batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zeekml.errors import StateError
from zeekml.policy.sweep import SweepKeys


def reference(groups, resp, ts, clock, hosts, interval):
    """The rule written row by row: a group's episode goes on while each flagged row comes
    before the previous one's time + interval (by the stream clock)."""
    state: dict[str, tuple[float, set]] = {}
    out = []
    for g, r, t, c in zip(groups, resp, ts, clock, strict=True):
        dead, seen = state.get(g, (-np.inf, set()))
        if c >= dead:
            seen = set()
        seen = seen | {r}
        state[g] = (t + interval, seen)
        out.append(len(seen) >= hosts)
    return np.array(out, dtype=bool)


def run(tracker, groups, resp, ts, clock, cuts):
    out = []
    edges = [0, *cuts, len(groups)]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        codes, keys = pd.factorize(pd.Series(groups[lo:hi], dtype=object))
        out.append(tracker.swept(codes, np.asarray(keys, dtype=object),
                              np.asarray(resp[lo:hi], dtype=object), ts[lo:hi], clock[lo:hi],
                              float(clock[hi - 1]) if hi > lo else -np.inf))
    return np.concatenate(out) if out else np.zeros(0, bool)


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_however_the_stream_is_cut(seed):
    rng = np.random.default_rng(seed)
    n = 400
    groups = rng.choice(["a", "b", "c", "d"], n).astype(object)
    resp = rng.choice([f"10.0.0.{i}" for i in range(9)], n).astype(object)
    ts = np.cumsum(rng.exponential(3.0, n))
    ts[rng.random(n) < 0.1] -= 20  # a little disorder: the clock is the running max
    clock = np.maximum.accumulate(ts)
    want = reference(groups, resp, ts, clock, hosts=4, interval=30.0)
    assert want.any() and not want.all()
    whole = run(SweepKeys(4, 30.0), groups, resp, ts, clock, [])
    np.testing.assert_array_equal(whole, want)
    cuts = sorted(rng.choice(np.arange(1, n), 7, replace=False).tolist())
    tracker = SweepKeys(4, 30.0)
    out = []
    edges = [0, *cuts, n]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        # and through its state, as a restarted process would
        again = SweepKeys(4, 30.0)
        again.load_state_dict(tracker.state_dict())
        tracker = again
        out.append(run(tracker, groups[lo:hi], resp[lo:hi], ts[lo:hi], clock[lo:hi], []))
    np.testing.assert_array_equal(np.concatenate(out), want)


def test_a_sweep_is_one_at_the_given_host_and_a_quiet_gap_resets_it():
    resp = np.array([f"192.168.1.{i}" for i in range(1, 9)], dtype=object)
    ts = np.arange(8, dtype=float)
    got = run(SweepKeys(5, 60.0), np.array(["x"] * 8, dtype=object), resp, ts, ts, [])
    assert got.tolist() == [False] * 4 + [True] * 4
    # the same responders again and again: never a sweep
    same = np.array(["192.168.1.1", "192.168.1.2"] * 10, dtype=object)
    t = np.arange(20, dtype=float)
    assert not run(SweepKeys(5, 60.0), np.array(["x"] * 20, dtype=object), same, t, t, []).any()
    # five hosts, but 100 s of quiet between each pair: every episode starts over
    t = np.arange(8, dtype=float) * 100
    assert not run(SweepKeys(5, 60.0), np.array(["x"] * 8, dtype=object), resp, t, t, []).any()
    assert not run(SweepKeys(0, 60.0), np.array(["x"] * 8, dtype=object), resp, ts, ts, []).any()


def test_quiet_groups_are_forgotten():
    tracker = SweepKeys(3, 10.0)
    run(tracker, np.array(["x", "y"], dtype=object), np.array(["a", "b"], dtype=object),
        np.array([0.0, 1.0]), np.array([0.0, 1.0]), [])
    assert len(tracker) == 2
    run(tracker, np.array(["z"], dtype=object), np.array(["a"], dtype=object),
        np.array([10.5]), np.array([10.5]), [])
    assert len(tracker) == 2  # x's deadline (10) passed, y's (11) not yet
    assert set(tracker.state_dict()) >= {"sweep_keys_utf8", "sweep_resp_utf8"}


def test_crafted_state_is_refused():
    tracker = SweepKeys(3, 10.0)
    run(tracker, np.array(["x"], dtype=object), np.array(["a"], dtype=object),
        np.array([0.0]), np.array([0.0]), [])
    good = tracker.state_dict()
    bad = dict(good, sweep_count=np.array([0], dtype=np.int64))
    with pytest.raises(StateError):
        SweepKeys(3, 10.0).load_state_dict(bad)
    bad = dict(good, sweep_deadline=np.array([1.0, 2.0]))
    with pytest.raises(StateError):
        SweepKeys(3, 10.0).load_state_dict(bad)
    other = SweepKeys(3, 10.0)
    run(other, np.array(["q"], dtype=object), np.array(["a"], dtype=object),
        np.array([0.0]), np.array([0.0]), [])
    mixed = dict(good, **{k: v for k, v in other.state_dict().items() if "owner" in k})
    with pytest.raises(StateError):
        SweepKeys(3, 10.0).load_state_dict(mixed)
    # a state written before sweepers: nothing remembered
    fresh = SweepKeys(3, 10.0)
    fresh.load_state_dict({})
    assert len(fresh) == 0


# ------------------------------------------------------------ in the notice policy


def _sweep(n: int, src: str = "198.51.100.23", t0: float = 0.0) -> pd.DataFrame:
    """``n`` inbound flows of one outside host to ``n`` local hosts, all over threshold."""
    return pd.DataFrame({
        "ts": t0 + np.arange(n, dtype=float), "uid": [f"C{src}-{i}" for i in range(n)],
        "orig_h": src, "resp_h": [f"192.168.50.{i + 1}" for i in range(n)], "resp_p": 0,
        "model": "m", "cls": "ddos", "score": 1.0, "threshold": 0.5})


def _notices(frames, **config):
    from zeekml.policy.notice import NoticePolicy, PolicyConfig

    policy = NoticePolicy(PolicyConfig(**config))
    out = [policy.decide(f.reset_index(drop=True)) for f in frames]
    return pd.concat([*out, policy.finish()], ignore_index=True)


def test_an_inbound_sweep_is_one_notice_about_the_sweeper_not_one_per_host():
    sweep = _sweep(60)
    got = _notices([sweep])
    # the first four local hosts keep their own notices; from the fifth on, the sweeper
    assert len(got) == 5 and got["n"].tolist() == [1, 1, 1, 1, 56]
    assert set(got["orig_h"]) == {"198.51.100.23"} and got["n"].sum() == 60
    assert len(_notices([sweep], sweep_hosts=0)) == 60  # as before sweepers
    assert len(_notices([sweep], suppress_by="orig")) == 1
    # the same however the stream is cut (and across a policy restored from its state)
    from zeekml.policy.notice import NoticePolicy, PolicyConfig

    first = NoticePolicy(PolicyConfig())
    parts = [first.decide(sweep.iloc[:3].reset_index(drop=True))]
    second = NoticePolicy(PolicyConfig())
    second.load_state_dict(first.state_dict())
    parts += [second.decide(sweep.iloc[3:].reset_index(drop=True)), second.finish()]
    cut = pd.concat(parts, ignore_index=True)
    assert cut["uid"].tolist() == got["uid"].tolist() and cut["n"].tolist() == got["n"].tolist()


def test_a_flood_on_one_host_and_a_local_sweep_are_unchanged():
    # ten thousand sources on one local server: still one notice about the server
    flood = pd.DataFrame({
        "ts": np.arange(300, dtype=float), "uid": [f"F{i}" for i in range(300)],
        "orig_h": [f"203.0.{i // 250}.{i % 250}" for i in range(300)], "resp_h": "192.168.50.10",
        "resp_p": 80, "model": "m", "cls": "ddos", "score": 1.0, "threshold": 0.5})
    assert _notices([flood])["n"].tolist() == [300]
    # a local host sweeping is keyed by itself anyway
    local = _sweep(30, src="192.168.50.200")
    assert _notices([local])["n"].tolist() == [30]
    # two verdicts of one sweeper are two groups, each counted on its own
    two = _sweep(8)
    two.loc[1::2, "cls"] = "dos"
    got = _notices([two])
    assert len(got) == 8  # 4 hosts each: neither verdict reached 5
    assert len(_notices([two], sweep_hosts=3)) == 2 * (2 + 1)


def test_sweep_hosts_in_the_policy_file(tmp_path):
    from zeekml.errors import ConfigError
    from zeekml.policy.notice import PolicyConfig

    p = tmp_path / "policy.json"
    p.write_text('{"sweep_hosts": 3}', encoding="utf-8")
    assert PolicyConfig.from_json(p).sweep_hosts == 3
    for bad in ('{"sweep_hosts": -1}', '{"sweep_hosts": 2.5}', '{"sweep_hosts": true}'):
        p.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError, match="sweep_hosts"):
            PolicyConfig.from_json(p)
    with pytest.raises(ConfigError):
        PolicyConfig(sweep_hosts=-2)


def test_rows_whose_subject_the_model_fixes_are_never_a_sweepers():
    """The flood detector's notices are about the victim whatever the direction (its rows
    come inbound and ``by_direction`` false): one source flooding many local hosts (the
    generated benchmark log's floods) stays one notice per victim."""
    sweep = _sweep(20).assign(inbound=True, by_direction=False)
    assert len(_notices([sweep])) == 20
    assert len(_notices([sweep.assign(by_direction=True)])) == 5


def test_the_remembered_originators_are_bounded():
    """A flood of spoofed sources, each flagged: at most ``max_groups`` are remembered,
    the most recently flagged ones, and a sweeper among them is still found."""
    tracker = SweepKeys(3, 1000.0, max_groups=4)
    src = np.array([f"203.0.113.{i}" for i in range(10)], dtype=object)
    t = np.arange(10, dtype=float)
    run(tracker, src, np.array(["192.168.1.1"] * 10, dtype=object), t, t, [])
    assert len(tracker) == 4
    assert set(tracker._keys) == set(src[-4:])
    got = run(tracker, np.array(["203.0.113.9"] * 2, dtype=object),
              np.array(["192.168.1.2", "192.168.1.3"], dtype=object),
              np.array([10.0, 11.0]), np.array([10.0, 11.0]), [])
    assert got.tolist() == [False, True]  # its first host was remembered
