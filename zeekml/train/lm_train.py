"""Fit, calibrate, export and document one flow language model.

Shared by ``zeekml train lm`` (one network's captures, or a labeled corpus with its
leave-one-capture-out evaluation) and the LOCO driver (:mod:`zeekml.train.lm_loco`),
so every fold model is trained, exported and scored exactly as the shipped one.

Thresholds with support (:func:`support_threshold`): the threshold is the score that
a target share ``fpr`` of benign flows reaches, never a quantile resting on a handful
of points: when fewer than ``min_above`` benign flows would lie above it, the tail of
the benign scores is modelled from the ``min_above`` highest ones instead (and the
card says which rule was used, on how many flows).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeekml.errors import UsageError
from zeekml.features import tokens as tk
from zeekml.models.card import write_card
from zeekml.models.lm_score import ScoreRule
from zeekml.policy.notice import crosses
from zeekml.train import flow_lm as F
from zeekml.train.export import check_parity, export_onnx
from zeekml.train.lm_data import LmStream, encode, fit_tokenizer, training_rows
from zeekml.windows.conversation import KEY_NAME

log = logging.getLogger(__name__)

PARITY_ROWS = 2048


@dataclass
class FittedLm:
    """A trained model with everything its card needs."""

    spec: tk.TokenizerSpec
    result: F.TrainResult
    log_marg: list[np.ndarray]
    log_z: float
    uni: np.ndarray
    val: tuple[np.ndarray, np.ndarray]
    train_windows: int
    unk_share: float
    streams: list[str]
    seconds: float

    def val_terms(self) -> dict[str, np.ndarray]:
        """``nll``, ``nll0`` and ``unigram`` of every validation window (torch)."""
        nll, nll0 = F.predict(self.result.model, *self.val)
        uni = F.unigram_nll(self.val[0], self.val[1], self.uni, self.log_marg, self.log_z)
        return {"nll": nll, "nll0": nll0, "unigram": uni}


def fit_lm(streams: Sequence[LmStream], cfg: F.LmConfig) -> FittedLm:
    """Tokenizer, unigram tables and the LSTM from the streams' trainable rows."""
    t0 = time.perf_counter()
    parts, names = [], []
    for s in streams:
        f, sampled = training_rows(s, cfg.max_rows_per_stream)
        if len(f):
            parts.append((f, sampled))
            names.append(s.name)
    if sum(len(f) for f, _ in parts) < 2:
        raise UsageError("fewer than 2 flows to train on: give more data")
    spec, wins = fit_tokenizer(parts, cfg.context, cfg.idle_timeout, cfg.val_fraction, cfg.fit)
    tok = tk.Tokenizer(spec)
    train = encode(tok, wins, "train")
    val = encode(tok, wins, "val")
    if len(val[0]) == 0:  # tiny inputs: calibrate on the training rows themselves
        val = train
    log_marg = F.marginals(train[1][:, -1], spec.radices)
    log_z = F.unk_log_z(spec, log_marg)
    uni = F.unigram_log_probs(train[0][:, -1], spec.vocab_size)
    torch.manual_seed(cfg.seed)
    model = F.FlowLM(spec.vocab_size, spec.radices, embed=cfg.embed, hidden=cfg.hidden)
    unk = float((train[0][:, -1] == tk.UNK).mean())
    log.info("training on %d windows (%d validation) of %d streams, vocabulary %d words, "
             "<unk> share %.3f", len(train[0]), len(val[0]), len(parts), spec.vocab_size, unk)
    res = F.train_model(model, train, val, cfg)
    return FittedLm(spec, res, log_marg, log_z, uni, val, len(train[0]), unk, names,
                    time.perf_counter() - t0)


def support_threshold(negatives: np.ndarray, fpr: float, min_above: int) -> tuple[float, dict[str, Any]]:
    """The score that a share ``fpr`` of benign flows (``negatives``) reaches, supported by
    at least ``min_above`` of them (see the module docstring).

    With ``fpr * n >= min_above`` benign flows this is the empirical quantile: the
    ``ceil(fpr * n)``-th highest benign score (the runtime flags ``score >=
    threshold``). With fewer, a quantile would rest on a handful of points, so the
    tail is modelled instead: the ``K = min_above`` highest scores (all of them if
    fewer) are fitted with an exponential tail (peaks over threshold: ``u`` the K-th
    highest score, ``beta`` the mean excess of the K over ``u``) and the threshold is
    where that tail reaches ``fpr``: ``u + beta * ln(K / (n * fpr))``.
    """
    v = np.sort(np.asarray(negatives, dtype=np.float64)[np.isfinite(negatives)])[::-1]
    n = len(v)
    if n == 0:
        raise UsageError("no benign flows to calibrate the threshold on")
    want = fpr * n
    info: dict[str, Any] = {"target_fpr": fpr, "benign_flows": int(n), "min_flows_above": int(min_above)}
    if want >= min_above:
        thr = float(v[int(math.ceil(want)) - 1])
        info["method"] = "empirical quantile"
    else:
        k = min(n, int(min_above))
        u = float(v[k - 1])
        beta = float(np.mean(v[:k] - u)) if k > 1 else 0.0
        thr = u + beta * math.log(k / max(want, 1e-12))
        info.update({"method": "exponential tail fitted to the highest benign scores",
                     "tail_flows": k, "tail_start": u, "tail_mean_excess": beta})
    above = int(crosses(v, thr).sum())
    info.update({"flows_at_or_above": above, "fpr_on_calibration": above / n})
    return float(thr), info


def export_lm(fitted: FittedLm, cfg: F.LmConfig, out: Path, *, rule: ScoreRule, threshold: float,
              threshold_rule: dict[str, Any], unigram_threshold: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ONNX (parity-checked on validation windows) and write the card."""
    res, spec = fitted.result, fitted.spec
    out.parent.mkdir(parents=True, exist_ok=True)
    sample = slice(0, min(PARITY_ROWS, len(fitted.val[0])))
    inputs = {"words": fitted.val[0][sample], "parts": fitted.val[1][sample]}
    export_onnx(res.model, inputs, list(F.OUTPUT_NAMES), out)
    parity = check_parity(res.model, out, inputs, threads=cfg.threads)
    vt = fitted.val_terms()
    val_score = rule.combine(vt["nll"], vt["nll0"], vt["unigram"])
    n_params = int(sum(p.numel() for p in res.model.parameters()))
    card: dict[str, Any] = {
        "name": out.name.removesuffix(".onnx"),
        "kind": "flow_lm",
        "description": describe(rule),
        "thresholds": {"anomaly": threshold},
        "threshold_rule": threshold_rule,
        "score": score_entry(rule, cfg.context),
        "context": cfg.context,
        "conversation": {
            "key": KEY_NAME,
            "description": "unordered pair {orig_h, resp_h}; ports and direction are not "
            "part of the key (direction is the word's 'dir' component)",
            "idle_timeout": cfg.idle_timeout,
        },
        "inputs": {
            "words": ["batch", cfg.context + 1],
            "parts": ["batch", cfg.context + 1, len(spec.components)],
        },
        "outputs": {
            "nll": "negative log-likelihood of the last word given the first T (nats)",
            "nll0": "negative log-likelihood of the last word given no context (nats)",
            "alt": "component codes of the most probable word (greedy over components)",
            "alt_p": "its probability",
        },
        "tokenizer": spec.to_json(),
        "backoff": {
            "log_marginals": [m.round(6).tolist() for m in fitted.log_marg],
            "log_z": fitted.log_z,
            "rule": "unigram: an <unk> word scores -log P(<unk>) - (sum of the log "
            "training marginals of its components - log_z), log_z renormalizing over the "
            "words outside the vocabulary",
        },
        "unigram": {
            "log_prob": np.round(fitted.uni, 6).tolist(),
            "threshold": unigram_threshold,
            "rule": "baseline score = -log training frequency of the word (add-0.5), "
            "<unk> words with the same back-off; threshold calibrated like the model's",
        },
        "model": {
            "embed": cfg.embed,
            "hidden": cfg.hidden,
            "parameters": n_params,
            "vocab_size": spec.vocab_size,
        },
        "training": {
            "streams": fitted.streams,
            "train_windows": int(fitted.train_windows),
            "validation_windows": int(len(fitted.val[0])),
            "unique_train_windows": res.unique_train,
            "unique_validation_windows": res.unique_val,
            "unk_share_train": fitted.unk_share,
            "max_epochs": cfg.max_epochs,
            "patience": cfg.patience,
            "steps_per_epoch": res.steps_per_epoch,
            "epochs_run": res.epochs,
            "best_epoch": res.best_epoch,
            "stopped_on_validation": res.stopped_early,
            "history": res.history,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "blank_share": cfg.blank_share,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "max_rows_per_stream": cfg.max_rows_per_stream,
            "torch": torch.__version__,
            "fit_options": dict(vars(cfg.fit)),
            "seconds": round(fitted.seconds, 2),
            "training_seconds": round(res.seconds, 2),
        },
        "metrics": {
            "validation": {
                "flows": int(len(fitted.val[0])),
                "lm_mean_nll": float(vt["nll"].mean()),
                "lm_mean_nll0": float(vt["nll0"].mean()),
                "unigram_mean_nll": float(vt["unigram"].mean()),
                "mean_score": float(val_score.mean()),
                "lm_perplexity": float(np.exp(vt["nll"].mean())),
                "unigram_perplexity": float(np.exp(vt["unigram"].mean())),
                "lm_beats_unigram": bool(vt["nll"].mean() < vt["unigram"].mean()),
            },
            "parity_max_abs_diff": parity,
        },
        "limitations": [
            "Unsupervised: it flags what is unusual for the traffic it was trained on, "
            "not what is malicious; retrain it on the network it watches.",
            "The first flow of a conversation is scored with no context, so one-off "
            "flows (most scanning probes) are judged by their word alone.",
        ],
    }
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(card.get(k), dict):
                card[k] = {**card[k], **v}
            else:
                card[k] = v
    write_card(out, card)
    return card


def describe(rule: ScoreRule) -> str:
    """The card's one-line description of the model under ``rule``."""
    return ("LSTM language model over conversations (flows between one pair of hosts); "
            f"score = {_rule_text(rule)} (nats), see 'score'")


def score_entry(rule: ScoreRule, context: int) -> dict[str, Any]:
    """The card's ``score`` object: the rule's weights and what each term is."""
    return {
        "weights": rule.to_json(),
        "combine": rule.how,
        "rule": f"score = {rule.how} of weight x term; nll = -log P(word | the previous "
        f"{context} words of its conversation), nll0 = -log P(word | no context) "
        "(both from the graph), unigram = the baseline below",
    }


def _rule_text(rule: ScoreRule) -> str:
    parts = [f"{w:g} x {name}" for name, w in rule.to_json().items() if w]
    return f"max({', '.join(parts)})" if rule.how == "max" else " + ".join(parts)
