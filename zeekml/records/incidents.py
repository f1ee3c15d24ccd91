"""The incident table: one row per incident record, as incident sinks receive it.

An incident groups the notices of one host and one behaviour (class) over an episode
(see :mod:`zeekml.policy.incidents`). Column names here are Python names;
:data:`INCIDENT_FIELDS` gives the Zeek field name and ``#types`` entry each is written
with in ``zeekml_incident.log`` (``#path zeekml_incident``).

=============  ==============  ========================================================
field          Zeek type       meaning
=============  ==============  ========================================================
ts             time            log time of this record: the update boundary (``open``/
                               ``update``) or the close time (last activity + gap;
                               at the end of an input read without ``--state``, the
                               input's last log time)
incident       string          incident id, the same in every record of one incident
state          string          ``open`` (first record of an incident still going on),
                               ``update`` (a later one), ``closed`` (the final record)
host           addr            the host the incident is about
role           string          ``orig``: the host originated the flagged flows;
                               ``resp``: it received them (inbound: the originators
                               are outside the local networks); ``both``: some of each
verdict        string          the behaviour: the class the models reported
first_seen     time            earliest ``ts`` of the incident's flagged flows
last_seen      time            latest ``ts`` of them
flows          count           flagged flows (score >= threshold, not allow-listed),
                               suppressed ones included
notices        count           notices among them (the rows of zeekml.log/notice.log)
peers          count           distinct hosts on the other side of those flows
ports          count           distinct responder ports of those flows
max_score      double          highest score (in the model's unit)
mean_score     double          mean score
models         set[string]     models whose flagged flows make up the incident
agreed         set[string]     other models that flagged at least one of the same flows
uids           vector[string]  the strongest flows (highest score first, at most 5)
context        vector[string]  the flows the strongest flow's model looked at (for the
                               AMF-LSTM the flows its attention weighted most)
=============  ==============  ========================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: (python column, zeek field name, zeek type), in output order.
INCIDENT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ts", "ts", "time"),
    ("incident", "incident", "string"),
    ("state", "state", "string"),
    ("host", "host", "addr"),
    ("role", "role", "string"),
    ("verdict", "verdict", "string"),
    ("first_seen", "first_seen", "time"),
    ("last_seen", "last_seen", "time"),
    ("flows", "flows", "count"),
    ("notices", "notices", "count"),
    ("peers", "peers", "count"),
    ("ports", "ports", "count"),
    ("max_score", "max_score", "double"),
    ("mean_score", "mean_score", "double"),
    ("models", "models", "set[string]"),
    ("agreed", "agreed", "set[string]"),
    ("uids", "uids", "vector[string]"),
    ("context", "context", "vector[string]"),
)

INCIDENT_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in INCIDENT_FIELDS)

INCIDENT_DTYPES: dict[str, str] = {
    "ts": "float64",
    "incident": "str",
    "state": "str",
    "host": "str",
    "role": "str",
    "verdict": "str",
    "first_seen": "float64",
    "last_seen": "float64",
    "flows": "Int64",
    "notices": "Int64",
    "peers": "Int64",
    "ports": "Int64",
    "max_score": "float64",
    "mean_score": "float64",
    "models": "object",
    "agreed": "object",
    "uids": "object",
    "context": "object",
}

#: ``#path`` of the incident log and its default file name
INCIDENT_LOG_PATH = "zeekml_incident"

STATES = ("open", "update", "closed")


def incident_fields() -> list[str]:
    return [f for _, f, _ in INCIDENT_FIELDS]


def incident_types() -> list[str]:
    return [t for _, _, t in INCIDENT_FIELDS]


_EMPTY: pd.DataFrame | None = None


def empty_incidents() -> pd.DataFrame:
    """An incident table with no rows and the right dtypes."""
    global _EMPTY
    if _EMPTY is None:  # building a frame of 18 typed columns costs milliseconds
        _EMPTY = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in INCIDENT_DTYPES.items()})
    return _EMPTY.copy()


def conform_incidents(df: pd.DataFrame) -> pd.DataFrame:
    """Every incident column present, typed and in order (absent ones missing)."""
    n = len(df)
    if list(df.columns) == list(INCIDENT_DTYPES):
        want = {c: t for c, t in INCIDENT_DTYPES.items()
                if t != "object" and str(df[c].dtype) != t}
        return (df.astype(want) if want else df).reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    for col, dtype in INCIDENT_DTYPES.items():
        if col in df.columns:
            s = df[col].reset_index(drop=True)
            if dtype != "object" and str(s.dtype) != dtype:
                s = s.astype(dtype)
            out[col] = s
        elif dtype == "object":
            out[col] = pd.Series(np.empty(n, dtype=object))
        else:
            out[col] = pd.Series(pd.array([None] * n, dtype=dtype))
    return pd.DataFrame(out)


def is_incident_table(df: pd.DataFrame) -> bool:
    """True for an incident table (sinks that take both kinds tell them apart so)."""
    return "incident" in df.columns and "first_seen" in df.columns
