"""Conversation windows of the flow LM: key, order, gaps, expiry, batch cuts, state, bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import zat_sample
from hypothesis import given, settings
from hypothesis import strategies as st

from zeekml.records.schema import conform
from zeekml.windows.conversation import ConversationWindows, conversation_keys


def _flows(n: int, seed: int = 0, hosts: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, hosts, n)
    b = rng.integers(0, hosts, n)
    swap = rng.random(n) < 0.5
    orig = np.where(swap, a, b)
    resp = np.where(swap, b, a)
    df = pd.DataFrame(
        {
            "ts": np.sort(rng.uniform(0, 5000, n)),
            "uid": [f"C{i:05d}" for i in range(n)],
            "orig_h": [f"10.0.0.{i}" for i in orig],
            "resp_h": [f"10.0.0.{i}" for i in resp],
        }
    )
    return conform(df)


def test_key_is_the_unordered_host_pair() -> None:
    df = conform(pd.DataFrame({"orig_h": ["10.0.0.1", "10.0.0.2", None], "resp_h": ["10.0.0.2", "10.0.0.1", "x"]}))
    k = conversation_keys(df)
    assert k[0] == k[1] == "10.0.0.1|10.0.0.2" and k[2] == "|x"


def test_window_is_the_pair_history_in_log_order() -> None:
    df = _flows(300)
    codes = np.arange(300, dtype=np.int64)
    w = ConversationWindows(context=4, idle_timeout=1e9).push(df, codes)
    assert w.code.shape == (300, 6)
    keys = conversation_keys(df)
    for i in range(300):
        same = [j for j in range(i + 1) if keys[j] == keys[i]][-6:]
        got = [int(c) for c, v in zip(w.code[i], w.valid[i], strict=True) if v]
        assert got == same


def test_idle_gap_starts_a_new_conversation_and_missing_ts_is_never_context() -> None:
    df = conform(pd.DataFrame({
        "ts": [0.0, 10.0, 5000.0, np.nan, 5001.0],
        "uid": list("abcde"),
        "orig_h": ["10.0.0.1"] * 5,
        "resp_h": ["10.0.0.2"] * 5,
    }))
    w = ConversationWindows(context=2, idle_timeout=3600).push(df, np.arange(5))
    # 5000 s after the last flow: new conversation; the flow without ts is scored but
    # never serves as context (the next flow skips it and keeps the one before)
    assert w.valid.sum(axis=1).tolist() == [1, 2, 1, 1, 2]
    assert w.valid[:, -1].all() and np.isnan(w.ts[3, -1]) and not w.valid[4, -2]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=8))
def test_batch_cuts_and_state_round_trip_do_not_change_windows(cuts: list[int]) -> None:
    df = _flows(200, seed=5)
    codes = np.arange(200, dtype=np.int64) * 7
    whole = ConversationWindows(context=3).push(df, codes)
    cw = ConversationWindows(context=3)
    start, got = 0, []
    for c in cuts + [200]:
        end = min(200, start + c)
        if end > start:
            got.append(cw.push(df.iloc[start:end].reset_index(drop=True), codes[start:end]))
            state = {k: np.array(v) for k, v in cw.state_dict().items()}
            cw = ConversationWindows(context=3)
            cw.load_state_dict(state)
        start = end
    assert np.array_equal(np.concatenate([g.code for g in got]), whole.code)
    assert np.array_equal(np.concatenate([g.valid for g in got]), whole.valid)
    assert np.array_equal(np.concatenate([g.uids for g in got]), whole.uids)


def test_memory_is_bounded_by_max_keys() -> None:
    df = _flows(2000, seed=2, hosts=60)
    cw = ConversationWindows(context=4, max_keys=100)
    for i in range(0, 2000, 40):
        cw.push(df.iloc[i : i + 40].reset_index(drop=True), np.zeros(40, dtype=np.int64))
    assert len(cw.history) <= 100 and cw.history.evicted > 0


def test_key_codes_factorize_like_pandas_in_first_appearance_order() -> None:
    """The Arrow-side factorization of conversation keys gives pandas' codes and distinct
    keys in the same order (the order new keys get their slots in the store)."""
    from zeekml.sources.open import read_flows
    from zeekml.windows.conversation import conversation_key_codes

    df = next(iter(read_flows(str(zat_sample()))))
    keys = conversation_keys(df)
    want_codes, want_uniques = pd.factorize(keys, use_na_sentinel=False)
    codes, uniques = conversation_key_codes(df)
    assert codes.tolist() == want_codes.tolist() and uniques.tolist() == list(want_uniques)
    assert len(uniques) > 10
