"""Read the next piece of an input while the caller scores the current one.

``zeekml score`` alternates two jobs that use different resources: parsing the next
chunk of a log (pyarrow's CSV parser and the column casts, which release the GIL) and
scoring the batch it holds (onnxruntime, numpy). :func:`prefetched` runs the reading
iterator in a helper thread at most ``depth`` items ahead, so the parse of chunk k + 1
overlaps the scoring of chunk k.

Why it cannot break exactly-once: the items are handed over unchanged and in order, and
each :class:`~zeekml.sources.stream.Piece` carries the cursor that is true once *its*
batches are written; the caller commits a piece's cursor after processing that piece,
never the cursor of a piece read ahead. A failure of the reader (a bad input under
``--strict``, an unreadable file) is raised to the caller at the same place in the
sequence as without the thread: after every item read before it. When the caller stops
early (an exception, ``close()``), the helper is told to stop, the read-ahead items are
dropped unprocessed (their input is read again by the next run, from the last committed
cursor) and the reading iterator is closed in the helper thread, so its files are
closed before :func:`prefetched` returns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    """The reading iterator raised: handed over in order, raised by the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield what ``items`` yields, produced by a helper thread up to ``depth`` ahead.

    ``depth < 1`` iterates in the caller's thread (no helper).
    """
    if depth < 1:
        yield from items
        return
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the reader's files, in the thread that runs it

    helper = threading.Thread(target=produce, name="zeekml-read-ahead", daemon=True)
    helper.start()
    try:
        while True:
            value = handoff.get()
            if value is _DONE:
                return
            if isinstance(value, _Failed):
                raise value.error
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        while helper.is_alive():
            try:  # unblock a helper waiting to hand over an item
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
        helper.join()
