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
``stats()``           delivery counters for the run summary.

Each sink writes whole records in one ``write`` call to its own file/socket, so
several sinks never interleave partial records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pandas as pd


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
