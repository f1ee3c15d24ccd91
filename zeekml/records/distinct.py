"""Per-distinct-value evaluation of string tests: one hash per row, the test per value.

Flow columns such as addresses, protocols and connection states repeat heavily inside a
batch (a 200k-flow batch holds about 15k originator addresses and four protocols), while
pandas' string methods (``str.lower``, ``str.startswith``, ``map``) cost a Python-level
step per *row*. Factorizing first and testing only the distinct values gives the same
answer per row at a fraction of the cost on the scorers' hot path.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

_lock = threading.Lock()
#: id of a column's array -> (weak reference to it, codes, distinct values)
_factorized: dict[int, tuple[weakref.ref[Any], np.ndarray, pd.Series]] = {}


def factorized(col: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """``(codes, values)`` of a column: ``codes`` per row (-1 missing, read-only), the
    distinct values as a ``str`` Series (not to be modified).

    Computed once per Arrow-backed column while its data lives: the tokenizer, the flow
    features and the window keys of one batch, in the scorers' threads, all test the same
    address and protocol columns. Keyed by the identity of the column's immutable pyarrow
    array (a value written into the column replaces it: never a stale hit), checked
    through a weak reference (an id reused by a new array is a miss) and dropped when
    the array is freed. Other columns are factorized every time.
    """
    arr = getattr(col.array, "_pa_array", None)
    if arr is None:
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        return codes, pd.Series(np.asarray(uniques, dtype=object), dtype="str")
    key = id(arr)
    with _lock:
        hit = _factorized.get(key)
    if hit is not None and hit[0]() is arr:
        return hit[1], hit[2]
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    values = pd.Series(np.asarray(uniques, dtype=object), dtype="str")
    codes.setflags(write=False)
    try:
        ref = weakref.ref(arr, partial(_forget, key))
    except TypeError:  # an array type without weak references: not cached
        return codes, values
    with _lock:
        _factorized[key] = (ref, codes, values)
    return codes, values


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    with _lock:
        hit = _factorized.get(key)
        if hit is not None and hit[0] is ref:
            del _factorized[key]


def per_distinct(col: pd.Series, fn: Callable[[pd.Series], Any], missing: Any) -> np.ndarray:
    """``fn`` applied to each distinct value of ``col`` (as a ``str`` Series), spread back
    over the rows; rows whose value is missing get ``missing``. ``fn`` must map a Series
    to an array-like of the same length, one result per value, and not modify it."""
    codes, uniques = factorized(col)
    values = np.asarray(fn(uniques))
    if len(values) != len(uniques):
        raise ValueError("per_distinct: fn returned one value per distinct value, not "
                         f"{len(values)} for {len(uniques)}")
    table = np.append(values, np.asarray([missing], dtype=values.dtype))
    return np.asarray(table[codes])  # code -1 (missing) reads the appended last entry


def lists_name_any(col: pd.Series, names: Sequence[str]) -> np.ndarray:
    """Bool per row: the comma-separated list in ``col`` (Zeek's ``service``, lowercased)
    names one of ``names``; missing -> False. Tested once per distinct value."""
    wanted = frozenset(names)
    return per_distinct(col, lambda v: v.astype("str").str.lower().str.split(",").map(
        lambda parts: not wanted.isdisjoint(parts)).to_numpy(dtype=bool), False)


def texts_at(values: pd.Series, codes: np.ndarray) -> np.ndarray:
    """Object array of the :func:`factorized` ``values`` at sorted ``codes`` (-1, missing,
    first: ``""``), only those values converted to Python strings."""
    known = codes[codes >= 0]
    texts = values.iloc[known].to_numpy(dtype=object)
    return texts if len(known) == len(codes) else np.concatenate([[""], texts])


def row_texts(col: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``col`` at ``rows`` as an object array of ``str`` (missing -> ``""``), a Python
    string made for each distinct value of those rows only (a window store's keys)."""
    codes, values = factorized(col)
    distinct, inv = np.unique(codes[rows], return_inverse=True)
    return texts_at(values, distinct)[inv.ravel()]
