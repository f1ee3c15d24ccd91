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

from zeekml.eval.lm_eval import Unigram
from zeekml.eval.metrics import roc_auc
from zeekml.models.card import load_card
from zeekml.models.lm_scorer import LmScorer
from zeekml.models.registry import ScorerOptions
from zeekml.records import schema
from zeekml.records.labels import binary_target
from zeekml.train import flow_lm as F
from zeekml.train.lm_cli import load_streams, train_and_export


def split_experiment(path: str, frac: float, cfg: F.LmConfig) -> dict[str, object]:
    tables, files = load_streams([path], drop_malicious=False)
    full = schema.concat(tables)
    y = binary_target(full)
    k = int(len(full) * frac)
    head = full.iloc[:k]
    head = head[y[:k] != 1].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "split.onnx"
        train_and_export([head], files, cfg, out, command="tools/lm_experiments.py", drop_malicious=True)
        card = load_card(out)
        scorer = LmScorer(card, ScorerOptions(threads=cfg.threads))
        words, parts, _, _ = scorer.words(full)
        nll = scorer.infer(words, parts)[0].astype(np.float64)
        uni = Unigram(card, scorer.tokenizer.spec.vocab_size, scorer.tokenizer.radices)
        su = uni.score(words, parts)
        thr, uthr = scorer.threshold, uni.threshold
        val = card.data["metrics"]["validation"]
    s, su, yt = nll[k:], su[k:], y[k:]
    neg = (yt == 0) if (yt == 0).any() else (yt <= 0)
    out_d: dict[str, object] = {
        "input": path,
        "train_rows": int(len(head)),
        "test_rows": int(len(yt)),
        "test_negatives": int(neg.sum()),
        "negatives_are": "benign-labeled flows" if (yt == 0).any() else "all flows (unlabeled)",
        "quantile": cfg.quantile,
        "fpr": float((s[neg] > thr).mean()),
        "unigram_fpr": float((su[neg] > uthr).mean()),
        "test_mean_nll": float(s[neg].mean()),
        "unigram_test_mean_nll": float(su[neg].mean()),
        "validation_mean_nll": val["lm_mean_nll"],
        "unigram_validation_mean_nll": val["unigram_mean_nll"],
    }
    if (yt == 1).any():
        out_d["auc"] = roc_auc(yt, s)
        out_d["unigram_auc"] = roc_auc(yt, su)
        out_d["recall"] = float((s[yt == 1] > thr).mean())
    return out_d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--frac", type=float, default=0.7, help="training share of each stream")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--context", type=int, default=F.LmConfig.context)
    ap.add_argument("--quantile", type=float, default=F.LmConfig.quantile)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = F.LmConfig(context=args.context, epochs=args.epochs, quantile=args.quantile,
                     threads=args.threads)
    for path in args.data:
        print(json.dumps(split_experiment(path, args.frac, cfg)), flush=True)


if __name__ == "__main__":
    main()
