"""The flow LM's score rule (sum or max of weighted terms) and the LOCO fold selection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

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


def _terms(rng: np.random.Generator) -> pd.DataFrame:
    """A small LOCO terms file: two labeled captures, malicious flows more surprising."""
    parts = []
    for cap, n in (("cap-a", 400), ("cap-b", 300)):
        mal = rng.random(n) < 0.3
        nll, nll0, uni = (rng.exponential(3.0, n) + np.where(mal, 6.0, 0.0) for _ in range(3))
        parts.append(pd.DataFrame({
            "capture": cap, "row": np.arange(n), "uid": [f"C{cap}{i}" for i in range(n)],
            "ts": np.arange(n, dtype=float) * 7.0, "orig_h": "10.0.0.1", "orig_p": 1000 + np.arange(n) % 50,
            "resp_h": [f"10.0.1.{i % 9}" for i in range(n)], "resp_p": 80, "proto": "tcp",
            "binary": mal.astype(np.int8), "y": mal.astype(np.int64), "fold": cap,
            "negative": ~mal, "labeled": True, "nll": nll, "nll0": nll0, "unigram": uni}))
    return pd.concat(parts, ignore_index=True)


def test_rescore_applies_a_rule_to_an_existing_loco_run(tmp_path: Path) -> None:
    """`train lm --rescore` rewrites the card's rule, threshold and LOCO figures from the
    terms file alone (no training), and the runtime then applies that rule."""
    pytest.importorskip("torch")
    import shutil

    from zeekml.cli.main import main
    from zeekml.models.card import load_card
    from zeekml.models.registry import resolve_model
    from zeekml.train.lm_loco import apply_rule
    from zeekml.train.lm_train import support_threshold

    src = resolve_model("flow_lm")
    model = tmp_path / "m.onnx"
    shutil.copy(src, model)
    shutil.copy(src.with_suffix(".card.json"), tmp_path / "m.card.json")
    terms = tmp_path / "m.loco.terms.parquet"
    frame = _terms(np.random.default_rng(1))
    frame.to_parquet(terms, index=False)
    oof = tmp_path / "m.loco.parquet"
    before = load_card(model).data["metrics"]["loco"]["regenerate"]
    args = ["train", "lm", "--rescore", str(terms), "--out", str(model), "--loco", str(oof)]
    assert main([*args, "--score-weights", "nll=1,unigram=2"]) == 0
    card = load_card(model)  # validated: the graph's digest still matches
    assert card.data["score"]["weights"] == {"nll": 1.0, "nll0": 0.0, "unigram": 2.0}
    from zeekml.train import flow_lm as F

    cfg = F.LmConfig()
    want = apply_rule(frame, parse_weights("nll=1,unigram=2"), cfg)
    neg = want["negative"].to_numpy(dtype=bool)
    thr, _ = support_threshold(want["score"].to_numpy()[neg], cfg.fpr, cfg.min_flows_above)
    assert card.thresholds["anomaly"] == pytest.approx(thr)
    loco = card.data["metrics"]["loco"]
    assert {c["capture"] for c in loco["captures"]} == {"cap-a", "cap-b"}
    assert loco["regenerate"].startswith(before.split(" && ")[0]) and "--rescore" in loco["regenerate"]
    written = pd.read_parquet(oof)
    assert np.allclose(written["score"], 1.0 * frame["nll"] + 2.0 * frame["unigram"])
    # rescoring again with another rule: the regenerate line keeps one training command
    assert main([*args, "--score-weights", "nll0=1"]) == 0
    again = load_card(model).data
    assert again["score"]["weights"]["nll0"] == 1.0 and again["thresholds"]["anomaly"] != card.thresholds["anomaly"]
    assert again["metrics"]["loco"]["regenerate"].count("--rescore") == 1
    # nothing to train and no LOCO file named: refused
    assert main(["train", "lm", "--rescore", str(terms), "--out", str(model)]) != 0
    bad = tmp_path / "bad.parquet"
    frame.drop(columns=["nll0"]).to_parquet(bad, index=False)
    assert main(["train", "lm", "--rescore", str(bad), "--out", str(model), "--loco", str(oof)]) != 0
    frame.assign(nll=np.where(frame.index == 3, np.nan, frame["nll"])).to_parquet(bad, index=False)
    before_bad = load_card(model).data
    assert main(["train", "lm", "--rescore", str(bad), "--out", str(model), "--loco", str(oof)]) != 0
    assert load_card(model).data == before_bad  # a refused terms file leaves the card alone


def test_loco_report_says_where_the_lm_is_below_the_unigram(tmp_path: Path) -> None:
    """`tools/lm_loco_report.py --bootstrap`: per capture, the AUC difference with a
    host-pair interval; a capture where the model's terms carry the signal is "above",
    one where only the unigram does is "below"."""
    rng = np.random.default_rng(4)
    parts = []
    for cap, lm_gap, uni_gap in (("lm-wins", 5.0, 0.0), ("uni-wins", 0.0, 5.0)):
        n = 600
        mal = rng.random(n) < 0.3
        parts.append(pd.DataFrame({
            "capture": cap, "row": np.arange(n), "uid": [f"C{cap}{i}" for i in range(n)],
            "ts": np.arange(n, dtype=float), "orig_h": [f"10.0.0.{i % 7}" for i in range(n)],
            "orig_p": 1000, "resp_h": [f"10.0.1.{i % 53}" for i in range(n)], "resp_p": 80,
            "proto": "tcp", "binary": mal.astype(np.int8), "y": mal.astype(np.int64),
            "fold": cap, "negative": ~mal, "labeled": True,
            "nll": rng.exponential(2.0, n) + np.where(mal, lm_gap, 0.0),
            "nll0": rng.exponential(2.0, n),
            "unigram": rng.exponential(2.0, n) + np.where(mal, uni_gap, 0.0)}))
    terms = tmp_path / "t.terms.parquet"
    pd.concat(parts, ignore_index=True).to_parquet(terms, index=False)
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "lm_loco_report.py"), str(terms),
         "--weights", "nll=1", "--bootstrap", "200", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "below the unigram beyond the interval on 1 captures" in run.stdout
    got = {r["capture"]: r for r in json.loads(out.read_text())[0]["auc_intervals"]}
    assert got["lm-wins"]["verdict"] == "above" and got["uni-wins"]["verdict"] == "below"
    for r in got.values():
        assert r["low"] <= r["auc_difference"] <= r["high"]
        assert r["pairs"] > 50  # host pairs, the resampled unit
