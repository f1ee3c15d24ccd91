"""Benign labels a capture contradicts (zeekml.train.datasets.contradicted_benign)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import DATA, need
from zeekml.records.labels import targets
from zeekml.train.datasets import contradicted_benign, trusted_targets


def _labels(pairs: list[tuple[str, str, int, int]]) -> tuple[pd.DataFrame, np.ndarray]:
    """(orig, resp, malicious flows, benign flows) -> flows and their binary labels."""
    rows, binary = [], []
    for o, r, mal, ben in pairs:
        for i in range(mal + ben):
            # every other malicious flow in the reverse direction: the pair is unordered
            rows.append((r, o) if i % 2 and i < mal else (o, r))
            binary.append(1 if i < mal else 0)
    return pd.DataFrame(rows, columns=["orig_h", "resp_h"]), np.array(binary, dtype=np.int8)


def test_only_benign_flows_of_a_nearly_all_malicious_pair() -> None:
    df, b = _labels([("10.0.0.1", "198.51.100.7", 12, 1),    # 92% malicious: dropped
                     ("10.0.0.1", "198.51.100.8", 9, 1),     # too few malicious: kept
                     ("10.0.0.1", "198.51.100.9", 10, 3),    # 77% malicious: kept
                     ("10.0.0.2", "198.51.100.7", 0, 5)])    # another host: kept
    drop = contradicted_benign(df, b)
    assert drop.sum() == 1
    assert df[drop].iloc[0].tolist() == ["10.0.0.1", "198.51.100.7"] and b[drop][0] == 0


def test_unlabeled_flows_do_not_count() -> None:
    df, b = _labels([("10.0.0.1", "198.51.100.7", 10, 1)])
    b = np.concatenate([b, np.full(50, -1, dtype=np.int8)])  # Background flows of the pair
    df = pd.concat([df, pd.DataFrame({"orig_h": ["10.0.0.1"] * 50,
                                      "resp_h": ["198.51.100.7"] * 50})], ignore_index=True)
    assert contradicted_benign(df, b).sum() == 1


def test_iot23_34_1_http_to_its_cc_server() -> None:
    """The case that motivated the rule: the infected device's 65 benign-labeled HTTP flows
    to the server its 11,169 IRC flows labeled C&C go to; nothing else in the capture."""
    path = DATA / "zeek" / "iot23-34-1-mirai" / "conn.log.labeled"
    need(path.is_file(), str(path))
    from zeekml.sources import read_table

    df = read_table(path)
    binary, _ = targets(df)
    drop = contradicted_benign(df, binary)
    hit = df[drop]
    assert len(hit) == 65
    assert set(zip(hit["orig_h"], hit["resp_h"], hit["resp_p"], strict=True)) == {
        ("192.168.1.195", "185.244.25.235", 80)}
    tb, ty = trusted_targets(df)
    assert (tb[drop] == -1).all() and (ty[drop] == -1).all()
    assert np.array_equal(tb[~drop], binary[~drop])


def test_off_keeps_every_label() -> None:
    df, b = _labels([("10.0.0.1", "198.51.100.7", 12, 1)])
    df["label"] = np.where(b == 1, "Malicious", "Benign")
    df["detailed_label"] = np.where(b == 1, "C&C", "-")
    kept, _ = trusted_targets(df, drop_contradicted=False)
    dropped, _ = trusted_targets(df)
    assert np.array_equal(kept, targets(df)[0]) and (kept == 0).sum() == 1
    assert (dropped == 0).sum() == 0 and (dropped == -1).sum() == 1
