"""Metrics against hand-computed cases (numbers worked out on paper in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from zeekml.eval.metrics import (
    accuracy,
    auc_difference_ci,
    average_ranks,
    binary_report,
    classification_report,
    confusion_matrix,
    macro,
    per_class,
    roc_auc,
)


def test_confusion_and_per_class():
    y_true = np.array([0, 0, 1, 1, 2, 2, -1])
    y_pred = np.array([0, 1, 1, 1, 0, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # the -1 row is ignored
    per = per_class(cm, ["a", "b", "c"])
    assert per["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert per["b"]["precision"] == pytest.approx(2 / 3)
    assert per["b"]["recall"] == 1.0
    assert per["b"]["f1"] == pytest.approx(0.8)  # 2*2 / (2*2 + 1 + 0)
    assert per["c"]["precision"] == 1.0 and per["c"]["recall"] == 0.5
    assert per["c"]["f1"] == pytest.approx(2 / 3)
    assert macro(per, "f1") == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_undefined_metrics_are_none():
    # class 2 absent and never predicted; class 1 present but never predicted
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 0]), 3)
    per = per_class(cm, ["n", "x", "y"])
    assert per["y"] == {"precision": None, "recall": None, "f1": None, "support": 0, "predicted": 0}
    assert per["x"]["precision"] is None
    assert per["x"]["recall"] == 0.0 and per["x"]["f1"] == 0.0
    assert macro(per, "f1") == pytest.approx((0.8 + 0.0) / 2)  # n: 2*2/(4+1)=0.8
    assert macro(per, "precision", ["y"]) is None
    # a class predicted but absent: precision 0, recall undefined, F1 0
    per2 = per_class(confusion_matrix(np.array([0, 0]), np.array([0, 1]), 2), ["n", "x"])
    assert per2["x"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0, "predicted": 1}
    assert accuracy(np.array([-1]), np.array([0])) is None


def test_roc_auc_hand_cases():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # ties: pos 0.5 vs neg 0.5 counts 1/2 -> (0.5 + 1 + 2) / 4
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(0.875)
    assert roc_auc(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == 1.0
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    assert roc_auc(np.array([0, 0, -1]), np.array([0.2, 0.3, 0.5])) is None
    with pytest.raises(ValueError):
        roc_auc(np.array([0, 1]), np.array([0.1, np.nan]))


def test_roc_auc_matches_pair_count_on_random_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 7, 300).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_auc_difference_is_the_difference_of_the_two_aucs():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    a = rng.integers(0, 9, 400) + 2.0 * y  # ties, and better than b
    b = rng.integers(0, 9, 400) + 0.5 * y
    diff, low, high = auc_difference_ci(y, a, b, np.arange(400), resamples=300)
    assert diff == pytest.approx(roc_auc(y, a) - roc_auc(y, b))
    assert 0 < low < diff < high
    same = auc_difference_ci(y, a, a.copy(), np.arange(400), resamples=50)
    assert same == (0.0, 0.0, 0.0)
    assert auc_difference_ci(np.ones(5), a[:5], b[:5], np.arange(5)) is None


def test_auc_difference_resamples_whole_clusters():
    """Forty copies of each of 30 flows are 30 observations, not 1,200: the interval
    from whole clusters is as wide as the one from the 30 flows, the flow-level one is
    far too narrow."""
    rng = np.random.default_rng(2)
    y = np.tile([0, 1], 15)
    a = rng.normal(size=30) + 0.8 * y
    b = rng.normal(size=30) + 0.4 * y
    copies = np.repeat(np.arange(30), 40)
    _, lo30, hi30 = auc_difference_ci(y, a, b, np.arange(30), resamples=400, seed=3)
    _, lo_c, hi_c = auc_difference_ci(y[copies], a[copies], b[copies], copies, resamples=400,
                                      seed=3)
    _, lo_f, hi_f = auc_difference_ci(y[copies], a[copies], b[copies], np.arange(1200),
                                      resamples=400, seed=3)
    assert hi_c - lo_c > 0.8 * (hi30 - lo30)
    assert hi_f - lo_f < 0.4 * (hi_c - lo_c)


def test_average_ranks():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert average_ranks(np.array([])).tolist() == []


def test_binary_report():
    y = np.array([1, 1, 1, 0, 0, 0, 0, -1])
    p = np.array([1, 1, 0, 1, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.1, 0.99])
    r = binary_report(y, p, s)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 3)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["fpr"] == pytest.approx(1 / 4)
    # positives 0.9, 0.8, 0.3 vs negatives 0.7, 0.2, 0.1, 0.1: 4 + 4 + 3 = 11 of 12
    assert r["auc"] == pytest.approx(11 / 12)
    only_neg = binary_report(np.array([0, 0]), np.array([0, 1]), np.array([0.1, 0.9]))
    assert only_neg["recall"] is None and only_neg["auc"] is None and only_neg["fpr"] == 0.5
    assert only_neg["precision"] == 0.0


def test_classification_report_keys():
    r = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), ["normal", "c2"])
    assert set(r) >= {"classes", "macro_f1", "accuracy", "confusion"}
    assert r["accuracy"] == pytest.approx(2 / 3)
