"""Deterministic Zeek-style uids for flow sources that have none (NetFlow, CSV exports).

A notice must name its flow so an analyst can pivot to it; Zeek gives every connection
a ``C`` + 17 base62 uid, nfdump, Argus and CICFlowMeter give none. :func:`synth_uids`
makes one per row from a keyed hash of the file's base name and the row's identity,
so the same file read twice (or from another directory) gives the same uids.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)
_K1, _K2 = "zeekml-uid-key-1", "zeekml-uid-key-2"
_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the output (uint64, wraps)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _M1
        x = x ^ (x >> np.uint64(27))
        x = x * _M2
        return np.asarray(x ^ (x >> np.uint64(31)))


_G1, _G2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93)


def _fold_numeric(cols: list[np.ndarray], s1: np.uint64, s2: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes per row of numeric columns: each column's bits (floats by
    their IEEE bits, ints as int64) folded in order (xor, multiply by an odd constant,
    xor-shift), then splitmix64's finalizer."""
    n = len(cols[0])
    h1 = np.full(n, s1, dtype=np.uint64)
    h2 = np.full(n, s2, dtype=np.uint64)
    shift = np.uint64(29)
    with np.errstate(over="ignore"):
        for col in cols:
            if col.dtype.kind == "f":
                bits = np.ascontiguousarray(col, dtype=np.float64).view(np.uint64)
            else:
                bits = col.astype(np.int64).view(np.uint64)
            h1 = (h1 ^ bits) * _G1
            h1 ^= h1 >> shift
            h2 = (h2 ^ bits) * _G2
            h2 ^= h2 >> shift
    return _mix(h1), _mix(h2)


def _base62(values: np.ndarray, width: int) -> np.ndarray:
    """The last ``width`` base-62 digits of each value, most significant first, as an
    (n, width) matrix of ASCII bytes (filled column by column in a (width, n) buffer:
    contiguous writes, one divmod per digit)."""
    out = np.empty((width, len(values)), dtype=np.uint8)
    v = values
    for k in range(width - 1, -1, -1):
        v, digit = np.divmod(v, np.uint64(62))
        out[k] = _ALPHABET.take(digit.astype(np.intp))
    return out.T


def synth_uids(prefix: str, source: str, keys: dict[str, Any]) -> pd.Series:
    """Deterministic Zeek-style uids for sources that have none.

    ``prefix`` (one ASCII letter) + 17 base62 characters = 96 bits, like Zeek's ``C...``
    uids. The bits are a keyed SipHash (pandas' ``hash_pandas_object``, fixed keys) of
    the ``keys`` columns (e.g. record index, 5-tuple, start time), salted with the
    *base name* of ``source`` and mixed with splitmix64. The same file read twice, or
    from another directory, gives the same uids, so notices can reference flows.
    When every key is a numeric numpy array, the columns are folded with splitmix64
    alone (:func:`_fold_numeric`, several times faster than SipHash over a DataFrame).
    """
    name = os.path.basename(source).encode("utf-8", "surrogateescape")
    salt = hashlib.blake2b(name, digest_size=16).digest()
    s1 = np.uint64(int.from_bytes(salt[:8], "little"))
    s2 = np.uint64(int.from_bytes(salt[8:], "little"))
    if keys and all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in keys.values()):
        n = len(next(iter(keys.values())))
        h1, h2 = _fold_numeric(list(keys.values()), s1, s2)
    else:
        frame = pd.DataFrame({k: (v if isinstance(v, pd.Series) else pd.Series(v))
                              for k, v in keys.items()}).reset_index(drop=True)
        n = len(frame)
        h1 = _mix(pd.util.hash_pandas_object(frame, index=False, hash_key=_K1).to_numpy(np.uint64) ^ s1)
        h2 = _mix(pd.util.hash_pandas_object(frame, index=False, hash_key=_K2).to_numpy(np.uint64) ^ s2)
    digits = np.empty((n, 18), dtype=np.uint8)
    digits[:, 0] = ord(prefix[0])
    digits[:, 1:12] = _base62(h1, 11)
    digits[:, 12:] = _base62(h2 & np.uint64(0xFFFFFFFF), 6)
    # 18 ASCII bytes per uid: one Arrow string array over the matrix, no per-row objects
    offsets = pa.py_buffer(np.arange(0, 18 * (n + 1), 18, dtype=np.int32))
    text = pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(np.ascontiguousarray(digits))])
    return pd.Series(text.to_pandas(types_mapper={pa.string(): _STR_DTYPE}.get))
