"""Classification metrics in numpy only (no scikit-learn at run time).

Conventions, chosen so a number is never made up:

* a metric whose denominator is zero on the data is ``None`` (JSON ``null``): precision
  of a class never predicted, recall of a class never present, false-positive rate
  without negatives, ROC AUC with only one class present;
* F1 is ``2 tp / (2 tp + fp + fn)``, defined whenever the class was present or
  predicted (a class predicted but absent has F1 0: those predictions are all wrong),
  ``None`` when it was neither;
* macro averages are over the classes whose value is defined, and say which classes
  they averaged;
* ROC AUC handles tied scores by average ranks (the Mann-Whitney U statistic), which
  equals the area under the ROC curve drawn through tied blocks as straight lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from zeekml.policy.notice import crosses


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = rows of true class ``i`` predicted as ``j`` (int64 ``[C, C]``).

    Labels outside ``0..n_classes-1`` (e.g. -1 = excluded) are ignored.
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    ok = (t >= 0) & (t < n_classes) & (p >= 0) & (p < n_classes)
    flat = t[ok] * n_classes + p[ok]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support of every class from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    pred = cm.sum(axis=0)
    true = cm.sum(axis=1)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(classes):
        fp = int(pred[i] - tp[i])
        fn = int(true[i] - tp[i])
        den = 2 * int(tp[i]) + fp + fn
        out[name] = {
            "precision": _ratio(tp[i], pred[i]),
            "recall": _ratio(tp[i], true[i]),
            "f1": _ratio(2 * tp[i], den),
            "support": int(true[i]),
            "predicted": int(pred[i]),
        }
    return out


def macro(per: dict[str, dict[str, Any]], key: str, classes: Sequence[str] | None = None) -> float | None:
    """Mean of ``per[c][key]`` over ``classes`` (default all) where it is defined."""
    names = list(per) if classes is None else list(classes)
    vals = [per[c][key] for c in names if c in per and per[c][key] is not None]
    return float(np.mean(vals)) if vals else None


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """Fraction of rows predicted right (rows with a negative label are ignored)."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    ok = t >= 0
    return _ratio(int((t[ok] == p[ok]).sum()), int(ok.sum()))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(xs)
    if n == 0:
        return np.zeros(0)
    new_block = np.r_[True, xs[1:] != xs[:-1]]
    block = np.cumsum(new_block) - 1
    starts = np.nonzero(new_block)[0]
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = avg[block]
    return ranks


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for binary ``y_true`` (1 positive, 0 negative; others ignored).

    ``None`` when only one class is present. Non-finite scores are not allowed.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    ok = (y == 0) | (y == 1)
    y, s = y[ok], s[ok]
    if not np.isfinite(s).all():
        raise ValueError("roc_auc: scores must be finite")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = average_ranks(s)
    u = r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _tie_groups(score: np.ndarray) -> np.ndarray:
    """Each row's group of equal scores, groups numbered in increasing score order."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    new = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, dtype=bool)
    group = np.empty(len(s), dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    return group


def _weighted_auc(group: np.ndarray, pos: np.ndarray, weight: np.ndarray) -> float | None:
    """ROC AUC with row weights, ties counting one half (see :func:`auc_difference_ci`)."""
    k = int(group.max()) + 1 if len(group) else 0
    wp = np.bincount(group[pos], weight[pos], minlength=k)
    wn = np.bincount(group[~pos], weight[~pos], minlength=k)
    tp, tn = wp.sum(), wn.sum()
    if tp <= 0 or tn <= 0:
        return None
    below = np.cumsum(wn) - wn  # negative weight with a lower score than the group
    return float((wp * (below + 0.5 * wn)).sum() / (tp * tn))


def auc_difference_ci(y_true: np.ndarray, a: np.ndarray, b: np.ndarray, clusters: np.ndarray,
                      *, resamples: int = 1000, level: float = 0.95, seed: int = 0
                      ) -> tuple[float, float, float] | None:
    """ROC AUC of ``a`` minus that of ``b`` on the same rows, with a bootstrap interval.

    Flows of one conversation are not independent (a scan is thousands of near-identical
    flows), so the bootstrap draws whole ``clusters`` (e.g. host pairs) with replacement,
    each row weighted by how often its cluster was drawn, and both scores are judged on
    the same draw. Returns ``(difference, low, high)``; ``None`` when a class is missing.
    Rows whose ``y_true`` is not 0/1 are ignored.
    """
    y = np.asarray(y_true).ravel()
    ok = (y == 0) | (y == 1)
    y = y[ok]
    sa = np.asarray(a, dtype=np.float64).ravel()[ok]
    sb = np.asarray(b, dtype=np.float64).ravel()[ok]
    da, db = roc_auc(y, sa), roc_auc(y, sb)
    if da is None or db is None:
        return None
    ga, gb, pos = _tie_groups(sa), _tie_groups(sb), y == 1
    codes, _ = pd.factorize(pd.Series(np.asarray(clusters, dtype=object).ravel()[ok]))
    n = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)[codes]
        ra, rb = _weighted_auc(ga, pos, w), _weighted_auc(gb, pos, w)
        if ra is not None and rb is not None:
            diffs.append(ra - rb)
    if not diffs:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return da - db, float(low), float(high)


def binary_report(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray | None = None) -> dict[str, Any]:
    """Precision, recall, F1, false-positive rate and (given scores) ROC AUC for 1 = positive.

    Rows whose ``y_true`` is not 0/1 are ignored.
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel().astype(bool)
    ok = (y == 0) | (y == 1)
    yt = y[ok] == 1
    pp = p[ok]
    tp = int((yt & pp).sum())
    fp = int((~yt & pp).sum())
    fn = int((yt & ~pp).sum())
    tn = int((~yt & ~pp).sum())
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(y[ok], np.asarray(score, dtype=np.float64).ravel()[ok]) if score is not None else None,
        "fpr": _ratio(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Per-class table, macro precision/recall/F1 and accuracy (the paper's Table 1)."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    per = per_class(cm, classes)
    return {
        "classes": per,
        "macro_precision": macro(per, "precision"),
        "macro_recall": macro(per, "recall"),
        "macro_f1": macro(per, "f1"),
        "accuracy": accuracy(y_true, y_pred),
        "confusion": cm.tolist(),
    }


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float) -> float | None:
    """Recall (``y == 1``) of ``score >= t`` for the lowest ``t`` that flags at most a share
    ``fpr`` of the negatives (``y == 0``); None without negatives or positives.

    The fair comparison of two scores: each gets the threshold that costs the same
    false-positive rate (ties at the cut are left out, so it never exceeds ``fpr``).
    """
    y = np.asarray(y)
    s = np.asarray(score, dtype=np.float64)
    neg = np.sort(s[y == 0])[::-1]
    if len(neg) == 0 or not (y == 1).any():
        return None
    k = int(np.floor(fpr * len(neg)))
    thr = np.nextafter(neg[k], np.inf) if k < len(neg) else -np.inf
    return float(crosses(s[y == 1], thr).mean())
