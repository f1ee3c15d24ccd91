"""The library entry points: score a DataFrame of flows, or files into verdict files."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zeekml.errors import UsageError
from zeekml.policy.incidents import IncidentConfig
from zeekml.policy.notice import PolicyConfig
from zeekml.runtime.spark.annotate import _annotate_frames
from zeekml.runtime.spark.errors import _action, _guard
from zeekml.runtime.spark.inputs import list_inputs, read_flows_df
from zeekml.runtime.spark.models import _broadcast_models, _Model, prepare_models
from zeekml.runtime.spark.options import SparkCounts, SparkOptions
from zeekml.runtime.spark.output import write_incidents, write_verdicts
from zeekml.runtime.spark.pairing import pair_flows
from zeekml.runtime.spark.policy import _decide, _incidents
from zeekml.runtime.spark.schemas import _annotated_cols, _ddl, _flow_cols, _scored_cols
from zeekml.runtime.spark.scoring import _chunked, _score_groups, _stream_clock

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def _score_annotated(flows: DataFrame, models: list[_Model], config: PolicyConfig,
                     opts: SparkOptions, counts: SparkCounts, files: dict[int, str],
                     cached: list[DataFrame], incidents: IncidentConfig | None = None
                     ) -> tuple[DataFrame, DataFrame | None]:
    """Annotated flows (cached by the caller) -> verdicts with ``source_file`` and order,
    and with ``incidents`` the incident records (else None).

    ``files`` maps ``file_idx`` to the input's name. DataFrames persisted on the way
    are appended to ``cached`` (to unpersist).
    """
    from pyspark.sql import functions as F

    spark = flows.sparkSession
    flows = _stream_clock(flows, counts)
    counts.flows_scored = counts.flows_read
    rows = _chunked(flows, models, opts, counts)
    n = counts.flows_read
    buckets = opts.buckets or max(2 * spark.sparkContext.defaultParallelism,
                                  math.ceil(n / opts.group_rows))
    payload, digest = _broadcast_models(spark, models, opts)
    rows = rows.withColumn("bucket", F.pmod(F.xxhash64("skey", "chunk"), F.lit(buckets)))
    fn = _guard(functools.partial(_score_groups, payload=payload, digest=digest,
                                  call_rows=min(opts.batch_rows, opts.max_hosts),
                                  config=config))
    scored = rows.groupBy("m", "bucket").applyInPandas(
        lambda pdf: fn(pdf.drop(columns=["bucket"])), _ddl(_scored_cols()))
    verdicts, flagged = _decide(scored, config, buckets, cached, incidents is not None)
    names = spark.createDataFrame(sorted(files.items()), "file_idx int, source_file string")
    inc = None
    if incidents is not None and flagged is not None:
        inc = _incidents(flagged, incidents, counts.end_clock, buckets)
    return verdicts.join(F.broadcast(names), "file_idx", "left"), inc


def _check_config(config: PolicyConfig | None) -> PolicyConfig:
    return config if config is not None else PolicyConfig()


def score_dataframe(df: DataFrame, models: Sequence[str] | None = None,
                    config: PolicyConfig | None = None,
                    options: SparkOptions | None = None) -> DataFrame:
    """Score a Spark DataFrame of canonical flows; return a DataFrame of verdicts.

    ``df`` has the canonical columns (:mod:`zeekml.records.schema`; absent ones are
    treated as missing) including ``source_file`` and ``source_line``. Arrival order
    is ``(file_idx, source_line)`` when ``df`` has an integer ``file_idx`` column (the
    input's position in the stream), else ``(source_file, source_line)`` with files
    in sorted name order (the local engine's order for one directory). ``models`` are
    paths or bundled names (default: every bundled model). The result has the verdict
    columns plus ``file_idx``, ``source_line``, ``source_file`` and ``m`` (the model's
    index). It is lazy, but planning it runs small jobs (per-file clocks, heavy keys);
    it caches the annotated input and the thresholded rows (``unpersist`` them, or
    ``spark.catalog.clearCache()``, when done).
    """
    from pyspark.sql import functions as F

    opts = options or SparkOptions()
    mods = prepare_models(models)
    kinds = sorted({m.key for m in mods})
    spark = df.sparkSession
    have = set(df.columns)
    if "source_line" not in have:
        raise UsageError("the flow DataFrame needs a source_line column (arrival order)")
    fcol = (F.coalesce(F.col("source_file").cast("string"), F.lit(""))
            if "source_file" in have else F.lit(""))
    if "file_idx" not in have:
        names = sorted(str(r[0]) for r in _action(
            lambda: df.select(fcol.alias("f")).distinct().collect(), "input files"))
        files = dict(enumerate(names))
        idx = spark.createDataFrame(list(files.items()), "file_idx int, f string")
        df = df.withColumn("f", fcol).join(F.broadcast(idx), "f").drop("f")
    else:
        files = {int(r[0]): str(r[1]) for r in _action(
            lambda: df.select("file_idx", fcol.alias("f")).distinct().collect(), "input files")}
    cols = [c for c in (*_flow_cols(), "source_file") if c in df.columns]
    ordered = df.select(*cols).repartition("file_idx").sortWithinPartitions(
        "file_idx", "source_line")
    fn = _guard(functools.partial(_annotate_frames, kinds=kinds))
    flows = ordered.mapInPandas(fn, _ddl(_annotated_cols(kinds))).persist()
    return _score_annotated(flows, mods, _check_config(config), opts, SparkCounts(), files,
                            [])[0]

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
    config = _check_config(config)
    mods = prepare_models(models)
    paths = list_inputs(spark, inputs)
    counts = SparkCounts(files=len(paths), models=[m.name for m in mods])
    if not paths:
        raise UsageError("no inputs to score")
    kinds = sorted({m.key for m in mods})
    flows, skipped = read_flows_df(spark, paths, kinds, opts)
    cached = [flows.persist()]
    try:
        if opts.pair:  # NetFlow pairing across the whole run (as the local engine's stream)
            paired = pair_flows(cached[0], kinds, opts, counts)
            if paired is not None:
                cached.append(paired.persist())
        verdicts, inc = _score_annotated(
            cached[-1], mods, config, opts, counts, dict(enumerate(paths)), cached,
            (incident_config or IncidentConfig()) if incidents_dir else None)
        verdicts = verdicts.persist()
        cached.append(verdicts)
        counts.skipped = int(skipped.value)
        if counts.records:
            counts.pairs = counts.records - counts.flows_read
        stats = _action(lambda: verdicts.groupBy("verdict", "notice").count().collect(),
                        "score and decide")
        counts.rows_written = sum(int(r[2]) for r in stats)
        for r in stats:
            if r[1]:
                counts.notices[str(r[0])] += int(r[2])
        counts.outputs = write_verdicts(verdicts, out_dir, out_format, counts.rows_written,
                                        opts)
        if inc is not None and incidents_dir is not None:
            inc = inc.persist()
            cached.append(inc)
            for r in _action(lambda: inc.groupBy("state").count().collect(), "incidents"):
                counts.incidents[str(r[0])] += int(r[1])
            counts.incident_outputs = write_incidents(inc, incidents_dir, out_format)
    finally:
        for df in cached:
            df.unpersist()
    counts.seconds = time.perf_counter() - t0
    return counts
