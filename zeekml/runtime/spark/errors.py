"""A zeekml error raised in an executor reaches the driver as itself."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from zeekml.errors import ParseError, ZeekmlError

log = logging.getLogger(__name__)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an executor function; a ZeekmlError travels to the driver as marked text."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except ZeekmlError as exc:
            raise RuntimeError(_mark(exc)) from exc
        return _guard_iter(out) if isinstance(out, Iterator) else out

    return wrapped


def _guard_iter(it: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from it
    except ZeekmlError as exc:
        raise RuntimeError(_mark(exc)) from exc


def _mark(exc: ZeekmlError) -> str:
    doc = {"cls": type(exc).__name__, "msg": str(exc)}
    if isinstance(exc, ParseError):
        doc.update(path=exc.path, line=exc.line, reason=exc.reason)
    return f"{_ERROR_MARK}{json.dumps(doc)}{_ERROR_MARK}"


def _action(fn: Callable[[], Any], what: str = "spark job") -> Any:
    """Run a Spark action; a zeekml error raised in a task is re-raised here as itself."""
    t0 = time.perf_counter()
    try:
        out = fn()
        log.debug("%s: %.2f s", what, time.perf_counter() - t0)
        return out
    except Exception as exc:  # pyspark wraps task failures in its own exception types
        text = str(exc)
        i = text.find(_ERROR_MARK)
        j = text.find(_ERROR_MARK, i + len(_ERROR_MARK)) if i >= 0 else -1
        if j < 0:
            raise
        import zeekml.errors as errors

        doc = json.loads(text[i + len(_ERROR_MARK):j])
        if doc.get("cls") == "ParseError":
            raise ParseError(doc["path"], doc["line"], doc["reason"]) from None
        cls = getattr(errors, str(doc.get("cls")), ZeekmlError)
        if not (isinstance(cls, type) and issubclass(cls, ZeekmlError)):
            cls = ZeekmlError
        raise cls(doc["msg"]) from None

_ERROR_MARK = "ZEEKML-ERROR"
