"""NetFlow pairing (zeekml.sources.biflow): the vectorized stage against a plain
record-by-record reference, hand-made edge cases, and state round trips.

Real captures (nfcapd through the real nfdump) are in tests/test_biflow_captures.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeekml.errors import ConfigError, StateError
from zeekml.records import schema
from zeekml.sources.biflow import Pairer, PairOptions, pair_table, paired_stream

# --------------------------------------------------------------------------- building


def records(rows: list[dict]) -> pd.DataFrame:
    """Canonical one-way NetFlow records from short dicts (as the nfdump reader makes)."""
    base = {"proto": "tcp", "duration": np.nan, "paired": False, "history": None,
            "conn_state": None, "orig_ip_bytes": None}
    out = []
    for i, r in enumerate(rows):
        d = {**base, **r}
        d.setdefault("uid", f"N{i:017d}")
        d.setdefault("orig_pkts", i + 1)
        d.setdefault("source_line", i + 1)
        if d["orig_ip_bytes"] is None:
            d["orig_ip_bytes"] = 100 * int(d["orig_pkts"])
        out.append(d)
    df = pd.DataFrame(out)
    df["source_file"] = "mem"
    return schema.conform(df, source_file="mem", with_labels=False)


def tcp(src: str, sp: int, dst: str, dp: int, ts: float, dur: float, hist: str, state: str,
        **kw: object) -> dict:
    return {"orig_h": src, "orig_p": sp, "resp_h": dst, "resp_p": dp, "ts": ts,
            "duration": dur, "history": hist, "conn_state": state, **kw}


def flows_of(df: pd.DataFrame, opts: PairOptions | None = None, cuts: list[int] | None = None,
             depth: int | None = None) -> pd.DataFrame:
    p = Pairer(opts)
    if depth is not None:
        p.depth = depth
    parts = []
    edges = [0, *(cuts or []), len(df)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        parts.append(p.push(df.iloc[a:b].reset_index(drop=True)))
    parts.append(p.finish())
    return schema.concat([x for x in parts if len(x)]).reset_index(drop=True)


# --------------------------------------------------------------------------- reference


def reference(df: pd.DataFrame, opts: PairOptions, depth: int) -> list[tuple[int, ...]]:
    """Record-by-record pairing as the module docstring states it.

    Returns, in output order, the stream positions of each flow's records (one or two).
    Uses the pairer's own key function, so it checks the matching, not the keys.
    """
    from zeekml.sources.pairing import classify

    cls = classify(df)
    keys = iter(cls.key.to_pylist())
    steps = iter(cls.step.tolist())
    ts = df["ts"].to_numpy(dtype=float)
    dur = df["duration"].to_numpy(dtype=float, na_value=np.nan)
    end = ts + np.where(np.isfinite(dur) & (dur > 0), dur, 0.0)
    clock = -math.inf
    state: dict[str, dict] = {}
    partner: dict[int, int | None] = {}
    xbase: dict[int, float] = {}
    for pos in range(len(df)):
        cb = clock
        if cls.cand[pos]:
            k, step = next(keys), next(steps)
            s = state.get(k)
            if s is not None and (cb > s["base"] + opts.hold or pos - s["last"] > opts.max_held):
                s = None
            if s is None:
                s = state[k] = {"stack": [], "base": -math.inf, "last": pos}
            base = max(end[pos], cb)
            stack = s["stack"]
            partner[pos] = None
            if stack and stack[-1][1] != step:
                x, _ = stack.pop()
                ok = (ts[x] <= end[pos] + opts.slack and ts[pos] <= end[x] + opts.slack
                      and cb <= xbase[x] + opts.hold and pos - x <= opts.max_held)
                if ok:
                    partner[pos], partner[x] = x, pos
            elif len(stack) == depth:
                stack[-1] = (pos, step)
            else:
                stack.append((pos, step))
            xbase[pos] = base
            s["base"] = max(s["base"], base)
            s["last"] = pos
        else:
            partner[pos] = None
        if np.isfinite(end[pos]):
            clock = max(clock, end[pos])
    out = []
    for pos in range(len(df)):
        q = partner[pos]
        if q is None:
            out.append((pos,))
        elif q > pos:
            out.append((pos, q))
    return out


def identities(flows: pd.DataFrame) -> list[tuple[int, ...]]:
    """Each flow's record positions, read back from the unique packet counts (pos + 1)."""
    o = flows["orig_pkts"].to_numpy(dtype=np.int64) - 1
    r = flows["resp_pkts"].to_numpy(dtype=np.float64, na_value=np.nan)
    joined = flows["paired"].fillna(False).to_numpy(dtype=bool)
    out = []
    for a, b, j in zip(o.tolist(), r.tolist(), joined.tolist(), strict=True):
        out.append(tuple(sorted((a, int(b) - 1))) if j else (a,))
    return out


# --------------------------------------------------------------------------- property

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1"]


@st.composite
def streams(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int], PairOptions, int]:
    n = draw(st.integers(1, 60))
    rows = []
    t = 1000.0
    for _ in range(n):
        t += draw(st.sampled_from([0.0, 0.001, 0.5, 3.0, 40.0]))
        a = draw(st.sampled_from(HOSTS[:3]))
        b = draw(st.sampled_from(HOSTS[:3]))
        port = draw(st.sampled_from([1000, 1001]))
        kind = draw(st.sampled_from(["fwd", "rev", "fwd", "rev", "udp", "icmp", "noise"]))
        late = draw(st.sampled_from([0.0, 0.0, 0.0, 30.0, 400.0]))
        dur = draw(st.sampled_from([np.nan, 0.0, 0.2, 5.0, 20.0]))
        start = t - late
        if kind == "fwd":
            rows.append(tcp(a, port, b, 80, start, dur, "S", "S0"))
        elif kind == "rev":
            rows.append(tcp(b, 80, a, port, start, dur, "HA", "OTH"))
        elif kind == "udp":
            src, dst = (a, b) if draw(st.booleans()) else (b, a)
            rows.append({"orig_h": src, "orig_p": 53, "resp_h": dst, "resp_p": 53, "proto": "udp",
                         "ts": start, "duration": dur, "history": "D", "conn_state": "S0"})
        elif kind == "icmp":
            typ = draw(st.sampled_from([8, 0, 3]))
            rows.append({"orig_h": a, "orig_p": typ, "resp_h": b, "resp_p": 0, "proto": "icmp",
                         "ts": start, "duration": dur, "conn_state": "OTH"})
        else:  # a flow from a bidirectional source: passes through
            rows.append({**tcp(a, port, b, 80, start, dur, "ShADadFf", "SF"), "paired": None,
                         "resp_pkts": 7})
    df = records(rows)
    k = draw(st.integers(0, 5))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), min_size=k, max_size=k))))
    cuts = [c for c in cuts if 0 < c < n]
    opts = PairOptions(hold=draw(st.sampled_from([1.0, 60.0, 300.0])),
                       slack=draw(st.sampled_from([0.0, 10.0])),
                       max_held=draw(st.sampled_from([3, 10, 1000])))
    depth = draw(st.sampled_from([1, 2, 32]))
    return df, cuts, opts, depth


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_pairing_equals_reference_however_the_stream_is_cut(case) -> None:
    df, cuts, opts, depth = case
    want = reference(df, opts, depth)
    whole = flows_of(df, opts, depth=depth)
    cut = flows_of(df, opts, cuts, depth=depth)
    assert identities(whole) == want
    assert int(df["paired"].isna().sum()) == int(whole["paired"].isna().sum())
    pd.testing.assert_frame_equal(whole, cut)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_state_round_trip_between_batches_changes_nothing(case) -> None:
    df, cuts, opts, depth = case
    want = flows_of(df, opts, depth=depth)
    p = Pairer(opts)
    p.depth = depth
    parts = []
    edges = [0, *cuts, len(df)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        parts.append(p.push(df.iloc[a:b].reset_index(drop=True)))
        saved = p.state_dict()
        assert all(isinstance(v, np.ndarray) and v.dtype.kind not in "OV" for v in saved.values())
        p = Pairer(opts)
        p.depth = depth
        p.load_state_dict(saved)
    parts.append(p.finish())
    got = schema.concat([x for x in parts if len(x)]).reset_index(drop=True)
    pd.testing.assert_frame_equal(want, got)


# --------------------------------------------------------------------------- edge cases


def test_tcp_pair_counters_history_and_state() -> None:
    df = records([
        tcp("10.0.0.1", 40000, "10.0.0.2", 80, 100.0, 2.0, "SADF", "S2", orig_pkts=6,
            orig_ip_bytes=500),
        tcp("10.0.0.2", 80, "10.0.0.1", 40000, 100.01, 1.9, "SADF", "S2", orig_pkts=5,
            orig_ip_bytes=4000),
    ])
    f = pair_table(df)
    assert len(f) == 1
    r = f.iloc[0]
    assert (r.orig_h, r.orig_p, r.resp_h, r.resp_p) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (r.orig_pkts, r.orig_ip_bytes, r.resp_pkts, r.resp_ip_bytes) == (6, 500, 5, 4000)
    assert r.history == "ShADadFf" and r.conn_state == "SF" and bool(r.paired)
    assert r.ts == 100.0 and r.duration == pytest.approx(2.0)
    assert r.uid == df.uid[0] and r.source_line == 1
    assert pd.isna(r.orig_bytes) and pd.isna(r.resp_bytes)  # payload bytes stay unknown


def test_originator_is_the_syn_side_even_when_its_record_starts_later() -> None:
    # the responder's record carries an earlier timestamp (exporter clock skew) and is
    # read first; the SYN-without-ACK record is the originator
    df = records([
        tcp("10.0.0.2", 22, "10.0.0.1", 50000, 99.0, 0.0, "R", "OTH"),
        tcp("10.0.0.1", 50000, "10.0.0.2", 22, 100.0, 0.0, "S", "S0"),
    ])
    r = pair_table(df).iloc[0]
    assert (r.orig_h, r.resp_p) == ("10.0.0.1", 22)
    assert r.conn_state == "REJ" and r.history == "Sr"
    assert r.uid == df.uid[0]  # identity of the record read first


def test_rejected_and_half_open_states() -> None:
    synack = tcp("10.0.0.2", 80, "10.0.0.1", 5, 10.0, 0.0, "H", "OTH")
    f = pair_table(records([tcp("10.0.0.1", 5, "10.0.0.2", 80, 10.0, 0.0, "S", "S0"), synack]))
    assert f.conn_state[0] == "S1" and f.history[0] == "Sh"
    f = pair_table(records([tcp("10.0.0.1", 5, "10.0.0.2", 80, 10.0, 3.0, "SR", "RSTOS0"),
                            synack]))
    assert f.conn_state[0] == "RSTO"


def test_an_answer_without_its_syn_ack_is_no_failed_attempt() -> None:
    """The originator's SYN and the responder's data but no SYN-ACK (lost, or exported in a
    record never seen): Zeek's S0 means no reply, and a paired flow has one, so Zeek's
    rule gives OTH (the responder is partial, not inactive). Called S0, the scan detector
    counted such answered connections as failures (CTU-Normal read as NetFlow: 81 flows,
    benign flows flagged 0.45% -> 0.12%)."""
    answer = tcp("10.0.0.2", 443, "10.0.0.1", 5, 10.0, 1.0, "AD", "OTH")
    f = pair_table(records([tcp("10.0.0.1", 5, "10.0.0.2", 443, 10.0, 1.0, "SAD", "S0"), answer]))
    assert f.history[0] == "SADad" and f.conn_state[0] == "OTH"
    from zeekml.windows.scan import failed_flows
    assert not failed_flows(f)[0]
    # with the originator's FIN it is SH (the responder still counts as inactive), as before
    f = pair_table(records([tcp("10.0.0.1", 5, "10.0.0.2", 443, 10.0, 1.0, "SADF", "S0"), answer]))
    assert f.conn_state[0] == "SH"


def test_icmp_echo_pairs_across_type_codes_v4_and_v6() -> None:
    df = records([
        {"orig_h": "10.0.0.1", "orig_p": 8, "resp_h": "10.0.0.9", "resp_p": 0, "proto": "icmp",
         "ts": 5.0, "conn_state": "OTH"},
        {"orig_h": "10.0.0.9", "orig_p": 0, "resp_h": "10.0.0.1", "resp_p": 0, "proto": "icmp",
         "ts": 5.002, "conn_state": "OTH"},
        {"orig_h": "2001:db8::9", "orig_p": 129, "resp_h": "2001:db8::1", "resp_p": 0,
         "proto": "icmp", "ts": 6.0, "conn_state": "OTH"},  # reply read first
        {"orig_h": "2001:db8::1", "orig_p": 128, "resp_h": "2001:db8::9", "resp_p": 0,
         "proto": "icmp", "ts": 6.0, "conn_state": "OTH"},
        {"orig_h": "10.0.0.9", "orig_p": 3, "resp_h": "10.0.0.1", "resp_p": 3, "proto": "icmp",
         "ts": 7.0, "conn_state": "OTH"},  # unreachable: never pairs
    ])
    f = pair_table(df)
    assert f["paired"].tolist() == [True, True, False]
    assert (f.orig_h[0], f.orig_p[0], f.resp_p[0]) == ("10.0.0.1", 8, 0)
    assert (f.orig_h[1], f.orig_p[1]) == ("2001:db8::1", 128)  # the request is the originator
    assert f.duration[0] == pytest.approx(0.002)


def test_long_flow_split_by_active_timeout_pairs_chunk_by_chunk() -> None:
    a, b = ("10.0.0.1", 40000), ("10.0.0.2", 443)
    rows = []
    for k in range(3):  # 300 s chunks, both directions exported at each timeout
        t = 1000.0 + 300 * k
        first = "SAD" if k == 0 else "AD"
        rows.append(tcp(*a, *b, t, 299.9, first, "S1" if k == 0 else "OTH", orig_pkts=100 + k))
        rows.append(tcp(*b, *a, t + 0.05, 299.9, first, "S1" if k == 0 else "OTH",
                        orig_pkts=200 + k))
    f = pair_table(records(rows))
    assert len(f) == 3 and f["paired"].all()
    assert f.orig_pkts.tolist() == [100, 101, 102] and f.resp_pkts.tolist() == [200, 201, 202]
    assert (f.orig_h == "10.0.0.1").all()  # later chunks: no SYN, earlier start decides


def test_repeated_connections_of_one_five_tuple_stay_separate() -> None:
    q = {"orig_h": "10.0.0.5", "orig_p": 33000, "resp_h": "10.0.0.53", "resp_p": 53,
         "proto": "udp", "history": "D", "conn_state": "S0"}
    r = {"orig_h": "10.0.0.53", "orig_p": 53, "resp_h": "10.0.0.5", "resp_p": 33000,
         "proto": "udp", "history": "D", "conn_state": "S0"}
    rows = [
        {**q, "ts": 0.0},                       # unanswered
        {**q, "ts": 1.0}, {**r, "ts": 1.01},
        {**q, "ts": 2.0}, {**r, "ts": 2.02},
        {**q, "ts": 3.0}, {**q, "ts": 3.0001},  # two at once (A and AAAA)
        {**r, "ts": 3.01}, {**r, "ts": 3.011},
    ]
    f = pair_table(records(rows))
    assert len(f) == 5
    assert f["paired"].tolist() == [False, True, True, True, True]
    assert f.history[1] == "Dd" and f.conn_state[1] == "SF"
    # each reply is joined to its own request (not the unanswered first one)
    assert f.orig_pkts.tolist()[:3] == [1, 2, 4] and f.resp_pkts.tolist()[1:3] == [3, 5]
    assert f.duration[1] == pytest.approx(0.01)


def test_port_tie_break_and_first_read_when_ports_equal() -> None:
    # same millisecond, no flags: the side sending to the lower port is the client
    df = records([
        {"orig_h": "10.0.0.2", "orig_p": 443, "resp_h": "10.0.0.1", "resp_p": 51000,
         "proto": "udp", "ts": 1.0},
        {"orig_h": "10.0.0.1", "orig_p": 51000, "resp_h": "10.0.0.2", "resp_p": 443,
         "proto": "udp", "ts": 1.0},
    ])
    assert pair_table(df).resp_p[0] == 443
    ntp = records([
        {"orig_h": "10.0.0.2", "orig_p": 123, "resp_h": "10.0.0.1", "resp_p": 123,
         "proto": "udp", "ts": 1.0},
        {"orig_h": "10.0.0.1", "orig_p": 123, "resp_h": "10.0.0.2", "resp_p": 123,
         "proto": "udp", "ts": 1.0},
    ])
    assert pair_table(ntp).orig_h[0] == "10.0.0.2"


def test_hold_expiry_and_slack() -> None:
    fwd = tcp("10.0.0.1", 1, "10.0.0.2", 80, 0.0, 0.0, "S", "S0")
    rev = tcp("10.0.0.2", 80, "10.0.0.1", 1, 0.5, 0.0, "H", "OTH")
    other = tcp("10.0.0.7", 9, "10.0.0.8", 80, 200.0, 0.0, "S", "S0")
    # the clock passes the open record's end + hold before its reverse arrives
    f = pair_table(records([fwd, other, {**rev, "ts": 0.5}]), PairOptions(hold=100))
    assert f["paired"].tolist() == [False, False, False]
    f = pair_table(records([fwd, other, rev]), PairOptions(hold=300))
    assert f["paired"].tolist() == [True, False]
    # a reverse record that starts long after the open one ended is not its partner
    f = pair_table(records([fwd, {**rev, "ts": 30.0}]), PairOptions(slack=10))
    assert f["paired"].tolist() == [False, False]


def test_max_held_bounds_what_waits() -> None:
    fwd = tcp("10.0.0.1", 1, "10.0.0.2", 80, 0.0, 0.0, "S", "S0")
    rev = tcp("10.0.0.2", 80, "10.0.0.1", 1, 0.1, 0.0, "H", "OTH")
    noise = [tcp("10.0.1.1", 1000 + i, "10.0.1.2", 80, 0.05, 0.0, "S", "S0") for i in range(5)]
    # the reverse record is the 6th record after the open one
    assert pair_table(records([fwd, *noise, rev]), PairOptions(max_held=6))["paired"].iloc[0]
    assert not pair_table(records([fwd, *noise, rev]), PairOptions(max_held=5))["paired"].iloc[0]
    p = Pairer(PairOptions(max_held=4))
    out = p.push(records([fwd, *noise]))
    assert p.held <= 4 and len(out) + p.held + p.waiting == 6


def test_output_in_stream_order_of_first_records() -> None:
    rows = [tcp("10.0.0.1", 1, "10.0.0.2", 80, 0.0, 0.0, "S", "S0"),   # waits
            tcp("10.0.0.3", 1, "10.0.0.4", 80, 0.1, 0.0, "S", "S0"),   # waits
            tcp("10.0.0.4", 80, "10.0.0.3", 1, 0.2, 0.0, "H", "OTH")]  # closes the 2nd
    p = Pairer()
    assert len(p.push(records(rows))) == 0  # the first record is still open
    assert p.held == 1 and p.waiting == 1
    f = p.finish()
    assert f["paired"].tolist() == [False, True] and f.source_line.tolist() == [1, 2]


def test_not_candidates_pass_through_untouched() -> None:
    zeek = records([tcp("10.0.0.1", 1, "10.0.0.2", 80, 0.0, 1.0, "ShADadFf", "SF")])
    zeek["paired"] = pd.array([pd.NA], dtype="boolean")
    p = Pairer()
    out = p.push(zeek)
    assert out is zeek or out.equals(zeek)
    mc = records([{"orig_h": "10.0.0.1", "orig_p": 5353, "resp_h": "224.0.0.251",
                   "resp_p": 5353, "proto": "udp", "ts": 1.0},
                  {"orig_h": "fe80::1", "orig_p": 546, "resp_h": "ff02::1:2", "resp_p": 547,
                   "proto": "udp", "ts": 1.0},
                  {"orig_h": "10.0.0.1", "orig_p": 0, "resp_h": "10.0.0.2", "resp_p": 0,
                   "proto": "unknown_transport", "ts": 1.0}])
    p = Pairer()
    out = p.push(mc)
    assert len(out) == 3 and p.held == 0 and not out["paired"].any()


def test_paired_stream_and_empty_input() -> None:
    assert list(paired_stream([])) == []
    assert len(pair_table(records([]).iloc[0:0])) == 0


def test_options_are_validated() -> None:
    for bad in ({"hold": 0}, {"hold": math.inf}, {"hold": -1}, {"slack": -1},
                {"max_held": 0}, {"hold": 1e9}):
        with pytest.raises(ConfigError):
            PairOptions(**bad)


def test_bad_state_is_refused() -> None:
    p = Pairer()
    p.push(records([tcp("10.0.0.1", 1, "10.0.0.2", 80, 0.0, 0.0, "S", "S0")]))
    good = p.state_dict()
    for key, value in (("version", np.array(99)), ("next_pos", np.array(-1)),
                       ("slots._pos", np.array([5], dtype=np.int64)),
                       ("slots._step", np.array([3], dtype=np.int64)),
                       ("slots.uid.off", np.array([0, 99], dtype=np.int64)),
                       ("slots.uid.data", np.frombuffer(b"\xff" * 18, dtype=np.uint8)),
                       ("keys._key.ok", np.array([False]))):
        bad = dict(good)
        bad[key] = value
        with pytest.raises(StateError):
            Pairer().load_state_dict(bad)
    bad = dict(good)
    del bad["clock"]
    with pytest.raises(StateError):
        Pairer().load_state_dict(bad)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_whole_stream_pairing_by_key_partitions_equals_the_stage(case) -> None:
    """What the Spark engine does: marks per file, global positions and clocks, rows
    shuffled by key into partitions, sorted, cut into frames anywhere; same flows."""
    from zeekml.sources.biflow import pair_sorted, stream_marks

    df, cuts, opts, depth = case
    want = flows_of(df, opts, depth=depth)
    # two "files": marks computed per file, then offset like the driver does
    split = cuts[0] if cuts else len(df) // 2
    files = [df.iloc[:split].reset_index(drop=True), df.iloc[split:].reset_index(drop=True)]
    rows, row_off, clock_off = [], 0, -math.inf
    for f in files:
        marks, n, clock = stream_marks(f, 0, -math.inf)
        part = pd.concat([f, marks], axis=1)
        part["_pos"] = row_off + part["_rix"]
        part["_arr"] = np.maximum(part["_fclock"], clock_off)
        rows.append(part)
        row_off += n
        clock_off = max(clock_off, clock)
    allrows = pd.concat(rows, ignore_index=True)
    cand = allrows[allrows["_key"].notna()]
    parts = []
    for p in range(3):  # hash partitions of keys
        sel = cand[cand["_key"].map(lambda k: sum(map(ord, k)) % 3) == p]
        sel = sel.sort_values(["_key", "_pos"], kind="stable").reset_index(drop=True)
        frames = [sel.iloc[a:a + 4] for a in range(0, len(sel), 4)]
        parts.extend(pair_sorted(frames, opts, depth))
    others = allrows[allrows["_key"].isna()]
    got = pd.concat([*parts, others[[*parts[0].columns]] if parts else others],
                    ignore_index=True) if parts else others
    got = got.sort_values("_pos", kind="stable").reset_index(drop=True)
    got = schema.conform(got.drop(columns=[c for c in got.columns if c.startswith("_")]))
    pd.testing.assert_frame_equal(want, got)


def test_originator_when_the_clients_syn_was_not_seen() -> None:
    """A connection that began before the capture (or whose client SYN was lost): the
    server's record carries the only SYN (its SYN-ACK) beside ACKs, data and FIN, the
    client's record ACKs, data and FIN; the ports say which is the server. A client's
    SYN whose SYN-ACK was not seen is still the client's."""
    df = records([
        tcp("51.104.162.168", 443, "147.32.81.167", 62785, 100.0, 78.8, "SADF", "SF",
            orig_pkts=8, orig_ip_bytes=584),
        tcp("147.32.81.167", 62785, "51.104.162.168", 443, 100.0, 78.8, "ADF", "SF",
            orig_pkts=24, orig_ip_bytes=3590),
        tcp("10.0.0.1", 50001, "10.0.0.2", 22, 200.0, 3.0, "SADF", "SF"),
        tcp("10.0.0.2", 22, "10.0.0.1", 50001, 200.0, 3.0, "ADF", "SF"),
    ])
    f = pair_table(df)
    assert f["paired"].tolist() == [True, True]
    assert (f.orig_h[0], f.orig_p[0], f.resp_p[0]) == ("147.32.81.167", 62785, 443)
    assert (f.orig_pkts[0], f.resp_pkts[0]) == (24, 8)
    assert f.history[0] == "hADadFf"  # the responder's SYN-ACK, as Zeek writes it
    assert (f.orig_h[1], f.resp_p[1]) == ("10.0.0.1", 22)
