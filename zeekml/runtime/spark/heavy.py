"""Heavy keys: a key with more flows than ``chunk_rows`` is scored in chunks.

A scanner, a NAT gateway or a DDoS target can hold most flows of a run; scored whole, it
would sit on one core and one worker's memory. A key with more than ``C = chunk_rows``
flows is *heavy*: its flows get their rank in stream order, chunk ``c`` holds ranks
``c*C .. (c+1)*C - 1`` and is preceded by copies of the key's ``depth`` flows before
it (scored again for their windows, never written), so the chunks spread over tasks and
every window is exactly the local engine's. Which keys are chunked changes only where
the work goes, never a verdict.

Finding them: each segment counts its keys (:func:`count_keys`); the counts meet by a
hash of the key (:func:`find_heavy`) and the heavy keys come back with their count per
segment, so a heavy key's rank is its rank inside the segment plus its flows in earlier
segments (:class:`HeavyKeys`). No job runs when the run has at most ``C`` flows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from zeekml.runtime.spark.errors import action, guard, guard_group
from zeekml.runtime.spark.packs import hash_parts, pack_parts, read, unpack_all

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

COUNT_DDL = "`kind` int, `part` bigint, `data` binary"
HEAVY_DDL = "`kind` int, `key` string, `seg` bigint, `n` bigint"


def count_keys(batches: Iterator[pd.DataFrame], kinds: list[str], parts: int
               ) -> Iterator[pd.DataFrame]:
    """Per segment and key kind: (key, seg, n) of every key, sent by a hash of the key."""
    for batch in batches:
        for data in batch["data"]:
            table = read(data)
            seg = int(table.column("seg")[0].as_py())
            for k, kind in enumerate(kinds):
                vc = table.column(f"k_{kind}").to_pandas().value_counts(sort=False)
                counted = pd.DataFrame({"key": vc.index.astype("str"),
                                        "seg": np.full(len(vc), seg, dtype=np.int64),
                                        "n": vc.to_numpy(dtype=np.int64)})
                out = pack_parts(counted, hash_parts(counted["key"], parts))
                yield pd.DataFrame({"kind": np.full(len(out), k, dtype=np.int32),
                                    "part": np.array([p for p, _ in out], dtype=np.int64),
                                    "data": pd.Series([d for _, d in out], dtype=object)})


def find_heavy(pdf: pd.DataFrame, chunk_rows: int) -> pd.DataFrame:
    """One hash part of one kind's counts -> (kind, key, seg, n) of its heavy keys."""
    counted = unpack_all(pdf["data"])
    kind = int(pdf["kind"].iat[0])
    empty = pd.DataFrame({"kind": pd.Series([], dtype=np.int32),
                          "key": pd.Series([], dtype=object),
                          "seg": pd.Series([], dtype=np.int64),
                          "n": pd.Series([], dtype=np.int64)})
    if counted is None or not len(counted):
        return empty
    total = counted.groupby("key", sort=False)["n"].transform("sum").to_numpy()
    heavy = counted[total > chunk_rows]
    if not len(heavy):
        return empty
    return pd.DataFrame({"kind": np.full(len(heavy), kind, dtype=np.int32),
                         "key": heavy["key"].astype(object).to_numpy(),
                         "seg": heavy["seg"].to_numpy(dtype=np.int64),
                         "n": heavy["n"].to_numpy(dtype=np.int64)})


class HeavyKeys:
    """The heavy keys of one key kind: for each, its flows before each segment."""

    def __init__(self, rows: pd.DataFrame) -> None:
        rows = rows.sort_values(["key", "seg"], kind="stable").reset_index(drop=True)
        n = rows["n"].to_numpy(dtype=np.int64)
        first = rows.groupby("key", sort=False)["n"].cumsum().to_numpy(dtype=np.int64) - n
        self.keys = frozenset(rows["key"].astype(str))
        self._before = pd.Series(first, index=pd.MultiIndex.from_arrays(
            [rows["key"].astype(str).to_numpy(dtype=object),
             rows["seg"].to_numpy(dtype=np.int64)]))

    def __len__(self) -> int:
        return len(self.keys)

    def ranks(self, keys: pd.Series, seg: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows of a segment whose key is heavy, their rank among the key's flows)."""
        heavy = keys.isin(self.keys).to_numpy(dtype=bool)
        idx = np.flatnonzero(heavy)
        if not len(idx):
            return idx, np.zeros(0, dtype=np.int64)
        hk = keys.iloc[idx].astype(str).reset_index(drop=True)
        local = hk.groupby(hk, sort=False).cumcount().to_numpy(dtype=np.int64)
        before = self._before.reindex(pd.MultiIndex.from_arrays(
            [hk.to_numpy(dtype=object), np.full(len(hk), seg, dtype=np.int64)]))
        return idx, before.to_numpy(dtype=np.int64) + local


def chunks(keys: pd.Series, seg: int, heavy: HeavyKeys | None, chunk_rows: int, depth: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scoring rows of a segment for one model: (row index, chunk, emit).

    Rows of light keys are chunk 0; a heavy key's row of rank ``r`` is in chunk
    ``r // C`` and, when it is among the last ``depth`` flows of its chunk, copied into
    the next chunk as context (``emit`` false).
    """
    n = len(keys)
    chunk = np.zeros(n, dtype=np.int64)
    if heavy is None or not len(heavy):
        return np.arange(n), chunk, np.ones(n, dtype=bool)
    idx, rank = heavy.ranks(keys, seg)
    chunk[idx] = rank // chunk_rows
    rows, ch, emit = [np.arange(n)], [chunk], [np.ones(n, dtype=bool)]
    if depth > 0 and len(idx):
        ctx = rank % chunk_rows >= chunk_rows - depth
        rows.append(idx[ctx])
        ch.append(chunk[idx[ctx]] + 1)
        emit.append(np.zeros(int(ctx.sum()), dtype=bool))
    return np.concatenate(rows), np.concatenate(ch), np.concatenate(emit)


def heavy_keys(segs: DataFrame, kinds: Sequence[str], flows: int, chunk_rows: int,
               group_rows: int) -> dict[str, HeavyKeys]:
    """The heavy keys of each key kind (none when the run has at most ``chunk_rows``
    flows: no key can have more)."""
    if flows <= chunk_rows:
        return {}
    spark = segs.sparkSession
    parts = max(2 * spark.sparkContext.defaultParallelism, math.ceil(flows / group_rows))
    counted = segs.filter("rows > 0").select("data").mapInPandas(
        guard(functools.partial(count_keys, kinds=list(kinds), parts=parts)), COUNT_DDL)
    found = counted.repartition(len(kinds) * parts, "kind", "part").groupBy("kind", "part").applyInPandas(
        guard_group(functools.partial(find_heavy, chunk_rows=chunk_rows)), HEAVY_DDL)
    rows = action(lambda: found.toPandas(), "heavy keys")
    out = {}
    for k, kind in enumerate(kinds):
        mine = rows[rows["kind"] == k]
        if len(mine):
            out[kind] = HeavyKeys(mine)
    return out
