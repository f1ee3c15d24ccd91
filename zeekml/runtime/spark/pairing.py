"""NetFlow pairing over the whole run, as the local engine pairs its stream."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from zeekml.runtime.spark.annotate import _annotate_frames
from zeekml.runtime.spark.errors import _action, _guard
from zeekml.runtime.spark.options import SparkCounts, SparkOptions
from zeekml.runtime.spark.schemas import _annotated_cols, _ddl, _flow_cols, _sendable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def _pair_partition(batches: Iterator[pd.DataFrame], hold: float) -> Iterator[pd.DataFrame]:
    """Executor side of pairing: candidates sorted by (key, position) -> flows."""
    from zeekml.sources.biflow import PairOptions, pair_sorted

    cols = [*(c for c in _flow_cols() if c != "clock"), "_pos"]
    for out in pair_sorted(batches, PairOptions(hold=hold), extra=("file_idx",)):
        yield _sendable(out[cols])


def pair_flows(flows: DataFrame, kinds: Sequence[str], opts: SparkOptions, counts: SparkCounts
               ) -> DataFrame | None:
    """NetFlow pairing over the whole run, exactly as the local engine pairs the stream.

    The local engine reads the inputs as one stream and pairs a record with its reverse
    by stream position and log clock (:mod:`zeekml.sources.biflow`). Here every row
    carries its place in its file (``_rix``, ``_fclock``, from the read task); one
    small job gives each file's row count and latest flow end, so each row gets its
    global position and the log clock on its arrival. Candidates are shuffled by their
    pairing key, sorted by position, and decided by the same code
    (:func:`~zeekml.sources.biflow.pair_sorted`); the flows (with the ``file_idx`` and
    ``source_line`` of their first record, the local engine's output order) are then
    annotated per file again. Returns None when no record can pair (nothing changes).
    """
    from pyspark.sql import functions as F

    end = F.when(F.isnan("_end"), F.lit(-math.inf)).otherwise(F.col("_end"))
    stats = _action(lambda: flows.groupBy("file_idx").agg(
        F.count(F.lit(1)).alias("n"), F.max(end).alias("e"),
        F.sum(F.col("_key").isNotNull().cast("long")).alias("c")).collect(),
        "read inputs; pairing candidates")
    per = {int(r[0]): (int(r[1]), float(r[2]) if r[2] is not None else -math.inf, int(r[3] or 0))
           for r in stats}
    if not sum(c for _, _, c in per.values()):
        return None
    counts.records = sum(n for n, _, _ in per.values())
    rows, clock, offsets = 0, -math.inf, []
    for idx in sorted(per):
        n, e, _ = per[idx]
        offsets.append((idx, rows, clock))
        rows += n
        clock = max(clock, e)
    spark = flows.sparkSession
    off = spark.createDataFrame(offsets, "file_idx int, row_off bigint, clock_off double")
    canon = [c for c in _flow_cols() if c != "clock"]
    marked = (flows.join(F.broadcast(off), "file_idx")
              .withColumn("_pos", F.col("row_off") + F.col("_rix"))
              .withColumn("_arr", F.greatest(F.col("_fclock"), F.col("clock_off"))))
    cand = marked.filter(F.col("_key").isNotNull()).select(
        *canon, "_pos", "_arr", "_end", "_key", "_step", "_req")
    parts = opts.buckets or max(2 * spark.sparkContext.defaultParallelism, 1)
    fn = _guard(functools.partial(_pair_partition, hold=float(opts.pair_hold)))
    out_cols = {**{c: t for c, t in _flow_cols().items() if c != "clock"}, "_pos": "int64"}
    paired = (cand.repartition(parts, "_key").sortWithinPartitions("_key", "_pos")
              .mapInPandas(fn, _ddl(out_cols)))
    others = marked.filter(F.col("_key").isNull()).select(*canon, "_pos")
    both = paired.unionByName(others)
    ann = _guard(functools.partial(_annotate_frames, kinds=list(kinds)))
    return (both.repartition("file_idx").sortWithinPartitions("file_idx", "_pos")
            .drop("_pos").mapInPandas(ann, _ddl(_annotated_cols(kinds))))
