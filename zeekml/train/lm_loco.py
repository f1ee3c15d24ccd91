"""Leave-one-capture-out (LOCO) evaluation of the flow LM over a labeled corpus.

Every capture is scored by a model that never trained on it, through the runtime's
own scorer (ONNX + card), in its stream order; random-sample rows are scored as
conversations of their own. Folds:

* a capture with at least ``own_fold_rows`` trainable flows is held out alone;
* smaller captures are held out in ``small_groups`` groups (round robin over their
  sorted names): each is scored by a model that saw neither it nor the others of
  its group, which is stricter than LOCO and costs far fewer trainings;
* captures without trainable flows (malicious-only captures, captures excluded from
  training) are scored by the model trained on every trainable capture, which never
  saw them either.

Thresholds: the flow LM is unsupervised, so its threshold is a false-alarm rate on
benign flows. Each capture's threshold is calibrated on the out-of-fold scores of the
benign (and presumed-benign, trainable unlabeled) flows of *the other* captures
(:func:`~zeekml.train.lm_train.support_threshold`), never on its own; the unigram
baseline gets the same treatment from the same rows. The shipped model's threshold
is the same rule over every capture's out-of-fold scores.

The result is one row per scored flow (the shared out-of-fold format, see
:data:`OOF_COLUMNS`) plus the three score terms, from which the report computes
per capture and pooled: ROC AUC, false-positive rate and recall at the calibrated
threshold, recall at the same false-positive rate, and notices per 10,000 benign
flows through the real :class:`~zeekml.policy.notice.NoticePolicy` with default
suppression.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import UsageError
from zeekml.eval.metrics import recall_at_fpr, roc_auc
from zeekml.models.card import load_card
from zeekml.models.lm_score import ScoreRule
from zeekml.models.lm_scorer import CLS, LmScorer
from zeekml.models.registry import ScorerOptions
from zeekml.policy.notice import crosses
from zeekml.train import flow_lm as F
from zeekml.train.lm_data import LmStream, stream_keys
from zeekml.train.lm_train import export_lm, fit_lm, support_threshold

log = logging.getLogger(__name__)

MODEL = "flow_lm"
BASELINE = "unigram"
OOF_COLUMNS = ("capture", "row", "uid", "ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto",
               "binary", "y", "model", "score", "cls", "threshold", "baseline", "baseline_score",
               "baseline_cls", "baseline_threshold")
TERM_COLUMNS = ("nll", "nll0", "unigram")
ALL_MODEL = "(all)"


@dataclass(frozen=True)
class LocoOptions:
    own_fold_rows: int = 2000
    small_groups: int = 3
    batch_rows: int = defaults.BATCH_ROWS
    #: run only these folds (plus the cheap "(all)" fold); empty: every fold
    only: tuple[str, ...] = ()


def fold_plan(streams: Sequence[LmStream], opts: LocoOptions) -> dict[str, list[str]]:
    """Fold name -> the captures it holds out (see the module docstring)."""
    plan: dict[str, list[str]] = {}
    small = sorted(s.name for s in streams if 0 < s.n_trainable() < opts.own_fold_rows)
    for s in streams:
        if s.n_trainable() >= opts.own_fold_rows:
            plan[s.name] = [s.name]
    for i, name in enumerate(small):
        plan.setdefault(f"small-{i % max(1, opts.small_groups)}", []).append(name)
    untrained = [s.name for s in streams if s.n_trainable() == 0]
    if untrained:
        plan[ALL_MODEL] = untrained
    return plan


def folds_to_run(streams: Sequence[LmStream], opts: LocoOptions) -> list[str]:
    """The folds of the plan this run trains (``opts.only`` and the "(all)" fold)."""
    plan = fold_plan(streams, opts)
    if not opts.only:
        return list(plan)
    unknown = set(opts.only) - set(plan)
    if unknown:
        raise UsageError(f"--loco-folds: no fold named {', '.join(sorted(unknown))}; "
                         f"the folds are {', '.join(plan)}")
    return [f for f in plan if f in opts.only or f == ALL_MODEL]


def score_stream(scorer: LmScorer, stream: LmStream, batch_rows: int) -> dict[str, np.ndarray]:
    """The score terms of every row of a stream, in order, from a fresh scorer."""
    keys = stream_keys(stream.flows, stream.sampled)
    out: dict[str, list[np.ndarray]] = {k: [] for k in TERM_COLUMNS}
    for i in range(0, stream.rows, batch_rows):
        sl = slice(i, i + batch_rows)
        terms, _, _, _ = scorer.flow_terms(stream.flows.iloc[sl].reset_index(drop=True), keys[sl])
        for k in TERM_COLUMNS:
            out[k].append(terms[k])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _frame(stream: LmStream, terms: dict[str, np.ndarray], fold: str) -> pd.DataFrame:
    f = stream.flows
    d = pd.DataFrame({
        "capture": pd.Series([stream.name] * stream.rows, dtype="str"),
        "row": np.arange(stream.rows, dtype=np.int64),
        "uid": f["uid"].astype("str").to_numpy(),
        "ts": f["ts"].to_numpy(dtype=np.float64, na_value=np.nan),
        "orig_h": f["orig_h"].astype("str").to_numpy(),
        "orig_p": f["orig_p"].astype("Int32").to_numpy(),
        "resp_h": f["resp_h"].astype("str").to_numpy(),
        "resp_p": f["resp_p"].astype("Int32").to_numpy(),
        "proto": f["proto"].astype("str").to_numpy(),
        "binary": stream.binary.astype(np.int8),
        "y": stream.y.astype(np.int64),
        "fold": fold,
        "negative": (stream.binary == 0) | ((~stream.labeled) & stream.trainable),
        "labeled": stream.labeled,
    })
    for k in TERM_COLUMNS:
        d[k] = terms[k]
    return d


def fit_and_score(streams: Sequence[LmStream], held: Sequence[str], cfg: F.LmConfig,
                  fold: str, workdir: Path, opts: LocoOptions) -> list[pd.DataFrame]:
    """Train on every stream but ``held`` (held streams contribute nothing), score ``held``."""
    held_set = set(held)
    train = [s for s in streams if s.name not in held_set and s.n_trainable()]
    fitted = fit_lm(train, cfg)
    out = workdir / f"fold-{len(list(workdir.glob('fold-*.onnx')))}.onnx"
    export_lm(fitted, cfg, out, rule=ScoreRule(), threshold=0.0,
              threshold_rule={"note": "LOCO fold model; thresholds come from out-of-fold scores"},
              unigram_threshold=0.0)
    log.info("fold %s: best epoch %d of %d, %.0f s", fold, fitted.result.best_epoch,
             fitted.result.epochs, fitted.seconds)
    frames = []
    for s in streams:
        if s.name in held_set:
            scorer = LmScorer(load_card(out), ScorerOptions(threads=cfg.threads))
            frames.append(_frame(s, score_stream(scorer, s, opts.batch_rows), fold))
    return frames


def run_loco(streams: Sequence[LmStream], cfg: F.LmConfig, opts: LocoOptions | None = None,
             *, workdir: str | Path | None = None, all_model: str | Path | None = None,
             ) -> pd.DataFrame:
    """Out-of-fold score terms of every row of every capture (see the module docstring).

    ``all_model``: an exported model trained on every trainable capture with ``cfg``
    (the one being shipped); it scores the captures nobody trains on instead of
    training the same model again.
    """
    opts = opts or LocoOptions()
    plan = fold_plan(streams, opts)
    run = set(folds_to_run(streams, opts))
    plan = {f: held for f, held in plan.items() if f in run}
    frames: list[pd.DataFrame] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for fold, held in plan.items():
            log.info("LOCO fold %s: holding out %s", fold, ", ".join(held))
            if fold == ALL_MODEL and all_model is not None:
                card = load_card(all_model)
                for s in streams:
                    if s.name in set(held):
                        scorer = LmScorer(card, ScorerOptions(threads=cfg.threads))
                        frames.append(_frame(s, score_stream(scorer, s, opts.batch_rows), fold))
                continue
            frames += fit_and_score(streams, held, cfg, fold, Path(tmp), opts)
    oof = pd.concat(frames, ignore_index=True)
    order = {s.name: i for i, s in enumerate(streams)}
    oof["_o"] = oof["capture"].map(order)
    return oof.sort_values(["_o", "row"], kind="stable").drop(columns="_o").reset_index(drop=True)


# ------------------------------------------------------------------ thresholds, OOF file
def apply_rule(oof: pd.DataFrame, rule: ScoreRule, cfg: F.LmConfig) -> pd.DataFrame:
    """The shared OOF format: score, threshold (calibrated on the other captures), baseline."""
    score = rule.combine(oof["nll"].to_numpy(), oof["nll0"].to_numpy(), oof["unigram"].to_numpy())
    base = oof["unigram"].to_numpy(dtype=np.float64)
    neg = oof["negative"].to_numpy(dtype=bool)
    cap = oof["capture"].to_numpy()
    thr = np.empty(len(oof))
    bthr = np.empty(len(oof))
    for name in pd.unique(cap):
        mine = cap == name
        others = neg & ~mine
        thr[mine] = support_threshold(score[others], cfg.fpr, cfg.min_flows_above)[0]
        bthr[mine] = support_threshold(base[others], cfg.fpr, cfg.min_flows_above)[0]
    out = oof.assign(model=MODEL, score=score, cls=CLS, threshold=thr, baseline=BASELINE,
                     baseline_score=base, baseline_cls=CLS, baseline_threshold=bthr)
    return out


def oof_file_frame(scored: pd.DataFrame) -> pd.DataFrame:
    """Exactly the shared out-of-fold columns, with their dtypes."""
    d = scored[list(OOF_COLUMNS)].copy()
    for c in ("capture", "uid", "orig_h", "resp_h", "proto", "model", "cls", "baseline", "baseline_cls"):
        d[c] = d[c].astype("str")
    d["row"] = d["row"].astype(np.int64)
    d["binary"] = d["binary"].astype(np.int8)
    d["y"] = d["y"].astype(np.int64)
    for c in ("ts", "score", "threshold", "baseline_score", "baseline_threshold"):
        d[c] = d[c].astype(np.float64)
    return d.reset_index(drop=True)


# ------------------------------------------------------------------ metrics
def notices(rows: pd.DataFrame, score_col: str, thr_col: str, suppress: float = 600.0) -> np.ndarray:
    """Which rows open a notice through the real NoticePolicy (one capture, stream order)."""
    from zeekml.models.base import ScoreBatch
    from zeekml.policy.notice import NoticePolicy, PolicyConfig
    from zeekml.records.schema import conform
    from zeekml.runtime.pipeline import assemble

    flows = conform(rows[["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto"]]
                    .reset_index(drop=True))
    n = len(rows)
    batch = ScoreBatch(model=MODEL, score=rows[score_col].to_numpy(dtype=np.float64),
                       cls=np.full(n, CLS, dtype=object),
                       threshold=rows[thr_col].to_numpy(dtype=np.float64))
    policy = NoticePolicy(PolicyConfig(suppress=suppress, all_flows=True))
    out = policy.decide(assemble(flows, [batch]))
    tail = policy.finish()
    flag = out["notice"].fillna(False).to_numpy(dtype=bool)
    if len(tail):
        flag |= np.isin(out["uid"].to_numpy(), tail["uid"].to_numpy())
    return flag


def capture_metrics(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """Per capture: the model and the unigram side by side (see the module docstring)."""
    rows = []
    for name, d in scored.groupby("capture", sort=False):
        y = d["binary"].to_numpy()
        neg = d["negative"].to_numpy(dtype=bool)
        r: dict[str, Any] = {"capture": name, "fold": d["fold"].iloc[0], "flows": int(len(d)),
                             "benign": int((y == 0).sum()), "malicious": int((y == 1).sum()),
                             "excluded": int((y < 0).sum()), "labeled": bool(d["labeled"].iloc[0]),
                             "presumed_benign": int((neg & (y < 0)).sum())}
        yy = np.where(neg, 0, y)
        for who, s, t in (("lm", "score", "threshold"), ("unigram", "baseline_score", "baseline_threshold")):
            sc = d[s].to_numpy()
            thr = float(d[t].iloc[0])
            flagged = crosses(sc, thr)
            labeled = yy >= 0
            r[f"{who}_threshold"] = thr
            r[f"{who}_auc"] = roc_auc(yy[labeled], sc[labeled]) if labeled.any() else None
            r[f"{who}_fpr"] = float(flagged[yy == 0].mean()) if (yy == 0).any() else None
            r[f"{who}_recall"] = float(flagged[yy == 1].mean()) if (yy == 1).any() else None
            r[f"{who}_flagged"] = int(flagged.sum())
            note = notices(d, s, t)
            nb = int((yy == 0).sum())
            r[f"{who}_notices_benign"] = int((note & (yy == 0)).sum())
            r[f"{who}_notices_per_10k_benign"] = (1e4 * r[f"{who}_notices_benign"] / nb) if nb else None
            r[f"{who}_notices"] = int(note.sum())
            r[f"{who}_notices_per_10k_flows"] = 1e4 * r[f"{who}_notices"] / max(len(d), 1)
        for fpr in (0.01, 0.001):
            if (yy == 0).sum() >= 1.0 / fpr:
                r[f"lm_recall_at_fpr_{fpr}"] = recall_at_fpr(yy, d["score"].to_numpy(), fpr)
                r[f"unigram_recall_at_fpr_{fpr}"] = recall_at_fpr(yy, d["baseline_score"].to_numpy(), fpr)
        rows.append(r)
    return rows


def pooled_metrics(scored: pd.DataFrame) -> dict[str, Any]:
    """All captures together (each row scored out of fold)."""
    y = np.where(scored["negative"].to_numpy(dtype=bool), 0, scored["binary"].to_numpy())
    out: dict[str, Any] = {"flows": int(len(scored)), "negatives": int((y == 0).sum()),
                           "malicious": int((y == 1).sum())}
    m = y >= 0
    for who, s, t in (("lm", "score", "threshold"), ("unigram", "baseline_score", "baseline_threshold")):
        sc = scored[s].to_numpy()
        flagged = sc >= scored[t].to_numpy()
        out[f"{who}_auc"] = roc_auc(y[m], sc[m])
        out[f"{who}_fpr"] = float(flagged[y == 0].mean())
        out[f"{who}_recall"] = float(flagged[y == 1].mean())
        for fpr in (0.01, 0.001):
            out[f"{who}_recall_at_fpr_{fpr}"] = recall_at_fpr(y, sc, fpr)
    return out
