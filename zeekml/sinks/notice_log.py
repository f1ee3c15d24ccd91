"""Notices in the schema of Zeek's own ``notice.log``, so SIEM notice parsers take them as is.

Fields and types, in Zeek's order (``scripts/base/frameworks/notice/main.zeek``,
``Notice::Info``): ts, uid, id.*, fuid, file_mime_type, file_desc, proto, note, msg,
sub, src, dst, p, n, peer_descr, actions, email_dest, suppress_for.

Mapping from a verdict row: ``note`` is ``ZeekML::<Class>`` (the verdict made a Zeek
enum identifier: ``c2`` -> ``ZeekML::C2``, ``portscan`` -> ``ZeekML::Portscan``);
``msg`` says which model scored what against which threshold; ``sub`` lists the
previous flows the model attended to (uids to pivot on in conn.log); ``src``/``dst``/``p``
are the originator, responder and responder port; ``n`` is the number of flows the
notice stands for after suppression; ``peer_descr`` is ``zeekml``; ``actions`` is
``Notice::ACTION_LOG``; ``suppress_for`` is the policy's suppression interval. File
fields are unset. Only rows the policy marked as notices are written. With
``?unit=incident`` each incident record becomes one notice (:func:`incident_to_notice`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml.errors import SinkError
from zeekml.sinks.incident_text import incident_message
from zeekml.sinks.json_log import JsonLogSink
from zeekml.sinks.textcols import as_text, joined_list
from zeekml.sinks.zeek_log import ZeekLogSink

NOTICE_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("fuid", "string"),
    ("file_mime_type", "string"),
    ("file_desc", "string"),
    ("proto", "enum"),
    ("note", "enum"),
    ("msg", "string"),
    ("sub", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "port"),
    ("n", "count"),
    ("peer_descr", "string"),
    ("actions", "set[enum]"),
    ("email_dest", "set[string]"),
    ("suppress_for", "interval"),
)

NOTE_MODULE = "ZeekML"
ACTIONS = ("Notice::ACTION_LOG",)
PEER_DESCR = "zeekml"


def note_name(cls: str) -> str:
    """A verdict class as a Zeek enum identifier in the ``ZeekML`` module."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", cls) or "Unknown"
    if ident[0].isdigit():
        ident = "_" + ident
    return f"{NOTE_MODULE}::{ident[0].upper()}{ident[1:]}"


def _fmt(values: pd.Series) -> pd.Series:
    v = values.astype("float64")
    return v.round(6).astype("str").where(v.notna(), "-")


def to_notice(verdicts: pd.DataFrame, suppress_for: float) -> pd.DataFrame:
    """Verdict rows with ``notice`` true -> rows with :data:`NOTICE_FIELDS` columns."""
    if "notice" in verdicts.columns:
        verdicts = verdicts[verdicts["notice"].fillna(False).to_numpy(dtype=bool)]
    v = verdicts.reset_index(drop=True)
    n = len(v)
    verdict = v["verdict"].astype("str")
    uniq, codes = np.unique(verdict.fillna("").to_numpy(dtype=str), return_inverse=True)
    notes: Any = np.array([note_name(c) for c in uniq], dtype=object)[codes] if n else []
    msg = (v["model"].astype("str") + ": " + verdict + " score " + _fmt(v["score"])
           + " >= threshold " + _fmt(v["threshold"]))
    if "alt" in v.columns:
        alt = " (alt: " + v["alt"].astype("str") + " " + _fmt(v["alt_score"]) + ")"
        msg = msg + alt.where(v["alt"].notna(), "")
    ctx = v["context"] if "context" in v.columns else pd.Series([None] * n, dtype=object)
    sub = pd.Series(
        [("context " + " ".join(str(u) for u in c)) if isinstance(c, (list, tuple, np.ndarray))
         and len(c) else None for c in ctx.tolist()], dtype="str")
    return pd.DataFrame({
        "ts": v["ts"],
        "uid": v["uid"],
        "id.orig_h": v["orig_h"],
        "id.orig_p": v["orig_p"],
        "id.resp_h": v["resp_h"],
        "id.resp_p": v["resp_p"],
        "proto": v["proto"],
        "note": pd.Series(notes, dtype="str"),
        "msg": msg.astype("str"),
        "sub": sub,
        "src": v["orig_h"],
        "dst": v["resp_h"],
        "p": v["resp_p"],
        "n": v["n"] if "n" in v.columns else pd.Series(np.ones(n, dtype=np.int64)),
        "peer_descr": pd.Series([PEER_DESCR] * n, dtype="str"),
        "actions": pd.Series([list(ACTIONS)] * n, dtype=object),
        "email_dest": pd.Series([[] for _ in range(n)], dtype=object),
        "suppress_for": np.full(n, float(suppress_for)),
    })


def incident_to_notice(df: pd.DataFrame, suppress_for: float) -> pd.DataFrame:
    """Incident records as rows of Zeek's notice.log schema (``notice:`` sinks).

    ``note`` = ``ZeekML::<Class>``, ``msg`` the incident message, ``sub`` the incident id
    and its evidence uids, ``src`` the host when it originated the flows, ``dst`` when it
    received them, ``n`` the flows, ``uid`` the strongest flow.
    """
    v = df.reset_index(drop=True)
    n = len(v)
    verdict = v["verdict"].astype("str").fillna("")
    uniq, codes = np.unique(verdict.to_numpy(dtype=str), return_inverse=True)
    notes: Any = np.array([note_name(c) for c in uniq], dtype=object)[codes] if n else []
    resp = (v["role"].astype("str") == "resp").to_numpy()
    host = v["host"].astype("str")
    uids = v["uids"] if "uids" in v.columns else pd.Series([None] * n, dtype=object)
    first_uid = pd.Series([u[0] if isinstance(u, (list, tuple, np.ndarray)) and len(u)
                           else None for u in uids.tolist()], dtype="str")
    sub = ("incident " + v["incident"].astype("str") + " "
           + as_text(joined_list(uids.reset_index(drop=True), " ")).fillna(""))
    return pd.DataFrame({
        "ts": v["ts"],
        "uid": first_uid,
        "note": pd.Series(notes, dtype="str"),
        "msg": incident_message(v),
        "sub": sub.str.strip(),
        "src": host.where(~resp),
        "dst": host.where(resp),
        "n": v["flows"],
        "peer_descr": pd.Series([PEER_DESCR] * n, dtype="str"),
        "actions": pd.Series([list(ACTIONS)] * n, dtype=object),
        "email_dest": pd.Series([[] for _ in range(n)], dtype=object),
        "suppress_for": np.full(n, float(suppress_for)),
    })


def _transform(suppress_for: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: to_notice(df, suppress_for)


def _incident_transform(suppress_for: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: incident_to_notice(df, suppress_for)


def _use_incidents(sink: ZeekLogSink | JsonLogSink, suppress_for: float) -> Callable[[], None]:
    """``notice:PATH?unit=incident``: one notice.log record per incident record."""

    def use() -> None:
        sink.unit = "incident"
        sink.transform = _incident_transform(suppress_for)

    return use


def notice_sink(
    target: str | Path = "notice.log",
    *,
    out_format: str = "zeek",
    suppress_for: float = 0.0,
    footer: bool = True,
    append: bool = False,
) -> ZeekLogSink | JsonLogSink:
    """A sink writing notices (Zeek ASCII ``#path notice`` or Zeek JSON)."""
    fields = [f for f, _ in NOTICE_FIELDS]
    types = [t for _, t in NOTICE_FIELDS]
    if out_format == "zeek":
        sink: ZeekLogSink | JsonLogSink = ZeekLogSink(
            target, log_path="notice", fields=fields, types=types,
            transform=_transform(suppress_for), footer=footer, append=append)
    elif out_format == "json":
        sink = JsonLogSink(target, fields=fields, types=types, transform=_transform(suppress_for),
                           append=append)
    else:
        raise SinkError(f"notice sink: format must be zeek or json, got {out_format!r}")
    sink.kind = "notice"
    sink.name = f"notice:{sink.file.path or '-'}"
    sink.use_incidents = _use_incidents(sink, suppress_for)  # type: ignore[method-assign]
    return sink


def factory(target: str, options: dict[str, str]) -> ZeekLogSink | JsonLogSink:
    """Registry factory: ``notice:PATH?format=json&suppress_for=600&footer=0&append=1``."""
    from zeekml.sinks.registry import SinkOptions

    opts = SinkOptions(options, "notice")
    fmt = opts.choice("format", ("zeek", "json"), "zeek")
    sup = opts.number("suppress_for", 0.0)
    footer = opts.flag("footer", True)
    append = opts.flag("append", False)
    opts.done()
    return notice_sink(target or "notice.log", out_format=fmt, suppress_for=sup, footer=footer,
                       append=append)
