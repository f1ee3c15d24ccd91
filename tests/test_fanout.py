"""Fan-out features (zeekml.windows.fanout): counts on hand-made flows, the horizon and the
depth, independence of batch cuts on a real capture, state round trip, sampled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, ZAT_SAMPLE, need, zat_sample
from zeekml.errors import StateError
from zeekml.features.flow_stats import flow_features
from zeekml.records.schema import conform
from zeekml.sources import read_table
from zeekml.windows.fanout import FANOUT_DEPTH, FANOUT_FEATURES, FANOUT_HORIZON
from zeekml.windows.host_window import (
    FANOUT_WINDOW_FEATURES,
    WINDOW_FEATURES,
    HostWindows,
    standalone,
)

SAMPLE = ZAT_SAMPLE
CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
FAN = [FANOUT_WINDOW_FEATURES.index(f) for f in FANOUT_FEATURES]


def _flows(rows: list[tuple[float, str, str, int, str, int]]) -> pd.DataFrame:
    """(ts, orig, resp, resp_p, proto, resp_pkts) rows as a canonical table."""
    df = pd.DataFrame(rows, columns=["ts", "orig_h", "resp_h", "resp_p", "proto", "resp_pkts"])
    df["uid"] = [f"C{i}" for i in range(len(df))]
    df["orig_p"] = 40000
    df["orig_pkts"] = 1
    df["local_orig"] = True
    df["local_resp"] = False
    df["conn_state"] = np.where(df["resp_pkts"] > 0, "SF", "S0")
    return conform(df, with_labels=False)


def _fanout(df: pd.DataFrame, **kw) -> pd.DataFrame:
    hw = HostWindows(10, "local_dir", fanout=True, **kw)
    x = hw.push(df, flow_features(df)).x[:, -1, :][:, FAN]
    return pd.DataFrame({"flows": np.rint(np.expm1(x[:, 0])), "peers": np.rint(np.expm1(x[:, 1])),
                         "unanswered": x[:, 2]})


def test_counts_flows_peers_and_unanswered_on_the_flows_service() -> None:
    # 10.0.0.5 sends udp/16464 to 40 peers (every 4th answered), web to one server between
    rows = []
    for i in range(40):
        rows.append((1000.0 + i, "10.0.0.5", f"198.51.100.{i}", 16464, "udp", 1 if i % 4 == 0 else 0))
        rows.append((1000.5 + i, "10.0.0.5", "203.0.113.9", 443, "tcp", 5))
    f = _fanout(_flows(rows))
    udp = f.iloc[0::2].reset_index(drop=True)
    web = f.iloc[1::2].reset_index(drop=True)
    # the key's last 32 flows are half udp/16464: the k-th udp flow sees min(k + 1, 16) of them
    expect = np.minimum(np.arange(40) + 1, (FANOUT_DEPTH + 1) // 2)
    assert (udp["flows"] == expect).all() and (udp["peers"] == expect).all()
    assert (web["peers"] == 1).all() and (web["unanswered"] == 0).all()
    first = udp.iloc[39]  # peers 24..39 in view: 24, 28, 32, 36 answered
    assert first["unanswered"] == pytest.approx(12 / 16)


def test_only_flows_the_host_started_count() -> None:
    """A server's clients (fan-in) are not its fan-out: received flows get the values of a
    flow alone and never count for the flows the host starts."""
    rows = [(float(i), f"198.51.100.{i}", "10.0.0.5", 443, "tcp", 3) for i in range(20)]
    df = _flows(rows)
    df["local_orig"], df["local_resp"] = False, True  # 20 clients reach 10.0.0.5:443
    started = _flows([(30.0 + i, "10.0.0.5", f"203.0.113.{i}", 443, "tcp", 0) for i in range(3)])
    both = pd.concat([df, started], ignore_index=True)
    for key in ("local", "local_dir"):  # one window for both directions, or one each
        hw = HostWindows(10, key, fanout=True)
        x = hw.push(both, flow_features(both)).x[:, -1, :][:, FAN]
        assert np.allclose(x[:20, :2], np.log1p(1), atol=1e-3)  # features are stored as float16
        assert np.allclose(np.expm1(x[20:, 1]), [1, 2, 3], atol=0.01)
        assert np.allclose(x[20:, 2], 1.0)


def test_flows_beyond_the_horizon_do_not_count() -> None:
    gap = FANOUT_HORIZON + 1
    rows = [(0.0, "10.0.0.5", "198.51.100.1", 23, "tcp", 0),
            (1.0, "10.0.0.5", "198.51.100.2", 23, "tcp", 0),
            (1.0 + gap, "10.0.0.5", "198.51.100.3", 23, "tcp", 0)]
    f = _fanout(_flows(rows))
    assert f["flows"].tolist() == [1, 2, 1]
    assert f["unanswered"].tolist() == [1.0, 1.0, 1.0]


def test_other_hosts_and_directions_do_not_mix() -> None:
    rows = [(float(i), f"10.0.0.{i % 2}", f"198.51.100.{i}", 23, "tcp", 0) for i in range(20)]
    f = _fanout(_flows(rows))
    assert f["flows"].tolist() == [i // 2 + 1 for i in range(20)]


def test_batch_cuts_do_not_change_windows_on_a_real_capture() -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    df = read_table(CAPTURE)
    whole = HostWindows(10, "local_dir", fanout=True).push(df, flow_features(df)).x
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, len(df)), size=12, replace=False))
    hw = HostWindows(10, "local_dir", fanout=True)
    parts = []
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(df)], strict=True):
        sub = df.iloc[a:b].reset_index(drop=True)
        parts.append(hw.push(sub, flow_features(sub)).x)
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.shape[2] == len(FANOUT_WINDOW_FEATURES)
    top = whole[:, -1, FAN[0]].max()  # bounded by the depth; the capture has real fan-outs
    assert np.log1p(16) < top <= np.log1p(FANOUT_DEPTH + 1) * (1 + 1e-3)


def test_state_round_trip_continues_exactly() -> None:
    zat_sample()
    df = read_table(SAMPLE)
    whole = HostWindows(10, "local_dir", fanout=True).push(df, flow_features(df)).x
    a, b = df.iloc[:150].reset_index(drop=True), df.iloc[150:].reset_index(drop=True)
    first = HostWindows(10, "local_dir", fanout=True)
    xa = first.push(a, flow_features(a)).x
    state = first.state_dict()
    assert any(k.startswith("fanout_") for k in state)
    second = HostWindows(10, "local_dir", fanout=True)
    second.load_state_dict(state)
    xb = second.push(b, flow_features(b)).x
    assert np.array_equal(np.concatenate([xa, xb]), whole)
    plain = HostWindows(10, "local_dir")
    with pytest.raises(StateError, match="fan-out"):
        HostWindows(10, "local_dir", fanout=True).load_state_dict(plain.state_dict())


def test_depth_counts_the_fanout_history() -> None:
    assert HostWindows(10, "local_dir").depth == 9
    assert HostWindows(10, "local_dir", fanout=True).depth == 9 + FANOUT_DEPTH


def test_sampled_rows_get_the_fanout_of_a_flow_alone() -> None:
    zat_sample()
    df = read_table(SAMPLE)
    w = standalone(HostWindows(10, "local_dir", fanout=True).push(df, flow_features(df)))
    last = w.x[:, -1, :]
    assert np.allclose(last[:, FAN[0]], np.log1p(1)) and np.allclose(last[:, FAN[1]], np.log1p(1))
    no_reply = last[:, FANOUT_WINDOW_FEATURES.index("no_reply")]
    assert np.array_equal(last[:, FAN[2]], no_reply)
    plain = standalone(HostWindows(10, "local_dir").push(df, flow_features(df)))
    assert plain.x.shape[2] == len(WINDOW_FEATURES)  # a model without fan-out is unchanged


def train_tiny_fanout_model(out, epochs: int):
    """A tiny AMF-LSTM with fan-out windows trained by ``zeekml train amf --fanout`` on two
    real captures (skips without torch, onnx or the captures); returns ``out``."""
    from tests.conftest import need_module

    need_module("torch")
    need_module("onnx")
    train = [DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled",
             DATA / "iot23-csv" / "CTU-Honeypot-Capture-7-1-labeled.csv"]
    for p in train:
        need(p.is_file(), str(p))
    from zeekml.cli.main import main

    assert main(["train", "amf", "--data", *map(str, train), "--out", str(out), "--fanout",
                 "--epochs", str(epochs), "--hidden", "8", "--seed", "1", "--threads", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def fanout_model(tmp_path_factory):
    return train_tiny_fanout_model(tmp_path_factory.mktemp("fan") / "fan_amf.onnx", epochs=2)


def test_a_fanout_model_is_trained_loaded_and_scored_across_runs(fanout_model, tmp_path) -> None:
    """The card names the fan-out features, the scorer builds fan-out windows from it, and
    a cron run cut in two (state saved and loaded between) writes what one run writes."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    from zeekml.cli.main import main
    from zeekml.models.card import load_card
    from zeekml.models.registry import ScorerOptions, load_scorer

    assert load_card(fanout_model).data["features"] == list(FANOUT_WINDOW_FEATURES)
    scorer = load_scorer(str(fanout_model), ScorerOptions(threads=1))
    assert scorer.windows.fanout is not None and scorer.windows.depth == 9 + FANOUT_DEPTH

    lines = CAPTURE.read_text().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.startswith("#")]
    log = tmp_path / "conn.log"
    log.write_text("".join(header + body[: len(body) // 2]))
    args = ["-q", "score", "--all", "--model", str(fanout_model), "--threads", "1"]
    assert main([*args, "--state", str(tmp_path / "s.npz"), "--out", str(tmp_path / "a.log"),
                 str(log)]) == 0
    with log.open("a") as fh:
        fh.write("".join(body[len(body) // 2:]))
    assert main([*args, "--state", str(tmp_path / "s.npz"), "--out", str(tmp_path / "b.log"),
                 str(log)]) == 0
    assert main([*args, "--out", str(tmp_path / "one.log"), str(CAPTURE)]) == 0

    def rows(*paths):
        return [ln for p in paths for ln in (tmp_path / p).read_text().splitlines()
                if ln and not ln.startswith("#")]

    assert rows("a.log", "b.log") == rows("one.log")
