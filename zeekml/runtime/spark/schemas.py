"""Column sets of the stages and their Spark DDL; frames PySpark can take back."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from zeekml.records import schema
from zeekml.records.verdicts import VERDICT_DTYPES

log = logging.getLogger(__name__)

#: pandas dtype -> Spark SQL type
_SPARK_TYPE = {"float64": "double", "str": "string", "Int32": "int", "Int64": "bigint",
               "int32": "int", "int64": "bigint", "boolean": "boolean",
               "object": "array<string>"}
#: columns that carry a row's place in the stream through every stage
ORDER = {"file_idx": "int32", "source_line": "int64", "clock": "float64"}


def _ddl(cols: dict[str, str]) -> str:
    return ", ".join(f"`{c}` {_SPARK_TYPE.get(t, t)}" for c, t in cols.items())


def _flow_cols() -> dict[str, str]:
    """What the stages carry of a flow: canonical columns and arrival order.

    Labels and ``source_file`` stay behind (the file is ``file_idx``; its name is joined
    back at the end): every column crossing between the JVM and Python costs time.
    """
    cols = {c: t for c, t in schema.all_dtypes(with_labels=False).items()
            if c != "source_file"}
    return {**cols, "file_idx": "int32", "clock": "float64"}


def _verdict_cols() -> dict[str, str]:
    return {**VERDICT_DTYPES, "file_idx": "int32", "source_line": "int64", "m": "int32"}


def _scored_cols() -> dict[str, str]:
    """Verdict columns after the per-row policy, plus ``cls``, arrival order, inbound."""
    return {**VERDICT_DTYPES, "cls": "str", **ORDER, "m": "int32", "inbound": "boolean"}


def _flagged_cols() -> dict[str, str]:
    """Flagged rows with their final notice flag: what the incident trackers take."""
    return {**_verdict_cols(), "clock": "float64", "inbound": "boolean"}

def _annotated_cols(kinds: Sequence[str], marks: bool = False) -> dict[str, str]:
    cols = _flow_cols()
    for k in kinds:
        cols[f"k_{k}"] = "str"
        cols[f"r_{k}"] = "int64"
    if marks:  # NetFlow pairing: each row's place in its file and its pairing key
        from zeekml.sources.biflow import MARK_COLUMNS

        cols.update(MARK_COLUMNS)
    return cols

def _sendable(df: pd.DataFrame) -> pd.DataFrame:
    """Make a frame PySpark can send back: pandas 3 keeps a concatenated "str" column
    as a chunked Arrow array, which PySpark 4.3's converter rejects; such columns go
    as plain objects (other columns are untouched, zero-copy)."""
    import pyarrow as pa

    for c in df.columns:
        if df[c].dtype == "str" and isinstance(pa.array(df[c], from_pandas=True),
                                                pa.ChunkedArray):
            df[c] = df[c].astype(object)
    return df


def _empty(cols: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=("object" if t == "object" else t))
                         for c, t in cols.items()})
