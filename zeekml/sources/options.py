"""How inputs are read: one validated options object for every reader and command.

Every command that reads flows (score, tail, convert, summary, eval, train, Spark)
passes a :class:`ReadOptions` down to the readers, so an option such as ``--tz`` means
the same thing everywhere. Parsers that need an option take ``options=`` (see
:func:`zeekml.sources.detect.open_parser`); source plugins written for the older
``(path, skips, *, batch_rows)`` signature keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zeekml.errors import UsageError

#: flows per canonical batch unless a command says otherwise
DEFAULT_BATCH_ROWS = 65536


@dataclass(frozen=True)
class ReadOptions:
    """Reading options (validated; a bad value is a :class:`UsageError`).

    ``batch_rows``  most flows per canonical batch;
    ``tz``          IANA zone for timestamps written without one (Argus binetflow
                    ``StartTime``); None = UTC;
    ``pair``        pair unidirectional NetFlow records (nfdump) into bidirectional flows.
    """

    batch_rows: int = DEFAULT_BATCH_ROWS
    tz: str | None = None
    pair: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise UsageError(f"batch size must be >= 1 flow, got {self.batch_rows!r}")
        if self.tz is not None:
            try:
                ZoneInfo(self.tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise UsageError(f"--tz {self.tz!r}: not a known time zone (e.g. UTC, "
                                 "Europe/Prague, America/New_York)") from exc

    @property
    def zone(self) -> ZoneInfo:
        """The zone of timestamps without one (UTC by default)."""
        return ZoneInfo(self.tz or "UTC")
