"""ECS sink: one Elastic Common Schema JSON object per notice, for Filebeat, Logstash, Vector.

``--sink ecs:PATH`` appends to a file, ``--sink ecs:-`` writes to stdout. Each line::

    {"@timestamp": "2020-10-06T15:32:46.785668Z",
     "message": "ddos from 10.0.0.5:49152 to 1.2.3.4:80/tcp (amf_lstm score 0.97 >= 0.5)",
     "event": {"kind": "alert", "module": "zeekml", "dataset": "zeekml.notice",
               "category": ["intrusion_detection"], "type": ["info"],
               "id": "<uid>", "risk_score": 0.97},
     "rule": {"name": "<class>", "category": "<model>", "ruleset": "zeekml"},
     "source": {"ip": "10.0.0.5", "port": 49152},
     "destination": {"ip": "1.2.3.4", "port": 80},
     "network": {"transport": "tcp"},
     "related": {"ip": ["10.0.0.5", "1.2.3.4"]},
     "zeek": {"session_id": "<uid>",
              "zeekml": {"model": ..., "verdict": ..., "score": ..., "threshold": ...,
                         "notice": true, "alt": ..., "alt_score": ..., "n": 1,
                         "context": ["<uid>", ...]}},
     "observer": {"vendor": "zeekml", "product": "zeekml", "type": "ids"},
     "ecs": {"version": "8.11.0"}}

Objects are nested, the canonical ECS form (Logstash does not expand dotted keys).
Missing values leave their key out, as ECS prefers to ``null``; ports and counts are
JSON integers, scores JSON numbers, ``event.risk_score`` is the model's own score
(ECS: "use your system's original value"). ``event.id`` and ``zeek.session_id`` are
the uid, as the Filebeat Zeek module maps notice.log. Options: ``only=notices``
(default) or ``all``.

Every batch is written with one ``write`` of whole lines, so sinks sharing stdout
never interleave partial records; ``flush()`` fsyncs a file, ``checkpoint()`` records
its size and ``restore()`` truncates back to it (so records re-made after a crash
are written once).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from zeekml.errors import SinkError
from zeekml.sinks.cef import column, message
from zeekml.sinks.registry import SinkOptions
from zeekml.sinks.textcols import (
    as_text,
    encode_lines,
    iso_time,
    json_array_of_strings,
    json_object,
    json_string,
)
from zeekml.sinks.zeek_log import fsync_if_possible

log = logging.getLogger(__name__)

ECS_VERSION = "8.11.0"


def _notices(df: pd.DataFrame) -> pd.Series:
    if "notice" not in df.columns:
        return pd.Series(True, index=df.index)
    return df["notice"].astype("boolean").fillna(False).astype(bool)


def _s(df: pd.DataFrame, name: str) -> pd.Series:
    """A column as JSON string literals (missing stays missing)."""
    return json_string(as_text(column(df, name)))


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    """A column as JSON number text (missing and non-finite stay missing)."""
    return as_text(column(df, name), limit=0)


def ecs_records(df: pd.DataFrame) -> pd.Series:
    """One ECS JSON object (``str``) per verdict row."""
    n = len(df)
    df = df.reset_index(drop=True)
    uid = _s(df, "uid")
    orig_h, resp_h = _s(df, "orig_h"), _s(df, "resp_h")
    context = (json_array_of_strings(df["context"]) if "context" in df.columns
               else pd.Series([None] * n, dtype="str"))
    related = ("[" + (orig_h.fillna("") + "," + resp_h.fillna("")).str.strip(",") + "]")
    related = related.where(orig_h.notna() | resp_h.notna())
    event = json_object([
        ("kind", '"alert"'), ("module", '"zeekml"'), ("dataset", '"zeekml.notice"'),
        ("category", '["intrusion_detection"]'), ("type", '["info"]'),
        ("id", uid), ("risk_score", _num(df, "score")),
    ], n)
    zeekml = json_object([
        ("model", _s(df, "model")), ("verdict", _s(df, "verdict")),
        ("score", _num(df, "score")), ("threshold", _num(df, "threshold")),
        ("notice", as_text(column(df, "notice"))), ("alt", _s(df, "alt")),
        ("alt_score", _num(df, "alt_score")), ("n", _num(df, "n")), ("context", context),
    ], n)
    return json_object([
        ("@timestamp", json_string(iso_time(column(df, "ts")))),
        ("message", json_string(message(df))),
        ("event", event),
        ("rule", json_object([("name", _s(df, "verdict")), ("category", _s(df, "model")),
                              ("ruleset", '"zeekml"')], n)),
        ("source", json_object([("ip", orig_h), ("port", _num(df, "orig_p"))], n)),
        ("destination", json_object([("ip", resp_h), ("port", _num(df, "resp_p"))], n)),
        ("network", json_object([("transport", json_string(
            as_text(column(df, "proto")).str.lower()))], n)),
        ("related", json_object([("ip", related)], n)),
        ("zeek", json_object([("session_id", uid), ("zeekml", zeekml)], n)),
        ("observer", '{"vendor":"zeekml","product":"zeekml","type":"ids"}'),
        ("ecs", '{"version":"' + ECS_VERSION + '"}'),
    ], n)


class EcsSink:
    """ECS JSON lines to a file (appended) or to stdout."""

    def __init__(self, path: str | None, only_notices: bool = True) -> None:
        # unique per destination: the pipeline keys checkpoints by sink name
        self.name = f"ecs:{os.path.abspath(path) if path is not None else '-'}"
        self._only_notices = only_notices
        self._path = path
        self._fd: int | None = None
        self.written = 0
        if path is not None:
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise SinkError(f"ecs: cannot open {path}: {exc.strerror or exc}") from exc

    def write(self, verdicts: pd.DataFrame) -> None:
        rows = verdicts[_notices(verdicts).to_numpy()] if self._only_notices else verdicts
        if not len(rows):
            return
        block = encode_lines(ecs_records(rows))
        self._write(block)
        self.written += len(rows)

    def _write(self, block: bytes) -> None:
        try:
            if self._fd is None:
                sys.stdout.buffer.write(block)
                sys.stdout.buffer.flush()
                return
            view = memoryview(block)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise SinkError(f"ecs: cannot write {self._path or 'stdout'}: {exc}") from exc

    def flush(self) -> None:
        if self._fd is not None:
            fsync_if_possible(self._fd)

    def checkpoint(self) -> dict[str, Any]:
        if self._fd is None:
            return {"stdout": True, "written": self.written}
        st = os.fstat(self._fd)
        return {"path": str(Path(self._path or "").resolve()), "offset": st.st_size,
                "inode": st.st_ino, "written": self.written}

    def restore(self, position: dict[str, Any]) -> None:
        """Truncate the file back to the checkpointed size (same file only)."""
        if self._fd is None or "offset" not in position:
            return
        st = os.fstat(self._fd)
        offset = position["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise SinkError(f"ecs: bad checkpoint offset {offset!r} for {self._path}")
        if position.get("inode") != st.st_ino:
            log.warning("ecs: %s is not the file of the checkpoint (rotated?); appending",
                        self._path)
        elif st.st_size > offset:
            os.ftruncate(self._fd, offset)
        elif st.st_size < offset:
            log.warning("ecs: %s is shorter than at the checkpoint (%d < %d bytes); appending",
                        self._path, st.st_size, offset)

    def close(self) -> None:
        if self._fd is not None:
            try:
                fsync_if_possible(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None


def factory(target: str, options: dict[str, str]) -> EcsSink:
    """``zeekml.sinks`` entry point: ``ecs:PATH`` or ``ecs:-`` (stdout)."""
    if not target:
        raise ValueError("ecs needs a target: ecs:PATH or ecs:- for stdout")
    opts = SinkOptions(options, "ecs")
    only = opts.choice("only", ("notices", "all"), "notices")
    opts.done()
    return EcsSink(None if target == "-" else target, only_notices=(only == "notices"))
