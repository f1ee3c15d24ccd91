"""Bad input lines as values: each skip names its file, line and reason.

Readers never crash on a bad line and never lose the good ones: they record a
:class:`Skip` in the run's :class:`SkipLog` and go on. In ``--strict`` mode the first
skip raises :class:`~zeekml.errors.ParseError` instead. The log keeps counts per
reason and the first few examples, so a month-long ``tail`` cannot grow it unboundedly.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from zeekml.errors import ParseError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skip:
    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class SkipLog:
    """Counts skipped lines by reason; ``strict`` turns the first one into an error."""

    strict: bool = False
    keep: int = 20
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    examples: list[Skip] = field(default_factory=list)

    def add(self, path: str, line: int | None, reason: str) -> None:
        skip = Skip(path, line, reason)
        if self.strict:
            raise ParseError(path, line, reason)
        self.total += 1
        self.by_reason[reason] += 1
        if len(self.examples) < self.keep:
            self.examples.append(skip)
            log.warning("skipped %s", skip)
        elif self.total == self.keep + 1:
            log.warning("more skipped lines; counting them without logging each")

    def summary(self) -> str:
        if not self.total:
            return "0 skipped"
        parts = ", ".join(f"{n} {r}" for r, n in self.by_reason.most_common())
        return f"{self.total} skipped ({parts})"
