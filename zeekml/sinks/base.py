"""The contract every sink implements (Zeek log, JSON, notice.log, syslog, ECS, plugins).

A sink receives verdict tables (see :mod:`zeekml.records.verdicts`) batch by batch.
Exactly-once output across crashes rests on two calls:

``flush()``        makes everything written so far durable (fsync for files, written
                   to the socket for network sinks) and returns nothing;
``checkpoint()``   after a flush, a small JSON-able dict saying how far the sink is;
                   the pipeline stores it in the state file atomically together with
                   the input offsets and window state;
``restore(pos)``   on restart with that state: discard anything written after ``pos``
                   (e.g. truncate the file back), so the re-processed flows are written
                   once.

Optional calls (a plugin without them keeps working, with weaker guarantees):

``begin(run)``        before anything is written: how the run uses outputs
                      (:class:`RunContext`: stateful or not, streaming or batch);
``mark_committed()``  the state holding the last checkpoint is saved;
``abort()``           the run failed before its commit: leave the output as it was at
                      the last commit (file sinks cut back or drop their temporary file);
``delivery()``        delivery counters for the run summary (see below).

Each sink writes whole records in one ``write`` call to its own file/socket, so
several sinks never interleave partial records.

For a network sink, ``flush()`` pushes records towards the collector without waiting
for one that is down (so a live ``tail`` keeps scoring through an outage, within the
sink's buffer bound), while ``checkpoint()`` returns only once everything written is
delivered and raises :class:`~zeekml.errors.SinkError` otherwise: a checkpoint is a
promise that is saved in the state file.

Delivery accounting (optional): a sink that can lose or hold records (network sinks)
also has ``delivery() -> Delivery``, counting records delivered, dropped (given up:
buffer bound, a refused datagram) and still queued. The run summary of ``score`` and
``tail`` and ``tail --metrics`` report it per sink; a sink without the method (files,
which either write or fail) reports nothing. :func:`sink_delivery` reads it safely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pandas as pd

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    name: str

    def write(self, verdicts: pd.DataFrame) -> None: ...

    def flush(self) -> None: ...

    def checkpoint(self) -> dict[str, Any]: ...

    def restore(self, position: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """How a run uses its outputs (given to sinks' optional ``begin``).

    ``stateful``   a ``--state`` run: outputs are appended to and committed with the state;
    ``streaming``  ``zeekml tail``: outputs are read while they grow;
    ``journal``    with a state: ``journal(sink_name)`` gives a network sink its
                   :class:`~zeekml.runtime.state.DeliveryJournal` (what the collector
                   acknowledged, written as it happens).
    """

    stateful: bool = False
    streaming: bool = False
    journal: Callable[[str], Any] | None = None

    @property
    def file_mode(self) -> str:
        """The :class:`~zeekml.sinks.files.OutputFile` mode for a plain file output."""
        if self.stateful:
            return "append"
        return "live" if self.streaming else "replace"


def call_optional(sink: Any, method: str, *args: Any) -> Any:
    """Call one of the optional sink methods when the sink has it."""
    fn = getattr(sink, method, None)
    return fn(*args) if callable(fn) else None
@dataclass(frozen=True)
class Delivery:
    """What a sink did with the records it was given, counted since it was opened.

    ``delivered`` records the destination has (TCP/TLS: acknowledged by the
    collector's TCP stack; UDP: handed to the kernel), ``dropped`` records given up
    while running (the buffer bound was passed while the collector was down, a
    datagram the kernel refused), ``queued`` records held and not yet delivered:
    lost if the process ends now. ``unit`` names what a record is (``notices`` or
    ``records``) and ``error`` the last delivery problem, for messages.
    """

    delivered: int = 0
    dropped: int = 0
    queued: int = 0
    unit: str = "records"
    error: str = ""

    @property
    def lost(self) -> int:
        """Records that never reached the destination if the process ended now."""
        return self.dropped + self.queued

    def describe(self) -> str:
        """``120 notices delivered, 37 dropped, 5 not delivered``: for summaries."""
        text = f"{self.delivered} {self.unit} delivered, {self.dropped} dropped"
        if self.queued:
            text += f", {self.queued} not delivered"
        return text


@runtime_checkable
class ReportsDelivery(Protocol):
    """The optional delivery-accounting method of a sink (see the module doc)."""

    def delivery(self) -> Delivery: ...


def sink_delivery(sink: object) -> Delivery | None:
    """``sink.delivery()`` when the sink has it and it answers sensibly, else None.

    A plugin's broken ``delivery()`` must not take down a run: it is logged once per
    call and the sink reports nothing.
    """
    method = getattr(sink, "delivery", None)
    if not callable(method):
        return None
    try:
        report = method()
    except Exception as exc:  # a plugin's accounting is not worth a crash
        log.warning("%s: delivery() failed: %s", getattr(sink, "name", sink), exc)
        return None
    if not isinstance(report, Delivery):
        log.warning("%s: delivery() returned %s, not a Delivery",
                    getattr(sink, "name", sink), type(report).__name__)
        return None
    return report
