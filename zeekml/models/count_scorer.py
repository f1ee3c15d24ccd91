"""What the card-only count detectors (scan, DNS burst, brute force) share as scorers.

Each is a count over a per-key store (:class:`~zeekml.windows.counted.CountedHistory`)
and thresholds from its card, scored in the same notice pipeline as the neural models:
no ONNX graph, results made for each batch (valid after the next push), a score range of
``0 .. depth + 1`` (the window and the flow itself), and the store as the whole state.
Each detector's module validates its card and names its classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic, Protocol, TypeVar

import numpy as np

from zeekml.errors import ModelError
from zeekml.models.base import Deferred
from zeekml.models.card import ModelCard
from zeekml.models.context import uid_lists
from zeekml.models.registry import ScorerOptions
from zeekml.windows.counted import CountedHistory


def validate_count_card(card: ModelCard, kind: str, key: str, max_depth: int,
                        classes: Sequence[str], *, optional: Sequence[str] = (),
                        least: float = 1.0, capped: bool = True
                        ) -> tuple[int, float, dict[str, float]]:
    """Check a count detector's card (it is untrusted): its kind, its window (key, depth,
    horizon: :meth:`ModelCard.count_window`) and a finite threshold for each class, at
    least ``least`` and (``capped``) at most the window's depth + 1 (no count is larger);
    a class of ``optional`` may be left out, any other name is refused. Returns (depth,
    horizon, class -> threshold)."""
    if card.kind != kind:
        raise ModelError(f"{card.path}: model kind is {card.kind!r}, not {kind!r}")
    depth, horizon = card.count_window(key, max_depth)
    names = (*classes, *optional)
    unknown = sorted(set(card.thresholds) - set(names))
    if unknown:
        raise ModelError(f"{card.path}: unknown {kind} threshold(s) {unknown}; the classes "
                         f"are {list(names)}")
    most = depth + 1 if capped else math.inf
    thresholds = {}
    for cls in names:
        t = card.thresholds.get(cls)
        if t is None and cls in optional:
            continue
        if t is None or not math.isfinite(t) or not least <= t <= most:
            bound = (f"in {least:g}..{depth + 1} (the window's depth + 1)" if capped
                     else f">= {least:g}")
            raise ModelError(f"{card.path}: threshold of {cls!r} must be a number {bound}")
        thresholds[cls] = float(t)
    return depth, horizon, thresholds


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
