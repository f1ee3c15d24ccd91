"""Zeek-field CSV (``zeek_csv``) -> canonical flow batches.

A header of Zeek conn.log field names (``ts,uid,id.orig_h,...``; ``id_orig_h`` and
bare ``orig_h`` are accepted), as many teams export Zeek logs and as the IoT-23 copies
in ``../shared/data/iot23-csv`` are. Columns by header *name* (the machinery is
:class:`~zeekml.sources.csv_parser.CsvParser`'s). Empty field or ``-``: unset
(missing); ``(empty)``: the empty string; ``\\xNN``: Zeek escapes, decoded. ``ts`` is
epoch seconds or ISO 8601 (UTC unless an offset is given). Bools ``T/F``,
``true/false``, ``1/0``. ``label``; ``detailed-label``/``detailedlabel``/
``detailed_label`` (IoT-23 writes ``-`` for benign rows: missing, as in the Zeek
original). ``tunnel_parents`` and unknown columns are ignored. Rows without a ``uid``
get a synthesized one (prefix ``E``, see :func:`zeekml.sources.uids.synth_uids`).
:mod:`zeekml.sinks.csv_rows` writes this format (what ``zeekml convert --to csv``
emits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.errors import FormatError
from zeekml.records import schema
from zeekml.sources.csv_parser import CsvParser, split_header
from zeekml.sources.uids import synth_uids
from zeekml.sources.values import (
    Rejects,
    bad_value,
    bool_mask,
    column_text,
    nullable_int,
    parse_floats,
    parse_ints,
    parse_times,
    present_mask,
)
from zeekml.sources.zeek_tsv import canonical_name, unescape

_UNSET = ("", "-")
_BOOL_TRUE = ("T", "t", "true", "True", "TRUE", "1")
_BOOL_FALSE = ("F", "f", "false", "False", "FALSE", "0")


def _zeek_role(name: str) -> str | None:
    name = name.strip()
    return canonical_name(name) or (name if name in ("orig_h", "orig_p", "resp_h", "resp_p") else None)


class ZeekCsvParser(CsvParser):
    """CSV with Zeek conn.log field names (IoT-23 CSV copies, team exports)."""

    format = "zeek_csv"

    def _roles(self, fields: list[str]) -> dict[int, str]:
        roles: dict[int, str] = {}
        for i, f in enumerate(fields):
            role = _zeek_role(f)
            if role is not None and role not in roles.values():
                roles[i] = role
        if "ts" not in roles.values():
            raise FormatError(f"{self.path}: Zeek-field CSV header has no 'ts' column")
        return roles

    def _is_header(self, fields: list[str]) -> bool:
        roles = {_zeek_role(f) for f in fields}
        return "ts" in roles and len(roles - {None}) >= 2

    def _frame(self, cols: dict[str, pa.Array], lines: np.ndarray) -> pd.DataFrame | None:
        n = len(lines)
        rej = Rejects(n)
        data: dict[str, Any] = {}
        for canon, raw in cols.items():
            dtype = schema.COLUMNS.get(canon) or schema.LABEL_COLUMNS[canon]
            text = column_text(raw, trim=dtype != schema.STR)
            if canon == "ts":
                values, bad = parse_times(text, _UNSET)
                rej.add(bad | np.isnan(values), bad_value("ts", text))
                data[canon] = values
            elif dtype == "float64":
                values, _, bad = parse_floats(text, _UNSET)
                rej.add(bad, bad_value(canon, text))
                data[canon] = values
            elif dtype in ("Int32", "Int64"):
                hi = 65535 if dtype == "Int32" else 2**63 - 1
                values, present, bad = parse_ints(text, 0, hi, _UNSET)
                rej.add(bad, bad_value(canon, text))
                data[canon] = nullable_int(values, ~present, dtype)
            elif dtype == "boolean":
                is_t = bool_mask(pc.is_in(text, value_set=pa.array(_BOOL_TRUE)))
                is_f = bool_mask(pc.is_in(text, value_set=pa.array(_BOOL_FALSE)))
                present = present_mask(text, _UNSET)
                rej.add(present & ~(is_t | is_f), bad_value(canon, text))
                data[canon] = pd.arrays.BooleanArray(is_t, ~(is_t | is_f))
            else:
                data[canon], bad = _zeek_strings(text)
                rej.add(bad, f"bad escape in {canon}")
        keep = rej.report(self.skips, self.path, lines)
        df = pd.DataFrame(data)
        df["source_line"] = lines
        if not keep.all():
            df = df[keep].reset_index(drop=True)
        if not len(df):
            return None
        if "uid" not in df.columns or df["uid"].isna().any():
            made = synth_uids("E", self.path, _uid_keys(df))
            df["uid"] = made if "uid" not in df.columns else df["uid"].fillna(made)
        return schema.conform(df, source_file=self.path)


def _zeek_strings(text: pa.Array) -> tuple[pd.Series, np.ndarray]:
    """Zeek-CSV string values: unset -> missing, ``(empty)`` -> "", ``\\xNN`` decoded."""
    missing = ~present_mask(text, _UNSET)
    arr = pc.if_else(pc.equal(text, "(empty)"), "", text)
    bad = np.zeros(len(text), dtype=bool)
    has = bool_mask(pc.match_substring(arr, "\\"))
    if has.any():
        values = arr.to_pylist()
        for i in np.flatnonzero(has).tolist():
            try:
                values[i] = unescape(values[i])
            except ValueError:
                bad[i] = True
        arr = pa.array(values, pa.string())
    s = pd.Series(arr.to_pandas(), dtype=schema.STR)
    s[missing] = np.nan
    return s, bad


def _uid_keys(df: pd.DataFrame) -> dict[str, Any]:
    keys: dict[str, Any] = {"line": df["source_line"].to_numpy()}
    for c in ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto"):
        if c in df.columns:
            keys[c] = df[c]
    return keys


def is_zeek_csv_header(line: bytes) -> bool:
    """Whether a CSV line is a Zeek-field header: a ``ts`` column and two more Zeek fields."""
    fields = split_header(line)
    zeek = {_zeek_role(f) for f in fields} - {None}
    return len(fields) >= 4 and "ts" in zeek and len(zeek) >= 3
