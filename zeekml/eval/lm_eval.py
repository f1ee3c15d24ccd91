"""``zeekml eval`` for a flow language model: per flow, per conversation, vs a unigram.

The LM is unsupervised, so its evaluation is binary: malicious (positive) against
benign flows; Background/Unknown/unlabeled flows are scored (they are context for the
flows after them) but excluded from every metric and counted in ``excluded``.

Reported in one JSON object (keys shared with the AMF-LSTM evaluation where they apply):

``binary``        precision, recall, F1 and false-positive rate of ``score >= threshold``
                  (the card's threshold, the runtime's rule), and ROC AUC of the
                  per-flow score (the card's score rule)
``conversation``  ROC AUC of the per-conversation score (mean score of the flows of
                  one host pair in one input); a conversation is malicious if any of its
                  labeled flows is, benign if it has benign flows and no malicious one
``unigram``       the same metrics for the baseline in the same run: score = negative
                  log frequency of the word in training (with the same ``<unk>``
                  component back-off), threshold = the same quantile of its own
                  training scores. ``sequence_gain`` says whether the LM beat it.
``recall_at_same_fpr``  both detectors' recall when each flags the same share of
                  the benign flows (the unigram's false-positive rate at its own
                  threshold, or 1% if that is 0): the fair comparison of two scores
``per_input``     the same figures for each ``--data`` input separately

Each ``--data`` input is one stream: conversation state starts empty at its start and
runs through its files in order, as ``zeekml score`` would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.eval.metrics import binary_report, recall_at_fpr, roc_auc
from zeekml.models.card import ModelCard
from zeekml.models.lm_score import Unigram
from zeekml.models.lm_scorer import LmScorer
from zeekml.models.registry import ScorerOptions
from zeekml.policy.notice import crosses
from zeekml.records.labels import binary_target
from zeekml.sources.open import expand_inputs, pair_batches, read_flows
from zeekml.sources.options import ReadOptions
from zeekml.windows.conversation import conversation_keys


def _conversation_auc(conv: np.ndarray, y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """AUC of mean score per conversation (label: any malicious -> 1, else any benign -> 0)."""
    if len(conv) == 0:
        return {"auc": None, "conversations": 0, "malicious": 0, "benign": 0}
    codes, _ = pd.factorize(conv)
    n = codes.max() + 1
    total = np.bincount(codes, weights=score, minlength=n)
    count = np.bincount(codes, minlength=n)
    mal = np.bincount(codes, weights=(y == 1).astype(float), minlength=n) > 0
    ben = np.bincount(codes, weights=(y == 0).astype(float), minlength=n) > 0
    label = np.where(mal, 1, np.where(ben, 0, -1))
    mean = total / np.maximum(count, 1)
    return {
        "auc": roc_auc(label, mean),
        "conversations": int((label >= 0).sum()),
        "malicious": int((label == 1).sum()),
        "benign": int((label == 0).sum()),
    }


def _summary(y: np.ndarray, score: np.ndarray, thr: float, conv: np.ndarray) -> dict[str, Any]:
    rep = binary_report(y, crosses(score, thr), score)
    rep["threshold"] = thr
    rep["mean_score_benign"] = float(score[y == 0].mean()) if (y == 0).any() else None
    rep["mean_score_malicious"] = float(score[y == 1].mean()) if (y == 1).any() else None
    return {"binary": rep, "conversation": _conversation_auc(conv, y, score)}


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _better(a: float | None, b: float | None, higher: bool = True) -> bool | None:
    if a is None or b is None:
        return None
    return bool(a > b) if higher else bool(a < b)


def evaluate(card: ModelCard, paths: list[str], *, threads: int = defaults.THREADS,
             read: ReadOptions | None = None) -> dict[str, Any]:
    """Score every input with the LM and the unigram baseline; return the metrics dict.

    ``read``: how inputs are read (``--tz``, NetFlow pairing); the defaults otherwise.
    """
    read = read or ReadOptions()
    ys, lms, unis, convs, per_input = [], [], [], [], []
    n_rows = 0
    files_seen: list[str] = []
    for idx, spec in enumerate(paths):
        scorer = LmScorer(card, ScorerOptions(threads=threads))
        uni = Unigram(card, scorer.tokenizer.spec.vocab_size, scorer.tokenizer.radices)
        y_i, lm_i, uni_i, conv_i = [], [], [], []
        files = expand_inputs([spec])
        files_seen.extend(files)
        batches = (b for f in files for b in read_flows(f, options=read))
        for batch in pair_batches(batches, read):  # one stream per input spec
            t, _, _, _ = scorer.flow_terms(batch)
            y_i.append(binary_target(batch))
            lm_i.append(scorer.rule.combine(t["nll"], t["nll0"], t["unigram"]))
            uni_i.append(t["unigram"])
            conv_i.append(np.char.add(f"{idx}:", conversation_keys(batch).astype(str)))
        y, s, su = _cat(y_i, np.int8), _cat(lm_i, np.float64), _cat(uni_i, np.float64)
        conv = _cat(conv_i, str)
        n_rows += len(y)
        lm_sum = _summary(y, s, scorer.threshold, conv)
        uni_sum = _summary(y, su, uni.threshold, conv)
        per_input.append({
            "input": str(spec),
            "rows": int(len(y)),
            "excluded": int((y < 0).sum()),
            "auc": lm_sum["binary"]["auc"],
            "fpr": lm_sum["binary"]["fpr"],
            "recall": lm_sum["binary"]["recall"],
            "conversation_auc": lm_sum["conversation"]["auc"],
            "unigram_auc": uni_sum["binary"]["auc"],
            "unigram_fpr": uni_sum["binary"]["fpr"],
            "unigram_recall": uni_sum["binary"]["recall"],
        })
        ys.append(y)
        lms.append(s)
        unis.append(su)
        convs.append(conv)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int8)
    s = np.concatenate(lms) if lms else np.zeros(0)
    su = np.concatenate(unis) if unis else np.zeros(0)
    conv = np.concatenate(convs) if convs else np.zeros(0, dtype=str)
    thr = float(card.threshold_for("anomaly"))
    lm_sum = _summary(y, s, thr, conv)
    uni_thr = float(card.data["unigram"]["threshold"])
    uni_sum = _summary(y, su, uni_thr, conv)
    gain = {
        "auc": _better(lm_sum["binary"]["auc"], uni_sum["binary"]["auc"]),
        "conversation_auc": _better(lm_sum["conversation"]["auc"], uni_sum["conversation"]["auc"]),
        "fpr": _better(lm_sum["binary"]["fpr"], uni_sum["binary"]["fpr"], higher=False),
        "mean_score_benign": _better(
            lm_sum["binary"]["mean_score_benign"], uni_sum["binary"]["mean_score_benign"], higher=False
        ),
    }
    same = recall_at_same_fpr(y, s, su, uni_sum["binary"]["fpr"])
    gain["recall_at_same_fpr"] = _better(same["lm"], same["unigram"])
    return {
        "model": card.name,
        "kind": card.kind,
        "onnx": card.graph().name,
        "inputs": [str(p) for p in paths],
        "files": len(files_seen),
        "rows": int(len(y)),
        "benign": int((y == 0).sum()),
        "malicious": int((y == 1).sum()),
        "excluded": int((y < 0).sum()),
        "threshold": thr,
        "binary": lm_sum["binary"],
        "conversation": lm_sum["conversation"],
        "unigram": {**uni_sum, "threshold": uni_thr},
        "sequence_gain": gain,
        "recall_at_same_fpr": same,
        "per_input": per_input,
    }


def recall_at_same_fpr(y: np.ndarray, lm: np.ndarray, uni: np.ndarray, uni_fpr: float | None
                       ) -> dict[str, Any]:
    """Recall of both scores with thresholds that flag the same share of benign flows."""
    fpr = uni_fpr if uni_fpr else 0.01
    return {"fpr": fpr, "lm": recall_at_fpr(y, lm, fpr), "unigram": recall_at_fpr(y, uni, fpr)}


def _f(v: Any, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def format_text(result: dict[str, Any]) -> str:
    """The evaluation as a short text report (LM and unigram side by side)."""
    b, u = result["binary"], result["unigram"]["binary"]
    c, uc = result["conversation"], result["unigram"]["conversation"]
    lines = [
        f"model {result['model']} ({result['kind']}): {result['rows']} flows from "
        f"{result['files']} files; benign {result['benign']}, malicious {result['malicious']}, "
        f"excluded {result['excluded']} (Background/Unknown/unlabeled)",
        "",
        f"{'':24}{'flow LM':>12}{'unigram':>12}",
        f"{'threshold (nats)':24}{_f(b['threshold'], '.3f'):>12}{_f(u['threshold'], '.3f'):>12}",
        f"{'ROC AUC per flow':24}{_f(b['auc']):>12}{_f(u['auc']):>12}",
        f"{'ROC AUC per convers.':24}{_f(c['auc']):>12}{_f(uc['auc']):>12}",
        f"{'precision':24}{_f(b['precision']):>12}{_f(u['precision']):>12}",
        f"{'recall':24}{_f(b['recall']):>12}{_f(u['recall']):>12}",
        f"{'F1':24}{_f(b['f1']):>12}{_f(u['f1']):>12}",
        f"{'false-positive rate':24}{_f(b['fpr']):>12}{_f(u['fpr']):>12}",
        f"{'mean score benign':24}{_f(b['mean_score_benign'], '.3f'):>12}"
        f"{_f(u['mean_score_benign'], '.3f'):>12}",
        f"{'mean score malicious':24}{_f(b['mean_score_malicious'], '.3f'):>12}"
        f"{_f(u['mean_score_malicious'], '.3f'):>12}",
        "",
        f"conversations: {c['conversations']} labeled ({c['malicious']} malicious, {c['benign']} benign)",
    ]
    same = result.get("recall_at_same_fpr") or {}
    if same.get("lm") is not None:
        lines.append(
            f"recall at the same false-positive rate ({same['fpr']:.4f}): flow LM "
            f"{same['lm']:.4f}, unigram {same['unigram']:.4f}"
        )
    gain = result["sequence_gain"]
    verdict = {True: "yes", False: "NO", None: "n/a"}
    lines.append(
        "sequence model beats unigram: "
        + ", ".join(f"{k} {verdict[v]}" for k, v in gain.items())
    )
    if len(result["per_input"]) > 1:
        lines += ["", f"{'input':50}{'rows':>8}{'AUC':>8}{'FPR':>8}{'uni AUC':>9}{'uni FPR':>9}"]
        for p in result["per_input"]:
            name = p["input"] if len(p["input"]) <= 48 else "..." + p["input"][-45:]
            lines.append(
                f"{name:50}{p['rows']:>8}{_f(p['auc'], '.3f'):>8}{_f(p['fpr'], '.3f'):>8}"
                f"{_f(p['unigram_auc'], '.3f'):>9}{_f(p['unigram_fpr'], '.3f'):>9}"
            )
    return "\n".join(lines) + "\n"
