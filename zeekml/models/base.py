"""The contract every scorer implements (built-in AMF-LSTM, flow LM, or a plugin).

A scorer turns a canonical flow batch into per-flow scores. It keeps its own bounded
per-host / per-conversation state, so it must see every batch of a stream in order,
and that state must round-trip through plain numpy arrays for ``--state``.

Scores and decisions are separate: a scorer reports, per flow, a ``score`` (higher
is more suspicious), the class it would report (``cls``) and the card's threshold for
that class; :mod:`zeekml.policy.notice` decides what becomes a notice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Deferred:
    """A per-flow column computed only for the rows that need it.

    Context uids are lists per flow, costly to build (string decoding, Python lists) and
    written only for notices unless ``--all``: a scorer may hand the pipeline a
    ``Deferred`` instead of the array, and the pipeline asks for the rows it writes.
    ``take(rows)`` returns an object array ``[len(rows)]``; it must be called before the
    scorer's next ``score`` (it may read the scorer's buffers).
    """

    n: int
    compute: Callable[[np.ndarray], np.ndarray]

    def __len__(self) -> int:
        return self.n

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.compute(np.asarray(rows, dtype=np.int64))


@dataclass
class ScoreBatch:
    """Per-flow results aligned with the input batch's rows.

    ``score``     float64 [B], higher = more suspicious (AMF: 1 - P(normal); LM: NLL nats)
    ``cls``       object  [B], the class the model would report if it is a notice
                  (AMF: the most probable non-normal class; LM: ``"anomaly"``)
    ``threshold`` float64 [B], the card's calibrated threshold for ``cls``
    ``extra``     name -> array [B] of analyst context, written as extra output
                  columns (e.g. ``alt``, ``alt_p``, ``context`` as lists of uids;
                  ``context`` may be a :class:`Deferred`)
    ``about_responder``  every notice of this model is about the flow's responder (the
                  flood detector's victim), whatever the flow's direction: the
                  suppression key's and the incident's host. Otherwise (the default)
                  the responder of an inbound flow, else the originator.
    ``about_originator`` every notice of this model is about the flow's originator (the
                  scan detector's scanner: a sweep of a /24 from outside is one notice
                  about the scanner, not one per local host it probed)
    """

    model: str
    score: np.ndarray
    cls: np.ndarray
    threshold: np.ndarray
    extra: dict[str, np.ndarray | Deferred] = field(default_factory=dict)
    about_responder: bool = False
    about_originator: bool = False

    def __len__(self) -> int:
        return len(self.score)


@runtime_checkable
class Scorer(Protocol):
    """What the pipeline needs from a model.

    Two attributes are optional (plugins without them are not checked), and let
    ``--threshold`` / ``--config`` thresholds be validated before a run instead of
    silently matching nothing:

    ``notice_classes``  tuple of the class names ``cls`` can take (AMF: the card's
                        ``classes`` without ``normal``; LM: ``("anomaly",)``)
    ``score_range``     ``(low, high)`` of the scores it reports (AMF: probabilities
                        ``(0.0, 1.0)``; LM: NLL in nats ``(0.0, inf)``)

    A third, ``results_survive_next_score = True``, says a :class:`ScoreBatch` (its
    :class:`Deferred` included) stays valid after the scorer's next ``score`` call: the
    scorer may then run a batch ahead of the policy in ``zeekml score``
    (:mod:`zeekml.runtime.lanes`). Without it the pipeline never scores the next batch
    before this one's context is taken.
    """

    name: str

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        """Score a canonical batch (rows in stream order), updating internal state."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """Internal state as plain numpy arrays (saved without pickle)."""
        ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`; raises StateError on a mismatch."""
        ...


def declared_classes(scorer: object) -> tuple[str, ...] | None:
    """The scorer's ``notice_classes``, or None when it declares none (or nonsense)."""
    classes = getattr(scorer, "notice_classes", None)
    if isinstance(classes, (list, tuple)) and classes and all(
        isinstance(c, str) and c for c in classes
    ):
        return tuple(classes)
    return None


def declared_range(scorer: object) -> tuple[float, float] | None:
    """The scorer's ``score_range`` as ``(low, high)``, or None when it declares none."""
    rng = getattr(scorer, "score_range", None)
    if not isinstance(rng, (list, tuple)) or len(rng) != 2:
        return None
    try:
        lo, hi = float(rng[0]), float(rng[1])
    except (TypeError, ValueError):
        return None
    return (lo, hi) if lo <= hi else None
