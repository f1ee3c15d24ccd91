"""The verdict table: one row per scored flow (or notice), as sinks receive it.

Column names here are Python names; :data:`ZEEK_FIELDS` gives the Zeek log field name
and ``#types`` entry each is written with. ``context`` holds a list of uids per row
(the previous flows the AMF-LSTM's attention weighted most), written as
``vector[string]``. ``n`` is the number of flows a notice stands for after
suppression (1 when nothing was suppressed).

Each field means one thing (docs/scoring.md has the table users read):

- ``candidate``: the class the score is for, whatever the threshold says (the AMF-LSTM's
  most probable attack class, the flow LM's ``anomaly``, the scan detector's
  ``address_scan``, ``port_scan`` or ``repeated_attempts``);
- ``verdict``: the decision of the threshold: ``candidate`` when the score crossed the
  (card or overridden) threshold, else :data:`NORMAL`;
- ``decision``: what the notice policy did with the row, one of :data:`DECISIONS`:
  ``below`` (under the threshold), ``allowed`` (crossed, an endpoint is allow-listed),
  ``suppressed`` (crossed, inside the suppression window of an earlier notice) or
  ``notice``;
- ``notice``: ``decision == "notice"`` (kept as a bool for filters); without ``--all``
  only notices reach the sinks;
- ``alt``/``alt_score``: the model's runner-up answer: for the AMF-LSTM the most probable
  attack class other than ``candidate`` and its probability (never ``normal``: P(normal)
  is ``1 - score``), for the flow LM the word it expected and its probability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: (python column, zeek field name, zeek type), in output order.
ZEEK_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ts", "ts", "time"),
    ("uid", "uid", "string"),
    ("orig_h", "id.orig_h", "addr"),
    ("orig_p", "id.orig_p", "port"),
    ("resp_h", "id.resp_h", "addr"),
    ("resp_p", "id.resp_p", "port"),
    ("proto", "proto", "enum"),
    ("model", "model", "string"),
    ("verdict", "verdict", "string"),
    ("score", "score", "double"),
    ("threshold", "threshold", "double"),
    ("notice", "notice", "bool"),
    ("alt", "alt", "string"),
    ("alt_score", "alt_score", "double"),
    ("n", "n", "count"),
    ("context", "context", "vector[string]"),
    # appended (not next to verdict/notice) so positional readers of older logs keep working
    ("candidate", "candidate", "string"),
    ("decision", "decision", "enum"),
)

VERDICT_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in ZEEK_FIELDS)

#: pandas dtype of each verdict column (``context`` holds Python lists).
VERDICT_DTYPES: dict[str, str] = {
    "ts": "float64",
    "uid": "str",
    "orig_h": "str",
    "orig_p": "Int32",
    "resp_h": "str",
    "resp_p": "Int32",
    "proto": "str",
    "model": "str",
    "verdict": "str",
    "score": "float64",
    "threshold": "float64",
    "notice": "boolean",
    "alt": "str",
    "alt_score": "float64",
    "n": "Int64",
    "context": "object",
    "candidate": "str",
    "decision": "str",
}

#: The verdict a flow gets when its score is below the threshold.
NORMAL = "normal"

#: What the notice policy did with a row (the ``decision`` column).
BELOW, ALLOWED, SUPPRESSED, NOTICE = "below", "allowed", "suppressed", "notice"
DECISIONS: tuple[str, ...] = (BELOW, ALLOWED, SUPPRESSED, NOTICE)


def zeek_fields() -> list[str]:
    """Zeek field names of the verdict log, in order."""
    return [f for _, f, _ in ZEEK_FIELDS]


def zeek_types() -> list[str]:
    """Zeek ``#types`` of the verdict log, in order."""
    return [t for _, _, t in ZEEK_FIELDS]


def empty_verdicts() -> pd.DataFrame:
    """A verdict table with no rows and the right dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in VERDICT_DTYPES.items()})


def conform_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """Every verdict column present, typed and in order (absent ones missing)."""
    if list(df.columns) == list(VERDICT_DTYPES) and all(
        str(df[c].dtype) == t for c, t in VERDICT_DTYPES.items()
    ):
        return df.reset_index(drop=True) if not isinstance(df.index, pd.RangeIndex) or (
            df.index.start != 0 or df.index.step != 1) else df
    n = len(df)
    out: dict[str, pd.Series] = {}
    for col, dtype in VERDICT_DTYPES.items():
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
