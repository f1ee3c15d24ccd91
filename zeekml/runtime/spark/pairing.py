"""NetFlow pairing over the whole run, exactly as the local engine pairs its stream.

The local engine reads the inputs as one stream and joins a record with its reverse by
stream position and log clock (:mod:`zeekml.sources.biflow`). Here the read stage gave
every row its place in its input (``_rix``, ``_fclock``) and its pairing key; the
segment metadata give each input's record count and latest flow end, so each row gets
its global position ``_pos`` and the log clock on its arrival ``_arr``. Then, in packs:

1. every segment splits into its rows that cannot pair (kept, sent back to their
   segment) and its candidates (sent to a part by their pairing key);
2. each part's candidates, sorted by (key, position), are decided by the same code as
   the local engine's (:func:`~zeekml.sources.biflow.pair_sorted`); the flows (with the
   segment and place of their first record) go back to their segment;
3. each segment's flows are merged in stream order and finished again (log clock,
   state keys): the segments the scoring stages take, with ``ord`` = ``_pos``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from zeekml.runtime.spark.errors import guard, guard_group
from zeekml.runtime.spark.options import SparkCounts, SparkOptions
from zeekml.runtime.spark.packs import hash_parts, pack_parts, unpack, unpack_all
from zeekml.runtime.spark.segments import (
    FLOW_COLUMNS,
    SEG_DDL,
    finish,
    record,
    records_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: a pairing record: 0 = flows of segment ``part``, 1 = candidates of hash part ``part``
PAIR_DDL = "`kind` int, `part` bigint, `data` binary"
FLOWS, CANDIDATES = 0, 1
_MARKS = ("_pos", "_arr", "_end", "_key", "_step", "_req")
_KEEP = (*FLOW_COLUMNS, "file_idx", "seg")


def _pair_records(kind: int, items: list[tuple[int, bytes]]) -> pd.DataFrame:
    return pd.DataFrame({"kind": np.full(len(items), kind, dtype=np.int32),
                         "part": np.array([p for p, _ in items], dtype=np.int64),
                         "data": pd.Series([d for _, d in items], dtype=object)})


def split_candidates(batches: Iterator[pd.DataFrame], offsets: Any, parts: int
                     ) -> Iterator[pd.DataFrame]:
    """Segments -> their rows that cannot pair (to their segment, ``ord`` = ``_pos``)
    and their candidates (to a part by pairing key). ``offsets``: a broadcast of
    {file_idx: (records before it, log clock before it)}."""
    off = offsets.value
    for batch in batches:
        for data in batch["data"]:
            seg = unpack(data)
            row0, clock0 = off[int(seg["file_idx"].iat[0])]
            seg["_pos"] = np.int64(row0) + seg["_rix"].to_numpy(dtype=np.int64)
            seg["_arr"] = np.maximum(seg["_fclock"].to_numpy(dtype=np.float64), clock0)
            cand = seg["_key"].notna().to_numpy()
            rest = seg.loc[~cand, list(_KEEP)].reset_index(drop=True)
            if len(rest):
                rest["ord"] = seg["_pos"].to_numpy()[~cand]
                yield _pair_records(FLOWS, pack_parts(rest, rest["seg"].to_numpy()))
            if cand.any():
                c = seg.loc[cand, [*_KEEP, *_MARKS]].reset_index(drop=True)
                yield _pair_records(CANDIDATES, pack_parts(c, hash_parts(c["_key"], parts)))


def pair_part(pdf: pd.DataFrame, hold: float) -> pd.DataFrame:
    """One group of split records: a part's candidates, decided as the local engine
    decides them, become flows per segment of their first record; a segment's rows that
    cannot pair pass through."""
    from zeekml.sources.biflow import PairOptions, pair_sorted

    if int(pdf["kind"].iat[0]) == FLOWS:
        return pdf.reset_index(drop=True)
    work = unpack_all(pdf["data"])
    if work is None or not len(work):
        return _pair_records(FLOWS, [])
    work = work.sort_values(["_key", "_pos"], kind="stable").reset_index(drop=True)
    flows = pd.concat(list(pair_sorted([work], PairOptions(hold=hold),
                                       extra=("file_idx", "seg"))), ignore_index=True)
    flows = flows.rename(columns={"_pos": "ord"})[[*_KEEP, "ord"]]
    return _pair_records(FLOWS, pack_parts(flows, flows["seg"].to_numpy()))


def merge_segment(pdf: pd.DataFrame, kinds: list[str]) -> pd.DataFrame:
    """A segment's flows (kept rows and pairs made elsewhere) in stream order, finished."""
    flows = unpack_all(pdf["data"])
    if flows is None or not len(flows):
        return records_frame([])
    flows = flows.sort_values("ord", kind="stable").reset_index(drop=True)
    flows = flows.astype({c: t for c, t in _dtypes().items() if c in flows.columns})
    seg, file_idx = int(flows["seg"].iat[0]), int(flows["file_idx"].iat[0])
    flows, max_ts = finish(flows[[*_KEEP, "ord"]], kinds)
    return records_frame([record(flows, seg, file_idx, max_ts)])


@functools.cache
def _dtypes() -> dict[str, str]:
    from zeekml.records import schema

    return {**{c: t for c, t in schema.all_dtypes(with_labels=False).items()},
            "file_idx": "int32", "seg": "int64", "ord": "int64"}


def pair_segments(segs: DataFrame, meta: pd.DataFrame, kinds: Sequence[str],
                  opts: SparkOptions, counts: SparkCounts) -> DataFrame | None:
    """Segments of records -> segments of flows, paired as the local engine pairs them
    (see the module doc); None when no record can pair (nothing changes)."""
    if not int(meta["cand"].sum()):
        return None
    per = (meta.groupby("file_idx")
           .agg(n=("rows", "sum"), e=("max_end", "max")).sort_index())
    counts.records = int(per["n"].sum())
    offsets, rows, clock = {}, 0, -math.inf
    for idx, n, e in zip(per.index, per["n"], per["e"], strict=True):
        offsets[int(idx)] = (rows, clock)
        rows += int(n)
        clock = max(clock, float(e) if np.isfinite(e) else -math.inf)
    spark = segs.sparkSession
    parts = opts.buckets or max(2 * spark.sparkContext.defaultParallelism,
                                math.ceil(int(meta["cand"].sum()) / opts.group_rows))
    bc = spark.sparkContext.broadcast(offsets)
    split = segs.filter("rows > 0").select("data").mapInPandas(
        guard(functools.partial(split_candidates, offsets=bc, parts=parts)), PAIR_DDL)
    paired = split.repartition(parts, "kind", "part").groupBy("kind", "part").applyInPandas(
        guard_group(functools.partial(pair_part, hold=float(opts.pair_hold))), PAIR_DDL)
    segments = max(1, int((meta["rows"] > 0).sum()))
    return paired.repartition(min(parts, segments), "part").groupBy("part").applyInPandas(
        guard_group(functools.partial(merge_segment, kinds=list(kinds))), SEG_DDL)
