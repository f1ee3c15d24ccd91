"""Leave-one-capture-out (LOCO) for the AMF-LSTM and its single-flow baseline.

Every figure the card reports comes from here, and every one is on a capture the
scoring model never saw:

1. :func:`out_of_fold` trains, for every labeled capture, one model per kind on all the
   *other* captures and scores the held-out capture with it (all its rows, the
   label-excluded ones too);
2. :func:`fold_thresholds` calibrates, for every capture, per-class thresholds on the
   other captures' out-of-fold benign flows (:mod:`zeekml.train.amf_thresholds`), so no
   capture's labels choose its own thresholds;
3. :func:`decide` applies the runtime's rule (``score >= threshold`` of the flow's
   class) and :func:`report` turns the decisions into the card's tables: per class
   (pooled), per capture, the binary view, the notices per 10,000 benign flows after
   the runtime's suppression, and the issue's targets met or not;
4. :func:`oof_frame` is the shared out-of-fold results file (one row per flow).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from zeekml.eval.metrics import binary_report, classification_report, roc_auc
from zeekml.features.flow_stats import payload_unknown as flow_payload_unknown
from zeekml.models.card import class_thresholds
from zeekml.records.labels import CLASSES
from zeekml.train.amf_thresholds import (
    DEFAULT_ALPHA,
    EVERY_CLASS,
    EmitRule,
    ThresholdReport,
    attack_view,
    calibrate,
)
from zeekml.train.datasets import WindowSet

log = logging.getLogger(__name__)

#: (name in the card and results file, kind passed to the fitter)
MODEL_NAMES = {"amf": "amf_lstm", "hgb": "single_flow_tree", "lstm": "plain_lstm"}
#: the issue's LOCO targets
TARGET_MACRO_F1 = 0.85
TARGET_MIN_PRECISION = 0.5
TARGET_RECALL = 0.8
TARGET_FPR = 0.005
TARGET_NOTICES_PER_10K = 5.0
#: a class is judged by LOCO only when this many captures hold it
MIN_CAPTURES = 3
#: the runtime's default suppression interval (``zeekml score --suppress``)
SUPPRESS_SECONDS = 600.0

Fitter = Callable[[WindowSet], Callable[[np.ndarray, np.ndarray], np.ndarray]]


def captures_of(ws: WindowSet) -> list[str]:
    """Capture names in data order."""
    return list(dict.fromkeys(ws.group.tolist()))


def out_of_fold(ws: WindowSet, fitters: dict[str, Fitter],
                captures: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities ``[N, C]`` per model kind.

    For each capture with labeled rows (or each of ``captures``), ``fitter(train)``
    is trained on the labeled rows of every other capture and returns ``predict(x,
    mask)``, which scores all rows of the held-out capture. Rows of captures not
    held out stay 0.
    """
    return out_of_fold_views(ws, fitters, captures)[0]


def out_of_fold_views(ws: WindowSet, fitters: dict[str, Fitter],
                      captures: Sequence[str] | None = None, view: WindowSet | None = None,
                      train_on_view: bool = False
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`out_of_fold`, and the same held-out models' probabilities for ``view``: the
    captures' rows as another reader would give them (:func:`zeekml.train.datasets.
    netflow_view_captures`; ``view.group`` names the capture each row is a view of).
    With ``train_on_view`` every fold also trains on the view rows of its training
    captures, never on those of the held-out one."""
    labeled = ws.y >= 0
    holdout = [g for g in (captures or captures_of(ws)) if (labeled & (ws.group == g)).any()]
    probs = {k: np.zeros((len(ws), len(CLASSES)), dtype=np.float64) for k in fitters}
    vn = len(view) if view is not None else 0
    view_probs = {k: np.zeros((vn, len(CLASSES)), dtype=np.float64) for k in fitters}
    for i, g in enumerate(holdout):
        te = ws.group == g
        train = ws.take(~te & labeled)
        vte = view.group == g if view is not None else np.zeros(0, dtype=bool)
        if view is not None and train_on_view:
            train = train.concat(view.take(~vte & (view.y >= 0)))
        for kind, fit in fitters.items():
            t0 = time.perf_counter()
            predict = fit(train)
            probs[kind][te] = predict(ws.x[te], ws.mask[te])
            if view is not None and vte.any():
                view_probs[kind][vte] = predict(view.x[vte], view.mask[vte])
            log.info("LOCO %d/%d %s: %s (%d rows) %.0f s", i + 1, len(holdout), kind, g,
                     int(te.sum()), time.perf_counter() - t0)
    return probs, view_probs


def class_support(ws: WindowSet, without: str | None = None) -> dict[str, int]:
    """Captures holding labeled flows of each class (leaving capture ``without`` out)."""
    keep = (ws.y >= 0) if without is None else (ws.y >= 0) & (ws.group != without)
    pairs = pd.DataFrame({"y": ws.y[keep], "g": ws.group[keep]}).drop_duplicates()
    held = pairs["y"].value_counts()
    return {c: int(held.get(i, 0)) for i, c in enumerate(CLASSES)}


def fold_thresholds(ws: WindowSet, probs: np.ndarray, alpha: float = DEFAULT_ALPHA,
                    rule: EmitRule = EVERY_CLASS, full: WindowSet | None = None
                    ) -> dict[str, ThresholdReport]:
    """For every capture, thresholds calibrated on every *other* capture's out-of-fold
    benign flows; ``rule`` reads each class's support among the captures its fold model
    trained on (those of ``full``, default ``ws``, other than the held-out one)."""
    score, cls = attack_view(probs, CLASSES)
    whole = ws if full is None else full
    out = {}
    for g in captures_of(ws):
        other = ws.group != g
        out[g] = calibrate(score[other], cls[other], ws.binary[other] == 0, CLASSES, alpha,
                           support=class_support(whole, without=g), rule=rule)
    return out


def payload_unknown(ws: WindowSet) -> np.ndarray:
    """Per window: are its flow's payload bytes unknown (NetFlow, Argus, some Zeek flows)?
    The runtime's test (:func:`zeekml.features.flow_stats.payload_unknown`) on the flow's
    own position, the window's last (every window layout begins with the flow features)."""
    return flow_payload_unknown(ws.x[:, -1]) if len(ws) else np.zeros(0, dtype=bool)


def _with_view(ws: WindowSet, probs: np.ndarray, unknown: np.ndarray, view: WindowSet | None,
               view_probs: np.ndarray | None, view_unknown: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(group, binary, probs, unknown)`` of the rows and their view's rows together:
    what calibration reads (never the windows themselves, hundreds of MB)."""
    if view is None or view_probs is None or view_unknown is None or not len(view):
        return ws.group, ws.binary, probs, unknown
    return (np.concatenate([ws.group, view.group]), np.concatenate([ws.binary, view.binary]),
            np.concatenate([probs, view_probs]), np.concatenate([unknown, view_unknown]))


def splits_by_payload(ws: WindowSet, unknown: np.ndarray, view: WindowSet | None = None,
                      view_unknown: np.ndarray | None = None) -> bool:
    """Calibrate flows with payload bytes unknown apart only when there are benign flows
    of that kind to calibrate on (else one set for every flow)."""
    n_unknown = int(((ws.binary == 0) & unknown).sum()) + (
        int(((view.binary == 0) & view_unknown).sum()) if view is not None and view_unknown is not None else 0)
    return n_unknown > 0


def at_least(report: ThresholdReport, floor: dict[str, float]) -> ThresholdReport:
    """``report`` with each threshold raised to at least ``floor``'s (same classes); the
    per-class support says when it was raised."""
    th = {c: max(v, floor.get(c, v)) for c, v in report.thresholds.items()}
    per = {c: {**v, "threshold": th.get(c, v.get("threshold")),
               "raised_to_payload_known": th.get(c) != report.thresholds.get(c)}
           for c, v in report.per_class.items()}
    return replace(report, thresholds=th, per_class=per)


def fold_thresholds_by_payload(ws: WindowSet, probs: np.ndarray, unknown: np.ndarray,
                               view: WindowSet | None, view_probs: np.ndarray | None,
                               view_unknown: np.ndarray | None, alpha: float = DEFAULT_ALPHA,
                               rule: EmitRule = EVERY_CLASS, full: WindowSet | None = None
                               ) -> tuple[dict[str, ThresholdReport], dict[str, ThresholdReport]]:
    """Per capture, :func:`fold_thresholds` (every other capture's out-of-fold benign flow
    as read, the thresholds every flow had before), and thresholds for flows with payload
    bytes unknown: the same rule on the other captures' benign flows of that kind alone
    (their NetFlow ``view`` included), never below the first set. Flows read from NetFlow
    or Argus are then held to a false-alarm rate measured on benign flows read that way,
    and a flow with payload bytes known is decided exactly as before."""
    known = fold_thresholds(ws, probs, alpha, rule, full)
    group, binary, cprobs, cunk = _with_view(ws, probs, unknown, view, view_probs, view_unknown)
    score, cls = attack_view(cprobs, CLASSES)
    whole = ws if full is None else full
    unk: dict[str, ThresholdReport] = {}
    for g in captures_of(ws):
        m = (group != g) & cunk
        rep = calibrate(score[m], cls[m], binary[m] == 0, CLASSES, alpha,
                        support=class_support(whole, without=g), rule=rule)
        unk[g] = at_least(rep, known[g].thresholds)
    return known, unk


def shipped_by_payload(ws: WindowSet, probs: np.ndarray, unknown: np.ndarray,
                       view: WindowSet | None, view_probs: np.ndarray | None,
                       view_unknown: np.ndarray | None, alpha: float, support: dict[str, int],
                       rule: EmitRule) -> tuple[ThresholdReport, ThresholdReport]:
    """The shipped thresholds: every benign out-of-fold flow as read, and (never below
    them) those of flows with payload bytes unknown, the NetFlow view included."""
    score, cls = attack_view(probs, CLASSES)
    known = calibrate(score, cls, ws.binary == 0, CLASSES, alpha, support=support, rule=rule)
    _, binary, cprobs, cunk = _with_view(ws, probs, unknown, view, view_probs, view_unknown)
    score, cls = attack_view(cprobs, CLASSES)
    rep = calibrate(score[cunk], cls[cunk], binary[cunk] == 0, CLASSES, alpha,
                    support=support, rule=rule)
    return known, at_least(rep, known.thresholds)


def threshold_vector(thresholds: dict[str, float]) -> np.ndarray:
    return class_thresholds(thresholds, CLASSES, missing=0.5)


def decide(ws: WindowSet, probs: np.ndarray, per_capture: dict[str, dict[str, float]],
           unknown: np.ndarray | None = None,
           per_capture_unknown: dict[str, dict[str, float]] | None = None) -> dict[str, np.ndarray]:
    """The runtime's rule per row with its capture's thresholds (``per_capture_unknown``
    for the rows whose payload bytes are ``unknown``, when given): score, cls (top attack
    class), threshold, flagged, pred (class index, normal when not flagged)."""
    score, cls = attack_view(probs, CLASSES)
    thr = np.zeros(len(ws))
    for g, t in per_capture.items():
        s = ws.group == g
        thr[s] = threshold_vector(t)[cls[s]]
    if unknown is not None and per_capture_unknown is not None:
        for g, t in per_capture_unknown.items():
            s = (ws.group == g) & unknown
            thr[s] = threshold_vector(t)[cls[s]]
    flagged = score >= thr
    pred = np.where(flagged, cls, CLASSES.index("normal"))
    return {"score": score, "cls": cls, "threshold": thr, "flagged": flagged, "pred": pred}


def notices_per_capture(flows_of: dict[str, pd.DataFrame], ws: WindowSet,
                        dec: dict[str, np.ndarray], model: str) -> dict[str, int]:
    """Notices on benign flows per capture after the runtime's suppression.

    Each capture's rows go through a fresh :class:`~zeekml.policy.notice.NoticePolicy`
    (default 600 s suppression per originator, class and model) in stream order; a
    notice counts as a false alarm when the flow that opened it is benign.
    """
    from zeekml.policy.notice import NoticePolicy, PolicyConfig

    out = {}
    for g, flows in flows_of.items():
        s = np.nonzero(ws.group == g)[0]
        if not len(s):
            continue
        s = s[np.argsort(ws.row[s], kind="stable")]
        f = flows.iloc[ws.row[s]].reset_index(drop=True)
        scored = pd.DataFrame({
            "ts": f["ts"], "uid": f["uid"], "orig_h": f["orig_h"], "orig_p": f["orig_p"],
            "resp_h": f["resp_h"], "resp_p": f["resp_p"], "proto": f["proto"], "model": model,
            "score": dec["score"][s], "cls": np.asarray(CLASSES, dtype=object)[dec["cls"][s]],
            "threshold": dec["threshold"][s]})
        pol = NoticePolicy(PolicyConfig(suppress=SUPPRESS_SECONDS, all_flows=True))
        notice = pol.decide(scored)["notice"].to_numpy(dtype=bool)
        out[g] = int((notice & (ws.binary[s] == 0)).sum())
    return out


def report(ws: WindowSet, dec: dict[str, np.ndarray], notices: dict[str, int] | None = None
           ) -> dict[str, Any]:
    """The LOCO tables of one model from its decided rows (see the module docstring)."""
    y, binary = ws.y, ws.binary
    has = y >= 0
    rep = classification_report(y[has], dec["pred"][has], CLASSES)
    ncap = {c: len(set(ws.group[y == i].tolist())) for i, c in enumerate(CLASSES)}
    judged = [c for c in CLASSES if ncap[c] >= MIN_CAPTURES]
    f1 = [rep["classes"][c]["f1"] or 0.0 for c in judged]
    emitted = {c: v["precision"] for c, v in rep["classes"].items()
               if c != "normal" and v["predicted"] > 0}
    b = binary_report(binary, dec["flagged"], dec["score"])
    lab = binary >= 0
    neg = np.sort(dec["score"][lab & (binary == 0)])[::-1]
    # the pooled ROC point: recall at the score that keeps the pooled FPR <= 0.5%
    k = int(np.floor(TARGET_FPR * len(neg)))
    t_roc = float(np.nextafter(neg[k], np.inf)) if k < len(neg) else -np.inf
    pos = dec["score"][binary == 1]
    recall_roc = float((pos >= t_roc).mean()) if len(pos) else None
    per_cap: dict[str, Any] = {}
    for g in captures_of(ws):
        s = ws.group == g
        bb = binary_report(binary[s], dec["flagged"][s], dec["score"][s])
        benign = int((binary[s] == 0).sum())
        row = {k2: bb[k2] for k2 in ("precision", "recall", "f1", "auc", "fpr", "tp", "fp", "fn", "tn")}
        row["rows"] = int(s.sum())
        row["excluded"] = int((binary[s] < 0).sum())
        classes_here = {CLASSES[i]: int((y[s] == i).sum()) for i in range(len(CLASSES)) if (y[s] == i).any()}
        row["classes"] = classes_here
        pred_here = {CLASSES[i]: int(((dec["pred"][s] == i) & (binary[s] >= 0)).sum())
                     for i in range(1, len(CLASSES)) if ((dec["pred"][s] == i) & (binary[s] >= 0)).any()}
        row["predicted"] = pred_here
        if notices is not None and g in notices:
            row["benign_notices"] = notices[g]
            row["notices_per_10k_benign"] = (1e4 * notices[g] / benign) if benign else None
        per_cap[g] = row
    macro = float(np.mean(f1)) if f1 else None
    min_prec = min((p for p in emitted.values() if p is not None), default=None)
    out = {
        "classes": {c: {k2: v[k2] for k2 in ("precision", "recall", "f1", "support", "predicted")}
                    for c, v in rep["classes"].items()},
        "captures_per_class": ncap,
        "judged_classes": judged,
        "macro_f1_judged": macro,
        "macro_f1_all": rep["macro_f1"],
        "accuracy": rep["accuracy"],
        "min_precision_of_emitted_classes": min_prec,
        "emitted_precision": emitted,
        "binary": {k2: b[k2] for k2 in ("precision", "recall", "f1", "auc", "fpr", "tp", "fp", "fn", "tn")},
        "recall_at_pooled_fpr_0.5pct": recall_roc,
        "per_capture": per_cap,
        "confusion": rep["confusion"],
    }
    out["targets"] = {
        f"macro-F1 over classes in >= {MIN_CAPTURES} captures >= {TARGET_MACRO_F1}":
            macro is not None and macro >= TARGET_MACRO_F1,
        f"precision >= {TARGET_MIN_PRECISION} for every emitted class":
            min_prec is not None and min_prec >= TARGET_MIN_PRECISION,
        f"pooled binary recall >= {TARGET_RECALL} at FPR <= {TARGET_FPR:.1%} (default thresholds)":
            (b["recall"] or 0) >= TARGET_RECALL and (b["fpr"] or 1) <= TARGET_FPR,
    }
    return out


def view_report(view: WindowSet, dec: dict[str, np.ndarray], flows_of: dict[str, pd.DataFrame],
                model: str) -> dict[str, Any]:
    """The out-of-fold figures of the captures' other view (their NetFlow view), ``dec``
    decided with the thresholds of the capture each row is a view of, so the figures say
    what the shipped rule does with the same traffic read as NetFlow."""
    full = report(view, dec, notices_per_capture(flows_of, view, dec, model))
    keep = ("rows", "recall", "fpr", "tp", "fp", "fn", "tn", "predicted", "benign_notices",
            "notices_per_10k_benign")
    return {"binary": full["binary"],
            "recall_at_pooled_fpr_0.5pct": full["recall_at_pooled_fpr_0.5pct"],
            "macro_f1_judged": full["macro_f1_judged"],
            "per_capture": {g: {k: v[k] for k in keep if k in v}
                            for g, v in full["per_capture"].items()}}


def beats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    """Is model ``a`` above ``b`` on the same folds, figure by figure?"""
    def gt(x: float | None, y: float | None) -> bool:
        return x is not None and (y is None or x > y)

    return {
        "macro_f1_judged": gt(a["macro_f1_judged"], b["macro_f1_judged"]),
        "binary_auc": gt(a["binary"]["auc"], b["binary"]["auc"]),
        "binary_f1": gt(a["binary"]["f1"], b["binary"]["f1"]),
        "recall_at_pooled_fpr_0.5pct": gt(a["recall_at_pooled_fpr_0.5pct"], b["recall_at_pooled_fpr_0.5pct"]),
    }


def oof_frame(ws: WindowSet, flows_of: dict[str, pd.DataFrame], model: str, dec: dict[str, np.ndarray],
              baseline: str, base: dict[str, np.ndarray]) -> pd.DataFrame:
    """The shared out-of-fold results file: one row per flow, captures in data order,
    each capture's rows in stream order (see the task's column list)."""
    names = np.asarray(CLASSES, dtype=object)
    parts = []
    for g in captures_of(ws):
        s = np.nonzero(ws.group == g)[0]
        s = s[np.argsort(ws.row[s], kind="stable")]
        f = flows_of[g].iloc[ws.row[s]].reset_index(drop=True)
        parts.append(pd.DataFrame({
            "capture": pd.Series([g] * len(s), dtype="str"),
            "row": ws.row[s].astype(np.int64),
            "uid": f["uid"].astype("str"),
            "ts": f["ts"].astype("float64"),
            "orig_h": f["orig_h"].astype("str"), "orig_p": f["orig_p"].astype("Int32"),
            "resp_h": f["resp_h"].astype("str"), "resp_p": f["resp_p"].astype("Int32"),
            "proto": f["proto"].astype("str"),
            "binary": ws.binary[s].astype(np.int8),
            "y": ws.y[s].astype(np.int64),
            "model": pd.Series([model] * len(s), dtype="str"),
            "score": dec["score"][s].astype(np.float64),
            "cls": pd.Series(names[dec["cls"][s]], dtype="str"),
            "threshold": dec["threshold"][s].astype(np.float64),
            "baseline": pd.Series([baseline] * len(s), dtype="str"),
            "baseline_score": base["score"][s].astype(np.float64),
            "baseline_cls": pd.Series(names[base["cls"][s]], dtype="str"),
            "baseline_threshold": base["threshold"][s].astype(np.float64),
        }))
    return pd.concat(parts, ignore_index=True)


def auc_of(ws: WindowSet, score: np.ndarray) -> float | None:
    return roc_auc(ws.binary, score)
