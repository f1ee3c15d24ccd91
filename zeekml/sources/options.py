"""How inputs are read: one validated options object for every reader and command.

Every command that reads flows (score, tail, convert, summary, eval, train, Spark)
passes a :class:`ReadOptions` down to the readers, so an option such as ``--tz`` means
the same thing everywhere. Parsers that need an option take ``options=`` (see
:func:`zeekml.sources.detect.open_parser`); source plugins written for the older
``(path, skips, *, batch_rows)`` signature keep working.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zeekml import defaults
from zeekml.errors import ConfigError

if TYPE_CHECKING:
    from zeekml.sources.biflow import PairOptions

#: flows per canonical batch unless a command says otherwise
DEFAULT_BATCH_ROWS = defaults.BATCH_ROWS
#: seconds of log time a one-way NetFlow record waits for its reverse (zeekml.sources.biflow)
DEFAULT_PAIR_HOLD = 120.0


@dataclass(frozen=True)
class ReadOptions:
    """Reading options (validated; a bad value is a :class:`ConfigError`).

    ``batch_rows``  most flows per canonical batch;
    ``tz``          IANA zone for timestamps written without one (Argus binetflow
                    ``StartTime``); None = UTC;
    ``pair``        pair unidirectional NetFlow records (nfdump) into bidirectional flows
                    (:mod:`zeekml.sources.biflow`; ``--no-pair`` turns it off);
    ``pair_hold``   seconds of log time a one-way record waits for its reverse
                    (``--pair-hold``).
    """

    batch_rows: int = DEFAULT_BATCH_ROWS
    tz: str | None = None
    pair: bool = True
    pair_hold: float = DEFAULT_PAIR_HOLD

    def __post_init__(self) -> None:
        if not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise ConfigError(f"batch size must be >= 1 flow, got {self.batch_rows!r}")
        if self.tz is not None:
            try:
                ZoneInfo(self.tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ConfigError(f"--tz {self.tz!r}: not a known time zone (e.g. UTC, "
                                 "Europe/Prague, America/New_York)") from exc

        hold = self.pair_hold
        if not (isinstance(hold, (int, float)) and math.isfinite(hold) and 0 < hold <= 86400):
            raise ConfigError(f"--pair-hold must be > 0 and <= 86400 seconds, got {hold!r}")

    def pair_options(self) -> PairOptions | None:
        """The pairing stage's options, or None when pairing is off."""
        if not self.pair:
            return None
        from zeekml.sources.biflow import PairOptions

        return PairOptions(hold=float(self.pair_hold))

    @property
    def zone(self) -> ZoneInfo:
        """The zone of timestamps without one (UTC by default)."""
        return ZoneInfo(self.tz or "UTC")


#: the ``--tz`` help text, the same in every command
TZ_HELP = (
    "time zone of timestamps written without one (Argus binetflow StartTime): an IANA "
    "name such as Europe/Prague or America/New_York; default UTC. Epoch times and times "
    "with an offset are never shifted"
)
