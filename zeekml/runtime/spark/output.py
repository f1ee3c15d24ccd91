"""Verdict and incident files, per partition, in stream order."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd

from zeekml.errors import UsageError
from zeekml.records.incidents import (
    INCIDENT_LOG_PATH,
    incident_fields,
    incident_types,
)
from zeekml.records.verdicts import VERDICT_DTYPES, zeek_fields, zeek_types
from zeekml.runtime.spark.errors import _action, _guard
from zeekml.runtime.spark.inputs import _hadoop_fs
from zeekml.runtime.spark.options import SparkOptions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def _format_part(batches: Iterator[pd.DataFrame], fmt: str, kind: str = "verdicts"
                 ) -> Iterator[pd.DataFrame]:
    """A partition's verdict (or incident) rows as one Zeek (or Zeek JSON) log: text rows
    for Spark."""
    from zeekml.sinks import zeek_ascii
    from zeekml.sinks.json_log import format_json_rows

    lists: tuple[str, ...]
    if kind == "incidents":
        fields, types, path = incident_fields(), incident_types(), INCIDENT_LOG_PATH
        lists = ("models", "agreed", "uids", "context")
    else:
        fields, types, path = zeek_fields(), zeek_types(), "zeekml"
        lists = ("context",)
    started = False
    for b in batches:
        if not len(b):
            continue
        b = b.assign(**{c: [None if v is None else list(v) for v in b[c]] for c in lists})
        if fmt == "json":
            text = format_json_rows(b, fields, types)
        else:
            if not started:
                head = zeek_ascii.format_header(path, fields, types)
                yield pd.DataFrame({"value": [head.decode("utf-8").rstrip("\n")]})
            text = zeek_ascii.format_rows(b, fields, types)
        started = True
        yield pd.DataFrame({"value": [text.decode("utf-8").rstrip("\n")]})
    if started and fmt != "json":
        yield pd.DataFrame({"value": [zeek_ascii.format_close().decode().rstrip("\n")]})


def write_verdicts(verdicts: DataFrame, out_dir: str, out_format: str, rows: int,
                   opts: SparkOptions) -> list[str]:
    """Write verdict files per partition, each in stream order; return their paths.

    Partitions are ranges of the stream (by ``file_idx``, ``source_line``), so the
    files, taken in name order, hold the verdicts in the local engine's order.
    """

    if out_format not in ("zeek", "json", "parquet"):
        raise UsageError(f"output format must be zeek, json or parquet, got {out_format!r}")
    cores = verdicts.sparkSession.sparkContext.defaultParallelism
    parts = (max(math.ceil(rows / opts.rows_per_file), min(cores, math.ceil(rows / 10_000)), 1)
             if opts.rows_per_file else None)  # at least one file per core for big outputs
    df = verdicts
    if parts is not None:
        df = df.repartitionByRange(parts, "file_idx", "source_line")
    df = df.sortWithinPartitions("file_idx", "source_line", "m")
    if out_format == "parquet":
        _action(lambda: df.select(*VERDICT_DTYPES, "source_file", "source_line")
                .write.mode("overwrite").parquet(out_dir), "write parquet")
        return _list_outputs(verdicts.sparkSession, out_dir, ".parquet", None)
    text = df.select(*VERDICT_DTYPES).mapInPandas(
        _guard(functools.partial(_format_part, fmt=out_format)), "value string")
    _action(lambda: text.write.mode("overwrite").text(out_dir), "write " + out_format)
    return _list_outputs(verdicts.sparkSession, out_dir, ".txt",
                         ".log" if out_format == "zeek" else ".json")


def _list_outputs(spark: SparkSession, out_dir: str, suffix: str, rename: str | None
                  ) -> list[str]:
    """Part files Spark wrote (renamed to ``.log``/``.json``), through Hadoop's FileSystem."""
    jvm, path, fs = _hadoop_fs(spark, out_dir)
    out = []
    for st in fs.listStatus(path):
        p = st.getPath()
        name = p.getName()
        if not (name.startswith("part-") and name.endswith(suffix)):
            continue
        if rename:
            dst = jvm.org.apache.hadoop.fs.Path(p.getParent(), name[: -len(suffix)] + rename)
            fs.rename(p, dst)
            p = dst
        out.append(str(p.toString()))
    return sorted(out)


def write_incidents(incidents: DataFrame, out_dir: str, out_format: str) -> list[str]:
    """Incident records as one file in time order (they are few: one per episode)."""
    from pyspark.sql import functions as F

    if out_format not in ("zeek", "json", "parquet"):
        raise UsageError(f"output format must be zeek, json or parquet, got {out_format!r}")
    df = (incidents.withColumn("_closed", (F.col("state") == "closed").cast("int"))
          .coalesce(1).sortWithinPartitions("ts", "_closed", "incident").drop("_closed"))
    if out_format == "parquet":
        _action(lambda: df.write.mode("overwrite").parquet(out_dir), "write incidents")
        return _list_outputs(incidents.sparkSession, out_dir, ".parquet", None)
    text = df.mapInPandas(_guard(functools.partial(_format_part, fmt=out_format,
                                                   kind="incidents")), "value string")
    _action(lambda: text.write.mode("overwrite").text(out_dir), "write incidents")
    return _list_outputs(incidents.sparkSession, out_dir, ".txt",
                         ".log" if out_format == "zeek" else ".json")
