"""Which Zeek log a file is: only conn logs are flows; everything else is refused by name.

Why: a Zeek ``dns.log`` has ``ts``, ``uid`` and ``id.*`` like a conn log, and zeekml's
own outputs (``zeekml.log``, ``--notice`` records, their JSON forms) have them too, so
the format sniffer reads them as Zeek TSV/JSON and the parsers used to turn them into
"flows" with every counter missing, which were then scored. The header says what a log
is; the parsers ask this module at every header and refuse with one line naming the
file and what it is (:class:`~zeekml.errors.FormatError`, exit 1), in every command
and in ``tail``.

Accepted ``#path`` (TSV) / ``_path`` (JSON) values: ``conn``, and the names a site's
log filter gives a split conn log: ``conn_*``, ``conn-*``, ``conn.*``, ``*_conn``,
``*-conn`` (``conn_long``, ``open_conn``). A log without a path is judged by its fields:
zeekml's verdict fields (``model`` and ``verdict``) or notice fields (``note`` and
``msg``) are refused; anything else is read as before.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from zeekml.errors import FormatError

_CONN_PATH = re.compile(r"conn|conn[_.-].*|.*[_-]conn")
_JSON_PATH = re.compile(rb'"_path"\s*:\s*"([^"\\]{0,200})"')
_JSON_KEY = {k: re.compile(rb'(?<!\\)"' + k.encode() + rb'"\s*:') for k in
             ("model", "verdict", "note", "msg")}


def is_conn_path(value: str) -> bool:
    """True when a Zeek log path names a conn log (``conn``, ``conn_long``, ``open_conn``)."""
    return _CONN_PATH.fullmatch(value.strip()) is not None


def _what(path_value: str) -> str:
    if path_value == "zeekml":
        return "zeekml's own verdict log (#path zeekml)"
    if path_value == "notice":
        return "a notice log (#path notice: Zeek's notice.log or zeekml --notice output)"
    return f"a Zeek {path_value} log (#path {path_value})"


def check_path(path_value: str, source: str) -> None:
    """Refuse a log whose ``#path`` / ``_path`` is not a conn log."""
    value = path_value.strip()
    if not is_conn_path(value):
        raise FormatError(f"{source}: {_what(value)}, not a conn log: only conn logs are flows")


def check_fields(fields: Iterable[str], source: str) -> None:
    """Refuse zeekml's verdict or notice records recognised by their field names."""
    names = set(fields)
    if {"model", "verdict"} <= names:
        raise FormatError(f"{source}: zeekml's own verdict records (fields model, verdict), "
                          "not a conn log: only conn logs are flows")
    if {"note", "msg"} <= names:
        raise FormatError(f"{source}: notice records (fields note, msg), not a conn log: "
                          "only conn logs are flows")


def _first_record(block: bytes) -> bytes:
    """The first non-blank line of a block (a few bytes: the checks below stay cheap)."""
    pos = 0
    while pos < len(block):
        end = block.find(b"\n", pos)
        end = len(block) if end < 0 else end
        if block[pos:end].strip():
            return block[pos:end]
        pos = end + 1
    return b""


def check_json_block(block: bytes, source: str) -> None:
    """Refuse a block of Zeek JSON lines that is not a conn log (by ``_path`` or keys).

    The block's first record decides, like a header (searching whole blocks for keys
    cost a quarter of the JSON reader's time). When its ``_path`` names another log,
    the block is refused only if that log's records outnumber its conn records, so one
    damaged ``_path`` does not refuse a whole conn log.
    """
    first = _first_record(block)
    if not first:
        return
    found = _JSON_PATH.search(first) if b'_path"' in first else None
    if found is not None and not is_conn_path(found.group(1).decode("utf-8", "replace")):
        paths = Counter(v.decode("utf-8", "replace") for v in _JSON_PATH.findall(block))
        conn = sum(n for v, n in paths.items() if is_conn_path(v))
        other = [(n, v) for v, n in paths.items() if not is_conn_path(v)]
        if other and max(other)[0] > conn:
            check_path(max(other)[1], source)
    present = [k for k, key in _JSON_KEY.items() if key.search(first)]
    if present:
        check_fields(present, source)
