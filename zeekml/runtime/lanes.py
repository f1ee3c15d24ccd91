"""Each scorer in a long-lived thread of its own, scoring the next batch while the notice
policy decides and the sinks write the last one.

A batch used to be scored by every model side by side and then decided: the models
waited for the slowest one (the AMF-LSTM), and everything waited for the policy and the
write. On two cores that left a core idle for a fifth of a ``zeekml score`` run. With
lanes, batch k + 1 is handed to every scorer's lane before batch k is decided, so each
lane goes from one batch to the next without waiting for the others or for the policy.

What keeps verdicts and exactly-once unchanged:

* a lane scores its batches in the order given, one at a time (a scorer's per-host state
  is a stream); the results are collected in that order;
* a scorer is laned only if its results stay valid after its next ``score`` call
  (``results_survive_next_score``: a :class:`~zeekml.models.base.Deferred` of batch k must
  still be answerable once batch k + 1 is pushed; the bundled scorers build every
  window from arrays made for that batch). A plugin that does not say so is scored the
  old way, all scorers of a batch together;
* the pipeline drains (decides and writes the batch held back) before every flush,
  commit, finish and close, so a saved state never holds a scorer's state ahead of what
  was written; :meth:`ScorerLanes.close` waits for the lanes to stop, so an abort never
  cuts an output back under a scorer still running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import pandas as pd

from zeekml.models.base import ScoreBatch, Scorer

_STOP = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Lane:
    """One scorer's thread: batches in, results out, in order."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.todo: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"zeekml-lane-{scorer.name}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            flows = self.todo.get()
            if flows is _STOP:
                return
            try:
                result: object = self.scorer.score(flows)
            except BaseException as exc:  # handed to the collector, raised there
                result = _Failed(exc)
            self.done.put(result)


def can_lane(scorers: Sequence[Scorer]) -> bool:
    """Every scorer's results survive its next ``score`` call (see the module docstring)."""
    return len(scorers) > 0 and all(getattr(s, "results_survive_next_score", False) is True
                                    for s in scorers)


class ScorerLanes:
    """Lanes for ``scorers``: :meth:`submit` a batch, :meth:`collect` the oldest one's
    results (one :class:`~zeekml.models.base.ScoreBatch` per scorer, in scorer order)."""

    def __init__(self, scorers: Sequence[Scorer]) -> None:
        self._lanes = [_Lane(s) for s in scorers]
        self.in_flight = 0

    def submit(self, flows: pd.DataFrame) -> None:
        for lane in self._lanes:
            lane.todo.put(flows)
        self.in_flight += 1

    def collect(self) -> list[ScoreBatch]:
        """Wait for the oldest batch submitted and return its results; if a scorer
        failed on it, raise that failure (after every lane answered for the batch)."""
        if self.in_flight == 0:
            raise RuntimeError("no batch in flight")
        results = [lane.done.get() for lane in self._lanes]
        self.in_flight -= 1
        for r in results:
            if isinstance(r, _Failed):
                raise r.error
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop every lane after the batches it holds and wait for it; results not
        collected are dropped."""
        for lane in self._lanes:
            lane.todo.put(_STOP)
        for lane in self._lanes:
            lane.thread.join()
        self.in_flight = 0
