"""Source plugins: flow formats from other packages (the ``zeekml.sources`` entry points).

``ParserClass(path: str, skips: SkipLog, *, batch_rows: int) -> FlowParser``
    The entry point's name is a format name. The object builds an incremental
    parser (:class:`zeekml.sources.FlowParser`: ``feed(bytes)`` and ``close()``
    return canonical batches, ``consumed``/``line_no``/``get_state``/``set_state``
    make it resumable), exactly like the built-in readers in
    :data:`zeekml.sources.detect.PARSERS`. An optional ``sniff(head: bytes) -> bool``
    attribute (a staticmethod) claims inputs by their first bytes; plugin sniffers
    are asked before the built-in detection (:func:`zeekml.sources.detect.sniff_format`),
    so ``zeekml score``/``tail`` read the plugin's format with no extra option.

The built-in readers register the same way (``[project.entry-points."zeekml.sources"]``
in zeekml's ``pyproject.toml``, equal to :data:`BUILTIN_SOURCES`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from zeekml import __version__, entrypoints

if TYPE_CHECKING:
    from zeekml.sources import FlowParser
    from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

GROUP = "zeekml.sources"

#: The built-in readers (format name -> parser class), as registered in pyproject.toml;
#: the same classes :data:`zeekml.sources.detect.PARSERS` dispatches to. (nfcapd
#: binaries are read through the nfdump program, not by a parser class.)
BUILTIN_SOURCES: dict[str, str] = {
    "zeek_tsv": "zeekml.sources.zeek_tsv:ZeekTsvParser",
    "zeek_json": "zeekml.sources.zeek_json:ZeekJsonParser",
    "nfdump_csv": "zeekml.sources.nfdump:NfdumpCsvParser",
    "nfdump_json": "zeekml.sources.nfdump:NfdumpJsonParser",
    "zeek_csv": "zeekml.sources.csv_export:ZeekCsvParser",
    "cicflowmeter_csv": "zeekml.sources.csv_export:CicFlowMeterParser",
    "binetflow": "zeekml.sources.binetflow:BinetflowParser",
}


class SourceFactory(Protocol):
    """``zeekml.sources`` entry points (the entry point name is the format name)."""

    def __call__(self, path: str, skips: SkipLog, *, batch_rows: int) -> FlowParser: ...


def discover() -> list[entrypoints.PluginInfo]:
    """Every source plugin and built-in reader (nothing is imported)."""
    return entrypoints.discover("sources", GROUP, BUILTIN_SOURCES, __version__)


@functools.lru_cache(maxsize=1)
def _source_plugins() -> tuple[tuple[str, Any], ...]:
    """(format, parser class) of every third-party source plugin, loaded once per process.

    Cached: scanning entry points costs milliseconds, and sniffing runs per input
    file. A plugin that fails to import is skipped with a warning, so a broken
    plugin never stops zeekml from reading its own formats.
    """
    out = []
    for info in discover():
        if info.builtin or not info.active:
            continue
        try:
            out.append((info.name, entrypoints.load(info)))
        except ImportError as exc:
            log.warning("%s", exc)
    return tuple(out)


def sniff_source(head: bytes) -> str | None:
    """The format name of the first source plugin whose ``sniff(head)`` claims the input."""
    for name, cls in _source_plugins():
        sniff: Callable[[bytes], bool] | None = getattr(cls, "sniff", None)
        if sniff is None:
            continue
        try:
            if sniff(head):
                return name
        except Exception as exc:  # a plugin's bug must not stop built-in reading
            log.warning("source plugin %r: sniff failed (%s: %s); ignored", name,
                        type(exc).__name__, exc)
    return None


def source_parser(fmt: str) -> Any | None:
    """The parser class a source plugin registers for ``fmt`` (None: no such plugin)."""
    for name, cls in _source_plugins():
        if name == fmt:
            return cls
    return None
