"""Per-key histories and per-host windows: order, masks, bounds, batch independence, state."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeekml.errors import StateError
from zeekml.features.flow_stats import FEATURES, N_FEATURES, flow_features
from zeekml.records.schema import conform
from zeekml.records.text_arrays import decode_texts
from zeekml.windows.history import FieldSpec, KeyedHistory
from zeekml.windows.host_window import WINDOW_FEATURES, HostWindows, key_sides


def _flows(n: int, seed: int = 0, hosts: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "ts": np.sort(rng.uniform(0, 1000, n)),
            "uid": [f"C{i:06d}" for i in range(n)],
            "orig_h": [f"10.0.0.{i}" for i in rng.integers(0, hosts, n)],
            "resp_h": [f"192.0.2.{i}" for i in rng.integers(0, 3, n)],
            "resp_p": rng.choice([22, 80, 443], n),
            "orig_p": rng.integers(1024, 65535, n),
            "proto": rng.choice(["tcp", "udp"], n),
            "conn_state": rng.choice(["SF", "S0", "REJ"], n),
            "history": rng.choice(["ShADadFf", "S", "Sr"], n),
            "orig_bytes": rng.integers(0, 10_000, n),
            "duration": rng.uniform(0, 5, n),
        }
    )
    return conform(df)


def test_window_holds_previous_flows_of_same_host_in_order() -> None:
    df = _flows(200, hosts=4)
    w = HostWindows(n=4).push(df, flow_features(df))
    assert w.x.shape == (200, 4, len(WINDOW_FEATURES))
    for i in range(200):
        same = df.index[(df["orig_h"] == df["orig_h"][i]) & (df.index <= i)][-4:]
        expected = [u.encode() for u in df["uid"][same]]
        got = [u for u, m in zip(w.uids[i], w.mask[i], strict=True) if m]
        assert got == expected


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_batch_boundaries_do_not_change_windows(cuts: list[int]) -> None:
    df = _flows(150, seed=3, hosts=6)
    feats = flow_features(df)
    whole = HostWindows(n=5, max_hosts=100).push(df, feats)
    hw = HostWindows(n=5, max_hosts=100)
    parts, start = [], 0
    for c in cuts + [len(df)]:
        end = min(len(df), start + c)
        if end > start:
            parts.append(hw.push(df.iloc[start:end].reset_index(drop=True), feats[start:end]))
        start = end
        if start >= len(df):
            break
    assert np.array_equal(np.concatenate([p.x for p in parts]), whole.x)
    assert np.array_equal(np.concatenate([p.mask for p in parts]), whole.mask)


def test_idle_gap_by_log_time_masks_old_flows() -> None:
    df = conform(pd.DataFrame({"ts": [0.0, 10.0, 5000.0], "orig_h": ["a"] * 3, "uid": ["A", "B", "C"]}))
    w = HostWindows(n=3, idle_timeout=60).push(df, flow_features(df))
    assert w.mask[1].tolist() == [False, True, True]
    assert w.mask[2].tolist() == [False, False, True]


def test_lru_cap_bounds_hosts() -> None:
    hist = KeyedHistory(2, {"v": FieldSpec(np.dtype(np.int32))}, max_keys=50)
    for b in range(20):
        keys = np.array([f"h{b}-{i}" for i in range(30)], dtype=object)
        hist.extend(keys, {"ts": np.full(30, float(b)), "v": np.arange(30)})
        assert len(hist) <= 50
    assert hist.evicted > 0


def test_relational_features_and_no_address_identity() -> None:
    df = _flows(50, hosts=2)
    w = HostWindows(n=3).push(df, flow_features(df))
    same_peer = w.x[:, -1, WINDOW_FEATURES.index("same_peer")]
    assert np.all(same_peer == 1.0)  # the current flow is always its own peer
    assert not any("addr" in f or f.endswith("_h") for f in FEATURES)
    assert flow_features(df).shape == (50, N_FEATURES)


def test_missing_fields_give_finite_features() -> None:
    df = conform(pd.DataFrame({"ts": [1.0], "uid": ["X"]}))
    f = flow_features(df)
    assert np.isfinite(f).all()
    assert f[0, FEATURES.index("duration_missing")] == 1.0
    assert f[0, FEATURES.index("bytes_missing")] == 1.0


def test_local_key_uses_zeek_flags_then_private_side() -> None:
    df = conform(
        pd.DataFrame(
            {
                "orig_h": ["8.8.8.8", "10.1.1.1", "8.8.4.4"],
                "resp_h": ["10.0.0.1", "1.1.1.1", "192.168.1.5"],
                "local_orig": [False, True, None],
                "local_resp": [True, False, None],
            }
        )
    )
    host, peer, _ = key_sides(df, "local")
    assert host.tolist() == ["10.0.0.1", "10.1.1.1", "192.168.1.5"]
    assert peer.tolist() == ["8.8.8.8", "1.1.1.1", "8.8.4.4"]


def test_state_round_trip_continues_identically() -> None:
    df = _flows(120, seed=7)
    feats = flow_features(df)
    a = HostWindows(n=4)
    a.push(df.iloc[:60].reset_index(drop=True), feats[:60])
    state = {k: np.array(v) for k, v in a.state_dict().items()}
    b = HostWindows(n=4)
    b.load_state_dict(state)
    wa = a.push(df.iloc[60:].reset_index(drop=True), feats[60:])
    wb = b.push(df.iloc[60:].reset_index(drop=True), feats[60:])
    assert np.array_equal(wa.x, wb.x) and np.array_equal(wa.uids, wb.uids)


def test_a_version_1_window_state_still_loads() -> None:
    """A state written with numpy str keys (version 1, before UTF-8 bytes and offsets)
    continues the windows exactly as the state it was converted from."""
    df = _flows(120, seed=3)
    feats = flow_features(df)
    a = HostWindows(n=4, key="local_dir")
    a.push(df.iloc[:60].reset_index(drop=True), feats[:60])
    new = a.state_dict()
    keys = decode_texts(new["keys_utf8"], new["keys_offsets"], "keys")
    old = {k: v for k, v in new.items() if k not in ("keys_utf8", "keys_offsets")
           and not k.startswith("held_")}
    old.update(version=np.array(1), keys=np.array([str(k) for k in keys], dtype=str))
    # version 1 kept every position of every key, (keys, depth, ...), zeros where none
    depth, count = 3, new["count"].astype(int)
    key_i, pos_i = np.nonzero(np.arange(depth)[None, :] >= depth - count[:, None])
    for name in ("ts", "feat", "meta", "uid"):
        held = new["held_" + name]
        full = np.zeros((len(count), depth, *held.shape[1:]), dtype=held.dtype)
        full[key_i, pos_i] = held
        old["buf_" + name] = full
    b = HostWindows(n=4, key="local_dir")
    b.load_state_dict(old)
    wa = a.push(df.iloc[60:].reset_index(drop=True), feats[60:])
    wb = b.push(df.iloc[60:].reset_index(drop=True), feats[60:])
    assert np.array_equal(wa.x, wb.x) and np.array_equal(wa.uids, wb.uids)
    assert wa.mask[:, :-1].any()  # the second half really reads the restored history


def test_state_validation_rejects_wrong_depth_and_garbage() -> None:
    a = HostWindows(n=4)
    df = _flows(10)
    a.push(df, flow_features(df))
    state = a.state_dict()
    with pytest.raises(StateError):
        HostWindows(n=5).load_state_dict(state)
    bad = dict(state)
    bad["count"] = np.full_like(state["count"], 99)
    with pytest.raises(StateError):
        HostWindows(n=4).load_state_dict(bad)
    with pytest.raises(StateError):
        HostWindows(n=4).load_state_dict({"version": np.array(1)})
    with pytest.raises(StateError, match="offsets"):
        HostWindows(n=4).load_state_dict({**state, "keys_offsets": state["keys_offsets"] + 1})
    with pytest.raises(StateError, match="wrong shape"):
        HostWindows(n=4).load_state_dict({**state, "held_feat": state["held_feat"][1:]})
    with pytest.raises(StateError, match="UTF-8"):
        HostWindows(n=4).load_state_dict(
            {**state, "keys_utf8": np.full_like(state["keys_utf8"], 0xFF)})


def test_batch_boundaries_do_not_change_windows_on_real_unsorted_log() -> None:
    """Zeek writes flows in end order, so ``ts`` (the start) goes back for long
    connections; idle expiry by log time must still not depend on batch boundaries
    (``zeekml tail`` micro-batches, cron runs and Spark partitions equal one batch)."""
    from tests.conftest import DATA, need
    from zeekml.sources import read_table

    path = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
    need(path.is_file(), f"the capture {path}")
    df = read_table(path)
    assert (np.diff(df["ts"].to_numpy()) < -7200).any()  # the case this test is about
    feats = flow_features(df)
    whole = HostWindows(n=10).push(df, feats)
    rng = np.random.default_rng(0)
    for cuts in (list(range(50, len(df), 50)),
                 np.sort(rng.choice(np.arange(1, len(df)), size=200, replace=False))):
        hw = HostWindows(n=10)
        parts = [hw.push(df.iloc[a:b].reset_index(drop=True), feats[a:b])
                 for a, b in zip([0, *cuts], [*cuts, len(df)], strict=True)]
        assert np.array_equal(np.concatenate([p.mask for p in parts]), whole.mask)
        assert np.array_equal(np.concatenate([p.x for p in parts]), whole.x)


def test_relational_features_hand_case() -> None:
    """A host fanning out on one port, then a flow back to an earlier peer."""
    from zeekml.windows.host_window import standalone

    df = conform(pd.DataFrame({
        "ts": [0.0, 1.0, 2.0, 3.0, 4.0],
        "uid": list("ABCDE"),
        "orig_h": ["10.0.0.1", "10.0.0.1", "10.0.0.1", "8.8.8.8", "10.0.0.1"],
        "resp_h": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "10.0.0.1", "2.2.2.2"],
        "orig_p": [5000, 5001, 5002, 53, 5003],
        "resp_p": [16464, 16464, 16464, 7000, 80],
        "proto": ["udp"] * 5,
    }))
    w = HostWindows(n=5, key="local").push(df, flow_features(df))
    col = {f: WINDOW_FEATURES.index(f) for f in ("same_peer", "same_service_port", "host_is_orig", "peer_repeat")}
    last = w.x[4]  # window of E: A B C D E, all of host 10.0.0.1
    assert w.mask[4].all()
    assert last[:, col["host_is_orig"]].tolist() == [1, 1, 1, 0, 1]  # D was inbound
    assert last[:, col["same_peer"]].tolist() == [0, 1, 0, 0, 1]  # B and E share peer 2.2.2.2
    assert last[:, col["peer_repeat"]].tolist() == [0, 0, 0, 0, 1]  # E's peer was seen (B)
    fan = w.x[2]  # window of C: the fan-out A B C, same service port, new peers
    assert fan[-3:, col["same_service_port"]].tolist() == [1, 1, 1]
    assert fan[-3:, col["peer_repeat"]].tolist() == [0, 0, 0]
    alone = standalone(w)
    assert alone.mask[:, :-1].sum() == 0 and alone.mask[:, -1].all()
    assert alone.x[4, -1, col["peer_repeat"]] == 0 and alone.x[4, -1, col["same_peer"]] == 1
    assert (alone.x[:, :-1] == 0).all() and (alone.uids[:, :-1] == b"").all()


def test_only_positions_holding_items_are_written_and_state_keeps_them() -> None:
    """The store is position-major, a ring per key, and sparse: a key seen once writes one
    plane only (the other planes' pages stay unmapped), a key seen three times three; the
    saved state restores the same windows for the next flows."""
    def make() -> KeyedHistory:
        return KeyedHistory(4, {"v": FieldSpec(np.dtype(np.int64))}, max_keys=64)

    h = make()
    keys = np.array(["once", "thrice", "thrice", "thrice"], dtype=object)
    vals = {"ts": np.arange(4.0), "v": np.array([7, 1, 2, 3])}
    h.extend(keys, vals)
    buf = h._buf["v"]  # [depth, keys]
    once, thrice = h._slot_of["once"], h._slot_of["thrice"]
    assert buf[:, once].tolist() == [7, 0, 0, 0]
    assert buf[:, thrice].tolist() == [1, 2, 3, 0]
    assert not buf[:, 2:].any()  # no slot beyond the two in use was touched
    restored = make()
    restored.load_state_dict(h.state_dict())
    nxt = np.array(["thrice", "once", "new"], dtype=object)
    more = {"ts": np.array([4.0, 5.0, 6.0]), "v": np.array([4, 8, 9])}
    (w1, v1), (w2, v2) = h.extend(nxt, more), restored.extend(nxt, more)
    assert np.array_equal(w1["v"], w2["v"]) and np.array_equal(v1, v2)
    assert w1["v"][0].tolist() == [0, 1, 2, 3, 4] and v1[0].tolist() == [False, True, True, True, True]
    assert w1["v"][1].tolist() == [0, 0, 0, 7, 8]


@pytest.mark.parametrize("key", ["orig", "resp", "local", "local_dir"])
def test_host_sides_per_distinct_equals_the_per_row_sides(key: str) -> None:
    """The window's keys, peer hashes and ports computed per distinct address equal the
    per-row :func:`key_sides_dir` path, missing addresses, ports and local flags included."""
    from zeekml.records.distinct import per_distinct
    from zeekml.windows.host_window import _hash32, host_sides, key_sides_dir

    rng = np.random.default_rng(7)
    n = 400
    addrs = np.array(["10.0.0.1", "10.0.0.2", "192.0.2.9", "fe80::1", "2001:db8::5", "8.8.8.8",
                      "172.16.3.4", None], dtype=object)
    df = _flows(n)
    df["orig_h"] = pd.Series(addrs[rng.integers(0, len(addrs), n)], dtype="str")
    df["resp_h"] = pd.Series(addrs[rng.integers(0, len(addrs), n)], dtype="str")
    df["resp_p"] = df["resp_p"].astype("Int64").mask(rng.random(n) < 0.1)
    df["orig_p"] = df["orig_p"].astype("Int64").mask(rng.random(n) < 0.1)
    flags = pd.array(rng.choice([True, False, None], n), dtype="boolean")
    df["local_orig"] = flags
    df["local_resp"] = pd.array(rng.choice([True, False, None], n), dtype="boolean")
    host, peer, port, is_orig = key_sides_dir(df, key)
    keys, peer_hash, peer_port, orig = host_sides(df, key)
    assert (per_distinct(host, lambda u: u.to_numpy(dtype=object), "") == keys).all()
    assert (_hash32(peer) == peer_hash).all()
    assert (port.fillna(-1).to_numpy(dtype=np.int32) == peer_port).all()
    assert (np.asarray(is_orig) == orig).all()
    assert len(set(keys.tolist())) > 4  # the frame really mixes hosts and missing values


@pytest.mark.parametrize("uids", [
    ["C" + "a" * 17] * 5,  # Zeek's: all the same length (the block-copy path)
    ["C" + "a" * 17] * 5 + ["Cxyz" * 4 + "ab"],
    ["x" * 25] * 3,  # longer than 20 bytes: cut
    ["abc", None, "abc"],  # missing -> empty
    ["é" * 9] * 4,  # multi-byte UTF-8: 18 bytes each
    ["é" * 11] * 2,  # 22 bytes each: cut at 20
    ["", ""],
    [],
])
def test_uid_bytes_are_the_first_20_utf8_bytes(uids: list[str | None]) -> None:
    from zeekml.windows.host_window import uid_bytes

    got = uid_bytes(pd.Series(uids, dtype="str"))
    want = [(u or "").encode()[:20] for u in uids]
    assert got.dtype == np.dtype("S20") and got.tolist() == want
    sliced = pd.Series(["pad"] + uids, dtype="str").iloc[1:]  # an offset into the buffers
    assert uid_bytes(sliced).tolist() == want


def test_ring_store_equals_a_per_row_reference_across_batches_and_state() -> None:
    """Windows from the ring store equal the naive definition (the key's last depth items
    before the row, then the row) when batches are shorter and longer than the ring, keys
    wrap it many times, and the state is saved and loaded between batches."""
    depth = 5
    rng = np.random.default_rng(3)
    keys = rng.choice(np.array(["a", "b", "c", "d", "e", "f", "g"], dtype=object), size=400,
                      p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    ts = np.arange(400.0)
    v = rng.integers(1, 1_000_000, size=400)
    h = KeyedHistory(depth, {"v": FieldSpec(np.dtype(np.int64))}, max_keys=64, idle_timeout=1e9)
    got = []
    lo = 0
    for i, size in enumerate([1, 2, 3, 17, 1, 60, 4, 100, 2, 211]):
        sl = slice(lo, lo + size)
        w, valid = h.extend(keys[sl], {"ts": ts[sl], "v": v[sl]})
        got.append(np.where(valid, w["v"], 0))
        lo += size
        if i % 3 == 2:  # through a saved state
            fresh = KeyedHistory(depth, {"v": FieldSpec(np.dtype(np.int64))}, max_keys=64,
                                 idle_timeout=1e9)
            fresh.load_state_dict(h.state_dict())
            h = fresh
    got_all = np.concatenate(got)
    seen: dict[str, list[int]] = {}
    for i, k in enumerate(keys.tolist()):
        prev = seen.setdefault(k, [])[-depth:]
        want = [0] * (depth - len(prev)) + prev + [int(v[i])]
        assert got_all[i].tolist() == want, i
        seen[k].append(int(v[i]))
