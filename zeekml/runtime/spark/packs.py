"""Packs: a batch of rows as one Arrow IPC value, the unit the Spark engine moves.

Spark moves rows between its JVM and the Python workers column by column: every
shuffle, cache, sort and Arrow conversion costs the JVM time per row and per column.
Measured on the row-by-row engine this package replaced (``tools/bench_spark.py``,
200k flows, both bundled models): the JVM spent 3.6x the CPU time of the Python
workers, and the whole engine 6.6x the local engine's CPU time per flow.

So the stages hand Spark *packs*: a pandas frame serialized as an Arrow IPC stream in
one ``binary`` column, next to a few small integer columns Spark partitions, sorts and
counts by. Spark still schedules, shuffles, caches, retries and writes; the rows stay
in vectorized pandas inside the workers, and the JVM copies a few large values per task
instead of converting every cell. Packs are written with pandas' own Arrow metadata, so
:func:`unpack` gives back the canonical dtypes (``str``, ``Int32``, ``boolean`` ...).

Partitioning by a text key (a host, a host pair) uses :func:`hash_parts`: a 64-bit hash
that is the same in every process (Python's ``hash`` of a string is not).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

#: Spark DDL of a pack column
DATA = "`data` binary"


def table_of(df: pd.DataFrame | pa.Table) -> pa.Table:
    """A frame as an Arrow table (its index is not kept; pandas' dtypes are recorded)."""
    if isinstance(df, pa.Table):
        return df
    return pa.Table.from_pandas(df, preserve_index=False)


def write(table: pa.Table) -> bytes:
    """A table (or a slice of one) as the bytes of one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def pack(df: pd.DataFrame | pa.Table) -> bytes:
    """A frame as the bytes of one Arrow IPC stream."""
    return write(table_of(df))


def read(data: bytes | bytearray | memoryview) -> pa.Table:
    """The table of a pack (zero-copy over its bytes)."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _arrow_lists(t: pa.DataType) -> pd.ArrowDtype | None:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pd.ArrowDtype(t)
    return None


def frame_of(table: pa.Table, arrow_lists: bool = False) -> pd.DataFrame:
    """A table as the frame it was packed from; with ``arrow_lists``, list columns stay
    Arrow arrays (``pd.ArrowDtype``) instead of one numpy array per cell."""
    return table.to_pandas(types_mapper=_arrow_lists if arrow_lists else None)


def unpack(data: bytes | bytearray | memoryview, arrow_lists: bool = False) -> pd.DataFrame:
    """The frame :func:`pack` wrote."""
    return frame_of(read(data), arrow_lists)


def unpack_all(values: Iterable[bytes | bytearray | memoryview], arrow_lists: bool = False
               ) -> pd.DataFrame | None:
    """Several packs of the same columns as one frame (None when there are none).

    Concatenated as Arrow tables (a column missing in every row of one pack is a
    ``null`` column there, promoted to the others' type), then converted once.
    """
    tables = [read(v) for v in values]
    if not tables:
        return None
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables,
                                                                promote_options="default")
    return frame_of(table, arrow_lists)


def pack_parts(df: pd.DataFrame | pa.Table, part: np.ndarray) -> list[tuple[int, bytes]]:
    """``(part, pack)`` for each part present, rows in their order in ``df``: converted to
    Arrow once, reordered once, each part a slice."""
    part = np.asarray(part, dtype=np.int64)
    if not len(part):
        return []
    table = table_of(df)
    order = np.argsort(part, kind="stable")
    sp = part[order]
    if not (order == np.arange(len(order))).all():
        table = table.take(order)
    cuts = np.flatnonzero(np.diff(sp)) + 1
    return [(int(sp[lo]), write(table.slice(lo, hi - lo)))
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(sp)], strict=True)]


def hash_parts(keys: pd.Series | np.ndarray, parts: int) -> np.ndarray:
    """Part ``0 .. parts-1`` of each key: a hash that every process computes alike.

    Missing keys hash as the empty string.
    """
    values = pd.Series(keys, copy=False).astype(object).fillna("").to_numpy(dtype=object)
    if parts <= 1 or not len(values):
        return np.zeros(len(values), dtype=np.int64)
    h = pd.util.hash_array(values, categorize=True)
    return (h % np.uint64(parts)).astype(np.int64)


def sendable(df: pd.DataFrame) -> pd.DataFrame:
    """A frame of rows PySpark can take back: pandas 3 keeps a concatenated ``str``
    column as a chunked Arrow array, which PySpark 4.3's converter rejects; such columns
    go as plain objects (other columns are untouched, zero-copy)."""
    for c in df.columns:
        if df[c].dtype == "str" and isinstance(pa.array(df[c], from_pandas=True),
                                                pa.ChunkedArray):
            df[c] = df[c].astype(object)
    return df
