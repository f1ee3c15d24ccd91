"""The bundled flow LM: its card is honest and its held-out figures reproduce."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.conftest import DATA, need
from zeekml.eval import lm_eval
from zeekml.models.card import load_card
from zeekml.models.registry import bundled_models, resolve_model

HELD_OUT = DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled"
HONEYPOT = DATA / "iot23-csv" / "CTU-Honeypot-Capture-5-1-labeled.csv"


@pytest.fixture(scope="module")
def card():  # type: ignore[no-untyped-def]
    path = resolve_model("flow_lm")
    assert path in bundled_models()
    return load_card(path)


def test_card_is_complete_and_says_where_it_loses(card) -> None:  # type: ignore[no-untyped-def]
    d = card.data
    assert card.kind == "flow_lm" and d["context"] >= 1
    assert d["threshold_rule"]["quantile"] == 0.999
    assert d["training"]["drop_malicious"] is True
    trained = {Path(f["path"]).name for f in d["training"]["files"]}
    assert HELD_OUT.name in trained  # 008 has the same file name...
    assert not any("stratosphere-010" in f["path"] or "Honeypot" in f["path"] for f in d["training"]["files"])
    assert d["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert d["metrics"]["validation"]["lm_beats_unigram"] is True
    held = d["metrics"]["heldout"]
    assert held["unigram"]["binary"]["auc"] is not None
    # the card states plainly where the sequence model does not beat the unigram
    text = " ".join(d["limitations"])
    for key, better in held["sequence_gain"].items():
        if key in ("auc", "conversation_auc") and better is False:
            assert "does NOT beat the unigram baseline" in text
    assert (Path(card.onnx_path).with_name("flow_lm.md")).is_file()


def test_held_out_figures_reproduce(card) -> None:  # type: ignore[no-untyped-def]
    need(HELD_OUT.is_file() and HONEYPOT.is_file(), "the held-out captures")
    r = lm_eval.evaluate(card, [str(HELD_OUT), str(HONEYPOT)], argparse.Namespace(threads=2))
    recorded = {p["input"].split("/")[-1]: p for p in card.data["metrics"]["heldout"]["per_input"]}
    got = {p["input"].split("/")[-1]: p for p in r["per_input"]}
    for name in (HELD_OUT.name, HONEYPOT.name):
        for k in ("auc", "fpr", "unigram_auc", "unigram_fpr"):
            a, b = got[name][k], recorded[name][k]
            assert (a is None and b is None) or abs(a - b) < 1e-6, (name, k, a, b)
    assert got[HELD_OUT.name]["auc"] >= 0.97  # issue 4 target, held-out day
    assert got[HONEYPOT.name]["fpr"] <= 0.05  # never-seen clean benign capture
