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

from tests.conftest import DATA, need, need_module
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
