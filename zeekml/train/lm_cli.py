"""``zeekml train lm``: read captures, train the flow LM, export ONNX, write its card.

Each ``--data`` input is one stream (a file, or a directory / glob read in name order,
as ``zeekml score`` reads it): conversation state runs through its files, and its
last ``val_fraction`` of rows is the validation part. Labels are ignored unless
``--drop-malicious`` is given, which uses them for one thing only: leaving flows
labeled malicious out (Background/unlabeled flows stay in). ``--eval`` inputs are
scored after export with :mod:`zeekml.eval.lm_eval` and the result is recorded in
the card's ``metrics`` (never trained on).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zeekml.errors import UsageError
from zeekml.features import tokens as tk
from zeekml.models.card import load_card, write_card
from zeekml.records import schema
from zeekml.records.labels import binary_target
from zeekml.sources.open import expand_inputs, pair_batches, read_flows
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog
from zeekml.train import flow_lm as F
from zeekml.train.export import check_parity, export_onnx, file_entry
from zeekml.windows.conversation import KEY_NAME

log = logging.getLogger(__name__)

PARITY_ROWS = 2048


def load_streams(
    specs: list[str], *, drop_malicious: bool, options: ReadOptions | None = None
) -> tuple[list[pd.DataFrame], list[dict[str, Any]]]:
    """One canonical table per input spec, plus the card's ``training.files`` entries.

    ``options``: the reading options (``--tz``, NetFlow pairing: records are paired
    within each file unless ``options.pair`` is False).
    """
    tables, files = [], []
    for spec in specs:
        parts = []
        for f in expand_inputs([spec]):
            skips = SkipLog()
            t = schema.concat(pair_batches(read_flows(f, skips=skips, options=options), options))
            entry = file_entry(f, len(t))
            if drop_malicious:
                mal = binary_target(t) == 1
                t = t[~mal].reset_index(drop=True)
                entry["malicious_dropped"] = int(mal.sum())
            entry["rows_used"] = int(len(t))
            if skips.total:
                entry["skipped_lines"] = int(skips.total)
                log.warning("%s", skips.summary())
            files.append(entry)
            parts.append(t)
        table = schema.concat(parts) if parts else schema.empty_table()
        if len(table):
            tables.append(table)
        else:
            log.warning("%s: no flows to train on", spec)
    return tables, files


def config_from_args(args: argparse.Namespace) -> F.LmConfig:
    cfg = F.LmConfig(
        context=args.context,
        epochs=args.epochs,
        seed=args.seed,
        hidden=getattr(args, "hidden", None) or F.LmConfig.hidden,
        quantile=getattr(args, "quantile", None) or F.LmConfig.quantile,
        threads=getattr(args, "threads", None) or F.LmConfig.threads,
    )
    if not 1 <= cfg.context <= 512:
        raise UsageError(f"--context must be 1..512 words, got {cfg.context}")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {cfg.epochs}")
    if not 0.5 <= cfg.quantile < 1.0:
        raise UsageError(f"--quantile must be in [0.5, 1), got {cfg.quantile}")
    return cfg


def train_and_export(
    tables: list[pd.DataFrame],
    files: list[dict[str, Any]],
    cfg: F.LmConfig,
    out: Path,
    *,
    command: str,
    drop_malicious: bool,
) -> dict[str, Any]:
    """Fit tokenizer and model, export ``out`` with parity check, write its card."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    spec, wins = F.fit_tokenizer(tables, cfg)
    tok = tk.Tokenizer(spec)
    train = F.encode(tok, wins, "train")
    val = F.encode(tok, wins, "val")
    if len(train[0]) < 2:
        raise UsageError("fewer than 2 training flows: give more data")
    if len(val[0]) == 0:  # tiny inputs: calibrate on the training rows themselves
        val = train
    log_marg = F.marginals(train[1][:, -1], spec.radices)
    log_z = F.unk_log_z(spec, log_marg)
    uni = F.unigram_log_probs(train[0][:, -1], spec.vocab_size)
    model = F.FlowLM(spec.vocab_size, spec.radices, embed=cfg.embed, hidden=cfg.hidden)
    log.info(
        "training on %d windows (%d validation), vocabulary %d words, <unk> share %.3f",
        len(train[0]), len(val[0]), spec.vocab_size, float((train[0][:, -1] == tk.UNK).mean()),
    )
    res = F.train_model(model, train, val, cfg)
    uni_val = F.unigram_nll(val[0], val[1], uni, log_marg, log_z)
    thr = float(np.quantile(res.val_nll, cfg.quantile))
    uni_thr = float(np.quantile(uni_val, cfg.quantile))

    out.parent.mkdir(parents=True, exist_ok=True)
    sample = slice(0, min(PARITY_ROWS, len(val[0])))
    inputs = {"words": val[0][sample], "parts": val[1][sample]}
    export_onnx(res.model, inputs, list(F.OUTPUT_NAMES), out)
    parity = check_parity(res.model, out, inputs, threads=cfg.threads)
    seconds = time.perf_counter() - t0

    n_params = int(sum(p.numel() for p in res.model.parameters()))
    card: dict[str, Any] = {
        "name": out.name.removesuffix(".onnx"),
        "kind": "flow_lm",
        "description": (
            "LSTM language model over conversations (flows between one pair of hosts); "
            "score = negative log-likelihood (nats) of a flow's word given the previous "
            f"{cfg.context} words of its conversation"
        ),
        "thresholds": {"anomaly": thr},
        "threshold_rule": {
            "quantile": cfg.quantile,
            "of": "per-flow scores of the validation part of the training inputs (the last "
            f"{cfg.val_fraction:.0%} of each input's rows, not trained on)",
            "expected_fpr_on_like_traffic": round(1.0 - cfg.quantile, 6),
            "validation_flows": int(len(val[0])),
        },
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
            "alt": "component codes of the most probable word (greedy over components)",
            "alt_p": "its probability",
        },
        "tokenizer": spec.to_json(),
        "backoff": {
            "log_marginals": [m.round(6).tolist() for m in log_marg],
            "log_z": log_z,
            "rule": "unigram baseline only: an <unk> word scores -log P(<unk>) - (sum of "
            "the log training marginals of its components - log_z), log_z renormalizing "
            "over the words outside the vocabulary",
        },
        "unigram": {
            "log_prob": np.round(uni, 6).tolist(),
            "threshold": uni_thr,
            "rule": "baseline score = -log training frequency of the word (add-0.5), "
            "<unk> words with the same back-off; threshold = same quantile",
        },
        "model": {
            "embed": cfg.embed,
            "hidden": cfg.hidden,
            "parameters": n_params,
            "vocab_size": spec.vocab_size,
        },
        "training": {
            "files": files,
            "inputs": len(tables),
            "drop_malicious": drop_malicious,
            "train_windows": int(len(train[0])),
            "validation_windows": int(len(val[0])),
            "unk_share_train": float((train[0][:, -1] == tk.UNK).mean()),
            "epochs": res.epochs,
            "best_epoch": res.best_epoch,
            "history": res.history,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "torch": torch.__version__,
            "fit_options": vars(cfg.fit) if hasattr(cfg.fit, "__dict__") else {},
            "seconds": round(seconds, 2),
            "training_seconds": round(res.seconds, 2),
            "command": command,
        },
        "metrics": {
            "validation": {
                "flows": int(len(val[0])),
                "lm_mean_nll": float(res.val_nll.mean()),
                "unigram_mean_nll": float(uni_val.mean()),
                "lm_perplexity": float(np.exp(res.val_nll.mean())),
                "unigram_perplexity": float(np.exp(uni_val.mean())),
                "lm_beats_unigram": bool(res.val_nll.mean() < uni_val.mean()),
            },
            "parity_max_abs_diff": parity,
        },
        "limitations": [
            "Unsupervised: it flags what is unusual for the traffic it was trained on, "
            "not what is malicious; retrain it on the network it watches.",
            "The first flow of a conversation is scored with no context, so one-off "
            "flows (most scanning probes) are judged by their word alone, as the "
            "unigram baseline would.",
            "Repeated malicious flows become predictable inside their own conversation: "
            "the second and later probes of a scanner cost fewer nats than the first.",
            "The unigram baseline scores words unseen in training (<unk>) by independent "
            "component frequencies, which overstates the surprise of unseen but "
            "coherent combinations; the LM predicts the components jointly instead.",
        ],
    }
    write_card(out, card)
    return card


def record_eval(out: Path, eval_paths: list[str], threads: int,
                tz: str | None = None) -> dict[str, Any]:
    """Evaluate the exported model on held-out inputs and store it in the card."""
    from zeekml.eval import lm_eval

    c = load_card(out)
    result = lm_eval.evaluate(c, eval_paths, argparse.Namespace(threads=threads, tz=tz))
    data = dict(c.data)
    data.pop("format", None)
    data.pop("onnx_sha256", None)
    data["metrics"] = {**data["metrics"], "heldout": result}
    data["limitations"] = [
        x for x in data.get("limitations", []) if not str(x).startswith("Measured on the held-out")
    ] + comparison_statements(result)
    write_card(out, data)
    return result


def comparison_statements(result: dict[str, Any]) -> list[str]:
    """Plain sentences for the card: where the LM does and does not beat the unigram."""
    b, u = result["binary"], result["unigram"]["binary"]
    c, uc = result["conversation"], result["unigram"]["conversation"]
    names = ", ".join("/".join(Path(p).parts[-2:]) for p in result["inputs"])
    out = []
    for label, mine, base, higher in (
        ("per-flow ROC AUC", b["auc"], u["auc"], True),
        ("per-conversation ROC AUC", c["auc"], uc["auc"], True),
        ("false-positive rate at the card threshold", b["fpr"], u["fpr"], False),
    ):
        if mine is None or base is None:
            continue
        better = mine > base if higher else mine < base
        out.append(
            f"Measured on the held-out inputs ({names}): the sequence model "
            f"{'beats' if better else 'does NOT beat'} the unigram baseline in {label} "
            f"({mine:.4f} vs {base:.4f})."
        )
    return out


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out must name a .onnx file, got {args.out}")
    torch.set_num_threads(cfg.threads)
    drop = bool(getattr(args, "drop_malicious", False))
    from zeekml.sources.options import read_options_from

    read = read_options_from(args)  # --tz
    tables, files = load_streams(list(args.data), drop_malicious=drop, options=read)
    if not tables:
        raise UsageError("no flows in the --data inputs")
    command = "zeekml " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = train_and_export(tables, files, cfg, out, command=command, drop_malicious=drop)
    v = card["metrics"]["validation"]
    sys.stdout.write(
        f"wrote {out} and its card: {card['training']['train_windows']} training flows, "
        f"vocabulary {card['model']['vocab_size']}, threshold {card['thresholds']['anomaly']:.3f} nats, "
        f"validation NLL {v['lm_mean_nll']:.3f} (unigram {v['unigram_mean_nll']:.3f}), "
        f"{card['training']['seconds']:.0f} s\n"
    )
    eval_paths = list(getattr(args, "eval", None) or [])
    if eval_paths:
        from zeekml.eval.lm_eval import format_text

        sys.stdout.write(format_text(record_eval(out, eval_paths, cfg.threads, read.tz)))
    return 0
