"""Runtime scorer of the brute-force detector: alike sessions to one login service.

Not a neural model: a count and a threshold per class, on the same flow table and in the
same notice pipeline as the others, for what the neural models measured blind to
(brute force read as NetFlow: no notice from any default model, docs/models.md). Its card
(``bruteforce.card.json``, no graph) holds the window and the thresholds;
:mod:`zeekml.windows.logins` does the counting.

Per flow (see :class:`~zeekml.models.base.ScoreBatch`):

``score``      the originator's answered connections to the flow's own target (responder
               address and service) within the card's horizon (300 s) among its last
               attempts (the card's depth, 63) whose sizes are alike to the flow's, the
               flow included; 0 for a flow that is no attempt
``cls``        ``login_guessing`` for a login service (SSH, FTP, telnet, RDP, VNC, mail,
               databases: :data:`~zeekml.windows.logins.LOGIN_PORTS`), ``http_guessing``
               for plain HTTP (:data:`~zeekml.windows.logins.WEB_PORTS`)
``threshold``  the card's threshold of that class
``context``    uids of up to 5 earlier alike attempts counted, newest first

The card is untrusted: kind, window key, depth, horizon and both thresholds are checked
before anything is scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.models.base import Deferred, ScoreBatch
from zeekml.models.card import ModelCard
from zeekml.models.count_scorer import CountScorer, context_column, validate_count_card
from zeekml.models.registry import ScorerOptions
from zeekml.windows.logins import WEB, LoginHistory, login_attempts

KIND = "bruteforce"
CLASSES = ("login_guessing", "http_guessing")
_CLASS_NAMES = np.array(CLASSES, dtype=object)
MAX_DEPTH = 255
#: originators of attempts kept: a sixteenth of ``--max-hosts``, least recently seen
#: evicted first. A guessing host connects every few seconds and stays; at the default
#: (62,500 hosts of 64 attempts, 40 bytes each) the store stays under 170 MB
KEY_SHARE = 16


def validate_card(card: ModelCard) -> tuple[int, float, dict[str, float]]:
    """Check the card's fields; return (depth, horizon, class -> threshold)."""
    return validate_count_card(card, KIND, LoginHistory.key, MAX_DEPTH, CLASSES)


class BruteforceScorer(CountScorer[LoginHistory]):
    """Scorer for a ``bruteforce`` card (see the module docstring for the outputs)."""

    def __init__(self, card: ModelCard, options: ScorerOptions | None = None) -> None:
        depth, horizon, self.thresholds = validate_card(card)
        super().__init__(card, options, LoginHistory, depth, horizon, KEY_SHARE)
        self.notice_classes = CLASSES
        self._threshold_of = np.array([self.thresholds[c] for c in CLASSES])

    def _batch(self, kind: np.ndarray, score: np.ndarray, **extra: Deferred) -> ScoreBatch:
        which = (kind == WEB).astype(np.int8)
        return ScoreBatch(model=self.name, score=score.astype(np.float64),
                          cls=_CLASS_NAMES[which],  # a take: no [B] string array first
                          threshold=self._threshold_of[which], extra=dict(extra))

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        c = self.store.push(flows)
        return self._batch(c.kind, c.alike, context=context_column(c, len(flows)))

    def score_alone(self, flows: pd.DataFrame) -> ScoreBatch:
        """Each row scored as if its originator had no other flow (rows of a random
        sample): an attempt is one attempt, never a guessing run. The store is not
        touched."""
        kind = login_attempts(flows)
        return self._batch(kind, (kind != 0).astype(np.float64))
