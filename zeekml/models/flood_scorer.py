"""Runtime scorer of the flood detector: unanswered flows from many sources to one victim.

Not a neural model: a count and a threshold, on the same flow table and in the same notice
pipeline as the others, for what the neural models measured weak at (held out, the
AMF-LSTM noticed 17.5% and 30.6% of two real reflection attacks read as NetFlow, the
StopDDoS ISAKMP and DNS captures: docs/models.md). Its card (``flood.card.json``, no graph)
holds the window and the threshold; :mod:`zeekml.windows.floods` does the counting.

Per flow (see :class:`~zeekml.models.base.ScoreBatch`):

``score``      distinct originator addresses among the responder's last 63 unanswered,
               not outbound flows within 10 s and the flow itself (the card's window); 0
               for any other flow
``cls``        ``ddos``
``threshold``  the card's threshold
``context``    uids of up to 5 earlier flows counted, newest first

Its notices are about the victim whatever the flow's direction
(:attr:`~zeekml.models.base.ScoreBatch.about_responder`): the suppression key and the
incident are the victim's, so a flood from thousands of sources, spoofed local-looking
ones included, is one notice per victim and suppression interval.

The card is untrusted: kind, window key, depth, horizon and the threshold are checked
before anything is scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.models.base import Deferred, ScoreBatch
from zeekml.models.card import ModelCard
from zeekml.models.count_scorer import CountScorer, context_column, validate_count_card
from zeekml.models.registry import ScorerOptions
from zeekml.windows.floods import FloodHistory, flood_flows

KIND = "flood"
CLASSES = ("ddos",)
_CLASS_NAMES = np.array(CLASSES, dtype=object)
MAX_DEPTH = 255
#: victims of unanswered flows kept: a sixteenth of ``--max-hosts``, least recently seen
#: evicted first. A flood's victim is seen many times a second and stays
KEY_SHARE = 16


def validate_card(card: ModelCard) -> tuple[int, float, float]:
    """Check the card's fields; return (depth, horizon, threshold): at least 2 sources."""
    depth, horizon, t = validate_count_card(card, KIND, FloodHistory.key, MAX_DEPTH, CLASSES,
                                            least=2)
    return depth, horizon, t[CLASSES[0]]


class FloodScorer(CountScorer[FloodHistory]):
    """Scorer for a ``flood`` card (see the module docstring for the outputs)."""

    #: its notices are about the victim (:attr:`ScoreBatch.about_responder`)
    about_responder = True

    def __init__(self, card: ModelCard, options: ScorerOptions | None = None) -> None:
        depth, horizon, self.threshold = validate_card(card)
        super().__init__(card, options, FloodHistory, depth, horizon, KEY_SHARE)
        self.notice_classes = CLASSES

    def _batch(self, score: np.ndarray, **extra: Deferred) -> ScoreBatch:
        n = len(score)
        return ScoreBatch(model=self.name, score=score.astype(np.float64),
                          cls=np.broadcast_to(_CLASS_NAMES, (n,)).copy(),
                          threshold=np.full(n, self.threshold), extra=dict(extra),
                          about_responder=self.about_responder)

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        c = self.store.push(flows)
        return self._batch(c.sources, context=context_column(c, len(flows)))

    def score_alone(self, flows: pd.DataFrame) -> ScoreBatch:
        """Each row scored as if its victim had no other flow (rows of a random sample):
        one source, never a flood. The store is not touched."""
        return self._batch(flood_flows(flows).astype(np.float64))
