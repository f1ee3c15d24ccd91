"""Plugins: sources, scorers and sinks found through Python entry points.

zeekml is a toolkit: a site adds a Kafka or Splunk HEC sink, a reader for its own
flow format, or its own model kind in a separate package, without touching zeekml.
The built-ins register exactly the same way (``[project.entry-points."zeekml.sinks"]``
etc. in zeekml's ``pyproject.toml``), so ``zeekml plugins`` lists both.

Each layer finds its own plugins, through :mod:`zeekml.entrypoints` (below every
layer), and documents its interface:

``zeekml.sinks``    ``factory(target: str, options: dict[str, str]) -> Sink``
    :mod:`zeekml.sinks.registry` (``--sink NAME:TARGET?k=v``, :class:`SinkOptions
    <zeekml.sinks.registry.SinkOptions>`).

``zeekml.scorers``  ``ScorerClass(card: ModelCard, options: ScorerOptions) -> Scorer``
    :mod:`zeekml.models.registry` (the entry point's name is a model card ``kind``).

``zeekml.sources``  ``ParserClass(path: str, skips: SkipLog, *, batch_rows: int) -> FlowParser``
    :mod:`zeekml.sources.registry` (the entry point's name is a format name; an
    optional ``sniff(head: bytes) -> bool`` claims inputs before the built-in
    detection).

This module only puts the three lists together (``zeekml plugins``); no layer
imports it. A plugin is loaded only when it is used, so a broken plugin cannot break
other commands; listing plugins never imports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zeekml import entrypoints
from zeekml.entrypoints import DISTRIBUTION, PluginInfo
from zeekml.models import registry as scorer_registry
from zeekml.sinks import registry as sink_registry
from zeekml.sources import registry as source_registry

__all__ = [
    "BUILTIN_SINKS", "BUILTIN_SOURCES", "DISTRIBUTION", "GROUPS", "PluginInfo", "as_rows",
    "builtins", "discover", "find", "load", "names",
]  # fmt: skip

#: kind -> entry point group.
GROUPS: dict[str, str] = {
    "sources": source_registry.GROUP,
    "scorers": scorer_registry.GROUP,
    "sinks": sink_registry.GROUP,
}

BUILTIN_SINKS = sink_registry.BUILTIN_SINKS
BUILTIN_SOURCES = source_registry.BUILTIN_SOURCES


def builtins(kind: str) -> dict[str, str]:
    """The built-in name -> ``module:attr`` table of a kind."""
    _check_kind(kind)
    if kind == "sinks":
        return dict(BUILTIN_SINKS)
    if kind == "sources":
        return dict(BUILTIN_SOURCES)
    return dict(scorer_registry.BUILTIN_KINDS)


def _check_kind(kind: str) -> None:
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r} (one of {', '.join(GROUPS)})")


def discover(kind: str) -> list[PluginInfo]:
    """Every plugin of ``kind`` (see :func:`zeekml.entrypoints.discover`); nothing is imported."""
    _check_kind(kind)
    if kind == "sinks":
        return sink_registry.discover()
    if kind == "sources":
        return source_registry.discover()
    return scorer_registry.discover()


def find(kind: str, name: str) -> PluginInfo | None:
    """The plugin that ``name`` resolves to (built-ins win), or None."""
    return entrypoints.find(discover(kind), name)


def load(info: PluginInfo) -> Any:
    """Import a plugin's object; ImportError/AttributeError -> ImportError naming it."""
    return entrypoints.load(info)


def names(kind: str) -> list[str]:
    """The usable names of a kind (for error messages and --help)."""
    return entrypoints.names(discover(kind))


def as_rows(kinds: Iterable[str] = tuple(GROUPS)) -> list[Mapping[str, str]]:
    """Plain rows (kind, name, value, module, distribution, version, builtin, active)."""
    rows: list[Mapping[str, str]] = []
    for kind in kinds:
        for p in discover(kind):
            rows.append({
                "kind": p.kind, "name": p.name, "value": p.value, "module": p.module,
                "distribution": p.distribution, "version": p.version,
                "builtin": "yes" if p.builtin else "no",
                "active": "yes" if p.active else "no (name taken by a built-in)",
            })
    return rows
