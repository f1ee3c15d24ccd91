"""A zeekml error raised in an executor reaches the driver as itself.

PySpark wraps a task's exception in its own types, with the worker's traceback as text.
:func:`guard` wraps every function the executors run: a :class:`~zeekml.errors.ZeekmlError`
leaves it as a ``RuntimeError`` whose text carries the error's class and fields between
two marks; :func:`action` runs a Spark action on the driver and re-raises such an error
as the zeekml error it was (a ``ParseError`` with its file and line), so the CLI prints
its usual one line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from zeekml.errors import ParseError, ZeekmlError
from zeekml.runtime.memory import tune_for_batches

log = logging.getLogger(__name__)

ERROR_MARK = "ZEEKML-ERROR"


_tuned = False


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an executor function; a ZeekmlError travels to the driver as marked text.

    The first call in a Python worker also tunes its allocator for batch work, as the
    CLI does for itself (:func:`zeekml.runtime.memory.tune_for_batches`).
    """

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        global _tuned
        if not _tuned:
            _tuned = True
            tune_for_batches()
        try:
            out = fn(*args, **kwargs)
        except ZeekmlError as exc:
            raise RuntimeError(mark(exc)) from exc
        return guard_iter(out) if isinstance(out, Iterator) else out

    return wrapped


def guard_group(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """:func:`guard` for ``applyInPandas``, which takes a function of one argument."""
    guarded = guard(fn)

    def group(pdf: Any) -> Any:
        return guarded(pdf)

    return group


def guard_iter(it: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from it
    except ZeekmlError as exc:
        raise RuntimeError(mark(exc)) from exc


def mark(exc: ZeekmlError) -> str:
    doc: dict[str, Any] = {"cls": type(exc).__name__, "msg": str(exc)}
    if isinstance(exc, ParseError):
        doc.update(path=exc.path, line=exc.line, reason=exc.reason)
    return f"{ERROR_MARK}{json.dumps(doc)}{ERROR_MARK}"


def action(fn: Callable[[], Any], what: str = "spark job") -> Any:
    """Run a Spark action; a zeekml error raised in a task is re-raised here as itself."""
    t0 = time.perf_counter()
    try:
        out = fn()
        log.debug("%s: %.2f s", what, time.perf_counter() - t0)
        return out
    except Exception as exc:  # pyspark wraps task failures in its own exception types
        text = str(exc)
        i = text.find(ERROR_MARK)
        j = text.find(ERROR_MARK, i + len(ERROR_MARK)) if i >= 0 else -1
        if j < 0:
            raise
        import zeekml.errors as errors

        doc = json.loads(text[i + len(ERROR_MARK):j])
        if doc.get("cls") == "ParseError":
            raise ParseError(doc["path"], doc["line"], doc["reason"]) from None
        cls = getattr(errors, str(doc.get("cls")), ZeekmlError)
        if not (isinstance(cls, type) and issubclass(cls, ZeekmlError)):
            cls = ZeekmlError
        raise cls(doc["msg"]) from None
