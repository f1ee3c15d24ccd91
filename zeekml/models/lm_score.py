"""How the flow LM's outputs become one anomaly score (numpy only, from the card).

The graph gives, per flow, two negative log-likelihoods of its word (nats): ``nll``
given the conversation's previous words and ``nll0`` given no context. The card's
unigram table gives a third, ``unigram`` (``-log`` training frequency of the word,
``<unk>`` words backing off to their components' frequencies). The card's ``score``
object says how they combine::

    "score": {"weights": {"nll": 0.5, "nll0": 0.0, "unigram": 0.5}, "rule": "..."}

``score = sum(weight * term)``, or with ``"combine": "max"`` the largest weighted term
(``max(weight * term)`` over the terms whose weight is > 0). Why a combination: a sequence model alone learns an
attack from the attack's own conversation (a scanner's thousandth probe is perfectly
predictable after the first), while word rarity alone cannot tell a rare word that
its context explains from one that nothing explains; the weights are chosen by
leave-one-capture-out evaluation and recorded with the figures that chose them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeekml.errors import ModelError
from zeekml.features.tokens import UNK
from zeekml.models.card import ModelCard

TERMS = ("nll", "nll0", "unigram")
COMBINE = ("sum", "max")
DEFAULT_WEIGHTS = {"nll": 1.0, "nll0": 0.0, "unigram": 0.0}


class Unigram:
    """The card's unigram baseline: ``-log P(word)`` with the ``<unk>`` back-off."""

    def __init__(self, card: ModelCard, vocab_size: int, radices: np.ndarray) -> None:
        uni = card.require("unigram", dict)
        back = card.require("backoff", dict)
        try:
            self.log_prob = np.asarray(uni["log_prob"], dtype=np.float64)
            self.threshold = float(uni["threshold"])
            self.log_marg = [np.asarray(m, dtype=np.float64) for m in back["log_marginals"]]
            self.log_z = float(back["log_z"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{card.path}: malformed unigram/backoff fields: {exc}") from exc
        if self.log_prob.shape != (vocab_size,) or [len(m) for m in self.log_marg] != radices.tolist():
            raise ModelError(f"{card.path}: unigram/backoff sizes do not match the tokenizer")
        if not (np.all(np.isfinite(self.log_prob[1:])) and all(np.all(np.isfinite(m)) for m in self.log_marg)
                and math.isfinite(self.log_z) and math.isfinite(self.threshold)):
            raise ModelError(f"{card.path}: unigram/backoff values must be finite")

    def score(self, words: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """Score of each window's last word (nats)."""
        last = words[:, -1]
        p = parts[:, -1, :]
        q = sum(m[p[:, j]] for j, m in enumerate(self.log_marg)) - self.log_z
        return -(self.log_prob[last] + np.where(last == UNK, q, 0.0))


@dataclass(frozen=True)
class ScoreRule:
    """Non-negative weights of the score's terms (see the module docstring)."""

    nll: float = 1.0
    nll0: float = 0.0
    unigram: float = 0.0
    #: "sum" of the weighted terms, or their "max" (a flow is as anomalous as its most
    #: surprising view: a word the conversation explains but that is rare anywhere, or
    #: a common word this conversation has never said)
    how: str = "sum"

    @classmethod
    def from_card(cls, card: ModelCard) -> ScoreRule:
        obj = card.data.get("score")
        if obj is None:  # cards written before the rule existed: the contextual NLL
            return cls()
        weights = obj.get("weights") if isinstance(obj, dict) else None
        if not isinstance(weights, dict) or set(weights) - set(TERMS):
            raise ModelError(f"{card.path}: 'score' must be {{'weights': {{{', '.join(TERMS)}}}}}")
        vals = {}
        for k in TERMS:
            v = weights.get(k, 0.0)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 <= v < 1e6):
                raise ModelError(f"{card.path}: score weight {k!r} must be a number >= 0")
            vals[k] = float(v)
        if sum(vals.values()) <= 0:
            raise ModelError(f"{card.path}: score weights are all zero")
        how = obj.get("combine", "sum")
        if how not in COMBINE:
            raise ModelError(f"{card.path}: score 'combine' must be one of {', '.join(COMBINE)}")
        return cls(**vals, how=how)

    def to_json(self) -> dict[str, Any]:
        return {"nll": self.nll, "nll0": self.nll0, "unigram": self.unigram}

    def combine(self, nll: np.ndarray, nll0: np.ndarray, unigram: np.ndarray) -> np.ndarray:
        if self.how == "max":
            terms = [w * np.asarray(t, dtype=np.float64)
                     for w, t in ((self.nll, nll), (self.nll0, nll0), (self.unigram, unigram)) if w]
            return np.maximum.reduce(terms)
        out = self.nll * np.asarray(nll, dtype=np.float64)
        if self.nll0:
            out = out + self.nll0 * np.asarray(nll0, dtype=np.float64)
        if self.unigram:
            out = out + self.unigram * np.asarray(unigram, dtype=np.float64)
        return out
