"""The stream clock, heavy keys cut in chunks, and the scoring groups."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from zeekml.errors import UsageError
from zeekml.policy.notice import NoticePolicy, PolicyConfig
from zeekml.records import schema
from zeekml.runtime.spark.errors import _action
from zeekml.runtime.spark.models import _Model, _worker_scorers
from zeekml.runtime.spark.options import SparkCounts, SparkOptions
from zeekml.runtime.spark.schemas import ORDER, _empty, _flow_cols, _scored_cols, _sendable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def _stream_clock(flows: DataFrame, counts: SparkCounts) -> DataFrame:
    """Replace per-file clocks by the stream clock: max with every earlier file's maximum.

    Its job (per-file maxima and row counts) is the first over the cached flows: it
    reads the inputs and fills ``counts.flows_read``.
    """
    from pyspark.sql import functions as F

    maxima = _action(lambda: flows.groupBy("file_idx")
                     .agg(F.max("clock").alias("c"), F.count(F.lit(1)).alias("n"))
                     .collect(), "read inputs; per-file clocks")
    counts.flows_read = sum(int(r[2]) for r in maxima)
    per = dict(sorted((int(r[0]), float(r[1])) for r in maxima))
    counts.end_clock = max(per.values(), default=-math.inf)
    prev, before = -np.inf, {}
    for idx in sorted(per):
        before[idx] = prev
        prev = max(prev, per[idx])
    spark = flows.sparkSession
    off = spark.createDataFrame([(k, float(v)) for k, v in before.items()],
                                "file_idx int, before double")
    return (flows.join(F.broadcast(off), "file_idx", "left")
            .withColumn("clock", F.greatest(F.col("clock"), F.coalesce("before", F.lit(-math.inf))))
            .drop("before"))


def _chunked(flows: DataFrame, models: list[_Model], opts: SparkOptions,
             counts: SparkCounts) -> DataFrame:
    """One row per (model, flow) with its state key and chunk; heavy keys cut in chunks.

    A key with more than ``C = chunk_rows`` flows is heavy: its flows get their rank in
    arrival order (rank inside the file + the key's flows in earlier files), chunk
    ``c`` holds ranks ``c*C .. (c+1)*C - 1`` and, marked ``emit = false``, copies of
    the ``depth`` flows before them (the windows' context). Other keys are chunk 0.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    c = opts.chunk_rows
    deepest = max(m.depth for m in models)
    if c <= deepest:
        raise UsageError(f"chunk_rows ({c}) must exceed the deepest window ({deepest} flows)")
    keep = list(_flow_cols())
    per_kind: dict[str, DataFrame] = {}
    for kind in sorted({m.key for m in models}):
        base = flows.select(*keep, F.col(f"k_{kind}").alias("skey"),
                            F.col(f"r_{kind}").alias("frank"))
        heavy = _action(lambda k=kind: flows.groupBy(f"k_{k}").count()
                        .filter(F.col("count") > c).select(f"k_{k}").collect(),
                        f"heavy {kind} keys")
        counts.heavy_keys += len(heavy)
        if not heavy:
            per_kind[kind] = base.withColumn("rank", F.lit(None).cast("bigint"))
            continue
        hk = flows.sparkSession.createDataFrame([(r[0],) for r in heavy], "skey string")
        light = base.join(F.broadcast(hk), "skey", "left_anti")
        hrows = base.join(F.broadcast(hk), "skey", "left_semi")
        earlier = Window.partitionBy("skey").orderBy("file_idx").rowsBetween(
            Window.unboundedPreceding, -1)
        off = (hrows.groupBy("skey", "file_idx").count()
               .withColumn("off", F.coalesce(F.sum("count").over(earlier), F.lit(0)))
               .drop("count"))
        ranked = (hrows.join(off, ["skey", "file_idx"])
                  .withColumn("rank", (F.col("off") + F.col("frank")).cast("bigint"))
                  .drop("off"))
        per_kind[kind] = light.withColumn("rank", F.lit(None).cast("bigint")).unionByName(ranked)
    out: DataFrame | None = None
    for i, m in enumerate(models):
        df = (per_kind[m.key]
              .withColumn("chunk", F.coalesce(F.floor(F.col("rank") / c), F.lit(0)).cast("bigint"))
              .withColumn("m", F.lit(i)).withColumn("emit", F.lit(True)))
        if m.depth > 0:
            dup = (df.filter(F.col("rank").isNotNull() & (F.col("rank") % c >= c - m.depth))
                   .withColumn("chunk", F.col("chunk") + 1).withColumn("emit", F.lit(False)))
            df = df.unionByName(dup)
        df = df.drop("rank", "frank")
        out = df if out is None else out.unionByName(df)
    assert out is not None
    return out


def _score_groups(pdf: pd.DataFrame, payload: Any, digest: str, call_rows: int,
                  config: PolicyConfig) -> pd.DataFrame:
    """One (model, bucket) group: sort by key and arrival, score whole keys per call.

    The per-row part of the policy (thresholds, allow-list) is applied here too: each
    row leaves with its ``verdict`` and ``notice`` = "would be a notice" (suppression,
    which spans rows, comes later).
    """
    from zeekml.policy.incidents import inbound_flows
    from zeekml.runtime.pipeline import assemble

    m = int(pdf["m"].iat[0])
    scorer, empty = _worker_scorers(payload, digest)[m]
    pdf = pdf.sort_values(["skey", "chunk", "file_idx", "source_line"], kind="stable")
    pdf = pdf.reset_index(drop=True)
    # a key's later chunks go to later calls ("generations"), so no call holds a key twice
    gen = pdf.groupby("skey", sort=False)["chunk"].rank(method="dense").to_numpy() - 1
    out: list[pd.DataFrame] = []
    for g in np.unique(gen):
        part = pdf[gen == g].reset_index(drop=True)
        grp = (part["skey"] != part["skey"].shift()) | (part["chunk"] != part["chunk"].shift())
        starts = np.nonzero(grp.to_numpy())[0]
        call_of_group = starts // call_rows
        call = np.repeat(call_of_group, np.diff(np.append(starts, len(part))))
        for c in np.unique(call):
            rows = part[call == c].reset_index(drop=True)
            flows = schema.conform(rows, with_labels=False)
            scorer.load_state_dict(empty)  # fresh windows: the call holds whole keys
            scored = assemble(flows, [scorer.score(flows)])
            emit = rows["emit"].to_numpy(dtype=bool)
            scored = scored[emit].reset_index(drop=True)
            for col in ORDER:
                scored[col] = rows[col].to_numpy()[emit]
            scored["m"] = np.int32(m)
            scored["inbound"] = inbound_flows(flows)[emit]
            out.append(scored)
    if not out:
        return _empty(_scored_cols())
    scored = pd.concat(out, ignore_index=True)
    decided = NoticePolicy(replace(config, suppress=0.0, all_flows=True)).decide(scored)
    for col in ("cls", *ORDER, "m", "inbound"):
        decided[col] = scored[col].to_numpy()
    return _sendable(decided[list(_scored_cols())])
