"""Entry point discovery shared by the layers that take plugins (sources, scorers, sinks).

Each layer owns its entry point group and its table of built-ins
(:mod:`zeekml.sources.registry`, :mod:`zeekml.models.registry`,
:mod:`zeekml.sinks.registry`) and asks this module what is installed. This module
imports nothing of zeekml, so every layer can use it without importing another
layer; :mod:`zeekml.plugins` only puts the three lists together for
``zeekml plugins``.

Rules, the same for every kind: a third-party entry point that reuses a built-in's
name is listed but never used (a plugin cannot silently replace, say, the syslog
sink); a name registered twice with different targets resolves to the first one.
Listing imports nothing, so a broken plugin cannot break other commands.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)

#: The distribution whose entry points are the built-ins.
DISTRIBUTION = "zeekml"


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


def discover(kind: str, group: str, builtins: Mapping[str, str], own_version: str) -> list[PluginInfo]:
    """Every plugin of entry point ``group`` (then the built-ins not registered), by name.

    ``builtins`` is the layer's name -> ``module:attr`` table; ``own_version`` is
    zeekml's version, shown for built-ins missing from the installed metadata (an
    editable install older than the source tree). Built-ins come first; entry points
    that try to take a built-in's name come last, inactive. Nothing is imported.
    """
    found: dict[str, PluginInfo] = {}
    shadowed: list[PluginInfo] = []
    for ep in metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        ver = ep.dist.version if ep.dist is not None else "?"
        info = PluginInfo(kind, ep.name, ep.value, dist, ver, dist == DISTRIBUTION)
        if ep.name in builtins and dist != DISTRIBUTION:
            log.warning("plugin %s %r from %s is ignored: the name belongs to a built-in",
                        kind, ep.name, dist)
            shadowed.append(PluginInfo(kind, ep.name, ep.value, dist, ver, False, False))
            continue
        if ep.name in found and found[ep.name].value != ep.value:
            log.warning("plugin %s %r is registered twice (%s, %s); using the first",
                        kind, ep.name, found[ep.name].distribution, dist)
            continue
        found.setdefault(ep.name, info)
    for name, value in builtins.items():
        if name not in found:
            # metadata older than the source tree (an editable install not reinstalled)
            found[name] = PluginInfo(kind, name, value, DISTRIBUTION, own_version, True)
    return sorted(found.values(), key=lambda p: (not p.builtin, p.name)) + shadowed


def find(plugins: list[PluginInfo], name: str) -> PluginInfo | None:
    """The active plugin called ``name`` in a :func:`discover` list, or None."""
    for info in plugins:
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


def names(plugins: list[PluginInfo]) -> list[str]:
    """The usable names in a :func:`discover` list (for error messages and --help)."""
    return sorted({p.name for p in plugins})
