"""Bad input lines as values: each skip names its file, line and reason.

Readers never crash on a bad line and never lose the good ones: they record a
:class:`Skip` in the run's :class:`SkipLog` and go on. In ``--strict`` mode the first
skip raises :class:`~zeekml.errors.ParseError` instead. The log keeps counts per
reason and the first few examples, so a month-long ``tail`` cannot grow it unboundedly.

Some skipped lines are not malformed: valid records that are not flows (an Argus
management record, an ARP transaction). They are added with ``malformed=False``:
counted and reported the same way, but never an error in ``--strict`` mode.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
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

    def add(self, path: str, line: int | None, reason: str, *, malformed: bool = True) -> None:
        """Record a skipped line; ``malformed=False`` for a valid record that is not a
        flow (counted the same, but not an error under ``strict``)."""
        skip = Skip(path, line, reason)
        if self.strict and malformed:
            raise ParseError(path, line, reason)
        self.total += 1
        self.by_reason[reason] += 1
        if len(self.examples) < self.keep:
            self.examples.append(skip)
            log.log(logging.WARNING if malformed else logging.INFO, "skipped %s", skip)
        elif self.total == self.keep + 1:
            log.warning("more skipped lines; counting them without logging each")

    def add_many(self, path: str, lines: Sequence[int], reason: str, *,
                 malformed: bool = True) -> None:
        """Record several skipped lines with one reason in one call (counted in bulk;
        only the first few become examples, as with :meth:`add`)."""
        n = len(lines)
        if not n:
            return
        if self.strict and malformed:
            raise ParseError(path, int(lines[0]), reason)
        k = min(n, max(0, self.keep - len(self.examples)))
        for line in lines[:k]:
            self.add(path, int(line), reason, malformed=malformed)
        if n > k:
            was = self.total
            self.total += n - k
            self.by_reason[reason] += n - k
            if was <= self.keep < self.total:
                log.warning("more skipped lines; counting them without logging each")

    def summary(self) -> str:
        if not self.total:
            return "0 skipped"
        parts = ", ".join(f"{n} {r}" for r, n in self.by_reason.most_common())
        return f"{self.total} skipped ({parts})"
