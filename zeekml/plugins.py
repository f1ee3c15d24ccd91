"""Plugins: sources, scorers and sinks found through Python entry points.

zeekml is a toolkit: a site adds a Kafka or Splunk HEC sink, a reader for its own
flow format, or its own model kind in a separate package, without touching zeekml.
The built-ins register exactly the same way (``[project.entry-points."zeekml.sinks"]``
etc. in zeekml's ``pyproject.toml``), so ``zeekml plugins`` lists both.

The three interfaces (each small, each typed below):

``zeekml.sinks``    ``factory(target: str, options: dict[str, str]) -> Sink``
    Called for ``--sink NAME:TARGET?k=v&k=v`` with ``TARGET`` and the decoded
    ``k=v`` pairs. The returned object implements :class:`zeekml.sinks.base.Sink`
    (``name``, ``write(verdicts)``, ``flush()``, ``checkpoint()``, ``restore(pos)``,
    ``close()``); ``write`` receives the verdict table of
    :mod:`zeekml.records.verdicts`. Reject bad options with ``ValueError`` (the CLI
    turns it into a usage error, exit code 2); :class:`zeekml.sinks.registry.SinkOptions`
    does the parsing and rejects unknown keys.

``zeekml.scorers``  ``ScorerClass(card: ModelCard, options: ScorerOptions) -> Scorer``
    The entry point's name is a model card ``kind``; a model whose card has that
    kind is scored by this class (:class:`zeekml.models.base.Scorer`).

``zeekml.sources``  ``ParserClass(path: str, skips: SkipLog, *, batch_rows: int) -> FlowParser``
    The entry point's name is a format name. The object builds an incremental
    parser (:class:`zeekml.sources.FlowParser`: ``feed(bytes)`` and ``close()``
    return canonical batches, ``consumed``/``line_no``/``get_state``/``set_state``
    make it resumable), exactly like the built-in readers in
    :data:`zeekml.sources.detect.PARSERS`. An optional ``sniff(head: bytes) -> bool``
    attribute (a staticmethod) claims inputs by their first bytes; plugin sniffers
    are asked before the built-in detection, so ``zeekml score``/``tail`` read the
    plugin's format with no extra option.

A plugin is loaded only when it is used, so a broken plugin cannot break other
commands; listing plugins never imports them.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zeekml.models.base import Scorer
    from zeekml.models.card import ModelCard
    from zeekml.models.registry import ScorerOptions
    from zeekml.sinks.base import Sink
    from zeekml.sources import FlowParser
    from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

#: kind -> entry point group.
GROUPS: dict[str, str] = {
    "sources": "zeekml.sources",
    "scorers": "zeekml.scorers",
    "sinks": "zeekml.sinks",
}

#: The built-in sinks, exactly as registered in pyproject.toml (a test keeps the two equal).
BUILTIN_SINKS: dict[str, str] = {
    "zeek": "zeekml.sinks.zeek_log:factory",
    "json": "zeekml.sinks.json_log:factory",
    "notice": "zeekml.sinks.notice_log:factory",
    "syslog": "zeekml.sinks.syslog:factory",
    "ecs": "zeekml.sinks.ecs:factory",
}

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

DISTRIBUTION = "zeekml"


class SinkFactory(Protocol):
    """``zeekml.sinks`` entry points."""

    def __call__(self, target: str, options: dict[str, str]) -> Sink: ...


class ScorerClass(Protocol):
    """``zeekml.scorers`` entry points (the entry point name is the card ``kind``)."""

    def __call__(self, card: ModelCard, options: ScorerOptions) -> Scorer: ...


class SourceFactory(Protocol):
    """``zeekml.sources`` entry points (the entry point name is the format name)."""

    def __call__(self, path: str, skips: SkipLog, *, batch_rows: int) -> FlowParser: ...


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin (or built-in), as ``zeekml plugins`` lists it."""

    kind: str  # sources | scorers | sinks
    name: str
    value: str  # "module:attr"
    distribution: str  # the installed package that provides it
    version: str
    builtin: bool
    active: bool = True  # False: a third-party entry point reusing a built-in's name

    @property
    def module(self) -> str:
        return self.value.partition(":")[0]


def builtins(kind: str) -> dict[str, str]:
    """The built-in name -> ``module:attr`` table of a kind."""
    if kind == "sinks":
        return dict(BUILTIN_SINKS)
    if kind == "sources":
        return dict(BUILTIN_SOURCES)
    from zeekml.models.registry import BUILTIN_KINDS

    return dict(BUILTIN_KINDS)


def _group(kind: str) -> str:
    try:
        return GROUPS[kind]
    except KeyError:
        raise ValueError(f"unknown plugin kind {kind!r} (one of {', '.join(GROUPS)})") from None


def discover(kind: str) -> list[PluginInfo]:
    """Every plugin of ``kind`` (entry points, then built-ins not registered), by name.

    A third-party entry point that reuses a built-in's name is listed but never
    used (a plugin cannot silently replace, say, the syslog sink); it is logged.
    Nothing is imported.
    """
    found: dict[str, PluginInfo] = {}
    shadowed: list[PluginInfo] = []
    table = builtins(kind)
    for ep in metadata.entry_points(group=_group(kind)):
        dist = ep.dist.name if ep.dist is not None else "?"
        ver = ep.dist.version if ep.dist is not None else "?"
        info = PluginInfo(kind, ep.name, ep.value, dist, ver, dist == DISTRIBUTION)
        if ep.name in table and dist != DISTRIBUTION:
            log.warning("plugin %s %r from %s is ignored: the name belongs to a built-in",
                        kind, ep.name, dist)
            shadowed.append(PluginInfo(kind, ep.name, ep.value, dist, ver, False, False))
            continue
        if ep.name in found and found[ep.name].value != ep.value:
            log.warning("plugin %s %r is registered twice (%s, %s); using the first",
                        kind, ep.name, found[ep.name].distribution, dist)
            continue
        found.setdefault(ep.name, info)
    for name, value in table.items():
        if name not in found:
            # metadata older than the source tree (an editable install not reinstalled)
            found[name] = PluginInfo(kind, name, value, DISTRIBUTION, _own_version(), True)
    return sorted(found.values(), key=lambda p: (not p.builtin, p.name)) + shadowed


def find(kind: str, name: str) -> PluginInfo | None:
    """The plugin that ``name`` resolves to (built-ins win), or None."""
    for info in discover(kind):
        if info.name == name and info.active:
            return info
    return None


def load(info: PluginInfo) -> Any:
    """Import a plugin's object; ImportError/AttributeError -> ImportError naming it."""
    module, _, attr = info.value.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"{info.kind[:-1]} plugin {info.name!r} ({info.value}, from {info.distribution}) "
            f"cannot be loaded: {exc}"
        ) from exc
    return obj


def names(kind: str) -> list[str]:
    """The usable names of a kind (for error messages and --help)."""
    return sorted({p.name for p in discover(kind)})


def _own_version() -> str:
    from zeekml import __version__

    return __version__


def as_rows(kinds: Iterable[str] = tuple(GROUPS)) -> list[Mapping[str, str]]:
    """Plain rows (kind, name, value, module, distribution, version, builtin, active)."""
    rows = []
    for kind in kinds:
        for p in discover(kind):
            rows.append({
                "kind": p.kind, "name": p.name, "value": p.value, "module": p.module,
                "distribution": p.distribution, "version": p.version,
                "builtin": "yes" if p.builtin else "no",
                "active": "yes" if p.active else "no (name taken by a built-in)",
            })
    return rows


# ------------------------------------------------------------------ source plugins


@functools.lru_cache(maxsize=1)
def _source_plugins() -> tuple[tuple[str, Any], ...]:
    """(format, parser class) of every third-party source plugin, loaded once per process.

    Cached: scanning entry points costs milliseconds, and sniffing runs per input
    file. A plugin that fails to import is skipped with a warning, so a broken
    plugin never stops zeekml from reading its own formats.
    """
    out = []
    for info in discover("sources"):
        if info.builtin or not info.active:
            continue
        try:
            out.append((info.name, load(info)))
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
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop built-in reading
            log.warning("source plugin %r: sniff failed (%s: %s); ignored", name,
                        type(exc).__name__, exc)
    return None


def source_parser(fmt: str) -> Any | None:
    """The parser class a source plugin registers for ``fmt`` (None: no such plugin)."""
    for name, cls in _source_plugins():
        if name == fmt:
            return cls
    return None
