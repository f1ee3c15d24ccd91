"""Incident records (:mod:`zeekml.records.incidents`) as alert text: message, CEF, ECS.

Used by the sinks given ``--sink ...?unit=incident``. Column-at-a-time like
:mod:`zeekml.sinks.textcols`, with the escaping of each format (hostile uids and model
names can never forge a field, an extension or a JSON key).

Mappings:

* **message** (syslog MSG, CEF Name, ECS ``message``)::

      portscan incident on 147.32.81.167 (target): 4201 flows, 830 notices, 2711 peers,
      1024 ports, 2022-06-12T17:53:51Z..2022-06-13T21:59:39Z, amf_lstm max 0.999 [closed]

  (``source`` instead of ``target`` when the host originated the flows).
* **RFC 5424 structured data**: every incident field as an SD-PARAM (lists joined by
  ``,``), under the sink's ``sd_id``.
* **CEF**: signature = class, ``rt`` the record's time, ``start``/``end`` first and last
  seen, the host in ``src`` (role ``orig``) or ``dst`` (role ``resp``; ``c6a2``/``c6a3``
  for IPv6), ``externalId`` the incident id, ``cnt`` flows, ``cn1`` notices, ``cn2``
  peers, ``cn3`` ports, ``cfp1``/``cfp2`` max/mean score, ``cs1`` models, ``cs2`` state,
  ``cs3`` evidence uids, ``cs4`` agreed models, ``cs5`` role, ``cs6`` context uids.
* **ECS**: ``event.kind: alert``, ``event.dataset: zeekml.incident``, ``event.id`` the
  incident id, ``event.start``/``event.end`` first and last seen, ``event.risk_score``
  the max score, ``rule.name`` the class, ``host.ip`` and ``source.ip`` (role orig) or
  ``destination.ip`` (role resp) the host, ``related.ip``, and every field under
  ``zeek.zeekml_incident``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml import __version__
from zeekml.records.incidents import INCIDENT_COLUMNS
from zeekml.sinks.cef import CEF_SEVERITY, column, extension_escape, header_escape
from zeekml.sinks.textcols import (
    as_text,
    concat,
    epoch_millis,
    iso_time,
    joined_list,
    json_array_of_strings,
    json_object,
    json_string,
)

ECS_VERSION = "8.11.0"
LIST_FIELDS = ("models", "agreed", "uids", "context")


def _lists(df: pd.DataFrame, name: str, sep: str = ",") -> pd.Series:
    if name not in df.columns:
        return pd.Series([np.nan] * len(df), dtype="str")
    return as_text(joined_list(df[name].reset_index(drop=True), sep))


def incident_message(df: pd.DataFrame) -> pd.Series:
    """One line per incident record (not escaped: each format escapes it)."""
    t = {c: as_text(column(df, c)).fillna("-") for c in
         ("verdict", "host", "flows", "notices", "peers", "ports", "state")}
    role = as_text(column(df, "role")).fillna("")
    side = role.map({"resp": "target", "orig": "source"}).fillna("host").astype("str")
    score = as_text(column(df, "max_score").astype("float64").round(6)).fillna("-")
    models = _lists(df, "models", "+").fillna("-")
    first = iso_time(column(df, "first_seen")).fillna("-")
    last = iso_time(column(df, "last_seen")).fillna("-")
    return concat([t["verdict"], " incident on ", t["host"], " (", side, "): ", t["flows"],
                   " flows, ", t["notices"], " notices, ", t["peers"], " peers, ", t["ports"],
                   " ports, ", first, "..", last, ", ", models, " max ", score, " [",
                   t["state"], "]"])


def incident_sd_values(df: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """(param name, text) for the RFC 5424 structured data of incident records."""
    out = []
    for name in INCIDENT_COLUMNS:
        if name in LIST_FIELDS:
            out.append((name, _lists(df, name)))
        elif name in ("ts", "first_seen", "last_seen"):
            out.append((name, as_text(column(df, name).astype("float64").round(6))))
        else:
            out.append((name, as_text(column(df, name))))
    return out


def incident_cef(df: pd.DataFrame, syslog_severity: np.ndarray, vendor: str = "zeekml",
                 product: str = "zeekml", version: str = __version__) -> pd.Series:
    """One CEF record per incident record."""
    n = len(df)
    const = "|".join(header_escape(pd.Series([vendor, product, version], dtype="str")))
    sev = pd.Series(syslog_severity).map(CEF_SEVERITY).astype("int64")
    sig = header_escape(as_text(column(df, "verdict")).fillna("unknown"))
    name = header_escape(incident_message(df).str.slice(0, 512))
    host = as_text(column(df, "host"))
    resp = as_text(column(df, "role")).fillna("") == "resp"
    v6 = host.str.contains(":", regex=False).fillna(False).astype(bool)
    fields: list[tuple[str, pd.Series, str | None]] = [
        ("rt", epoch_millis(column(df, "ts")), None),
        ("start", epoch_millis(column(df, "first_seen")), None),
        ("end", epoch_millis(column(df, "last_seen")), None),
        ("src", host.where(~resp & ~v6), None),
        ("c6a2", host.where(~resp & v6), "Source IPv6 Address"),
        ("dst", host.where(resp & ~v6), None),
        ("c6a3", host.where(resp & v6), "Destination IPv6 Address"),
        ("externalId", as_text(column(df, "incident")), None),
        ("cnt", as_text(column(df, "flows")), None),
        ("cn1", as_text(column(df, "notices")), "notices"),
        ("cn2", as_text(column(df, "peers")), "peers"),
        ("cn3", as_text(column(df, "ports")), "ports"),
        ("cfp1", as_text(column(df, "max_score")), "max_score"),
        ("cfp2", as_text(column(df, "mean_score")), "mean_score"),
        ("cs1", _lists(df, "models"), "models"),
        ("cs2", as_text(column(df, "state")), "state"),
        ("cs3", _lists(df, "uids"), "uids"),
        ("cs4", _lists(df, "agreed"), "agreed"),
        ("cs5", as_text(column(df, "role")), "role"),
        ("cs6", _lists(df, "context"), "context"),
    ]
    parts: list[pd.Series | str] = [pd.Series([""] * n, dtype="str")]
    for key, value, label in fields:
        prefix = f" {key}Label={label} {key}=" if label is not None else f" {key}="
        parts.append(prefix + extension_escape(value))
    ext = concat(parts).str.slice(1)
    return concat(["CEF:0|" + const + "|", sig, "|", name, "|", as_text(sev), "|", ext])


def _s(df: pd.DataFrame, name: str) -> pd.Series:
    return json_string(as_text(column(df, name)))


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    return as_text(column(df, name), limit=0)


def _arr(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series([None] * len(df), dtype="str")
    return json_array_of_strings(df[name].reset_index(drop=True))


def ecs_incident_records(df: pd.DataFrame) -> pd.Series:
    """One ECS JSON object per incident record."""
    n = len(df)
    df = df.reset_index(drop=True)
    host = _s(df, "host")
    resp = (as_text(column(df, "role")).fillna("") == "resp").to_numpy()
    host_arr = ("[" + host + "]").where(host.notna())
    event = json_object([
        ("kind", '"alert"'), ("module", '"zeekml"'), ("dataset", '"zeekml.incident"'),
        ("category", '["intrusion_detection"]'), ("type", '["info"]'),
        ("id", _s(df, "incident")),
        ("start", json_string(iso_time(column(df, "first_seen")))),
        ("end", json_string(iso_time(column(df, "last_seen")))),
        ("risk_score", _num(df, "max_score")),
    ], n)
    inc = json_object([
        ("incident", _s(df, "incident")), ("state", _s(df, "state")), ("host", host),
        ("role", _s(df, "role")), ("verdict", _s(df, "verdict")),
        ("first_seen", _num(df, "first_seen")), ("last_seen", _num(df, "last_seen")),
        ("flows", _num(df, "flows")), ("notices", _num(df, "notices")),
        ("peers", _num(df, "peers")), ("ports", _num(df, "ports")),
        ("max_score", _num(df, "max_score")), ("mean_score", _num(df, "mean_score")),
        ("models", _arr(df, "models")), ("agreed", _arr(df, "agreed")),
        ("uids", _arr(df, "uids")), ("context", _arr(df, "context")),
    ], n)
    return json_object([
        ("@timestamp", json_string(iso_time(column(df, "ts")))),
        ("message", json_string(incident_message(df))),
        ("event", event),
        ("rule", json_object([("name", _s(df, "verdict")), ("ruleset", '"zeekml"')], n)),
        ("host", json_object([("ip", host_arr)], n)),
        ("source", json_object([("ip", host.where(~resp))], n)),
        ("destination", json_object([("ip", host.where(resp))], n)),
        ("related", json_object([("ip", host_arr)], n)),
        ("zeek", json_object([("zeekml_incident", inc)], n)),
        ("observer", '{"vendor":"zeekml","product":"zeekml","type":"ids"}'),
        ("ecs", '{"version":"' + ECS_VERSION + '"}'),
    ], n)
