"""The canonical flow table: the one shape every reader produces and every stage consumes.

Columns, dtypes and units live here and nowhere else.

Missing values
    A Zeek unset field (``-``), an absent JSON key, or a counter a source cannot know
    (nfdump has no responder counters for unidirectional flows) stays *missing*:
    ``NaN`` in float columns, ``<NA>`` in nullable integer and boolean columns, ``NaN``
    in string columns. It is never 0, False or the epoch.
    Zeek's ``(empty)`` is an empty string ``""`` (or an empty set), which is not missing.

Units
    ``ts`` epoch seconds (float64, UTC), ``duration`` seconds, byte and packet
    counters are counts, ports are 0..65535 (for ICMP the responder "port" is the
    ICMP type/code as Zeek and nfdump write it).

Pairing
    ``paired`` says how a NetFlow flow was made (:mod:`zeekml.sources.biflow`): True
    for two unidirectional records joined into one flow (originator and responder
    counters), False for a one-way record (no reverse record found, or pairing
    turned off), missing where the source gives both directions itself (Zeek logs,
    CSV exports, bidirectional NetFlow/NSEL records). It is not a Zeek conn.log
    field; ``zeekml convert`` writes it as an extra ``bool`` column.

Provenance
    ``source_file`` and ``source_line`` name where a row came from (1-based line, or
    record index for binary inputs), so every later error or notice can point back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from zeekml.errors import SchemaError

STR = "str"  # pandas >= 3 string dtype: missing is NaN

#: Canonical columns and their pandas dtypes, in output order.
COLUMNS: dict[str, str] = {
    "ts": "float64",
    "uid": STR,
    "orig_h": STR,
    "orig_p": "Int32",
    "resp_h": STR,
    "resp_p": "Int32",
    "proto": STR,
    "service": STR,
    "duration": "float64",
    "orig_bytes": "Int64",
    "resp_bytes": "Int64",
    "conn_state": STR,
    "local_orig": "boolean",
    "local_resp": "boolean",
    "missed_bytes": "Int64",
    "history": STR,
    "orig_pkts": "Int64",
    "orig_ip_bytes": "Int64",
    "resp_pkts": "Int64",
    "resp_ip_bytes": "Int64",
    "paired": "boolean",
}

#: Optional label columns, present only when the input carries labels.
LABEL_COLUMNS: dict[str, str] = {"label": STR, "detailed_label": STR}

#: Provenance columns, always present.
SOURCE_COLUMNS: dict[str, str] = {"source_file": STR, "source_line": "int64"}

#: Zeek conn.log field name for each canonical column (for writers and readers).
ZEEK_NAMES: dict[str, str] = {
    "orig_h": "id.orig_h",
    "orig_p": "id.orig_p",
    "resp_h": "id.resp_h",
    "resp_p": "id.resp_p",
}

#: Zeek ``#types`` of each canonical column, as Zeek's conn.log declares them.
ZEEK_TYPES: dict[str, str] = {
    "ts": "time",
    "uid": "string",
    "orig_h": "addr",
    "orig_p": "port",
    "resp_h": "addr",
    "resp_p": "port",
    "proto": "enum",
    "service": "string",
    "duration": "interval",
    "orig_bytes": "count",
    "resp_bytes": "count",
    "conn_state": "string",
    "local_orig": "bool",
    "local_resp": "bool",
    "missed_bytes": "count",
    "history": "string",
    "orig_pkts": "count",
    "orig_ip_bytes": "count",
    "resp_pkts": "count",
    "resp_ip_bytes": "count",
    "paired": "bool",
    "label": "string",
    "detailed_label": "string",
}


def all_dtypes(with_labels: bool = False) -> dict[str, str]:
    """Every column a canonical table has (labels only when asked), in order."""
    out = dict(COLUMNS)
    if with_labels:
        out.update(LABEL_COLUMNS)
    out.update(SOURCE_COLUMNS)
    return out


def empty_table(with_labels: bool = False) -> pd.DataFrame:
    """A canonical table with no rows and the right dtypes."""
    return pd.DataFrame(
        {c: pd.Series([], dtype=t) for c, t in all_dtypes(with_labels).items()}
    )


def has_labels(df: pd.DataFrame) -> bool:
    """True when the table carries the label columns."""
    return "label" in df.columns


def conform(
    df: pd.DataFrame, *, source_file: str | None = None, with_labels: bool | None = None
) -> pd.DataFrame:
    """Return ``df`` with every canonical column present, typed, and in order.

    Readers build their batches with whatever columns their format has and call
    this last: absent columns become all-missing, present ones are cast to the
    canonical dtype. Extra columns are dropped. Casting an unparsable value is a
    :class:`SchemaError` (readers validate values line by line before this).
    """
    n = len(df)
    labels = (has_labels(df) or "detailed_label" in df.columns) if with_labels is None else with_labels
    expected = all_dtypes(labels)
    if _already_canonical(df, expected):  # a reader's batch built in canonical form: as is
        return df
    out: dict[str, pd.Series] = {}
    for col, dtype in expected.items():
        if col in df.columns:
            s = df[col]
            if str(s.dtype) != dtype:
                try:
                    s = s.astype(dtype)
                except (TypeError, ValueError) as exc:
                    raise SchemaError(f"column {col!r} cannot be cast to {dtype}: {exc}") from exc
            out[col] = s.reset_index(drop=True)
        elif col == "source_file":
            out[col] = pd.Series([source_file] * n, dtype=dtype)
        elif col == "source_line":
            out[col] = pd.Series(np.arange(1, n + 1, dtype=np.int64))
        else:
            out[col] = pd.Series(pd.array([None] * n, dtype=dtype))
    return pd.DataFrame(out, copy=False)  # copy-on-write keeps the input unchanged


def _already_canonical(df: pd.DataFrame, expected: dict[str, str]) -> bool:
    """Whether ``df`` has exactly the ``expected`` columns, in order, with their dtypes,
    and a default index (what :func:`conform` would return anyway)."""
    if len(df.columns) != len(expected) or list(df.columns) != list(expected):
        return False
    index = df.index
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        return False
    return all(str(t) == e for t, e in zip(df.dtypes, expected.values(), strict=True))


def validate(df: pd.DataFrame) -> None:
    """Raise :class:`SchemaError` unless ``df`` is a canonical flow table."""
    expected = all_dtypes(has_labels(df))
    missing = [c for c in expected if c not in df.columns]
    if missing:
        raise SchemaError(f"flow table lacks columns: {', '.join(missing)}")
    wrong = [
        f"{c} is {df[c].dtype}, expected {t}" for c, t in expected.items() if str(df[c].dtype) != t
    ]
    if wrong:
        raise SchemaError("flow table has wrong dtypes: " + "; ".join(wrong))


def concat(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate canonical tables; label columns are kept if any table has them."""
    tables = list(tables)
    if not tables:
        return empty_table()
    labels = any(has_labels(t) for t in tables)
    fixed = [conform(t, with_labels=True) if (labels and not has_labels(t)) else t for t in tables]
    out = pd.concat(fixed, ignore_index=True)
    return out[list(all_dtypes(labels))]


def one_way_records(flows: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """Bool per row (or per ``rows``): a one-way NetFlow record no reverse record was
    found for (``paired`` False, see Pairing above); False where ``paired`` is missing or
    absent (the source gives both directions, or says nothing)."""
    if "paired" not in flows.columns:
        return np.zeros(len(flows) if rows is None else len(rows), dtype=bool)
    col = flows["paired"] if rows is None else flows["paired"].iloc[rows]
    return np.asarray(col.eq(False).fillna(False).to_numpy(dtype=bool), dtype=bool)
