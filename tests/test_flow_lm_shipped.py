"""The bundled flow LM: its card is honest and its leave-one-capture-out figures reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import DATA, REPO, need
from zeekml.models.card import load_card
from zeekml.models.registry import ScorerOptions, bundled_models, load_scorer, resolve_model

CORPUS = REPO / "tools" / "shared-corpus.json"


@pytest.fixture(scope="module")
def card():  # type: ignore[no-untyped-def]
    path = resolve_model("flow_lm")
    assert path in bundled_models()
    return load_card(path)


def test_card_is_complete_and_says_where_it_loses(card) -> None:  # type: ignore[no-untyped-def]
    d = card.data
    assert card.kind == "flow_lm" and d["context"] >= 1
    t = d["training"]
    assert t["corpus"].endswith("shared-corpus.json") and t["command"].startswith("zeekml ")
    assert t["stopped_on_validation"] is True
    # the README's sample and the internet-facing server are never trained on
    trained = {c["capture"]: c["trainable_flows"] for c in t["captures"]}
    for name in t["excluded_from_training"]:
        assert trained[name] == 0
    assert "zat-sample" in t["excluded_from_training"]
    # threshold: a false-alarm rate on enough out-of-fold benign flows to mean something
    rule = d["threshold_rule"]
    assert rule["min_flows_above"] >= 50
    if rule["method"] == "empirical quantile":
        assert rule["flows_at_or_above"] >= rule["min_flows_above"]
    else:  # too few benign flows for the rate: an exponential tail fitted to the top ones
        assert rule["tail_flows"] >= rule["min_flows_above"]
        assert rule["fpr_on_calibration"] <= 2 * rule["target_fpr"]
    assert rule["benign_flows"] >= 10_000 and "out-of-fold" in rule["of"]
    assert d["metrics"]["parity_max_abs_diff"] <= 1e-4
    loco = d["metrics"]["loco"]
    assert loco["regenerate"].startswith("zeekml ") and "--loco" in loco["regenerate"]
    caps = {c["capture"]: c for c in loco["captures"]}
    run = set(loco["folds_run"])
    assert run | set(loco["folds_not_run"]) == set(loco["folds"])
    # every capture of every fold that was run is in the results, nothing else
    assert set(caps) == {n for f in run for n in loco["folds"][f]}
    # the score rule in the card is what the runtime applies
    assert set(d["score"]["weights"]) == {"nll", "nll0", "unigram"} and d["score"]["combine"] in ("sum", "max")
    # every capture with both classes has the model and the unigram side by side, and
    # the card says plainly where the model does not reach the baseline
    text = (card.onnx_path.with_name("flow_lm.md")).read_text(encoding="utf-8")
    if loco["folds_not_run"]:
        assert "folds not run" in text
    for name, c in caps.items():
        if c["lm_auc"] is not None and c["unigram_auc"] is not None:
            assert name in text
    # ... and so does the card itself
    said = " ".join(d["limitations"])
    pooled = loco["pooled"]
    if pooled["lm_auc"] < pooled["unigram_auc"]:
        assert "does NOT match the unigram baseline in ROC AUC" in said
    assert "NOT" in text or all(
        c["lm_auc"] >= c["unigram_auc"] for c in caps.values() if c["lm_auc"] is not None
    )


def test_captures_scored_by_the_shipped_model_reproduce(card) -> None:  # type: ignore[no-untyped-def]
    """Captures nobody trains on are scored, in the LOCO run, by the model trained on
    every trainable capture with the shipped settings: the shipped model itself. Scoring
    them again must give the recorded figures. The Zeek captures of that fold are used
    (NetFlow captures would change with the reader's record pairing, not with the model)."""
    need(DATA.is_dir(), "the shared captures")
    from zeekml.eval.corpus import load_corpus
    from zeekml.train.lm_data import make_stream, stream_keys

    loco = card.data["metrics"]["loco"]
    recorded = {c["capture"]: c for c in loco["captures"] if c["fold"] == "(all)"}
    names = ["zat-sample", "rita-rotated-archive"]
    assert set(names) <= set(recorded)
    assert recorded["rita-rotated-archive"]["lm_flagged"] > 0  # a figure that can move
    for c in load_corpus(CORPUS, names=names):
        s = make_stream(c.name, c.flows, sampled=c.sampled, labeled=c.labeled)
        scorer = load_scorer("flow_lm", ScorerOptions(threads=2))
        words, parts, _, _ = scorer.words(s.flows, stream_keys(s.flows, s.sampled))
        t, _, _ = scorer.terms(words, parts)
        score = scorer.rule.combine(t["nll"], t["nll0"], t["unigram"])
        r = recorded[c.name]
        assert len(score) == r["flows"]
        # float32 rounding may move a flow or two across a threshold
        assert abs(int((score >= r["lm_threshold"]).sum()) - r["lm_flagged"]) <= 2
        assert abs(int((t["unigram"] >= r["unigram_threshold"]).sum()) - r["unigram_flagged"]) <= 2
        # the shipped threshold is the one the whole-corpus calibration gave these captures
        assert r["lm_threshold"] == pytest.approx(card.thresholds["anomaly"], rel=1e-9)
    assert np.isfinite(card.thresholds["anomaly"])
