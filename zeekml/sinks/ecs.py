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

import pandas as pd

from zeekml.sinks.cef import column, message
from zeekml.sinks.files import FileSink, OutputFile
from zeekml.sinks.incident_text import ecs_incident_records
from zeekml.sinks.registry import SinkOptions
from zeekml.sinks.textcols import (
    as_text,
    encode_lines,
    iso_time,
    json_array_of_strings,
    json_object,
    json_string,
)

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
        ("model", _s(df, "model")), ("candidate", _s(df, "candidate")),
        ("verdict", _s(df, "verdict")),
        ("score", _num(df, "score")), ("threshold", _num(df, "threshold")),
        ("notice", as_text(column(df, "notice"))), ("decision", _s(df, "decision")),
        ("alt", _s(df, "alt")),
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


class EcsSink(FileSink):
    """ECS JSON lines appended to a file (a feed for Filebeat/Vector), or to stdout.

    A feed is always appended to, also without ``--state``; a run that fails cuts it
    back to where it was (:class:`~zeekml.sinks.files.OutputFile` in append mode).
    """

    def __init__(self, path: str | None, only_notices: bool = True) -> None:
        # unique per destination: the pipeline keys checkpoints by sink name
        self.name = f"ecs:{os.path.abspath(path) if path is not None else '-'}"
        self._only_notices = only_notices
        self.pinned = True
        self.file = OutputFile(path if path is not None else "-", mode="append")
        self.written = 0

    unit = "notice"

    def use_incidents(self) -> None:
        """Write incident records (``ecs:PATH?unit=incident``, ``event.dataset``
        ``zeekml.incident``; see :mod:`zeekml.sinks.incident_text`)."""
        self.unit = "incident"
        self._only_notices = False

    def write(self, verdicts: pd.DataFrame) -> None:
        rows = verdicts[_notices(verdicts).to_numpy()] if self._only_notices else verdicts
        if not len(rows):
            return
        fmt = ecs_incident_records if self.unit == "incident" else ecs_records
        self.file.write(encode_lines(fmt(rows)))
        self.written += len(rows)
        if self.file.stdout:
            self.file.flush()


def factory(target: str, options: dict[str, str]) -> EcsSink:
    """``zeekml.sinks`` entry point: ``ecs:PATH`` or ``ecs:-`` (stdout)."""
    if not target:
        raise ValueError("ecs needs a target: ecs:PATH or ecs:- for stdout")
    opts = SinkOptions(options, "ecs")
    only = opts.choice("only", ("notices", "all"), "notices")
    opts.done()
    return EcsSink(None if target == "-" else target, only_notices=(only == "notices"))
