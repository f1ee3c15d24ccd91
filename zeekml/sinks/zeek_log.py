"""The ``zeekml.log`` sink (``#path zeekml``): verdict rows as a Zeek ASCII log.

File handling (replace / append / live modes, locks, checkpoints, cut-back on
failure) is :class:`~zeekml.sinks.files.OutputFile`. ``footer`` writes Zeek's
``#close`` line on close; a ``--state`` run leaves it out because the next run appends
to the same file, like a Zeek log that has not been rotated yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from zeekml.records.incidents import INCIDENT_LOG_PATH, incident_fields, incident_types
from zeekml.records.verdicts import zeek_fields, zeek_types
from zeekml.sinks import zeek_ascii
from zeekml.sinks.files import FileSink, OutputFile

log = logging.getLogger(__name__)


class ZeekLogSink(FileSink):
    """Verdict rows as a Zeek ASCII log (default ``#path zeekml``, verdict fields)."""

    kind = "zeek"
    #: what the sink takes: verdict rows (``notice``) or incident records (``incident``)
    unit = "notice"

    def __init__(
        self,
        target: str | Path = "zeekml.log",
        *,
        log_path: str = "zeekml",
        fields: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        footer: bool = True,
        append: bool = False,
    ) -> None:
        """``append`` pins the file to append mode whatever the run (an option of the
        ``zeek:``/``notice:`` sinks); otherwise :meth:`begin` chooses by the run."""
        self.fields = list(fields or zeek_fields())
        self.types = list(types or zeek_types())
        if len(self.fields) != len(self.types):
            raise ValueError("fields and types differ in length")
        self.log_path = log_path
        self.transform = transform
        self.close_line = footer
        self.pinned = append
        self.file = OutputFile(target, self._header, mode="append" if append else "replace")
        self.name = f"{self.kind}:{self.file.path or '-'}"
        self.rows = 0

    def use_incidents(self) -> None:
        """Take incident records instead of verdicts (``--sink zeek:PATH?unit=incident``):
        a ``#path zeekml_incident`` log."""
        self.unit = "incident"
        self.fields, self.types = incident_fields(), incident_types()
        self.log_path = INCIDENT_LOG_PATH
        self.transform = None

    def _header(self) -> bytes:
        return zeek_ascii.format_header(self.log_path, self.fields, self.types)

    def write(self, verdicts: pd.DataFrame) -> None:
        df = self.transform(verdicts) if self.transform else verdicts
        if len(df):
            self.file.write(zeek_ascii.format_rows(df, self.fields, self.types))
            self.rows += len(df)

    def footer(self) -> bytes:
        """Zeek's ``#close``, unless the next (stateful) run appends to this file."""
        return zeek_ascii.format_close() if self.close_line and not self.stateful else b""


def factory(target: str, options: dict[str, str]) -> ZeekLogSink:
    """Registry factory: ``zeek:PATH?footer=false&append=true`` (default ``zeekml.log``)."""
    from zeekml.sinks.registry import SinkOptions

    opts = SinkOptions(options, "zeek")
    footer = opts.flag("footer", True)
    append = opts.flag("append", False)
    opts.done()
    return ZeekLogSink(target or "zeekml.log", footer=footer, append=append)
