"""The labeled corpus: captures grouped honestly, labels from files or capture level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, REPO, need, need_binary
from zeekml.errors import ConfigError
from zeekml.eval.corpus import load_corpus, network_month_keys, parse_corpus
from zeekml.records.labels import CLASSES, targets

SHARED_CORPUS = REPO / "tools" / "shared-corpus.json"


def _write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "corpus.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    return p


@pytest.mark.parametrize("doc, msg", [
    ({"format": "nope", "captures": []}, "not a corpus file"),
    ({"format": "zeekml-corpus/1", "root": ".", "captures": []}, "non-empty"),
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"], "evil": 1}]}, "unknown keys"),
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"]},
                                                {"name": "a", "paths": ["y"]}]}, "unique"),
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"], "labels": "maybe"}]}, "labels"),
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"], "group_by": "host"}]}, "group_by"),
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"], "exclude": [{"proto": "tcp"}]}]},
     "exclude rule"),  # a rule must say why
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"],
                                                 "exclude": [{"why": "x", "resp_p": ["23"]}]}]}, "exclude rule"),
    ({"format": "zeekml-corpus/1", "captures": [{"name": "a", "paths": ["x"],
                                                 "exclude": [{"why": "x", "eval": "1"}]}]}, "exclude rule"),
])
def test_hostile_corpus_files_are_refused(tmp_path: Path, doc: object, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        parse_corpus(_write(tmp_path, doc))


def test_capture_level_labels_only_touch_the_victims(tmp_path: Path) -> None:
    log = DATA / "zeek" / "zat-sample" / "conn.log"
    need(log.is_file(), "the shared captures")
    doc = {"format": "zeekml-corpus/1", "root": str(log.parent), "captures": [
        {"name": "v", "paths": ["conn.log"], "labels": {"class": "ddos", "hosts": ["192.168.33.10"]}}]}
    (cap,) = load_corpus(_write(tmp_path, doc))
    binary, y = targets(cap.flows)
    touches = (cap.flows["orig_h"] == "192.168.33.10") | (cap.flows["resp_h"] == "192.168.33.10")
    assert touches.any() and not touches.all()
    assert (binary[touches.to_numpy()] == 1).all() and (y[touches.to_numpy()] == CLASSES.index("ddos")).all()
    assert (binary[~touches.to_numpy()] == -1).all()  # excluded, never benign


def test_network_month_keys_whole_file_takes_its_majority_network() -> None:
    import pandas as pd

    df = pd.DataFrame({"orig_h": ["192.168.1.5", "192.168.1.5", "10.0.0.1", "8.8.8.8"],
                       "resp_h": ["8.8.8.8", "1.1.1.1", "8.8.4.4", "192.168.7.2"],
                       "ts": [1.5e9, 1.5e9 + 3e6, 1.5e9, 1.5e9]})
    rows = network_month_keys(df, whole_capture=False).tolist()
    assert rows == ["192.168.1.0/24 2017-07", "192.168.1.0/24 2017-08", "10.0.0.0/24 2017-07",
                    "192.168.7.0/24 2017-07"]
    assert set(network_month_keys(df, whole_capture=True)) == {"192.168.1.0/24 2017-07"}


def test_shared_corpus_has_three_captures_per_main_class() -> None:
    need(DATA.is_dir(), "the shared captures")
    need_binary("nfdump")
    caps = load_corpus(SHARED_CORPUS, labeled_only=True)
    names = [c.name for c in caps]
    assert len(names) == len(set(names))
    holding: dict[str, int] = {}
    for c in caps:
        _, y = targets(c.flows)
        for i, cls in enumerate(CLASSES):
            if (y == i).sum() >= 10:
                holding[cls] = holding.get(cls, 0) + 1
        assert len(c.sampled) == c.rows and c.sampled.dtype == bool
    for cls in ("normal", "portscan", "ddos", "c2", "bruteforce"):
        assert holding.get(cls, 0) >= 3, (cls, holding)
    # the CSV conversion of IoT-23 34-1 is the same flows as the Zeek log: read once
    uids = np.concatenate([c.flows["uid"].astype(str).to_numpy() for c in caps])
    assert len(uids) == len(set(uids))


def test_exclude_rules_take_rows_out_of_the_labels(tmp_path: Path) -> None:
    """Rows matching an exclude rule are neither benign nor malicious; others keep their label."""
    log = DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled"
    need(log.is_file(), "the shared captures")
    rule = {"label": "malicious", "proto": "tcp", "conn_state": ["S0"], "why": "test"}
    doc = {"format": "zeekml-corpus/1", "root": str(log.parent), "captures": [
        {"name": "plain", "paths": ["conn.log.labeled"]}]}
    (plain,) = load_corpus(_write(tmp_path, doc))
    doc["captures"][0]["exclude"] = [rule]
    (cut,) = load_corpus(_write(tmp_path, doc))
    b0, _ = targets(plain.flows)
    b1, _ = targets(cut.flows)
    hit = (b0 == 1) & (plain.flows["proto"] == "tcp").to_numpy() & (plain.flows["conn_state"] == "S0").to_numpy()
    assert hit.sum() > 1000
    assert (b1[hit] == -1).all()
    assert (b1[~hit] == b0[~hit]).all()


def test_shared_corpus_excludes_scanning_labeled_benign() -> None:
    need(DATA.is_dir(), "the shared captures")
    caps = load_corpus(SHARED_CORPUS, names=["iot23-subsample"])
    flows = [c.flows for c in caps]
    excluded = sum(int((f["detailed_label"] == "(excluded by a corpus rule)").sum()) for f in flows)
    assert excluded == 29317  # the count the corpus file's rule states
    for f in flows:
        b, _ = targets(f)
        scan = (f["proto"] == "tcp").to_numpy() & f["resp_p"].isin([23, 2323]).to_numpy() & (
            f["conn_state"] == "S0").to_numpy()
        assert not ((b == 0) & scan).any()
