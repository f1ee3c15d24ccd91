"""``--sink NAME:TARGET?k=v&k=v`` -> a Sink, built-in or plugin.

Examples::

    syslog:udp://127.0.0.1:5514?format=cef&facility=local0
    syslog:tcp://[::1]:6514?buffer=50000
    ecs:/var/log/zeekml/alerts.json
    ecs:-                                   (stdout)

``NAME`` is looked up in the ``zeekml.sinks`` entry point group (built-ins:
:data:`BUILTIN_SINKS`; plugins: see below); ``TARGET`` is everything up to the first
``?`` and is passed to the factory as is; the query is split on ``&`` and
percent-decoded. A bad spec, an unknown sink or an unknown option is a
:class:`~zeekml.errors.ConfigError` (exit 2) naming the spec.

``unit`` is an option of every sink, handled here: ``unit=notice`` (default) gives
the sink verdict rows, ``unit=incident`` incident records
(:mod:`zeekml.records.incidents`). A sink that formats incidents itself has
``use_incidents()``, called after the factory; any other sink (a plugin) is marked
``unit = "incident"`` and receives the incident table in ``write``.

Sink plugins: ``factory(target: str, options: dict[str, str]) -> Sink``
    Registered in the ``zeekml.sinks`` entry point group; called for
    ``--sink NAME:TARGET?k=v&k=v`` with ``TARGET`` and the decoded ``k=v`` pairs. The
    returned object implements :class:`zeekml.sinks.base.Sink` (``name``,
    ``write(verdicts)``, ``flush()``, ``checkpoint()``, ``restore(pos)``, ``close()``);
    ``write`` receives the verdict table of :mod:`zeekml.records.verdicts`. Reject bad
    options with ``ValueError`` (a usage error, exit code 2); :class:`SinkOptions` does
    the parsing and rejects unknown keys. The built-ins register exactly the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl

from zeekml import __version__, entrypoints
from zeekml.errors import ConfigError, SinkError, ZeekmlError
from zeekml.sinks.base import Sink

GROUP = "zeekml.sinks"

#: The built-in sinks, exactly as registered in pyproject.toml (a test keeps the two equal).
BUILTIN_SINKS: dict[str, str] = {
    "zeek": "zeekml.sinks.zeek_log:factory",
    "json": "zeekml.sinks.json_log:factory",
    "notice": "zeekml.sinks.notice_log:factory",
    "syslog": "zeekml.sinks.syslog:factory",
    "ecs": "zeekml.sinks.ecs:factory",
}


class SinkFactory(Protocol):
    """``zeekml.sinks`` entry points."""

    def __call__(self, target: str, options: dict[str, str]) -> Sink: ...


def discover() -> list[entrypoints.PluginInfo]:
    """Every sink plugin and built-in sink (nothing is imported)."""
    return entrypoints.discover("sinks", GROUP, BUILTIN_SINKS, __version__)


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--sink`` value."""

    name: str
    target: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> SinkSpec:
    """Split ``NAME:TARGET?k=v&k=v``; ConfigError on a malformed spec or a repeated key."""
    head, sep, query = spec.partition("?")
    name, _, target = head.partition(":")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--sink {spec!r}: expected NAME:TARGET?k=v&... with a sink name first")
    options: dict[str, str] = {}
    if sep:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as exc:
            raise ConfigError(f"--sink {spec!r}: bad options {query!r} (use k=v&k=v)") from exc
        for key, value in pairs:
            if not key:
                raise ConfigError(f"--sink {spec!r}: an option without a name in {query!r}")
            if key in options:
                raise ConfigError(f"--sink {spec!r}: option {key!r} given twice")
            options[key] = value
    return SinkSpec(name, target, options)


UNITS = ("notice", "incident")


def make_sink(spec: str) -> Sink:
    """Build the sink a ``--sink`` value names (plugins included)."""
    parsed = parse_spec(spec)
    unit = parsed.options.pop("unit", "notice")
    if unit not in UNITS:
        raise ConfigError(f"--sink {spec!r}: unit={unit!r}: one of {', '.join(UNITS)}")
    installed = discover()
    info = entrypoints.find(installed, parsed.name)
    if info is None:
        raise ConfigError(
            f"--sink {spec!r}: no sink named {parsed.name!r} "
            f"(installed: {', '.join(entrypoints.names(installed))})"
        )
    try:
        factory = entrypoints.load(info)
    except ImportError as exc:
        raise SinkError(str(exc)) from exc
    try:
        sink = factory(parsed.target, dict(parsed.options))
    except ZeekmlError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--sink {spec!r}: {exc}") from exc
    except OSError as exc:
        raise SinkError(f"--sink {spec!r}: {exc}") from exc
    if not isinstance(sink, Sink):
        raise SinkError(
            f"--sink {spec!r}: {info.value} returned {type(sink).__name__}, which lacks the "
            "Sink methods (name, write, flush, checkpoint, restore, close)"
        )
    if unit == "incident":
        use = getattr(sink, "use_incidents", None)
        try:
            if callable(use):
                use()
            else:
                sink.unit = "incident"  # type: ignore[attr-defined]
                sink.name = f"{sink.name}?unit=incident"
        except AttributeError as exc:
            raise ConfigError(f"--sink {spec!r}: this sink cannot take incidents: {exc}") from exc
    return sink


class SinkOptions:
    """Typed access to a sink's ``k=v`` options; :meth:`done` rejects unknown keys.

    For built-in and plugin factories alike::

        opts = SinkOptions(options, "syslog")
        fmt = opts.choice("format", ("rfc5424", "cef"), "rfc5424")
        buffer = opts.integer("buffer", 10_000, lo=1)
        opts.done()          # ValueError naming any key nobody asked for
    """

    def __init__(self, options: dict[str, str], sink: str) -> None:
        self._options = dict(options)
        self._sink = sink
        self._used: set[str] = set()

    def text(self, key: str, default: str) -> str:
        self._used.add(key)
        return self._options.get(key, default)

    def prefixed(self, prefix: str) -> dict[str, str]:
        """Every ``prefix<rest>`` option as ``{rest: value}`` (e.g. ``severity.DDoS=crit``)."""
        out = {k[len(prefix):]: v for k, v in self._options.items() if k.startswith(prefix)}
        self._used.update(prefix + k for k in out)
        self._used.add(prefix + "*")
        return out

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        if value not in allowed:
            raise ValueError(f"{self._sink} option {key}={value!r}: one of {', '.join(allowed)}")
        return value

    def integer(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        raw = self.text(key, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{self._sink} option {key}={raw!r}: not an integer") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{self._sink} option {key}={value}: must be in {lo}..{hi}")
        return value

    def number(self, key: str, default: float, lo: float = 0.0) -> float:
        raw = self.text(key, repr(default))
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{self._sink} option {key}={raw!r}: not a number") from None
        if not math.isfinite(value) or value < lo:
            raise ValueError(f"{self._sink} option {key}={raw!r}: must be a number >= {lo:g}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        raw = self.text(key, "1" if default else "0").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{self._sink} option {key}={raw!r}: use 1/0, true/false, yes/no")

    def done(self) -> None:
        unknown = sorted(set(self._options) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used))
            raise ValueError(
                f"{self._sink}: unknown option(s) {', '.join(unknown)} (known: {known})"
            )
