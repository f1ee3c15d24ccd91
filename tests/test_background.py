"""Work run beside the caller (zeekml/sources/background.py) and the pipeline's scorers run
side by side: results in order, errors raised in the caller, nothing left running."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from zeekml.runtime.pipeline import _score_all
from zeekml.sources.background import Background


def test_result_returns_the_value_and_raises_the_error() -> None:
    assert Background(sum, [1, 2, 3]).result() == 6
    job = Background(int, "not a number")
    assert job.wait() is job  # waiting never raises
    with pytest.raises(ValueError):
        job.result()


class _Slow:
    """A scorer-shaped object: records the thread it ran in, then answers its name."""

    def __init__(self, name: str, delay: float, fail: bool = False) -> None:
        self.name, self.delay, self.fail = name, delay, fail
        self.done = threading.Event()
        self.thread = ""

    def score(self, flows: pd.DataFrame) -> str:
        time.sleep(self.delay)
        self.thread = threading.current_thread().name
        self.done.set()
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        return self.name


def test_scorers_run_side_by_side_in_order_and_an_error_waits_for_the_others() -> None:
    flows = pd.DataFrame({"ts": [1.0]})
    a, b, c = _Slow("a", 0.05), _Slow("b", 0.2), _Slow("c", 0.01)
    assert _score_all(flows, [a, b, c]) == ["a", "b", "c"]  # type: ignore[list-item]
    assert a.thread == threading.current_thread().name and b.thread != a.thread
    first, slow = _Slow("first", 0.0, fail=True), _Slow("slow", 0.3)
    with pytest.raises(RuntimeError, match="first failed"):
        _score_all(flows, [first, slow])  # type: ignore[list-item]
    assert slow.done.is_set()  # the error was raised only after the other scorer ended
