"""Format detection from content, and the parser dispatch table.

Detection never trusts a file name: several real files named ``conn.log`` are JSON.
:func:`sniff_format` looks at the first (decompressed) bytes:

===================  ===============================================================
``nfcapd``           nfdump's binary magic ``0c a5`` (layout version 1 or 2)
``zeek_tsv``         a ``#`` meta line (``#separator``, ``#fields``, ``### BTest``),
                     possibly after leading whitespace; or header-less tab-separated
                     rows whose first field is an epoch time
``zeek_json``        ``{`` lines with Zeek keys (``"ts"``, ``"uid"``, ``"id.orig_h"``)
``nfdump_json``      ``[`` (``-o json`` array) or ``{`` lines with nfdump keys
                     (``"first"``, ``"src4_addr"``, ``"type" : "FLOW"``)
``nfdump_csv``       header ``ts,te,td,sa,da,...`` (<= 1.7.4) or ``firstSeen,...`` (>= 1.7.5)
``zeek_csv``         comma-separated header with Zeek conn field names
``cicflowmeter_csv`` CICFlowMeter header (``Flow ID``/``Src IP``/``Flow Duration``)
``binetflow``        Argus binetflow header (``StartTime,Dur,Proto,SrcAddr,...``),
                     comma- or tab-separated
===================  ===============================================================

:data:`PARSERS` maps each text format to a factory ``(path, skips, *, batch_rows)``
returning a :class:`~zeekml.sources.FlowParser`. The nfdump and CSV-export parsers
live in ``zeekml.sources.nfdump`` and ``zeekml.sources.csv_export`` and are imported
only when used; so is the CICFlowMeter header test
(:func:`zeekml.sources.cicflowmeter.is_cicflowmeter_header`). nfcapd binaries are not parsed in Python: they are read through the
real ``nfdump`` binary by ``zeekml.sources.nfcapd.iter_nfcapd``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from zeekml import defaults
from zeekml.errors import FormatError
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog

FORMATS: tuple[str, ...] = (
    "zeek_tsv",
    "zeek_json",
    "nfdump_csv",
    "nfdump_json",
    "zeek_csv",
    "cicflowmeter_csv",
    "binetflow",
    "nfcapd",
)

NFCAPD_MAGIC = b"\x0c\xa5"

_EPOCH_FIRST = re.compile(rb"^-?\d{1,12}(\.\d*)?\t")
_ZEEK_JSON_KEYS = (b'"ts"', b'"uid"', b'"id.orig_h"', b'"_path"')
_NFDUMP_JSON_KEYS = (b'"first"', b'"src4_addr"', b'"src6_addr"', b'"export_sysid"', b'"in_packets"')
_ZEEK_CSV_NAMES = {"ts", "uid", "id.orig_h", "id_orig_h", "orig_h", "conn_state", "orig_bytes"}


def sniff_format(head: bytes) -> str:
    """Name the format of an input from its first bytes (decompressed, a few KiB).

    Raises :class:`FormatError` when the content matches no supported format.
    """
    if head.startswith(NFCAPD_MAGIC) and len(head) >= 4 and head[2] in (1, 2) and head[3] == 0:
        return "nfcapd"
    from zeekml.sources.registry import sniff_source  # source plugins may claim it

    claimed = sniff_source(head)
    if claimed is not None:
        return claimed
    text = head.removeprefix(b"\xef\xbb\xbf")
    first = b""
    for line in text.split(b"\n"):
        if line.strip():
            first = line
            break
    if not first:
        raise FormatError("empty input (no data lines)")
    stripped = first.lstrip(b" \t")
    if stripped.startswith(b"#"):
        return "zeek_tsv"
    if stripped.startswith(b"["):
        return "nfdump_json"
    if stripped.startswith(b"{"):
        if any(k in stripped for k in _ZEEK_JSON_KEYS):
            return "zeek_json"
        if any(k in stripped for k in _NFDUMP_JSON_KEYS) or b'"FLOW"' in stripped:
            return "nfdump_json"
        if stripped.rstrip().endswith(b"{") or stripped.strip() == b"{":
            return "nfdump_json"  # pretty-printed objects
        if b'"module":"zeekml"' in stripped or b'"ruleset":"zeekml"' in stripped:
            raise FormatError("zeekml's own ECS alert output, not a conn log: only conn "
                              "logs are flows")
        raise FormatError("JSON input without Zeek conn or nfdump keys")
    if _EPOCH_FIRST.match(stripped) and first.count(b"\t") >= 5:
        return "zeek_tsv"  # header-less Zeek TSV rows
    from zeekml.sources.binetflow import sniff as sniff_binetflow  # Argus: comma or tab
    from zeekml.sources.cicflowmeter import is_cicflowmeter_header

    if sniff_binetflow(first):
        return "binetflow"
    header = first.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    names = [n.strip().strip('"') for n in header.split(",")]
    if names[:5] == ["ts", "te", "td", "sa", "da"] or (names and names[0] == "firstSeen"):
        return "nfdump_csv"
    if is_cicflowmeter_header(first):
        return "cicflowmeter_csv"
    if len(names) > 3 and len(set(names) & _ZEEK_CSV_NAMES) >= 2:
        return "zeek_csv"
    from zeekml.sources.nfdump import sniff as sniff_nfdump  # -q output, custom csv:%... headers

    if sniff_nfdump(head) == "nfdump_csv":
        return "nfdump_csv"
    raise FormatError(
        "unrecognised input format (expected Zeek TSV/JSON, nfdump CSV/JSON/nfcapd, "
        "Argus binetflow, a Zeek-field CSV export or CICFlowMeter CSV)"
    )


ParserFactory = Callable[..., Any]


def _lazy(module: str, attr: str) -> ParserFactory:
    """A factory that imports ``module`` only when a parser is first made."""

    def make(path: str, skips: SkipLog, *, batch_rows: int = defaults.BATCH_ROWS,
             options: ReadOptions | None = None) -> Any:
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise FormatError(
                f"{path}: no reader available for this format ({module}.{attr})"
            ) from exc
        return _construct(cls, path, skips, batch_rows, options)

    make.__name__ = make.__qualname__ = f"lazy_{attr}"
    make.__doc__ = f"Make a {module}.{attr} (imported on first use)."
    return make


#: format name -> parser factory ``(path, skips, *, batch_rows) -> FlowParser``
PARSERS: dict[str, ParserFactory] = {
    "zeek_tsv": _lazy("zeekml.sources.zeek_tsv", "ZeekTsvParser"),
    "zeek_json": _lazy("zeekml.sources.zeek_json", "ZeekJsonParser"),
    "nfdump_csv": _lazy("zeekml.sources.nfdump", "NfdumpCsvParser"),
    "nfdump_json": _lazy("zeekml.sources.nfdump", "NfdumpJsonParser"),
    "zeek_csv": _lazy("zeekml.sources.csv_export", "ZeekCsvParser"),
    "cicflowmeter_csv": _lazy("zeekml.sources.csv_export", "CicFlowMeterParser"),
    "binetflow": _lazy("zeekml.sources.binetflow", "BinetflowParser"),
}


def _construct(factory: Callable[..., Any], path: str, skips: SkipLog, batch_rows: int,
               options: ReadOptions | None) -> Any:
    """Call a parser factory, passing ``options`` only to those that accept it (plugins
    written for ``(path, skips, *, batch_rows)`` keep working)."""
    try:
        takes = "options" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes = False
    if takes and options is not None:
        return factory(path, skips, batch_rows=batch_rows, options=options)
    return factory(path, skips, batch_rows=batch_rows)


def open_parser(fmt: str, path: str, skips: SkipLog, *, batch_rows: int = defaults.BATCH_ROWS,
                options: ReadOptions | None = None) -> Any:
    """An incremental parser for a text format (see :data:`PARSERS`).

    ``nfcapd`` is binary and has no incremental parser: read it with
    :func:`zeekml.sources.read_flows` (which runs ``nfdump``). ``options`` reaches the
    parsers that take it (``--tz`` for timestamps without a zone, ...).
    """
    if fmt == "nfcapd":
        raise FormatError(f"{path}: nfcapd files are read through nfdump, not fed as bytes")
    factory = PARSERS.get(fmt)
    if factory is None:
        from zeekml.sources.registry import source_parser  # a format from a source plugin

        factory = source_parser(fmt)
    if factory is None:
        raise FormatError(f"{path}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return factory(path, skips, batch_rows=batch_rows, options=options) if factory in \
        PARSERS.values() else _construct(factory, path, skips, batch_rows, options)
