"""AMF-LSTM trainer end to end on real labeled captures: train, export, parity, eval.

One short training run (module fixture) on two real captures; its ONNX model is then
scored by onnxruntime on a capture it never saw and must beat the majority-class
baseline there. Small and quick: about 20-40 s on the shared 2-core machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, need, need_module, zat_sample
from zeekml.cli.main import main

TRAIN = [
    DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled",
    DATA / "iot23-csv" / "CTU-Honeypot-Capture-7-1-labeled.csv",
]
UNSEEN = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    need_module("torch")
    need_module("onnx")
    for p in [*TRAIN, UNSEEN]:
        need(p.is_file(), str(p))
    out = tmp_path_factory.mktemp("amf") / "tiny_amf.onnx"
    rc = main([
        "train", "amf", "--data", *map(str, TRAIN), "--out", str(out),
        "--epochs", "3", "--hidden", "16", "--seed", "1", "--threads", "1", "--ensemble", "2",
    ])
    assert rc == 0
    return out


def test_card_written(trained: Path):
    from zeekml.models.card import load_card
    from zeekml.windows.host_window import WINDOW_FEATURES

    card = load_card(trained)
    assert card.kind == "amf_lstm"
    assert card.data["features"] == list(WINDOW_FEATURES)
    assert card.data["training"]["parity_max_abs_diff"] <= 1e-4
    # the versions the figures were made with (the tree baseline moved with scikit-learn's)
    libs = card.data["training"]["libraries"]
    assert libs["torch"] and libs["numpy"] and set(libs) >= {"scikit-learn", "onnxruntime"}
    assert card.data["training"]["ensemble"] == 2
    files = card.data["training"]["files"]
    assert {Path(f["path"]).name for f in files} == {p.name for p in TRAIN}
    assert all(len(f["sha256"]) == 64 and f["rows"] > 0 for f in files)
    # classes never seen in training are listed, not faked
    assert "ddos" in card.data["untrained_classes"]
    assert "portscan" not in card.data["untrained_classes"]
    assert set(card.thresholds) >= {"default"}


def test_beats_majority_on_unseen_capture(trained: Path, capsys):
    """Accuracy on stratosphere-008 (not trained on) beats always answering the majority class."""
    from zeekml.records.labels import CLASSES, class_target
    from zeekml.sources.open import read_table

    train_y = np.concatenate([class_target(read_table([str(p)])) for p in TRAIN])
    majority = CLASSES[np.bincount(train_y[train_y >= 0]).argmax()]
    assert main(["eval", "--model", str(trained), "--data", str(UNSEEN), "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    support = {c: v["support"] for c, v in res["classes"].items()}
    baseline = support[majority] / sum(support.values())
    assert res["accuracy"] > baseline + 0.05, (res["accuracy"], baseline, majority)
    assert res["binary"]["auc"] > 0.9


def test_eval_json_keys(trained: Path, capsys):
    assert main(["eval", "--model", str(trained), "--data", str(UNSEEN), "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"classes", "macro_f1", "accuracy", "binary", "excluded"} <= set(res)
    assert set(res["binary"]) >= {"precision", "recall", "f1", "auc", "fpr"}
    assert res["excluded"] == 60  # Background rows of stratosphere-008 (MANIFEST)
    for v in res["classes"].values():
        assert set(v) == {"precision", "recall", "f1", "support"}
    # a class absent from the data and never predicted has undefined metrics: null
    assert res["classes"]["infiltration"]["recall"] is None


def test_eval_text_table(trained: Path, capsys):
    assert main(["eval", "--model", str(trained), "--data", str(UNSEEN), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "portscan" in text and "binary malicious vs benign" in text


# --------------------------------------------------------------------------- --corpus


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> tuple[Path, Path]:
    """A small corpus: four labeled captures (two NetFlow brute-force traces, benign
    honeypot traffic, CTU-SME-11) and the unlabeled bundled sample."""
    need_module("torch")
    need_module("onnx")
    from tests.conftest import need_binary

    need_binary("nfdump")
    need(DATA.is_dir(), "the shared captures")
    tmp = tmp_path_factory.mktemp("amfc")
    corpus = tmp / "corpus.json"
    corpus.write_text(json.dumps({"format": "zeekml-corpus/1", "root": str(DATA), "captures": [
        {"name": "ftp", "labels": {"class": "bruteforce"}, "paths": ["nfdump/pcap-zeek-ftp-bruteforce/nfcapd"]},
        {"name": "ssh", "labels": {"class": "bruteforce"}, "paths": ["nfdump/pcap-zeek-ssh-guess/nfcapd"]},
        {"name": "honeypot", "paths": ["iot23-csv/CTU-Honeypot-Capture-7-1-labeled.csv"]},
        {"name": "sme", "paths": ["zeek/slips-test18-ctu-sme-11/conn.log.labeled"]},
        {"name": "sample", "labels": "none", "paths": ["zeek/zat-sample/conn.log"]},
    ]}))
    out = tmp / "c.onnx"
    rc = main(["train", "amf", "--corpus", str(corpus), "--out", str(out), "--epochs", "2", "--hidden", "8",
               "--samples-per-epoch", "2000", "--seed", "2", "--threads", "1",
               "--drop-contradicted-labels", "--hide-bytes", "0.5", "--netflow-view"])
    assert rc == 0
    return out, corpus


def test_corpus_results_file_one_row_per_flow(corpus_run) -> None:
    import pandas as pd

    from zeekml.eval.corpus import load_corpus
    from zeekml.models.card import load_card

    out, corpus = corpus_run
    card = load_card(out)
    res = pd.read_parquet(out.with_name("c.loco.parquet"))
    assert list(res.columns) == ["capture", "row", "uid", "ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto",
                                 "binary", "y", "model", "score", "cls", "threshold", "baseline",
                                 "baseline_score", "baseline_cls", "baseline_threshold"]
    assert str(res["row"].dtype) == "int64" and str(res["binary"].dtype) == "int8"
    assert str(res["y"].dtype) == "int64" and str(res["score"].dtype) == "float64"
    caps = {c.name: c for c in load_corpus(corpus)}
    assert set(res["capture"]) == set(caps)
    for name, cap in caps.items():
        part = res[res["capture"] == name]
        assert part["row"].tolist() == list(range(cap.rows))  # every flow, in stream order
        assert part["uid"].tolist() == cap.flows["uid"].astype(str).tolist()
    assert (res["model"] == "amf_lstm").all() and (res["baseline"] == "single_flow_tree").all()
    sample = res[res["capture"] == "sample"]
    assert (sample["binary"] == -1).all() and (sample["y"] == -1).all()
    # the unlabeled capture is decided by the shipped thresholds; labeled ones by their fold's
    shipped = card.data["thresholds"]
    shipped_u = card.data["thresholds_payload_unknown"]
    assert ((sample["threshold"] == sample["cls"].map(shipped))
            | (sample["threshold"] == sample["cls"].map(shipped_u))).all()
    per_fold = card.data["metrics"]["leave_one_capture_out"]["thresholds_per_fold"]["amf_lstm"]
    per_fold_u = card.data["metrics"]["leave_one_capture_out"]["thresholds_payload_unknown_per_fold"]["amf_lstm"]
    for name in ("ftp", "ssh", "honeypot", "sme"):
        part = res[res["capture"] == name]
        # each row has its fold's threshold for its class: of flows with payload bytes
        # known, or of those with them unknown
        known = part["threshold"] == part["cls"].map(per_fold[name])
        unknown = part["threshold"] == part["cls"].map(per_fold_u[name])
        assert (known | unknown).all()
        # the card's per-capture counts are the file's rows under the rule score >= threshold
        row = card.data["metrics"]["leave_one_capture_out"]["amf_lstm"]["per_capture"][name]
        lab = part[part["binary"] >= 0]
        flagged = lab["score"] >= lab["threshold"]
        assert row["tp"] == int((flagged & (lab["binary"] == 1)).sum())
        assert row["fp"] == int((flagged & (lab["binary"] == 0)).sum())


def test_corpus_card_reports_loco_side_by_side(corpus_run) -> None:
    from zeekml.models.card import load_card

    out, _ = corpus_run
    card = load_card(out)
    lo = card.data["metrics"]["leave_one_capture_out"]
    assert {"amf_lstm", "single_flow_tree", "amf_lstm_beats_single_flow_tree"} <= set(lo)
    for name in ("amf_lstm", "single_flow_tree"):
        assert set(lo[name]["per_capture"]) == {"ftp", "ssh", "honeypot", "sme"}
        assert all(isinstance(v, bool) for v in lo[name]["targets"].values())
    sup = card.data["threshold_support"]
    sup_u = card.data["threshold_support_payload_unknown"]
    view_benign = sum(v["fp"] + v["tn"] for v in lo["amf_lstm"]["netflow_view"]["per_capture"].values())
    # every benign row as read (honeypot + CTU-SME-11); flows with payload bytes unknown
    # also get thresholds of their own, on the benign rows of that kind and the NetFlow
    # view's, never below the first set
    assert sup["benign_flows"] == 130 + 44
    assert view_benign < sup_u["benign_flows"] <= view_benign + 130 + 44
    shipped_known, shipped_unknown = card.data["thresholds"], card.data["thresholds_payload_unknown"]
    assert all(shipped_unknown[c] >= shipped_known[c] for c in shipped_known)
    assert sup["supported"] is False  # far too few benign flows for the budget: said so
    assert set(card.data["thresholds_payload_unknown"]) == set(card.data["thresholds"])
    per_fold_u = lo["thresholds_payload_unknown_per_fold"]["amf_lstm"]
    assert set(per_fold_u) == {"ftp", "ssh", "honeypot", "sme"}
    assert card.data["training"]["hide_bytes"] == 0.5
    # the Zeek captures' NetFlow view: trained on (--netflow-view) and measured per fold;
    # the NetFlow captures have no view, the unlabeled sample is not trained on
    assert card.data["training"]["netflow_view"] is True
    assert 0.99 * (130 + 766) <= card.data["training"]["netflow_view_rows"] <= 130 + 766
    for name in ("amf_lstm", "single_flow_tree"):
        view = lo[name]["netflow_view"]
        assert set(view["per_capture"]) == {"honeypot", "sme"}
        benign = sum(v["fp"] + v["tn"] for v in view["per_capture"].values())
        assert 0.99 * (130 + 44) <= benign <= 130 + 44
    assert "presumed_benign_unlabeled" in card.data["metrics"]
    assert card.data["metrics"]["presumed_benign_unlabeled"]["sample"]["rows"] == 360
    md = out.with_name("c.md").read_text()
    assert "single_flow_tree" in md and "NOT met" in md and "c.loco.parquet" in md
    # benign labels a capture contradicts: none in these captures, and the card says so
    for name in ("amf_lstm", "single_flow_tree"):
        c = lo[name]["contradicted_benign"]
        assert c["flows"] == 0 and c["flagged"] == 0
        assert c["fpr_if_benign"] == pytest.approx(lo[name]["binary"]["fpr"])
    assert "counting the 0 contradicted benign labels as benign" in md


def test_corpus_partial_loco_folds(corpus_run, tmp_path) -> None:
    """``--folds``: only the named captures are held out; the tables, thresholds and the
    results file come from their out-of-fold rows alone, the card says so, and the shipped
    model still trains on every labeled capture."""
    import pandas as pd

    _, corpus = corpus_run
    out = tmp_path / "p.onnx"
    rc = main(["train", "amf", "--corpus", str(corpus), "--out", str(out), "--epochs", "1", "--hidden", "8",
               "--samples-per-epoch", "1000", "--seed", "2", "--threads", "1", "--folds", "sme", "ftp",
               "--defer-classes", "bruteforce"])
    assert rc == 0
    card = json.loads(out.with_name("p.card.json").read_text())
    lo = card["metrics"]["leave_one_capture_out"]
    # --defer-classes: trained on (its rows counted), never emitted, in every set and fold
    assert card["deferred_classes"] == ["bruteforce"]
    for key in ("thresholds", "thresholds_payload_unknown"):
        assert card[key]["bruteforce"] == 1.000001
    for per_fold in (lo["thresholds_per_fold"]["amf_lstm"], lo["thresholds_payload_unknown_per_fold"]["amf_lstm"]):
        assert {g: t["bruteforce"] for g, t in per_fold.items()} == {"sme": 1.000001, "ftp": 1.000001}
    assert card["threshold_support"]["per_class"]["bruteforce"]["deferred"] is True
    assert lo["amf_lstm"]["classes"]["bruteforce"]["predicted"] == 0
    assert "left to another detector" in out.with_name("p.md").read_text()
    assert lo["folds"] == ["sme", "ftp"]
    assert set(lo["amf_lstm"]["per_capture"]) == {"sme", "ftp"}
    assert set(lo["single_flow_tree"]["per_capture"]) == {"sme", "ftp"}
    assert set(card["training"]["captures"]) >= {"ftp", "ssh", "honeypot", "sme"}
    assert card["training"]["class_rows"]["bruteforce"] > lo["amf_lstm"]["classes"]["bruteforce"]["support"]
    oof = pd.read_parquet(out.with_name("p.loco.parquet"))
    assert set(oof["capture"]) == {"sme", "ftp", "sample"}
    assert "Partial run: 2 folds only" in out.with_name("p.md").read_text()
    # a capture the corpus does not have is a usage error (exit code 2), not an empty run
    assert main(["train", "amf", "--corpus", str(corpus), "--out", str(tmp_path / "q.onnx"), "--epochs", "1",
                 "--folds", "no-such-capture"]) == 2


def test_hidden_payload_bytes_are_what_a_netflow_reader_gives() -> None:
    """--hide-bytes shows a training window as NetFlow or Argus give it: the features of
    the same Zeek flows with their payload byte counts unknown, padding untouched."""
    need_module("torch")
    import pandas as pd
    import torch

    from zeekml.features.flow_stats import flow_features
    from zeekml.sources import read_table
    from zeekml.train.amf_lstm import hide_payload_bytes

    sample = zat_sample()
    zeek = read_table(sample).head(20)
    netflow = zeek.copy()
    for col in ("orig_bytes", "resp_bytes"):
        netflow[col] = pd.array([None] * len(netflow), dtype="Int64")
    x = torch.from_numpy(flow_features(zeek).reshape(2, 10, -1))
    want = torch.from_numpy(flow_features(netflow).reshape(2, 10, -1))
    assert not torch.equal(x, want)
    mask = torch.ones(2, 10)
    mask[1, :3] = 0  # the second window's first three positions are padding
    got = hide_payload_bytes(x, mask, torch.tensor([True, True]))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1, 3:], want[1, 3:])
    assert torch.equal(got[1, :3], x[1, :3])
    assert torch.equal(hide_payload_bytes(x, mask, torch.tensor([False, False])), x)
