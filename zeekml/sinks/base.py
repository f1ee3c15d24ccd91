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

Each sink writes whole records in one ``write`` call to its own file/socket, so
several sinks never interleave partial records.
"""

from __future__ import annotations

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
