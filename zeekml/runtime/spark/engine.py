"""The library entry points: score files into verdict files, or a DataFrame of flows.

Jobs of :func:`score_files` (each stage a vectorized pandas function over packs)::

    inputs --read (one task per input)--> segments  [cached; their metadata collected]
           --NetFlow pairing (when records can pair)--> segments of flows  [cached]
           --heavy keys (when the run has more than chunk_rows flows)--> chunk plan
           --cut by (model, key, chunk); score groups; per-row policy-->
           --suppression per key-host part--> output packs by segment  [cached; counted]
           --range partitions of segments--> verdict files
           --incidents per incident-host part--> incident file
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from zeekml.errors import ConfigError
from zeekml.policy.incidents import IncidentConfig
from zeekml.policy.notice import PolicyConfig
from zeekml.runtime.spark.errors import action, guard, guard_group
from zeekml.runtime.spark.heavy import heavy_keys
from zeekml.runtime.spark.inputs import frames_to_segments, list_inputs, read_segments
from zeekml.runtime.spark.models import ModelSpec, prepare_models
from zeekml.runtime.spark.options import SparkCounts, SparkOptions
from zeekml.runtime.spark.output import ROW_DTYPES, verdict_rows, write_incidents, write_verdicts
from zeekml.runtime.spark.pairing import pair_segments
from zeekml.runtime.spark.policy import (
    INC,
    OUT,
    ROUTE_DDL,
    SUP,
    SWP,
    suppress_group,
    sweep_group,
    track_group,
)
from zeekml.runtime.spark.schemas import ddl
from zeekml.runtime.spark.scoring import score_segments
from zeekml.runtime.spark.segments import FLOW_COLUMNS, SEG_DDL, clock_offsets

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_META = ["seg", "file_idx", "rows", "max_ts", "cand", "max_end", "skipped"]


def _meta(segs: DataFrame, what: str) -> pd.DataFrame:
    """The segment records' small columns (the first action over them computes them)."""
    rows = action(lambda: segs.select(*_META).collect(), what)
    return pd.DataFrame([tuple(r) for r in rows], columns=_META).astype(
        {"seg": "int64", "file_idx": "int64", "rows": "int64", "cand": "int64",
         "skipped": "int64", "max_ts": "float64", "max_end": "float64"})


def _check(models: list[ModelSpec], opts: SparkOptions) -> None:
    deepest = max(m.depth for m in models)
    if opts.chunk_rows <= deepest:
        raise ConfigError(f"chunk_rows ({opts.chunk_rows}) must exceed the deepest window "
                         f"({deepest} flows)")


def _route(segs: DataFrame, meta: pd.DataFrame, models: list[ModelSpec], config: PolicyConfig,
           opts: SparkOptions, counts: SparkCounts, cached: list[DataFrame],
           incidents: bool) -> tuple[DataFrame, int]:
    """Segments (cached, with their metadata) -> output and incident route records
    (cached), and the parts of each policy stage; fills the flow, clock and heavy-key
    counts."""
    flows = int(meta["rows"].sum())
    counts.flows_read = counts.flows_scored = flows
    segs_index, before, counts.end_clock = clock_offsets(meta[meta["rows"] > 0])
    kinds = sorted({m.key for m in models})
    heavy = heavy_keys(segs, kinds, flows, opts.chunk_rows, opts.group_rows)
    counts.heavy_keys = sum(len(h) for h in heavy.values())
    scored, parts = score_segments(segs, segs_index, before, heavy, models, config, opts,
                                   flows, incidents)
    if config.suppress > 0:
        scored = scored.persist()  # read twice: what goes on, and the rows to suppress
        cached.append(scored)
        swept = scored.filter(f"kind = {SWP}").repartition(parts, "part").groupBy(
            "part").applyInPandas(
            guard_group(functools.partial(sweep_group, config=config, parts=parts)), ROUTE_DDL)
        decided = scored.filter(f"kind = {SUP}").unionByName(swept).repartition(
            parts, "part").groupBy(
            "part").applyInPandas(
            guard_group(functools.partial(suppress_group, config=config, parts=parts,
                                          incidents=incidents)), ROUTE_DDL)
        scored = scored.filter(f"kind != {SUP} and kind != {SWP}").unionByName(decided)
    final = scored.persist()
    cached.append(final)
    return final, parts


def _incidents(final: DataFrame, config: IncidentConfig, end_clock: float, parts: int
               ) -> DataFrame:
    from zeekml.records.incidents import INCIDENT_DTYPES

    return final.filter(f"kind = {INC}").repartition(parts, "part").groupBy(
        "part").applyInPandas(
        guard_group(functools.partial(track_group, config=config, end_clock=end_clock)),
        ddl(INCIDENT_DTYPES))


def flow_rows(batches: Iterator[pd.DataFrame], names: Any) -> Iterator[pd.DataFrame]:
    """Executor side of :func:`read_flows_df`: segment records -> canonical flow rows
    with ``source_file``."""
    from zeekml.records import schema
    from zeekml.runtime.spark.packs import sendable, unpack

    files = names.value
    for b in batches:
        for data in b["data"]:
            seg = unpack(data)
            seg["source_file"] = files.get(int(seg["file_idx"].iat[0]), "")
            yield sendable(schema.conform(seg, with_labels=False))


def read_flows_df(spark: SparkSession, inputs: Sequence[str],
                  options: SparkOptions | None = None) -> DataFrame:
    """The canonical flows of ``inputs`` (files, directories, globs, Hadoop URIs) as a
    Spark DataFrame, read by zeekml's readers in the executors and NetFlow records
    paired over the whole run (unless ``options.pair`` is off). Planning it reads the
    inputs once (the segments stay cached: ``spark.catalog.clearCache()`` when done).
    """
    from zeekml.records import schema

    opts = options or SparkOptions()
    paths = list_inputs(spark, inputs)
    if not paths:
        raise ConfigError("no inputs to read")
    segs = read_segments(spark, paths, [], opts).persist()
    if opts.pair:
        meta = _meta(segs, "read inputs")
        paired = pair_segments(segs, meta, [], opts, SparkCounts())
        if paired is not None:
            segs = paired.persist()
    bc = spark.sparkContext.broadcast(dict(enumerate(paths)))
    return segs.filter("rows > 0").select("data").mapInPandas(
        guard(functools.partial(flow_rows, names=bc)),
        ddl(schema.all_dtypes(with_labels=False)))


def score_dataframe(df: DataFrame, models: Sequence[str] | None = None,
                    config: PolicyConfig | None = None,
                    options: SparkOptions | None = None) -> DataFrame:
    """Score a Spark DataFrame of canonical flows; return a DataFrame of verdicts.

    ``df`` has the canonical columns (:mod:`zeekml.records.schema`; absent ones are
    treated as missing) including ``source_file`` and ``source_line``. Stream order is
    ``(file_idx, source_line)`` when ``df`` has an integer ``file_idx`` column (the
    input's position in the stream), else ``(source_file, source_line)`` with files in
    sorted name order (the local engine's order for one directory). NetFlow records are
    not paired here (pair them first, or use :func:`score_files`). ``models`` are paths
    or bundled names (default: every bundled model). The result has the verdict columns
    plus ``file_idx``, ``source_line``, ``source_file`` and ``m`` (the model's index).
    It is lazy, but planning it runs small jobs (segment metadata, heavy keys) and
    caches the segments and the scored rows (``spark.catalog.clearCache()`` when done).
    """
    from pyspark.sql import functions as F

    opts = options or SparkOptions()
    config = config if config is not None else PolicyConfig()
    mods = prepare_models(models)
    _check(mods, opts)
    kinds = sorted({m.key for m in mods})
    spark = df.sparkSession
    have = set(df.columns)
    if "source_line" not in have:
        raise ConfigError("the flow DataFrame needs a source_line column (arrival order)")
    fcol = (F.coalesce(F.col("source_file").cast("string"), F.lit(""))
            if "source_file" in have else F.lit(""))
    if "file_idx" not in have:
        names = sorted(str(r[0]) for r in action(
            lambda: df.select(fcol.alias("f")).distinct().collect(), "input files"))
        files = dict(enumerate(names))
        idx = spark.createDataFrame(list(files.items()), "file_idx int, f string")
        df = df.withColumn("f", fcol).join(F.broadcast(idx), "f").drop("f")
    else:
        files = {int(r[0]): str(r[1]) for r in action(
            lambda: df.select("file_idx", fcol.alias("f")).distinct().collect(), "input files")}
    cols = [c for c in (*FLOW_COLUMNS, "file_idx") if c in df.columns]
    ordered = (df.select(*cols).withColumn("file_idx", F.col("file_idx").cast("int"))
               .repartition("file_idx").sortWithinPartitions("file_idx", "source_line"))
    segs = ordered.mapInPandas(guard(functools.partial(
        frames_to_segments, kinds=kinds, batch_rows=opts.batch_rows)), SEG_DDL).persist()
    cached = [segs]
    meta = _meta(segs, "segments")
    final, _ = _route(segs, meta, mods, config, opts, SparkCounts(), cached, False)
    bc = spark.sparkContext.broadcast(files)
    out = final.filter(f"kind = {OUT}").select("part", "data").repartitionByRange(
        max(spark.sparkContext.defaultParallelism, 1), "part").sortWithinPartitions("part")
    return out.mapInPandas(guard(functools.partial(verdict_rows, names=bc)), ddl(ROW_DTYPES))


def score_files(spark: SparkSession, inputs: Sequence[str], out_dir: str, *,
                models: Sequence[str] | None = None, config: PolicyConfig | None = None,
                options: SparkOptions | None = None, out_format: str = "zeek",
                incidents_dir: str | None = None,
                incident_config: IncidentConfig | None = None) -> SparkCounts:
    """Read, score and write: the Spark counterpart of ``zeekml score``.

    ``inputs``: files, directories, globs (local, on a path every executor sees) or
    Hadoop URIs; ordered as the local engine orders them. ``out_dir`` receives one
    verdict file per partition (``part-*.log`` Zeek ASCII, ``part-*.json`` Zeek JSON,
    or Parquet), replacing what was there. With ``incidents_dir``, the incident records
    (``zeekml_incident``, :mod:`zeekml.policy.incidents`) go there as one file in time
    order, the same records the local engine writes.
    """
    t0 = time.perf_counter()
    opts = options or SparkOptions()
    config = config if config is not None else PolicyConfig()
    mods = prepare_models(models)
    _check(mods, opts)
    paths = list_inputs(spark, inputs)
    counts = SparkCounts(files=len(paths), models=[m.name for m in mods])
    if not paths:
        raise ConfigError("no inputs to score")
    kinds = sorted({m.key for m in mods})
    segs = read_segments(spark, paths, kinds, opts).persist()
    cached = [segs]
    try:
        meta = _meta(segs, "read inputs")
        counts.skipped = int(meta["skipped"].sum())
        if opts.pair:  # NetFlow pairing across the whole run (as the local engine's stream)
            paired = pair_segments(segs, meta, kinds, opts, counts)
            if paired is not None:
                segs = paired.persist()
                cached.append(segs)
                meta = _meta(segs, "pair records")
        want = incidents_dir is not None
        final, parts = _route(segs, meta, mods, config, opts, counts, cached, want)
        if counts.records:
            counts.pairs = counts.records - counts.flows_read
        stats = action(lambda: final.filter(f"kind = {OUT}").select("rows", "notes").collect(),
                       "score and decide")
        counts.rows_written = sum(int(r[0]) for r in stats)
        for r in stats:
            counts.notices.update({k: int(v) for k, v in json.loads(r[1] or "{}").items()})
        counts.outputs = write_verdicts(final.filter(f"kind = {OUT}"), out_dir, out_format,
                                        counts.rows_written, opts, dict(enumerate(paths)))
        if want:
            inc = _incidents(final, incident_config or IncidentConfig(), counts.end_clock,
                             parts)
            inc = inc.persist()
            cached.append(inc)
            for r in action(lambda: inc.groupBy("state").count().collect(), "incidents"):
                counts.incidents[str(r[0])] += int(r[1])
            assert incidents_dir is not None  # incidents are computed only when asked for
            counts.incident_outputs = write_incidents(inc, incidents_dir, out_format)
    finally:
        for df in cached:
            df.unpersist()
    counts.seconds = time.perf_counter() - t0
    counts.notices = Counter({k: v for k, v in counts.notices.items() if v})
    return counts
