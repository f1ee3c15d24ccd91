"""Zeek flows as zeekml reads NetFlow (zeekml.sources.netflow_view): the projection equals
what the real nfdump CSV reader and the pairing stage make of the records an exporter
writes for the same connections, on hand-made cases and on real Zeek captures; and the
trainer shows it only to folds that do not hold its capture out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, need
from zeekml.features.flow_stats import FEATURES, flow_features
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.biflow import pair_table
from zeekml.sources.netflow_view import netflow_view, projectable
from zeekml.sources.nfdump import NfdumpCsvParser

CTU = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
COMPARED = [c for c in schema.COLUMNS if c not in ("uid",)]


def zeek(rows: list[dict]) -> pd.DataFrame:
    base = {"duration": 1.0, "orig_bytes": 10, "resp_bytes": 20, "local_orig": None,
            "local_resp": None, "service": None}
    df = pd.DataFrame([{**base, **r, "uid": f"C{i}", "source_line": i + 1}
                       for i, r in enumerate(rows)])
    df["source_file"] = "conn.log"
    return schema.conform(df, source_file="conn.log", with_labels=False)


def flow(ts: float, src: str, sp: int, dst: str, dp: int, proto: str, hist: str | None,
         opk: int, oby: int, rpk: int, rby: int, dur: float = 1.0) -> dict:
    return {"ts": ts, "orig_h": src, "orig_p": sp, "resp_h": dst, "resp_p": dp, "proto": proto,
            "history": hist, "orig_pkts": opk, "orig_ip_bytes": oby, "resp_pkts": rpk,
            "resp_ip_bytes": rby, "duration": dur, "conn_state": "SF"}


def read_csv_records(lines: list[str]) -> pd.DataFrame:
    """Records as nfdump's CSV prints them, through the real reader and the pairing."""
    head = "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,inPackets,inBytes,flags"
    p = NfdumpCsvParser("x.csv", SkipLog(strict=True))
    frames = p.feed(("\n".join([head, *lines]) + "\n").encode()) + p.close()
    return pair_table(schema.concat(frames))


def test_equals_the_nfdump_reader_on_the_records_an_exporter_writes() -> None:
    """A TCP session, a rejected SYN, an unanswered SYN, a DNS exchange, an unanswered UDP
    probe and an ICMP echo: the projection is, field for field, what zeekml reads from
    the one or two records a unidirectional exporter writes for each."""
    a, b = "10.0.0.5", "192.0.2.9"
    flows = zeek([
        flow(100.0, a, 40000, b, 443, "tcp", "ShADadFf", 10, 1500, 8, 9000, 2.5),
        flow(101.0, a, 40001, b, 22, "tcp", "Sr", 1, 60, 1, 40, 0.001),
        flow(102.0, a, 40002, b, 23, "tcp", "S", 2, 120, 0, 0, 3.0),
        flow(103.0, a, 5353, b, 53, "udp", "Dd", 1, 70, 1, 130, 0.02),
        flow(104.0, a, 5000, b, 161, "udp", "D", 1, 80, 0, 0, np.nan),
        flow(105.0, a, 8, b, 0, "icmp", None, 3, 252, 3, 252, 2.0),
    ])
    records = [
        "100.000,2.500,6,10.0.0.5,40000,192.0.2.9,443,10,1500,.AP.SF",
        "100.001,2.499,6,192.0.2.9,443,10.0.0.5,40000,8,9000,.AP.SF",
        "101.000,0.001,6,10.0.0.5,40001,192.0.2.9,22,1,60,....S.",
        "101.001,0.000,6,192.0.2.9,22,10.0.0.5,40001,1,40,.A.R..",
        "102.000,3.000,6,10.0.0.5,40002,192.0.2.9,23,2,120,....S.",
        "103.000,0.020,17,10.0.0.5,5353,192.0.2.9,53,1,70,......",
        "103.001,0.019,17,192.0.2.9,53,10.0.0.5,5353,1,130,......",
        "104.000,0.000,17,10.0.0.5,5000,192.0.2.9,161,1,80,......",
        "105.000,2.000,1,10.0.0.5,0,192.0.2.9,8.0,3,252,......",
        "105.001,1.999,1,192.0.2.9,0,10.0.0.5,0.0,3,252,......",
    ]
    ref = read_csv_records(records)
    got = netflow_view(flows)
    assert got["view_of"].tolist() == [0, 1, 2, 3, 4, 5]
    assert len(ref) == 6
    for col in COMPARED:
        assert got[col].astype(object).where(got[col].notna(), None).tolist() == \
            ref[col].astype(object).where(ref[col].notna(), None).tolist(), col
    assert got["paired"].tolist() == [True, True, False, True, False, True]
    assert got["orig_bytes"].isna().all() and got["resp_bytes"].isna().all()
    assert got.loc[0, "history"] == "ShADadFf" and got.loc[0, "conn_state"] == "SF"
    assert got.loc[1, "conn_state"] == "REJ"
    assert got.loc[2, "conn_state"] == "S0"


def test_rows_without_what_netflow_needs_are_left_out() -> None:
    flows = zeek([
        flow(1.0, "10.0.0.1", 1, "10.0.0.2", 80, "tcp", None, 3, 180, 2, 120),
        flow(2.0, "10.0.0.1", 2, "10.0.0.2", 80, "unknown_transport", None, 1, 40, 0, 0),
        flow(3.0, "10.0.0.1", 3, "10.0.0.2", 53, "udp", "D", 1, 60, 0, 0),
    ])
    assert projectable(flows).tolist() == [False, False, True]
    got = netflow_view(flows)
    assert got["view_of"].tolist() == [2]
    assert len(netflow_view(flows.iloc[:2].reset_index(drop=True))) == 0


def test_a_real_capture_keeps_its_labels_and_loses_its_format() -> None:
    """CTU-Normal-40 (a benign Windows host attacked from the Internet): every projected
    flow carries its Zeek row's label; payload bytes are unknown everywhere; answered
    flows are paired, unanswered SYNs of the attackers stay one-way records."""
    need(CTU.is_file(), f"the shared capture {CTU}")
    flows = schema.concat(read_flows(CTU))
    got = netflow_view(flows)
    src = flows.iloc[got["view_of"].to_numpy()].reset_index(drop=True)
    assert len(got) >= 0.99 * len(flows)
    assert (got["label"].to_numpy() == src["label"].to_numpy()).all()
    # the originator stays the originator where Zeek saw the SYN; a connection Zeek
    # joined mid-stream is oriented as the pairing orients it (the side with the SYN)
    syn_seen = src["history"].str.startswith("S").to_numpy(dtype=bool, na_value=False)
    kept = got["orig_h"].to_numpy() == src["orig_h"].to_numpy()
    assert kept[syn_seen].all() and kept.mean() > 0.97
    assert (got["orig_pkts"].to_numpy()[syn_seen] == src["orig_pkts"].to_numpy()[syn_seen]).all()
    both = ((src["resp_pkts"] > 0) & (src["orig_pkts"] > 0)).to_numpy()
    assert (got["paired"].to_numpy(dtype=bool) == both).all()
    x = flow_features(got)
    assert (x[:, FEATURES.index("bytes_missing")] == 1).all()
    # the attackers' lone SYNs read as NetFlow reads them: a one-way record, state S0
    s0 = (src["conn_state"] == "S0").to_numpy() & (src["history"] == "S").to_numpy()
    assert s0.sum() > 1000
    assert (got["conn_state"].to_numpy()[s0] == "S0").all()


def test_training_folds_never_see_the_view_of_their_held_out_capture() -> None:
    """out_of_fold_views: a fold trains on the other captures and their views, and
    scores the held-out capture's view with that model."""
    from zeekml.train.amf_loco import out_of_fold_views
    from zeekml.train.datasets import WindowSet

    def ws(groups: list[str], tag: float) -> WindowSet:
        n = len(groups)
        return WindowSet(x=np.full((n, 2, 3), tag, np.float32), mask=np.ones((n, 2), bool),
                         y=np.zeros(n, np.int64), binary=np.zeros(n, np.int8),
                         group=np.asarray(groups, dtype=object))

    base = ws(["a", "a", "b", "c"], 0.0)
    view = ws(["a", "b", "b", "c"], 1.0)
    seen: dict[float, list[tuple[str, float]]] = {}

    def fit(train: WindowSet):
        key = float(len(seen))
        seen[key] = sorted(zip(train.group.tolist(), train.x[:, 0, 0].tolist(), strict=True))

        def predict(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x), 8))
            out[:, 1] = key + x[:, 0, 0] / 10
            return out

        return predict

    probs, vprobs = out_of_fold_views(base, {"amf": fit}, view=view, train_on_view=True)
    assert seen[0.0] == [("b", 0.0), ("b", 1.0), ("b", 1.0), ("c", 0.0), ("c", 1.0)]
    assert seen[1.0] == [("a", 0.0), ("a", 0.0), ("a", 1.0), ("c", 0.0), ("c", 1.0)]
    # each view row scored by the fold that held its capture out
    assert vprobs["amf"][:, 1].tolist() == pytest.approx([0.1, 1.1, 1.1, 2.1])
    assert probs["amf"][:, 1].tolist() == pytest.approx([0.0, 0.0, 1.0, 2.0])
    _, vprobs2 = out_of_fold_views(base, {"amf": fit}, view=view, train_on_view=False)
    assert all(g != "view" for g, _ in seen[3.0]) and all(t == 0.0 for _, t in seen[3.0])
    assert vprobs2["amf"][:, 1].tolist() == pytest.approx([3.1, 4.1, 4.1, 5.1])
