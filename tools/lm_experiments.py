"""Per-network retraining experiments for the flow LM (the figures in onnx_models/flow_lm.md).

The normal use of the language model is to train it on the network it watches. This
tool measures that: for each ``--data`` input (one network's stream), it trains with
exactly ``zeekml train lm``'s code on the first ``--frac`` of the rows (malicious flows
left out when labeled), then scores the *whole* stream with the runtime scorer (so the
held-out part keeps its conversation context, as a live run would) and reports, on the
held-out part only: the false-positive rate at the card's threshold (negatives = benign
flows if the input is labeled, else every flow), ROC AUC when it has malicious flows,
and the unigram baseline's figures from the same run.

    python tools/lm_experiments.py --data ../shared/data/zeek/stratosphere-010-mixed/conn.log.labeled \\
        --frac 0.7 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from zeekml.eval.metrics import recall_at_fpr, roc_auc
from zeekml.models.card import load_card
from zeekml.models.lm_scorer import LmScorer
from zeekml.models.registry import ScorerOptions
from zeekml.records import schema
from zeekml.records.labels import binary_target
from zeekml.train import flow_lm as F
from zeekml.train.lm_data import make_stream
from zeekml.train.lm_train import export_lm, fit_lm
from zeekml.train.lm_training import load_streams, parse_weights, validation_thresholds


def split_experiment(path: str, frac: float, cfg: F.LmConfig, weights: str | None) -> dict[str, object]:
    (stream,) = load_streams([path], drop_malicious=False)
    full = stream.flows
    y = binary_target(full) if schema.has_labels(full) else np.full(len(full), -1)
    k = int(len(full) * frac)
    head = full.iloc[:k]
    head = head[y[:k] != 1].reset_index(drop=True)
    rule = parse_weights(weights)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "split.onnx"
        fitted = fit_lm([make_stream(path, head, labeled=False, trainable="all")], cfg)
        thr, info, uthr = validation_thresholds(fitted, rule, cfg)
        export_lm(fitted, cfg, out, rule=rule, threshold=thr, threshold_rule=info, unigram_threshold=uthr)
        card = load_card(out)
        scorer = LmScorer(card, ScorerOptions(threads=cfg.threads))
        words, parts, _, _ = scorer.words(full)
        t, _, _ = scorer.terms(words, parts)
        score = scorer.rule.combine(t["nll"], t["nll0"], t["unigram"])
        val = card.data["metrics"]["validation"]
    s, su, yt = score[k:], t["unigram"][k:], y[k:]
    neg = (yt == 0) if (yt == 0).any() else (yt <= 0)
    out_d: dict[str, object] = {
        "input": path,
        "rule": rule.to_json(),
        "train_rows": int(len(head)),
        "test_rows": int(len(yt)),
        "test_negatives": int(neg.sum()),
        "negatives_are": "benign-labeled flows" if (yt == 0).any() else "all flows (unlabeled)",
        "threshold_rule": info,
        "fpr": float((s[neg] >= thr).mean()),
        "unigram_fpr": float((su[neg] >= uthr).mean()),
        "test_mean_nll": float(t["nll"][k:][neg].mean()),
        "unigram_test_mean_nll": float(su[neg].mean()),
        "validation_mean_nll": val["lm_mean_nll"],
        "unigram_validation_mean_nll": val["unigram_mean_nll"],
        "best_epoch": card.data["training"]["best_epoch"],
        "epochs_run": card.data["training"]["epochs_run"],
    }
    if (yt == 1).any():
        yy = np.where(neg, 0, yt)
        out_d["auc"] = roc_auc(yy, s)
        out_d["unigram_auc"] = roc_auc(yy, su)
        out_d["recall"] = float((s[yt == 1] >= thr).mean())
        out_d["unigram_recall"] = float((su[yt == 1] >= uthr).mean())
        out_d["recall_at_fpr_0.01"] = recall_at_fpr(yy, s, 0.01)
        out_d["unigram_recall_at_fpr_0.01"] = recall_at_fpr(yy, su, 0.01)
    return out_d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--frac", type=float, default=0.7, help="training share of each stream")
    ap.add_argument("--epochs", type=int, default=F.LmConfig.max_epochs, help="maximum epochs")
    ap.add_argument("--context", type=int, default=F.LmConfig.context)
    ap.add_argument("--hidden", type=int, default=F.LmConfig.hidden)
    ap.add_argument("--fpr", type=float, default=F.LmConfig.fpr)
    ap.add_argument("--weights", default=None, help="score rule TERM=W,... (default: the shipped rule)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = F.LmConfig(context=args.context, max_epochs=args.epochs, fpr=args.fpr, hidden=args.hidden,
                     threads=args.threads)
    for path in args.data:
        print(json.dumps(split_experiment(path, args.frac, cfg, args.weights)), flush=True)


if __name__ == "__main__":
    main()
