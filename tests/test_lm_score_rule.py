"""The flow LM's score rule (sum or max of weighted terms) and the LOCO fold selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zeekml.errors import ConfigError, ModelError
from zeekml.models.card import ModelCard
from zeekml.models.lm_score import ScoreRule
from zeekml.train.lm_data import make_stream
from zeekml.train.lm_loco import ALL_MODEL, LocoOptions, fold_plan, folds_to_run
from zeekml.train.lm_training import parse_weights


def _card(score: dict) -> ModelCard:
    return ModelCard(path=Path("x.card.json"), onnx_path=Path("x.onnx"),
                     data={"name": "x", "kind": "flow_lm", "thresholds": {"anomaly": 1.0},
                           "score": score})


def test_max_rule_takes_the_most_surprising_view() -> None:
    rng = np.random.default_rng(0)
    nll, nll0, uni = (rng.exponential(2.0, 1000) for _ in range(3))
    r = parse_weights("max:nll=1,unigram=2")
    assert r.how == "max"
    got = r.combine(nll, nll0, uni)
    assert np.array_equal(got, np.maximum(nll, 2 * uni))
    # never below either weighted term, and equal to one of them on every row
    assert np.all(got >= nll) and np.all(got >= 2 * uni)
    assert np.all((got == nll) | (got == 2 * uni))
    s = parse_weights("nll=1,unigram=2")
    assert s.how == "sum" and np.allclose(s.combine(nll, nll0, uni), nll + 2 * uni)


def test_card_rule_round_trip_and_validation() -> None:
    r = ScoreRule.from_card(_card({"weights": {"nll": 1, "unigram": 1}, "combine": "max"}))
    assert r == ScoreRule(nll=1.0, nll0=0.0, unigram=1.0, how="max")
    # cards without "combine" keep the sum they were written for
    assert ScoreRule.from_card(_card({"weights": {"nll": 1}})).how == "sum"
    with pytest.raises(ModelError, match="combine"):
        ScoreRule.from_card(_card({"weights": {"nll": 1}, "combine": "min"}))
    with pytest.raises(ConfigError):
        parse_weights("max:")


def _stream(name: str, n: int, trainable: str) -> object:
    flows = pd.DataFrame({"ts": np.arange(n, dtype=float), "uid": [f"C{i}" for i in range(n)],
                          "orig_h": "10.0.0.1", "orig_p": 1000, "resp_h": "10.0.0.2",
                          "resp_p": 80, "proto": "tcp"})
    return make_stream(name, flows, labeled=False, trainable=trainable)


def test_loco_folds_selects_folds_and_keeps_the_all_model_fold() -> None:
    streams = [_stream("big", 30, "all"), _stream("a", 5, "all"), _stream("b", 5, "all"),
               _stream("attack-only", 5, "none")]
    opts = LocoOptions(own_fold_rows=20, small_groups=2)
    plan = fold_plan(streams, opts)  # type: ignore[arg-type]
    assert plan == {"big": ["big"], "small-0": ["a"], "small-1": ["b"], ALL_MODEL: ["attack-only"]}
    assert folds_to_run(streams, opts) == list(plan)  # type: ignore[arg-type]
    some = LocoOptions(own_fold_rows=20, small_groups=2, only=("small-1",))
    assert folds_to_run(streams, some) == ["small-1", ALL_MODEL]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no fold named nope"):
        folds_to_run(streams, LocoOptions(only=("nope",)))  # type: ignore[arg-type]


def test_card_statements_say_plainly_where_the_model_loses() -> None:
    from zeekml.train.lm_training import loco_statements

    pooled = {"lm_auc": 0.90, "unigram_auc": 0.95, "lm_recall": 0.3, "unigram_recall": 0.1}
    caps = [
        {"capture": "a", "lm_auc": 0.7, "unigram_auc": 0.9, "lm_notices_per_10k_benign": 12.0},
        {"capture": "b", "lm_auc": 0.99, "unigram_auc": 0.9, "lm_notices_per_10k_benign": 0.0},
    ]
    text = " ".join(loco_statements(pooled, caps, ["small-2"]))
    assert "does NOT match the unigram baseline in ROC AUC (0.9000 vs 0.9500)" in text
    assert "at least as good as the unigram baseline in recall at the calibrated thresholds" in text
    assert "ROC AUC below the unigram's on a." in text
    assert "goal NOT met) on: a (12)" in text and "b (" not in text
    assert "folds not run" in text and "small-2" in text
    quiet = " ".join(loco_statements(pooled, caps[1:], []))
    assert "goal met" in quiet and "not run" not in quiet
