"""AMF thresholds calibrated to a false-alarm budget, and the LOCO machinery around them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zeekml.records.labels import CLASSES
from zeekml.train.amf_thresholds import EmitRule, attack_view, calibrate, upper_bound
from zeekml.train.datasets import WindowSet


def _probs(rng: np.random.Generator, n: int, attack: int, level: np.ndarray) -> np.ndarray:
    """Rows whose P(normal) is 1 - level and whose top attack class is ``attack``."""
    p = np.zeros((n, len(CLASSES)))
    p[:, 0] = 1 - level
    p[:, attack] = level * 0.8
    p[:, (attack % (len(CLASSES) - 1)) + 1] += level * 0.2
    return p


def _benign_scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` benign rows: (score, top attack class, benign mask), scores skewed low."""
    rng = np.random.default_rng(seed)
    return rng.beta(0.5, 4, n), rng.integers(1, len(CLASSES), n), np.ones(n, dtype=bool)


def test_budget_holds_on_the_calibration_flows() -> None:
    n = 40_000
    score, cls, benign = _benign_scores(0, n)
    rep = calibrate(score, cls, benign, CLASSES, alpha=0.0035)
    allowed = math.floor(0.0035 / (len(CLASSES) - 1) * n + 1e-9)
    assert rep.benign_flows == n and allowed == 20
    total = 0
    for i, c in enumerate(CLASSES[1:], start=1):
        k = int(((cls == i) & (score >= rep.thresholds[c])).sum())
        assert k <= allowed, c
        # the threshold is tight: one notch lower would exceed the budget
        lower = np.sort(score[cls == i])[::-1][allowed]
        assert lower < rep.thresholds[c]
        assert rep.per_class[c]["benign_alarms"] == k
        total += k
    assert total <= 0.0035 * n
    assert rep.supported


def test_floor_small_sets_and_saturated_scores() -> None:
    score = np.array([0.1, 0.2, 0.3, 1.0, 1.0, 1.0])
    cls = np.array([1, 1, 1, 3, 3, 3])
    rep = calibrate(score, cls, np.ones(6, dtype=bool), CLASSES, alpha=0.01)
    assert rep.thresholds["ddos"] == 0.5  # nothing above the floor
    assert rep.thresholds["portscan"] > 1.0  # saturated benign scores: cannot be emitted
    assert not rep.supported  # 6 benign flows cannot support a 0.14% per-class rate
    assert rep.thresholds["default"] == max(v for k, v in rep.thresholds.items() if k != "default")
    # malicious rows never move a threshold
    mixed = calibrate(np.r_[score, [0.99] * 50], np.r_[cls, [1] * 50],
                      np.r_[np.ones(6, dtype=bool), np.zeros(50, dtype=bool)], CLASSES, alpha=0.01)
    assert mixed.thresholds == rep.thresholds


def test_upper_bound_matches_known_values() -> None:
    assert upper_bound(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-6)  # ~ 3/n
    assert upper_bound(10, 10_000) == pytest.approx(0.001696, rel=2e-3)
    assert upper_bound(5, 5) == 1.0
    assert upper_bound(0, 0) is None


def test_attack_view_skips_normal() -> None:
    p = np.array([[0.7, 0.1, 0.05, 0.15, 0, 0, 0, 0], [0.01, 0, 0, 0, 0.99, 0, 0, 0]])
    score, cls = attack_view(p, CLASSES)
    np.testing.assert_allclose(score, [0.3, 0.99])
    assert [CLASSES[i] for i in cls] == ["portscan", "c2"]


def _windowset(groups: list[str], rows: int) -> WindowSet:
    g = np.repeat(np.array(groups, dtype=object), rows)
    n = len(g)
    x = np.zeros((n, 2, 3), dtype=np.float32)
    x[:, -1, 0] = np.repeat(np.arange(len(groups)), rows)  # which capture, visible to the fitter
    y = np.tile(np.r_[np.zeros(rows // 2, dtype=np.int64), np.full(rows - rows // 2, 3)], len(groups))
    return WindowSet(x=x, mask=np.ones((n, 2), dtype=bool), y=y, binary=(y > 0).astype(np.int8), group=g,
                     row=np.tile(np.arange(rows), len(groups)))


def test_out_of_fold_never_scores_a_capture_with_a_model_that_saw_it() -> None:
    from zeekml.train import amf_loco

    ws = _windowset(["a", "b", "c", "d"], 10)
    seen_by: list[set[float]] = []

    def fitter(train: WindowSet):
        trained_on = set(train.x[:, -1, 0].tolist())
        seen_by.append(trained_on)

        def predict(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
            p = np.zeros((len(x), len(CLASSES)))
            # probability of normal 1 when the row's capture was in training, else 0
            p[:, 0] = [1.0 if v in trained_on else 0.0 for v in x[:, -1, 0]]
            p[:, 3] = 1 - p[:, 0]
            return p
        return predict

    oof = amf_loco.out_of_fold(ws, {"amf": fitter})["amf"]
    assert len(seen_by) == 4 and all(len(s) == 3 for s in seen_by)
    assert np.all(oof[:, 0] == 0.0)  # every row was scored by a model that never saw it


def test_fold_thresholds_ignore_the_held_out_capture() -> None:
    from zeekml.train import amf_loco

    ws = _windowset(["a", "b", "c"], 4000)
    rng = np.random.default_rng(1)
    probs = _probs(rng, len(ws), 3, rng.uniform(0, 0.6, len(ws)))
    # capture "c"'s benign flows score very high: they must not raise "c"'s own threshold
    hot = (ws.group == "c") & (ws.binary == 0)
    probs[hot] = _probs(rng, int(hot.sum()), 3, np.full(int(hot.sum()), 0.999))
    ft = amf_loco.fold_thresholds(ws, probs, alpha=0.007)
    assert ft["c"].thresholds["portscan"] < 0.7
    assert ft["a"].thresholds["portscan"] > 0.999
    dec = amf_loco.decide(ws, probs, {g: r.thresholds for g, r in ft.items()})
    np.testing.assert_array_equal(dec["flagged"], dec["score"] >= dec["threshold"])


def test_a_class_held_by_too_few_captures_is_not_emitted() -> None:
    """A class whose labeled flows come from fewer than ``min_captures`` training captures
    gets a threshold above every score (so the runtime's ``score >= threshold`` never
    fires for it); the others keep their calibrated thresholds, and the default is the
    highest *emitted* one."""
    from zeekml.train.amf_thresholds import NOT_EMITTED

    n = 20_000
    score, cls, benign = _benign_scores(3, n)
    support = {c: 5 for c in CLASSES} | {"webattack": 1, "dos": 2}
    plain = calibrate(score, cls, benign, CLASSES, alpha=0.0035)
    rep = calibrate(score, cls, benign, CLASSES, alpha=0.0035, support=support,
                    rule=EmitRule(min_captures=3))
    for c in CLASSES[1:]:
        if c in ("webattack", "dos"):
            assert rep.thresholds[c] == NOT_EMITTED > 1.0
            assert rep.per_class[c]["emitted"] is False and rep.per_class[c]["benign_alarms"] == 0
        else:
            assert rep.thresholds[c] == plain.thresholds[c] and rep.per_class[c]["emitted"]
    assert rep.per_class["webattack"]["training_captures"] == 1
    assert rep.thresholds["default"] == max(t for c, t in rep.thresholds.items()
                                            if c not in ("webattack", "dos", "default"))
    # a score of exactly 1 (P(normal) underflowed to 0) still does not reach it
    assert not 1.0 >= NOT_EMITTED


def test_a_deferred_class_is_never_emitted_and_the_others_keep_their_thresholds() -> None:
    """Classes left to another detector (the count detectors' portscan and bruteforce)
    get the not-emitted threshold whatever their support; every other class's threshold
    is exactly the one it has without deferral (the budget split does not change), in
    the shipped set and in every LOCO fold, for both payload kinds."""
    from zeekml.train import amf_loco
    from zeekml.train.amf_thresholds import NOT_EMITTED

    n = 20_000
    score, cls, benign = _benign_scores(5, n)
    rng = np.random.default_rng(5)
    plain = calibrate(score, cls, benign, CLASSES, alpha=0.0035)
    rep = calibrate(score, cls, benign, CLASSES, alpha=0.0035,
                    rule=EmitRule(deferred=("portscan", "bruteforce")))
    for c in CLASSES[1:]:
        if c in ("portscan", "bruteforce"):
            assert rep.thresholds[c] == NOT_EMITTED
            assert rep.per_class[c]["emitted"] is False and rep.per_class[c]["deferred"] is True
            assert rep.per_class[c]["benign_alarms"] == 0
            assert plain.per_class[c]["benign_alarms"] > 0  # it would have alarmed
        else:
            assert rep.thresholds[c] == plain.thresholds[c] and "deferred" not in rep.per_class[c]
    # in LOCO: every fold, and the payload-unknown set too
    ws = _windowset(["a", "b", "c"], 3000)
    probs = _probs(rng, len(ws), 3, rng.uniform(0, 1, len(ws)))
    unknown = np.arange(len(ws)) % 2 == 0
    known, unk = amf_loco.fold_thresholds_by_payload(ws, probs, unknown, None, None, None,
                                                     alpha=0.007,
                                                     rule=EmitRule(deferred=("portscan",)))
    for g in ("a", "b", "c"):
        assert known[g].thresholds["portscan"] == unk[g].thresholds["portscan"] == NOT_EMITTED
    dec = amf_loco.decide(ws, probs, {g: r.thresholds for g, r in known.items()}, unknown,
                          {g: r.thresholds for g, r in unk.items()})
    # every row's top attack class is portscan, many score near 1: none is flagged
    assert (dec["cls"] == CLASSES.index("portscan")).all() and (dec["score"] > 0.99).any()
    assert not dec["flagged"].any()


def test_deferred_classes_must_be_attack_classes() -> None:
    pytest.importorskip("torch")
    from pathlib import Path

    from zeekml.errors import ConfigError
    from zeekml.train.amf_training import AmfTrainRequest

    AmfTrainRequest(out=Path("m.onnx"), corpus="c.json", deferred_classes=("portscan", "bruteforce"))
    for wrong in (("normal",), ("port-scan",)):
        with pytest.raises(ConfigError, match="attack classes"):
            AmfTrainRequest(out=Path("m.onnx"), corpus="c.json", deferred_classes=wrong)


def test_class_support_counts_captures_and_leaves_the_held_out_one_out() -> None:
    from zeekml.train import amf_loco

    ws = _windowset(["a", "b", "c"], 10)  # every capture: normal and portscan
    ws.y[(ws.group == "a") & (ws.y == 3)] = CLASSES.index("webattack")
    # unlabeled rows (-1) do not count: b's and c's normal rows are unlabeled
    ws.y[np.nonzero(ws.group == "b")[0][:5]] = -1
    ws.y[np.nonzero(ws.group == "c")[0][:5]] = -1
    sup = amf_loco.class_support(ws)
    assert sup["normal"] == 1 and sup["portscan"] == 2 and sup["webattack"] == 1 and sup["ddos"] == 0
    assert amf_loco.class_support(ws, without="a")["webattack"] == 0
    assert amf_loco.class_support(ws, without="b")["portscan"] == 1
    # in LOCO, each capture is judged with the classes its fold model saw in >= 2 captures
    probs = np.zeros((len(ws), len(CLASSES)))
    probs[:, 0] = 0.01
    probs[:, 3] = 0.99
    ft = amf_loco.fold_thresholds(ws, probs, alpha=0.007, rule=EmitRule(min_captures=2))
    assert ft["a"].per_class["portscan"]["emitted"] is True  # b and c hold it
    assert ft["c"].per_class["portscan"]["emitted"] is False  # only b of a, b
    assert ft["b"].per_class["webattack"]["emitted"] is False  # only a


def test_thin_classes_rule_defaults_to_three_captures_for_a_corpus_only() -> None:
    pytest.importorskip("torch")
    from pathlib import Path

    from zeekml.errors import ConfigError
    from zeekml.train.amf_training import AmfTrainRequest

    assert AmfTrainRequest(out=Path("m.onnx"), corpus="c.json").class_captures == 3
    # a user's own labeled files: each file is one capture, every class they hold counts
    assert AmfTrainRequest(out=Path("m.onnx"), data=("a.log",)).class_captures == 1
    assert AmfTrainRequest(out=Path("m.onnx"), data=("a.log",), min_class_captures=2).class_captures == 2
    with pytest.raises(ConfigError):
        AmfTrainRequest(out=Path("m.onnx"), corpus="c.json", min_class_captures=0)


def test_sample_weights_give_benign_its_share_and_balance_classes_and_captures() -> None:
    """Benign windows carry ``normal_share`` of the weight; the attack classes share the
    rest equally; inside a class, each capture by the square root of its size."""
    pytest.importorskip("torch")
    from zeekml.train.amf_lstm import sample_weights

    # normal: 900 rows of capture 0, 100 of capture 1; ddos (1): 400 rows; c2 (4): 50 rows
    y = np.array([0] * 1000 + [1] * 400 + [4] * 50)
    groups = np.array([0] * 900 + [1] * 100 + [2] * 400 + [3] * 50)
    for share in (0.5, 0.8):
        w = sample_weights(y, groups, 8, share).astype(np.float64)
        assert w.mean() == pytest.approx(1.0, rel=1e-5)
        total = w.sum()
        assert w[y == 0].sum() / total == pytest.approx(share, rel=1e-5)
        assert w[y == 1].sum() / total == pytest.approx((1 - share) / 2, rel=1e-5)
        assert w[y == 4].sum() / total == pytest.approx((1 - share) / 2, rel=1e-5)
        # capture 0 has 9x the rows of capture 1: 3x (sqrt 9) the weight, not 9x
        assert w[groups == 0].sum() / w[groups == 1].sum() == pytest.approx(3.0, rel=1e-5)


def test_normal_share_reaches_the_training_config() -> None:
    pytest.importorskip("torch")
    from pathlib import Path

    from zeekml.cli.main import build_parser
    from zeekml.errors import ConfigError
    from zeekml.train.amf_training import AmfTrainRequest, _config

    args = build_parser().parse_args(["train", "amf", "--corpus", "c.json", "--out", "m.onnx",
                                      "--normal-share", "0.7"])
    assert args.normal_share == 0.7
    req = AmfTrainRequest(out=Path("m.onnx"), corpus="c.json", normal_share=0.7)
    assert _config(req).normal_share == 0.7
    assert _config(AmfTrainRequest(out=Path("m.onnx"), corpus="c.json")).normal_share == 0.5
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ConfigError, match="normal_share"):
            AmfTrainRequest(out=Path("m.onnx"), corpus="c.json", normal_share=bad)
