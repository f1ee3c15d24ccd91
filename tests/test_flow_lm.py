"""Flow language model end to end on real captures: train, export, parity, score, eval.

One short real training run (the 008 day of the CTU-Normal experiment, malicious flows
left out, a few epochs) is shared by the tests of this module; it is scored on the
other day (010), which it never saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, need, need_module
from zeekml.cli.main import main
from zeekml.models.card import load_card
from zeekml.models.registry import ScorerOptions, load_scorer

TRAIN = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
HELD_OUT = DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_module("torch")
    need(TRAIN.is_file() and HELD_OUT.is_file(), "the CTU-Normal captures 008 and 010")
    out = tmp_path_factory.mktemp("lm") / "lm008.onnx"
    rc = main(["-q", "train", "lm", "--data", str(TRAIN), "--out", str(out), "--epochs", "6",
               "--context", "8", "--hidden", "32", "--drop-malicious", "--patience", "2"])
    assert rc == 0
    return out


def test_card_describes_the_model(model: Path) -> None:
    card = load_card(model)
    d = card.data
    assert card.kind == "flow_lm" and d["context"] == 8
    assert d["conversation"]["key"] == "pair"
    assert d["tokenizer"]["words"] and d["tokenizer"]["components"][0]["name"] == "dir"
    assert d["training"]["files"][0]["sha256"] and d["training"]["files"][0]["malicious_dropped"] == 4201
    assert d["training"]["files"][0]["rows_used"] == 1462
    assert d["training"]["command"].startswith("zeekml ")
    assert d["metrics"]["parity_max_abs_diff"] <= 1e-4
    v = d["metrics"]["validation"]
    assert {"lm_mean_nll", "unigram_mean_nll", "lm_beats_unigram"} <= set(v)
    # training ran at most the cap and kept the best validation epoch
    t = d["training"]
    assert 1 <= t["best_epoch"] <= t["epochs_run"] <= 6
    assert min(h["val_nll"] for h in t["history"]) == pytest.approx(
        t["history"][t["best_epoch"] - 1]["val_nll"])
    # threshold: a false-alarm rate on the validation flows, with its support stated
    rule = d["threshold_rule"]
    assert d["thresholds"]["anomaly"] > 0 and rule["target_fpr"] == 0.001
    assert rule["benign_flows"] == v["flows"] and rule["min_flows_above"] == 50
    assert rule["method"].startswith("exponential tail")  # 219 flows: 0.1% is not 50 of them
    assert d["score"]["weights"]["nll"] >= 0 and "unigram" in d["score"]["weights"]
    assert d["limitations"]


def test_scores_an_unseen_day_well_above_chance(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["eval", "--model", str(model), "--data", str(HELD_OUT), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["kind"] == "flow_lm"
    assert r["malicious"] == 3373 and r["benign"] == 1937 and r["excluded"] == 37
    assert r["binary"]["auc"] > 0.9  # clearly above 0.5 on a day it never saw
    assert r["conversation"]["auc"] > 0.9
    # the unigram baseline is measured in the same run, with the same keys
    assert set(r["unigram"]["binary"]) >= {"auc", "precision", "recall", "f1", "fpr"}
    assert r["unigram"]["binary"]["auc"] is not None
    assert set(r["sequence_gain"]) >= {"auc", "conversation_auc", "fpr"}
    for k in ("precision", "recall", "f1", "fpr", "threshold"):
        assert r["binary"][k] is not None


def test_eval_text_shows_both_models(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["eval", "--model", str(model), "--data", str(HELD_OUT)]) == 0
    out = capsys.readouterr().out
    assert "flow LM" in out and "unigram" in out and "sequence model beats unigram" in out


def test_export_parity_on_real_windows(model: Path) -> None:
    """A fresh FlowLM exported and run by torch and onnxruntime on real held-out windows.

    (The trained model's own parity is checked at export and recorded in its card.)
    """
    need_module("torch")
    import torch

    from zeekml.features import tokens as tk
    from zeekml.sources.open import read_table
    from zeekml.train import flow_lm as F
    from zeekml.train.export import check_parity

    card = load_card(model)
    scorer = load_scorer(str(model))
    words, parts, _, _ = scorer.words(read_table(HELD_OUT).iloc[:1500])
    spec = tk.TokenizerSpec.from_json(card.data["tokenizer"])
    torch.manual_seed(0)
    m = F.FlowLM(spec.vocab_size, spec.radices, embed=8, hidden=8)
    path = model.with_name("parity.onnx")
    from zeekml.train.export import export_onnx

    export_onnx(m, {"words": words[:10], "parts": parts[:10]}, list(F.OUTPUT_NAMES), path)
    assert check_parity(m, path, {"words": words, "parts": parts}) <= 1e-4


def test_runtime_needs_no_torch(model: Path) -> None:
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from zeekml.models.registry import load_scorer\n"
        "from zeekml.sources.open import read_table\n"
        f"s = load_scorer({str(model)!r})\n"
        f"b = s.score(read_table({str(HELD_OUT)!r}))\n"
        "assert 'torch' not in sys.modules\n"
        "print(len(b), float(b.score.mean()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    n, mean = r.stdout.split()
    assert int(n) == 5347 and float(mean) > 0


def test_batches_and_state_give_the_same_scores(model: Path, tmp_path: Path) -> None:
    from zeekml.sources.open import read_table

    flows = read_table(HELD_OUT)
    def context(b):  # a Deferred column, taken before the scorer's next batch
        return b.extra["context"].take(np.arange(len(b)))

    whole = load_scorer(str(model)).score(flows)
    whole_ctx = context(whole)
    s1 = load_scorer(str(model), ScorerOptions(batch_size=100))
    parts, ctxs = [], []
    for i in range(0, 2800, 700):
        parts.append(s1.score(flows.iloc[i : i + 700].reset_index(drop=True)))
        ctxs.append(context(parts[-1]))
    # restart from saved state half way, as zeekml score --state does
    path = tmp_path / "state.npz"
    np.savez(path, **s1.state_dict())
    s2 = load_scorer(str(model))
    with np.load(path, allow_pickle=False) as st:
        s2.load_state_dict({k: st[k] for k in st.files})
    parts.append(s2.score(flows.iloc[2800:].reset_index(drop=True)))
    ctxs.append(context(parts[-1]))
    got = np.concatenate([p.score for p in parts])
    np.testing.assert_allclose(got, whole.score, rtol=0, atol=1e-4)
    ctx = np.concatenate(ctxs)
    assert [list(c) for c in ctx] == [list(c) for c in whole_ctx]


def test_score_batch_contract(model: Path) -> None:
    from zeekml.sources.open import read_table

    flows = read_table(HELD_OUT).iloc[:400].reset_index(drop=True)
    b = load_scorer(str(model)).score(flows)
    assert len(b) == 400 and b.model == "lm008"
    assert np.isfinite(b.score).all() and (b.score >= 0).all()
    # the score is the card's rule over the graph's two NLLs and the unigram
    scorer = load_scorer(str(model))
    words, parts, _, _ = scorer.words(flows)
    t, _, _ = scorer.terms(words, parts)
    np.testing.assert_allclose(b.score, scorer.rule.combine(t["nll"], t["nll0"], t["unigram"]))
    assert (t["nll0"] >= 0).all() and np.isfinite(t["unigram"]).all()
    assert set(b.cls) == {"anomaly"} and (b.threshold == load_card(model).thresholds["anomaly"]).all()
    assert all(isinstance(a, str) and len(a.split()) == 8 for a in b.extra["alt"])
    assert ((b.extra["alt_score"] > 0) & (b.extra["alt_score"] <= 1)).all()
    # context: previous flows of the same host pair, newest first, at most 5
    uids = flows["uid"].tolist()
    pair = [frozenset((o, r)) for o, r in zip(flows["orig_h"], flows["resp_h"], strict=True)]
    ctx = b.extra["context"].take(np.arange(len(b)))  # deferred: built for the rows asked
    for i in (50, 200, 399):
        prev = [uids[j] for j in range(i - 1, -1, -1) if pair[j] == pair[i]][:5]
        assert list(ctx[i])[: len(prev)] == prev[: len(ctx[i])]
    assert ctx[0] == []
    assert b.extra["context"].take(np.array([399, 50])).tolist() == [ctx[399], ctx[50]]


def test_small_network_training_ends_on_validation_not_worse_than_the_unigram(tmp_path: Path) -> None:
    """``zeekml train lm`` on one small network's benign traffic, default settings: it stops
    when validation stops improving (not at an epoch cap) and its validation NLL is not
    worse than word frequencies on the same flows (the issue's retraining failure)."""
    need_module("torch")
    cap = DATA / "iot23-csv" / "CTU-Honeypot-Capture-5-1-labeled.csv"
    need(cap.is_file(), "the IoT-23 honeypot capture 5-1")
    out = tmp_path / "small.onnx"
    assert main(["-q", "train", "lm", "--data", str(cap), "--out", str(out), "--hidden", "16"]) == 0
    d = load_card(out).data
    t, v = d["training"], d["metrics"]["validation"]
    assert t["stopped_on_validation"] is True and t["epochs_run"] < t["max_epochs"]
    assert t["best_epoch"] == t["epochs_run"] - t["patience"]
    assert v["lm_mean_nll"] < v["unigram_mean_nll"], v
