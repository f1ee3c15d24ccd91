"""One pure function in a helper thread while the caller goes on (numpy and pyarrow
release the GIL in their inner loops, so two such computations share the two cores).

Used on reading hot paths for a self-contained step, e.g. the binetflow reader
synthesizes uids while it maps states. A thread per call (not a pool): nothing
survives a ``fork`` (Spark's Python workers fork), and the cost, tens of microseconds,
is nothing next to a batch of tens of thousands of rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``fn(*args)`` started in a thread; :meth:`result` waits and returns it (or
    raises what it raised)."""

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as exc:  # handed to the caller by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="zeekml-background", daemon=True)
        self._thread.start()

    def wait(self) -> Background[T]:
        """Wait for the function to end (without raising what it raised)."""
        self._thread.join()
        return self

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
