"""Per-class AMF-LSTM thresholds calibrated to a false-alarm rate on many benign flows.

The rule, and why. A threshold chosen from a handful of tail points (the top 2 of a
few thousand validation flows) moves by orders of magnitude between runs, and says
nothing about how often a new network's benign traffic crosses it. Here each class's
threshold is set so that the *out-of-fold* benign flows (every benign flow scored by a
model that never trained on its capture) raise that class at most a fraction
``alpha_c`` of the time:

* ``score = 1 - P(normal)``; a flow alarms as its most probable attack class ``c``
  when ``score >= threshold[c]`` (the runtime's rule, :mod:`zeekml.policy.notice`);
* with ``N`` benign out-of-fold flows and a per-class false-alarm budget ``alpha_c``,
  at most ``k_c = floor(alpha_c * N)`` of them may alarm as ``c``: the threshold is
  just above the ``(k_c + 1)``-th highest class-``c`` benign score (never below
  ``floor``), so the budget holds exactly on the calibration flows (a threshold
  above 1 means the class's benign scores saturate at 1: it cannot be emitted within
  the budget, and is not);
* the bound is only meaningful when ``k_c`` is not tiny: below ``min_allowed`` flows
  allowed the calibration set is too small for the requested rate and
  :class:`ThresholdReport` says so (``supported`` false), so the card can state it;
* a one-sided 95% upper bound on the false-alarm rate at the chosen threshold
  (Clopper-Pearson, from the observed count on ``N`` flows) is recorded beside it.

Budget split: the overall budget ``alpha`` is divided evenly over the attack classes
(``alpha_c = alpha / (C - 1)``), so the total benign alarm rate of all classes
together stays within ``alpha`` on the calibration flows.

Classes too thin to vouch for: a class whose labeled flows come from fewer than
``min_captures`` training captures (``support``) is not emitted (threshold
:data:`NOT_EMITTED`, above every score). With one or two captures of a class no
capture is left to check on a network the model never saw whether its alarms are
right, and leave-one-capture-out over the shared corpus measured them wrong: the
one-capture classes (dos, webattack, infiltration) raised 192 of the 287 benign
out-of-fold alarms (TLS to ordinary web servers called "webattack") at precision 0.0.
Their probability mass still counts in the score (``1 - P(normal)``); only the class
cannot raise a notice. ``--threshold MODEL:CLASS=T`` turns one back on.

Classes left to another detector (``deferred``): trained on and counted in the score
like every class, never emitted. zeekml's count detectors own port scans (``scan``)
and login guessing (``bruteforce``) by default; where they do, an AMF-LSTM notice of
the same class is a second, less reliable verdict on the same flows (leave-one-capture-
out measured the AMF-LSTM's portscan and bruteforce notices at precision 0.37 and 0.0,
and they were 54 of its 82 alarms on benign flows). The other classes' thresholds are
the same with or without deferral (the budget split does not change).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: overall false-alarm budget (share of benign flows alarming as any attack class)
DEFAULT_ALPHA = 0.0025
#: below this many benign flows allowed per class, the rate bound is not meaningful
MIN_ALLOWED = 10
#: no threshold below this: an attack class must at least outweigh normal
FLOOR = 0.5
#: thresholds are rounded *up* to this many decimals (readable, never below the rule)
DECIMALS = 6
#: the threshold of a class that is not emitted: above every score (scores are <= 1)
NOT_EMITTED = 1.000001
#: a class is emitted only when its labeled flows come from at least this many captures
MIN_CAPTURES = 3


@dataclass
class ThresholdReport:
    """Thresholds plus the support behind each one (recorded in the model card)."""

    thresholds: dict[str, float]
    benign_flows: int
    alpha: float
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        return all(v["supported"] for v in self.per_class.values())

    def as_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "benign_flows": self.benign_flows,
                "alpha": self.alpha, "supported": self.supported, "per_class": self.per_class}


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided Clopper-Pearson upper bound of a rate with ``k`` events in ``n`` trials."""
    if n <= 0:
        return None
    if k >= n:
        return 1.0
    # the upper bound p solves P(X <= k; n, p) = 1 - confidence; bisection on the
    # binomial CDF in log space (numpy only, no scipy at run time)
    target = 1.0 - confidence
    lo, hi = k / n, 1.0
    ks = np.arange(k + 1)
    logc = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in ks])
    for _ in range(100):
        p = (lo + hi) / 2
        cdf = float(np.exp(logc + ks * math.log(p) + (n - ks) * math.log1p(-p)).sum())
        if cdf > target:
            lo = p
        else:
            hi = p
    return hi


def _ceil(v: float) -> float:
    scale = 10.0 ** DECIMALS
    return math.ceil(v * scale) / scale


def attack_view(probs: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(score = 1 - P(normal), index of the most probable non-normal class) per row."""
    normal = list(classes).index("normal")
    score = 1.0 - probs[:, normal].astype(np.float64)
    nn = probs.astype(np.float64, copy=True)
    nn[:, normal] = -np.inf
    return score, (nn.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class EmitRule:
    """Which classes a model may emit at all: a class whose labeled flows came from fewer
    than ``min_captures`` training captures has no evidence it generalizes, and a
    ``deferred`` one is left to another detector (a count does it better)."""

    min_captures: int = 1
    deferred: tuple[str, ...] = ()

    def emits(self, cls: str, held: int | None) -> bool:
        """``held``: training captures holding ``cls`` (None: not known, not checked)."""
        return (held is None or held >= self.min_captures) and cls not in self.deferred


#: no class withheld
EVERY_CLASS = EmitRule()


def calibrate(
    score: np.ndarray, cls: np.ndarray, benign: np.ndarray, classes: Sequence[str],
    alpha: float = DEFAULT_ALPHA, floor: float = FLOOR, min_allowed: int = MIN_ALLOWED,
    support: dict[str, int] | None = None, rule: EmitRule = EVERY_CLASS,
) -> ThresholdReport:
    """Per-class thresholds from out-of-fold ``score``/``cls`` of rows; ``benign`` marks
    the benign rows (every other row is ignored); ``support``: training captures holding
    each class, read by ``rule`` (a class it does not emit gets no threshold). See the
    module docstring."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    normal = list(classes).index("normal")
    b = np.asarray(benign, dtype=bool)
    s, c = np.asarray(score, dtype=np.float64)[b], np.asarray(cls)[b]
    n = int(b.sum())
    attacks = [i for i in range(len(classes)) if i != normal]
    alpha_c = alpha / max(len(attacks), 1)
    allowed = int(math.floor(alpha_c * n + 1e-9))
    out: dict[str, float] = {}
    per: dict[str, dict[str, Any]] = {}
    for i in attacks:
        sc = np.sort(s[c == i])[::-1]
        if len(sc) > allowed:
            t = max(floor, _ceil(float(np.nextafter(sc[allowed], np.inf))))
        else:
            t = floor
        held = None if support is None else int(support.get(classes[i], 0))
        left = classes[i] in rule.deferred
        emitted = rule.emits(classes[i], held)
        if not emitted:
            t = NOT_EMITTED
        k = int((sc >= t).sum())
        out[classes[i]] = t
        per[classes[i]] = {"threshold": t, "allowed": allowed, "benign_alarms": k,
                           "benign_rate": k / n if n else None, "upper_95": upper_bound(k, n),
                           "benign_top_class": int(len(sc)), "supported": allowed >= min_allowed,
                           "emitted": emitted, "training_captures": held,
                           **({"deferred": True} if left else {})}
    live = [t for c, t in out.items() if per[c]["emitted"]]
    out["default"] = max(live) if live else NOT_EMITTED
    return ThresholdReport(out, n, alpha, per)
