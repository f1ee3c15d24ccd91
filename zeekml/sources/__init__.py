"""Readers: every supported input -> batches of the canonical flow table.

The convenience API (what other modules use)::

    from zeekml.sources import read_flows, read_table, expand_inputs, sniff_format, open_parser

    for batch in read_flows("conn.log.gz", skips=SkipLog()):   # canonical DataFrames
        ...
    df = read_table(["archive/2024-04-19", "extra/*.log"])      # one table (training/eval)

Parsers are sans-I/O and incremental (:class:`FlowParser`): the same object parses a
whole file, stdin, or the new bytes of a growing file. Which parser reads which
format is :data:`zeekml.sources.detect.PARSERS`; formats are detected from content.

Importing this package is cheap: the readers (pyarrow) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd


@runtime_checkable
class FlowParser(Protocol):
    """An incremental parser: bytes in, canonical batches out, no I/O of its own.

    ``feed`` parses every complete line of the bytes seen so far and keeps a partial
    last line for the next call; ``close`` ends the stream (a partial last line is
    parsed if valid). ``consumed`` counts input bytes of complete lines (a checkpoint
    offset), ``line_no`` the lines consumed. ``get_state``/``set_state`` carry the
    header and position as JSON-able data so a restarted process resumes mid-file;
    ``set_state`` validates what it is given (raises StateError).
    """

    path: str
    consumed: int
    line_no: int

    def feed(self, data: bytes) -> list[pd.DataFrame]: ...

    def close(self) -> list[pd.DataFrame]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


_LAZY = {
    "read_flows": "zeekml.sources.open",
    "read_table": "zeekml.sources.open",
    "expand_inputs": "zeekml.sources.open",
    "sniff_format": "zeekml.sources.detect",
    "open_parser": "zeekml.sources.detect",
    "PARSERS": "zeekml.sources.detect",
    "FORMATS": "zeekml.sources.detect",
    "SkipLog": "zeekml.sources.skips",
    "Skip": "zeekml.sources.skips",
}

__all__ = ["FlowParser", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zeekml.sources' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
