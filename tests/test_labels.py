"""Label mapping: every vocabulary in ../shared/data maps to the documented class."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, need
from zeekml.records.labels import (
    CLASSES,
    binary_target,
    class_target,
    label_counts,
    label_mapping,
    map_pair,
)

CASES = [
    # Stratosphere netflowlabeler
    ("Benign", "Microsoft", 0, "normal"),
    ("Malicious", "External-Attack-to-Device", 1, "portscan"),
    ("Malicious", "CC", 1, "c2"),
    ("Malicious", "From_malicious-To_malicious-Malware_data_exfiltration-RemcosRAT", 1, "c2"),
    ("Background", "(empty)", -1, None),
    ("Unknown", "(empty)", -1, None),
    # IoT-23
    ("benign", "-", 0, "normal"),
    ("Malicious", "C&C", 1, "c2"),
    ("Malicious", "C&C-Torii", 1, "c2"),
    ("Malicious", "C&C-HeartBeat", 1, "c2"),
    ("Malicious", "C&C-FileDownload", 1, "c2"),
    ("Malicious", "DDoS", 1, "ddos"),
    ("Malicious", "PartOfAHorizontalPortScan", 1, "portscan"),
    ("Malicious", "C&C-PartOfAHorizontalPortScan", 1, "portscan"),
    ("Malicious", "Attack", 1, None),
    ("Malicious", "-", 1, None),
    # CICIDS2017 (class in the label)
    ("BENIGN", "-1", 0, "normal"),
    ("DDoS", "-1", 1, "ddos"),
    ("DoS Hulk", "-1", 1, "dos"),
    ("DoS Slowhttptest", "-1", 1, "dos"),
    ("Portscan", "-1", 1, "portscan"),
    ("Infiltration - Portscan", "-1", 1, "portscan"),
    ("Infiltration", "-1", 1, "infiltration"),
    ("Botnet", "-1", 1, "c2"),
    ("FTP-Patator", "-1", 1, "bruteforce"),
    ("Web Attack - SQL Injection", "-1", 1, "webattack"),
    ("Web Attack - Brute Force", "-1", 1, "webattack"),
    ("Malicious", "Web Attack - Brute Force", 1, "webattack"),  # zeekml's CICFlowMeter reader
    ("Malicious", "SSH-Patator", 1, "bruteforce"),
    ("Heartbleed", "-1", 1, None),
    # missing / unrecognised: excluded, never guessed
    (None, None, -1, None),
    ("", "", -1, None),
    ("TCP-Established-To-Microsoft-7", "", -1, None),
    ("flow=Background-UDP-DNS", "", -1, None),
    # CTU-13 / Stratosphere binetflow, as zeekml's binetflow reader gives them
    ("Malicious", "flow=From-Botnet-V46-TCP-CC1-HTTP-Not-Encrypted", 1, "c2"),
    ("Malicious", "flow=To-Botnet-V46-UDP-DNS", 1, "c2"),
    ("Malicious", "flow=Malware-UDP-DNS", 1, "c2"),
    ("Benign", "flow=From-Normal-V46-Grill", 0, "normal"),
    ("Background", "flow=Background-UDP-Established", -1, None),
    (None, "flow=TCP-Established-To-Microsoft-7", -1, None),
    # ... and as raw text in a label column
    ("flow=From-Botnet-V46-TCP-CC1-HTTP-Not-Encrypted", None, 1, "c2"),
    ("flow=To-Botnet-V46-UDP-DNS", None, 1, "c2"),
    ("flow=From-Normal-V46-Grill", None, 0, "normal"),
    ("flow=To-Normal-V42-Stribrek", None, 0, "normal"),
    ("flow=Background-TCP-Attempt", None, -1, None),
]


@pytest.mark.parametrize(("label", "detail", "binary", "cls"), CASES)
def test_map_pair(label, detail, binary, cls):
    assert map_pair(label, detail) == (binary, cls)


def test_vectorized_matches_pairs():
    df = pd.DataFrame(
        {
            "label": pd.Series([c[0] for c in CASES] * 3, dtype="str"),
            "detailed_label": pd.Series([c[1] for c in CASES] * 3, dtype="str"),
        }
    )
    b = binary_target(df)
    c = class_target(df)
    assert b.dtype == np.int8
    assert b.tolist() == [x[2] for x in CASES] * 3
    assert c.tolist() == [CLASSES.index(x[3]) if x[3] else -1 for x in CASES] * 3


def test_no_label_column_is_excluded():
    df = pd.DataFrame({"ts": [1.0, 2.0]})
    assert binary_target(df).tolist() == [-1, -1]
    assert class_target(df).tolist() == [-1, -1]


def test_mapping_is_documented():
    m = label_mapping()
    assert m["classes"] == list(CLASSES)
    assert {r["class"] for r in m["rules"]} - {None} <= set(CLASSES)
    assert CLASSES[0] == "normal"


def test_real_capture_counts_match_manifest():
    """stratosphere-008: Malicious=4201 (External-Attack-to-Device), Benign=1402, Background=60."""
    need(importlib.util.find_spec("zeekml.sources.open") is not None, "the readers (zeekml.sources.open)")
    from zeekml.sources.open import read_table

    path = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
    need(path.is_file(), str(path))
    counts = label_counts(read_table([str(path)]))
    assert counts["portscan"] == 4201
    assert counts["normal"] == 1402
    assert counts["excluded"] == 60
