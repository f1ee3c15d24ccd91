"""What the card-only count detectors (scan, DNS burst, brute force) share as scorers.

Each is a count over a per-key store (:class:`~zeekml.windows.counted.CountedHistory`)
and thresholds from its card, scored in the same notice pipeline as the neural models:
no ONNX graph, results made for each batch (valid after the next push), a score range of
``0 .. depth + 1`` (the window and the flow itself), and the store as the whole state.
Each detector's module validates its card and names its classes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Generic, Protocol, TypeVar

import numpy as np

from zeekml.models.base import Deferred
from zeekml.models.card import ModelCard
from zeekml.models.context import uid_lists
from zeekml.models.registry import ScorerOptions
from zeekml.windows.counted import CountedHistory


class _Counts(Protocol):
    def context(self, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _context(counts: _Counts, rows: np.ndarray) -> np.ndarray:
    return uid_lists(*counts.context(rows))


def context_column(counts: _Counts, n: int) -> Deferred:
    """The ``context`` column of a batch of ``n`` flows: the uids of the earlier flows
    each counted, made only for the rows written."""
    return Deferred(n, partial(_context, counts))


#: the detector's store
S = TypeVar("S", bound=CountedHistory)


class CountScorer(Generic[S]):
    """Base of a count detector's scorer: ``self.store`` is built from the card's window,
    with ``1 / key_share`` of ``--max-hosts`` keys."""

    #: a batch's counts and context come from arrays made for that batch, never the
    #: store's buffers: valid after the next push (zeekml.runtime.lanes)
    results_survive_next_score = True

    #: its card describes no ONNX graph (:func:`zeekml.models.registry.load_scorer`)
    graphless = True

    def __init__(self, card: ModelCard, options: ScorerOptions | None,
                 store: Callable[..., S], depth: int, horizon: float, key_share: int) -> None:
        options = options or ScorerOptions()
        self.card = card
        self.name = card.name
        self.store: S = store(max_keys=max(1, options.max_hosts // key_share),
                                           depth=depth, horizon=horizon)
        self.score_range = (0.0, float(depth + 1))

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.store.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.store.load_state_dict(state)
