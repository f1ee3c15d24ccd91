"""The flow-LM training run behind ``zeekml train lm``: read, train, calibrate, export, card.

A library (tools and notebooks call it): :class:`LmTrainRequest` says what to do and
:func:`train` does it; only ``zeekml/cli/train.py`` knows the command line.

Two ways in:

``--data PATH...``  one network's own traffic. Each input is one stream (a file, or a
                    directory / glob read in name order, as ``zeekml score`` reads it):
                    conversation state runs through its files, and its last
                    ``val_fraction`` of rows is the validation part (early stopping
                    and threshold). Labels are ignored unless ``--drop-malicious`` is
                    given, which uses them for one thing only: leaving flows labeled
                    malicious out.
``--corpus FILE``   a labeled corpus (:mod:`zeekml.eval.corpus`): the model learns from
                    every benign flow and every flow of the unlabeled captures
                    (presumed benign) except the captures named by ``--train-exclude``.
                    With ``--loco OUT.parquet`` every capture is also scored by a model
                    that never trained on it (:mod:`zeekml.train.lm_loco`): those
                    out-of-fold scores calibrate the threshold, are written to the
                    Parquet file and summarized in the card beside the unigram
                    baseline.

Threshold: a false-alarm rate ``--fpr`` on benign flows (out-of-fold scores with
``--loco``, else the validation flows), supported by at least ``--min-above`` flows
(:func:`zeekml.train.lm_train.support_threshold`). ``--eval`` inputs are scored
after export with :mod:`zeekml.eval.lm_eval` and recorded in the card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zeekml import defaults
from zeekml.errors import ConfigError
from zeekml.models.card import load_card, write_card
from zeekml.models.lm_score import TERMS, ScoreRule
from zeekml.records import schema
from zeekml.sources.open import expand_inputs, pair_batches, read_flows
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog
from zeekml.train import flow_lm as F
from zeekml.train.export import file_entry
from zeekml.train.lm_data import LmStream, corpus_streams, make_stream
from zeekml.train.lm_train import FittedLm, export_lm, fit_lm, support_threshold

log = logging.getLogger(__name__)

#: Score of the shipped design (chosen by leave-one-capture-out, see onnx_models/flow_lm.md):
#: the three surprisals in nats, equally weighted: the word given its conversation's
#: context, given no context, and its unigram rarity.
DEFAULT_RULE = ScoreRule(nll=1.0, nll0=1.0, unigram=1.0)


def load_streams(specs: list[str], *, drop_malicious: bool,
                 options: ReadOptions | None = None) -> list[LmStream]:
    """One stream per ``--data`` spec, with the card's ``files`` entries.

    ``options``: the reading options (``--tz``, NetFlow pairing: records are paired
    within each file unless ``options.pair`` is False).
    """
    streams = []
    for spec in specs:
        parts, files = [], []
        for f in expand_inputs([spec]):
            skips = SkipLog()
            t = schema.concat(pair_batches(read_flows(f, skips=skips, options=options), options))
            entry = file_entry(f, len(t))
            if skips.total:
                entry["skipped_lines"] = int(skips.total)
                log.warning("%s", skips.summary())
            files.append(entry)
            parts.append(t)
        table = schema.concat(parts) if parts else schema.empty_table()
        if not len(table):
            log.warning("%s: no flows to train on", spec)
            continue
        s = make_stream(spec, table, trainable="not-malicious" if drop_malicious else "all",
                        labeled=schema.has_labels(table) if drop_malicious else False, files=files)
        for entry, t in zip(files, parts, strict=True):
            entry["rows_used"] = int(len(t))
        if drop_malicious:
            start = 0
            for entry, t in zip(files, parts, strict=True):
                dropped = int((~s.trainable[start : start + len(t)]).sum())
                entry["malicious_dropped"] = dropped
                entry["rows_used"] = int(len(t)) - dropped
                start += len(t)
        streams.append(s)
    return streams


def parse_weights(spec: str | None) -> ScoreRule:
    """``nll=0.5,unigram=0.5`` -> a score rule (unnamed terms weigh 0); a ``max:`` prefix
    takes the largest weighted term instead of the sum."""
    if not spec:
        return DEFAULT_RULE
    how = "sum"
    if spec.startswith("max:"):
        how, spec = "max", spec.removeprefix("max:")
    vals: dict[str, float] = {}
    for item in spec.split(","):
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or k not in TERMS:
            raise ConfigError(f"--score-weights: expected TERM=WEIGHT with TERM in {', '.join(TERMS)}, got {item!r}")
        try:
            w = float(v)
        except ValueError as exc:
            raise ConfigError(f"--score-weights: {v!r} is not a number") from exc
        if not 0 <= w < 1e6:
            raise ConfigError(f"--score-weights: weight of {k} must be >= 0")
        vals[k] = w
    if sum(vals.values()) <= 0:
        raise ConfigError("--score-weights: at least one weight must be > 0")
    return ScoreRule(**{t: vals.get(t, 0.0) for t in TERMS}, how=how)


@dataclass(frozen=True)
class LmTrainRequest:
    """What one training run does (``zeekml train lm`` builds it from its options; tools
    and notebooks build it directly). ``None`` keeps the trainer's default."""

    out: Path
    data: tuple[str, ...] = ()
    corpus: str | None = None
    train_exclude: tuple[str, ...] = ()
    #: with a corpus: the out-of-fold file of the leave-one-capture-out run (None: no LOCO)
    loco: Path | None = None
    loco_folds: tuple[str, ...] | None = None
    context: int = 4
    epochs: int | None = None
    patience: int | None = None
    seed: int = 0
    hidden: int = F.LmConfig.hidden
    fpr: float = F.LmConfig.fpr
    min_above: int | None = None
    score_weights: str | None = None
    #: a terms file of an earlier ``--loco`` run of ``out``: apply ``score_weights`` to it
    #: (no training; see :func:`rescore`)
    rescore: Path | None = None
    threads: int = defaults.THREADS
    drop_malicious: bool = False
    eval: tuple[str, ...] = ()
    read: ReadOptions = field(default_factory=ReadOptions)
    #: the command line recorded in the card
    command: str = ""


@dataclass
class LmTrainResult:
    """The written card, and the held-out evaluation when one was asked for."""

    card: dict[str, Any]
    evaluation: dict[str, Any] | None = None


def config_from(req: LmTrainRequest) -> F.LmConfig:
    cfg = F.LmConfig(context=req.context, seed=req.seed, hidden=req.hidden,
                     threads=req.threads, fpr=req.fpr)
    if req.epochs is not None:
        cfg.max_epochs = req.epochs
    if req.patience is not None:
        cfg.patience = req.patience
    if req.min_above is not None:
        cfg.min_flows_above = req.min_above
    if not 1 <= cfg.context <= 512:
        raise ConfigError(f"--context must be 1..512 words, got {cfg.context}")
    if cfg.max_epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {cfg.max_epochs}")
    if cfg.patience < 1:
        raise ConfigError(f"--patience must be >= 1, got {cfg.patience}")
    if not 0 < cfg.fpr < 0.5:
        raise ConfigError(f"--fpr must be in (0, 0.5), got {cfg.fpr}")
    if cfg.min_flows_above < 1:
        raise ConfigError(f"--min-above must be >= 1, got {cfg.min_flows_above}")
    return cfg


def validation_thresholds(fitted: FittedLm, rule: ScoreRule, cfg: F.LmConfig
                          ) -> tuple[float, dict[str, Any], float]:
    """Threshold of the model and of the unigram from the validation windows."""
    vt = fitted.val_terms()
    thr, info = support_threshold(rule.combine(vt["nll"], vt["nll0"], vt["unigram"]), cfg.fpr,
                                  cfg.min_flows_above)
    uthr, _ = support_threshold(vt["unigram"], cfg.fpr, cfg.min_flows_above)
    info["of"] = ("scores of the validation part of the training inputs (the last "
                  f"{cfg.val_fraction:.0%} of each input's trainable rows, never trained on)")
    return thr, info, uthr


def train_data(req: LmTrainRequest) -> tuple[list[LmStream], dict[str, Any]]:
    """Streams and the card's description of them."""
    if bool(req.data) == bool(req.corpus):
        raise ConfigError("give either --data PATH... or --corpus FILE")
    exclude = list(req.train_exclude)
    if req.data:
        if exclude or req.loco or req.loco_folds:
            raise ConfigError("--train-exclude and --loco need --corpus")
        streams = load_streams(list(req.data), drop_malicious=req.drop_malicious,
                               options=req.read)
        files = [e for s in streams for e in s.files]
        return streams, {"files": files, "inputs": len(streams),
                         "drop_malicious": req.drop_malicious}
    assert req.corpus is not None
    streams = corpus_streams(req.corpus, exclude_training=exclude)
    caps = [{"capture": s.name, "flows": s.rows, "trainable_flows": s.n_trainable(),
             "labeled": s.labeled, "files": [Path(f["path"]).name for f in s.files][:20]}
            for s in streams]
    return streams, {"corpus": str(req.corpus), "excluded_from_training": exclude,
                     "captures": caps, "drop_malicious": True,
                     "trainable_rule": "flows labeled benign, and every flow of the unlabeled "
                     "captures not excluded from training (presumed benign)"}


def train(req: LmTrainRequest) -> LmTrainResult:
    """Train the flow LM, calibrate its threshold, export ONNX + card (and the LOCO run and
    a held-out evaluation when asked); errors raise (ConfigError for a bad request)."""
    cfg = config_from(req)
    out = Path(req.out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out must name a .onnx file, got {req.out}")
    rule = parse_weights(req.score_weights)
    if req.rescore is not None:
        if req.loco is None or req.data or req.corpus:
            raise ConfigError("--rescore TERMS needs --out MODEL.onnx and --loco OUT.parquet, "
                              "and no --data or --corpus (nothing is trained)")
        return LmTrainResult(card=rescore(out, req.rescore, rule, Path(req.loco), cfg, req.command))
    torch.set_num_threads(cfg.threads)
    streams, described = train_data(req)
    if not any(s.n_trainable() for s in streams):
        raise ConfigError("no flows to train on in the inputs")
    command = req.command
    fitted = fit_lm(streams, cfg)
    thr, info, uthr = validation_thresholds(fitted, rule, cfg)
    extra: dict[str, Any] = {"training": {**described, "command": command}}
    card = export_lm(fitted, cfg, out, rule=rule, threshold=thr, threshold_rule=info,
                     unigram_threshold=uthr, extra=extra)
    if req.loco:
        card = record_loco(out, streams, cfg, rule, Path(req.loco), command,
                           only=list(req.loco_folds) if req.loco_folds else None)
    evaluation = None
    if req.eval:
        evaluation = record_eval(out, list(req.eval), cfg.threads, req.read.tz)
    return LmTrainResult(card=card, evaluation=evaluation)


def record_loco(out: Path, streams: list[LmStream], cfg: F.LmConfig, rule: ScoreRule,
                parquet: Path, command: str, only: list[str] | None = None) -> dict[str, Any]:
    """LOCO over the corpus: OOF file, thresholds from OOF scores, results in the card."""
    from zeekml.train import lm_loco

    opts = lm_loco.LocoOptions(only=tuple(only or ()))
    oof = lm_loco.run_loco(streams, cfg, opts, all_model=out)
    plan = lm_loco.fold_plan(streams, lm_loco.LocoOptions())
    run = lm_loco.folds_to_run(streams, opts)
    folds = {"folds": plan, "folds_run": run, "folds_not_run": [f for f in plan if f not in run]}
    terms = parquet.with_name(parquet.name.removesuffix(".parquet") + ".terms.parquet")
    oof.to_parquet(terms, index=False)
    return record_rule(out, oof, cfg, rule, parquet, terms, command, folds)


def rescore(out: Path, terms: Path, rule: ScoreRule, parquet: Path, cfg: F.LmConfig,
            command: str) -> dict[str, Any]:
    """Apply another score rule to a model's existing LOCO run without training: the
    card's rule, threshold (from the same out-of-fold benign scores) and LOCO figures and
    the out-of-fold file are rewritten from the terms file ``record_loco`` wrote. The
    graph is unchanged: the score terms do not depend on the rule."""
    from zeekml.train import lm_loco

    card = load_card(out)
    loco = card.data.get("metrics", {}).get("loco")
    if not isinstance(loco, dict) or not {"folds", "folds_run", "folds_not_run"} <= set(loco):
        raise ConfigError(f"{out}: the card records no leave-one-capture-out run to rescore "
                          "(train with --corpus ... --loco first)")
    try:
        oof = pd.read_parquet(terms)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{terms}: cannot read the terms file: {exc}") from exc
    missing = {"capture", "negative", "binary", "labeled", "fold", *lm_loco.TERM_COLUMNS} - set(oof.columns)
    if missing:
        raise ConfigError(f"{terms}: not a terms file of train lm --loco (missing "
                          f"{', '.join(sorted(missing))})")
    bad = [c for c in lm_loco.TERM_COLUMNS
           if not np.isfinite(pd.to_numeric(oof[c], errors="coerce").to_numpy(dtype=np.float64)).all()]
    if bad:
        raise ConfigError(f"{terms}: the terms file has missing or non-finite {', '.join(bad)}")
    folds = {k: loco[k] for k in ("folds", "folds_run", "folds_not_run")}
    trained = str(loco.get("regenerate", "")).split(" && ")[0]
    return record_rule(out, oof, cfg, rule, parquet, terms,
                       f"{trained} && {command}" if trained else command, folds)


def record_rule(out: Path, oof: pd.DataFrame, cfg: F.LmConfig, rule: ScoreRule, parquet: Path,
                terms: Path, command: str, folds: dict[str, Any]) -> dict[str, Any]:
    """Score the LOCO terms by ``rule``: OOF file, threshold from the OOF benign scores,
    the rule and the results in the card."""
    from zeekml.train import lm_loco
    from zeekml.train.lm_train import describe, score_entry

    scored = lm_loco.apply_rule(oof, rule, cfg)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    lm_loco.oof_file_frame(scored).to_parquet(parquet, index=False)
    neg = scored["negative"].to_numpy(dtype=bool)
    thr, info = support_threshold(scored["score"].to_numpy()[neg], cfg.fpr, cfg.min_flows_above)
    uthr, _ = support_threshold(scored["baseline_score"].to_numpy()[neg], cfg.fpr, cfg.min_flows_above)
    info["of"] = ("out-of-fold scores (each capture scored by a model that never trained on it) "
                  "of the benign flows of the corpus and of the trainable unlabeled captures")
    per_capture = lm_loco.capture_metrics(scored)
    pooled = lm_loco.pooled_metrics(scored)
    c = load_card(out)
    data = dict(c.data)
    data.pop("format", None)
    data.pop("onnx_sha256", None)
    data["limitations"] = [x for x in data.get("limitations", [])
                           if not str(x).startswith("Leave-one-capture-out")]
    data["limitations"] += loco_statements(pooled, per_capture, folds["folds_not_run"])
    data["description"] = describe(rule)
    data["score"] = score_entry(rule, int(data.get("context", cfg.context)))
    data["thresholds"] = {"anomaly": thr}
    data["threshold_rule"] = info
    data["unigram"] = {**data["unigram"], "threshold": uthr}
    val = dict(data["metrics"].get("validation", {}))
    means = [val.get(k) for k in ("lm_mean_nll", "lm_mean_nll0", "unigram_mean_nll")]
    val.pop("mean_score", None)
    if rule.how == "sum" and all(isinstance(m, (int, float)) for m in means):
        val["mean_score"] = float(rule.combine(*(np.array([m]) for m in means))[0])
    data["metrics"] = {**data["metrics"], "validation": val, "loco": {
        **folds,
        "out_of_fold_file": str(parquet),
        "terms_file": str(terms),
        "regenerate": command,
        "pooled": pooled,
        "captures": per_capture,
    }}
    write_card(out, json.loads(json.dumps(data, default=_plain)))
    return load_card(out).data


def loco_statements(pooled: dict[str, Any], captures: list[dict[str, Any]],
                    not_run: list[str], notice_goal: float = 5.0) -> list[str]:
    """Plain sentences for the card: where the LM does and does not reach the unigram."""
    out = []
    for label, key in (("ROC AUC", "auc"), ("recall at 1% FPR", "recall_at_fpr_0.01"),
                       ("recall at 0.1% FPR", "recall_at_fpr_0.001"),
                       ("recall at the calibrated thresholds", "recall")):
        mine, base = pooled.get(f"lm_{key}"), pooled.get(f"unigram_{key}")
        if mine is None or base is None:
            continue
        out.append(f"Leave-one-capture-out, pooled: the model "
                   f"{'is at least as good as' if mine >= base else 'does NOT match'} the unigram "
                   f"baseline in {label} ({mine:.4f} vs {base:.4f}).")
    worse_auc = [c["capture"] for c in captures if c.get("lm_auc") is not None
                 and c.get("unigram_auc") is not None and c["lm_auc"] < c["unigram_auc"]]
    worse_rec = [c["capture"] for c in captures if c.get("lm_recall_at_fpr_0.01") is not None
                 and c.get("unigram_recall_at_fpr_0.01") is not None
                 and c["lm_recall_at_fpr_0.01"] < c["unigram_recall_at_fpr_0.01"]]
    worse_thr = [c["capture"] for c in captures if c.get("lm_recall") is not None
                 and c.get("unigram_recall") is not None and c["lm_recall"] < c["unigram_recall"]]
    noisy = [f"{c['capture']} ({c['lm_notices_per_10k_benign']:.0f})" for c in captures
             if c.get("lm_notices_per_10k_benign") is not None
             and c["lm_notices_per_10k_benign"] > notice_goal]
    if worse_auc:
        out.append("Leave-one-capture-out: ROC AUC below the unigram's on " + ", ".join(worse_auc) + ".")
    if worse_rec:
        out.append("Leave-one-capture-out: recall at 1% FPR below the unigram's on " + ", ".join(worse_rec) + ".")
    if worse_thr:
        out.append("Leave-one-capture-out: recall at the calibrated thresholds below the unigram's on "
                   + ", ".join(worse_thr) + ".")
    out.append(f"Leave-one-capture-out: more than {notice_goal:g} notices per 10,000 benign flows "
               f"(goal NOT met) on: {', '.join(noisy)}." if noisy else
               f"Leave-one-capture-out: at most {notice_goal:g} notices per 10,000 benign flows on "
               "every capture with benign flows (goal met).")
    if not_run:
        out.append("Leave-one-capture-out folds not run (their captures are not in the results): "
                   + ", ".join(not_run) + ".")
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, pd.Timestamp):
        return str(v)
    raise TypeError(type(v).__name__)


def record_eval(out: Path, eval_paths: list[str], threads: int,
                tz: str | None = None) -> dict[str, Any]:
    """Evaluate the exported model on held-out inputs and store it in the card."""
    from zeekml.eval import lm_eval

    c = load_card(out)
    result = lm_eval.evaluate(c, eval_paths, threads=threads, read=ReadOptions(tz=tz))
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
    names = ", ".join("/".join(Path(p).parts[-2:]) for p in result["inputs"])
    out = []
    for label, mine, base, higher in (
        ("per-flow ROC AUC", b["auc"], u["auc"], True),
        ("recall at the same false-positive rate", result.get("recall_at_same_fpr", {}).get("lm"),
         result.get("recall_at_same_fpr", {}).get("unigram"), True),
        ("false-positive rate at the card threshold", b["fpr"], u["fpr"], False),
    ):
        if mine is None or base is None:
            continue
        better = mine >= base if higher else mine <= base
        out.append(
            f"Measured on the held-out inputs ({names}): the model "
            f"{'is at least as good as' if better else 'does NOT match'} the unigram baseline in "
            f"{label} ({mine:.4f} vs {base:.4f})."
        )
    return out
