"""Canonical rows as plain numpy arrays and back, for state files (never pickle).

A stage that holds flows between runs (the NetFlow pairer's held records) saves them
in the state file with everything else. :class:`~zeekml.runtime.state.StateStore`
only stores plain numpy arrays, so each column becomes arrays of a fixed kind:

=============  ==========================================================
float64        ``NAME`` float64
int64/int32    ``NAME`` int64
Int32/Int64    ``NAME`` int64 values + ``NAME.ok`` bool (False = missing)
boolean        ``NAME`` int8: -1 missing, 0 False, 1 True
str            ``NAME.data`` uint8 (UTF-8 of every value, concatenated),
               ``NAME.off`` int64 offsets (n + 1), ``NAME.ok`` bool
=============  ==========================================================

:func:`decode_frame` checks every array (kind, shape, offsets in range and
increasing, valid UTF-8) and raises :class:`~zeekml.errors.StateError` on anything
else, so a damaged or hand-edited state file is refused, never half-read.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from zeekml.errors import StateError
from zeekml.records import schema

_STR = pd.StringDtype("pyarrow", na_value=np.nan)


def encode_frame(df: pd.DataFrame, dtypes: Mapping[str, str], prefix: str) -> dict[str, np.ndarray]:
    """The columns ``dtypes`` names (absent ones as missing) as plain arrays."""
    out: dict[str, np.ndarray] = {f"{prefix}rows": np.array(len(df), dtype=np.int64)}
    for col, dtype in dtypes.items():
        name = f"{prefix}{col}"
        s = df[col] if col in df.columns else pd.Series(pd.array([None] * len(df), dtype=dtype))
        if dtype == "float64":
            out[name] = s.to_numpy(dtype=np.float64, na_value=np.nan)
        elif dtype in ("int64", "int32", "int8"):
            out[name] = s.to_numpy(dtype=np.int64)
        elif dtype in ("Int32", "Int64"):
            out[name + ".ok"] = s.notna().to_numpy(dtype=bool)
            out[name] = s.fillna(0).to_numpy(dtype=np.int64)
        elif dtype == "boolean":
            b = s.astype("boolean")
            out[name] = np.where(b.isna().to_numpy(), -1, b.fillna(False).to_numpy(dtype=np.int8)
                                 ).astype(np.int8)
        elif dtype == schema.STR:
            arr = pa.array(s.astype(object).where(s.notna(), None), type=pa.large_string())
            valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            filled = arr.fill_null("") if arr.null_count else arr
            off = np.frombuffer(filled.buffers()[1], dtype=np.int64)[filled.offset:
                                                                     filled.offset + len(s) + 1]
            data = np.frombuffer(filled.buffers()[2], dtype=np.uint8) if len(s) else \
                np.zeros(0, np.uint8)
            base = int(off[0]) if len(off) else 0
            end = int(off[-1]) if len(off) else 0
            out[name + ".off"] = (off - base).astype(np.int64)
            out[name + ".data"] = data[base:end].copy()
            out[name + ".ok"] = valid
        else:  # pragma: no cover - a programming error, not input
            raise ValueError(f"cannot encode dtype {dtype} of {col}")
    return out


def _array(state: Mapping[str, np.ndarray], name: str, kind: str, n: int | None) -> np.ndarray:
    if name not in state:
        raise StateError(f"state lacks {name}")
    a = np.asarray(state[name])
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise StateError(f"state array {name} has a wrong shape {a.shape}")
    if len(a) and a.dtype.kind not in kind:
        raise StateError(f"state array {name} has a wrong type {a.dtype}")
    return a


def decode_frame(state: Mapping[str, np.ndarray], dtypes: Mapping[str, str], prefix: str
                 ) -> pd.DataFrame:
    """The frame :func:`encode_frame` saved (validated; :class:`StateError` otherwise)."""
    rows = np.asarray(state.get(f"{prefix}rows", -1))
    if rows.shape != () or rows.dtype.kind not in "iu" or int(rows) < 0:
        raise StateError(f"state {prefix}rows is malformed")
    n = int(rows)
    cols: dict[str, object] = {}
    for col, dtype in dtypes.items():
        name = f"{prefix}{col}"
        if dtype == "float64":
            cols[col] = _array(state, name, "f", n).astype(np.float64)
        elif dtype in ("int64", "int32", "int8"):
            cols[col] = _array(state, name, "iu", n).astype(dtype)
        elif dtype in ("Int32", "Int64"):
            ok = _array(state, name + ".ok", "b", n).astype(bool)
            v = _array(state, name, "iu", n).astype(np.int64)
            if dtype == "Int32" and len(v) and (np.abs(v[ok]) >= 2**31).any():
                raise StateError(f"state array {name} is out of range")
            cols[col] = pd.array(np.where(ok, v, 0), dtype=dtype)
            cols[col][~ok] = pd.NA  # type: ignore[index]
        elif dtype == "boolean":
            v = _array(state, name, "i", n).astype(np.int8)
            if len(v) and ((v < -1) | (v > 1)).any():
                raise StateError(f"state array {name} is out of range")
            b = pd.array(v == 1, dtype="boolean")
            b[v == -1] = pd.NA
            cols[col] = b
        elif dtype == schema.STR:
            ok = _array(state, name + ".ok", "b", n).astype(bool)
            off = _array(state, name + ".off", "i", n + 1).astype(np.int64)
            data = _array(state, name + ".data", "u", None).astype(np.uint8)
            if off[0] != 0 or off[-1] != len(data) or (np.diff(off) < 0).any():
                raise StateError(f"state array {name} has bad offsets")
            arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(off.tobytes()),
                                                   pa.py_buffer(data.tobytes()))
            try:
                arr.validate(full=True)  # offsets and UTF-8
            except pa.ArrowInvalid as exc:
                raise StateError(f"state array {name} is not valid text: {exc}") from exc
            s = pd.Series(arr.to_pandas(types_mapper={pa.large_string(): _STR}.get), dtype=_STR)
            s[~ok] = np.nan
            cols[col] = s.astype(schema.STR)
        else:  # pragma: no cover
            raise ValueError(f"cannot decode dtype {dtype} of {col}")
    return pd.DataFrame(cols)
