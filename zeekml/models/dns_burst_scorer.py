"""Runtime scorer of the DNS burst detector: an originator's DNS lookups in five minutes.

Not a neural model: a count and a threshold, on the same flow table and in the same
notice pipeline as the others, for what they measured blind to (the Simda DGA capture gets
no notice from the default models, docs/models.md). Its card (``dns_burst.card.json``, no
graph, bundled in ``onnx_models/optional/``: ``--model dns_burst`` turns it on) holds the
window and the threshold; :mod:`zeekml.windows.lookups` does the counting.

Per flow (see :class:`~zeekml.models.base.ScoreBatch`):

``score``      DNS lookups of the flow's originator within the card's horizon (300 s)
               among its last lookups (the card's depth, 255) and the flow itself; 0 for
               a flow that is no DNS lookup
``cls``        ``dns_burst``
``threshold``  the card's threshold
``context``    uids of up to 5 earlier lookups counted, newest first

The card is untrusted: kind, window key, depth, horizon and the threshold are checked
before anything is scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.models.base import ScoreBatch
from zeekml.models.card import ModelCard
from zeekml.models.count_scorer import CountScorer, context_column, validate_count_card
from zeekml.models.registry import ScorerOptions
from zeekml.windows.lookups import LookupHistory, dns_lookups

KIND = "dns_burst"
CLASSES = ("dns_burst",)
MAX_DEPTH = 1023
#: originators of lookups kept: a sixty-fourth of ``--max-hosts``, least recently seen
#: evicted first. A bursting host looks something up every second and stays; at the
#: default (15,625 hosts of 256 lookups) the store stays under 100 MB
KEY_SHARE = 64


def validate_card(card: ModelCard) -> tuple[int, float, float]:
    """Check the card's fields; return (depth, horizon, threshold)."""
    depth, horizon, t = validate_count_card(card, KIND, LookupHistory.key, MAX_DEPTH, CLASSES)
    return depth, horizon, t[CLASSES[0]]


class DnsBurstScorer(CountScorer[LookupHistory]):
    """Scorer for a ``dns_burst`` card (see the module docstring for the outputs)."""

    def __init__(self, card: ModelCard, options: ScorerOptions | None = None) -> None:
        depth, horizon, self.threshold = validate_card(card)
        super().__init__(card, options, LookupHistory, depth, horizon, KEY_SHARE)
        self.notice_classes = CLASSES

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        c = self.store.push(flows)
        b = len(flows)
        return ScoreBatch(
            model=self.name,
            score=c.lookups.astype(np.float64),
            cls=np.full(b, CLASSES[0], dtype=object),
            threshold=np.full(b, self.threshold),
            extra={"context": context_column(c, b)},
        )

    def score_alone(self, flows: pd.DataFrame) -> ScoreBatch:
        """Each row scored as if its originator had no other flow (rows of a random
        sample): a lookup is one lookup, never a burst. The store is not touched."""
        b = len(flows)
        return ScoreBatch(
            model=self.name,
            score=dns_lookups(flows).astype(np.float64),
            cls=np.full(b, CLASSES[0], dtype=object),
            threshold=np.full(b, self.threshold),
        )
