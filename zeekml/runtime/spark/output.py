"""Output: verdict files per partition in stream order, incident files, verdict rows.

Output packs are keyed by their segment. :func:`write_verdicts` range-partitions them
by segment, so each partition is a run of consecutive segments and the part files,
taken in name order, hold the verdicts in the local engine's order; inside a partition
each segment's packs (one from every scoring or suppression group that had its rows)
are merged and sorted by (stream order, model) before they are formatted: a Zeek log
(header, rows, ``#close``) or Zeek JSON per partition, written by Spark's text writer
(any Hadoop file system), or Parquet rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from zeekml.errors import ConfigError
from zeekml.records.incidents import INCIDENT_LOG_PATH, incident_fields, incident_types
from zeekml.records.verdicts import VERDICT_DTYPES, zeek_fields, zeek_types
from zeekml.runtime.spark.errors import action, guard
from zeekml.runtime.spark.inputs import executor_path, hadoop_fs, local_path
from zeekml.runtime.spark.options import SparkOptions
from zeekml.runtime.spark.packs import sendable, unpack_all

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FORMATS = ("zeek", "json", "parquet")
#: verdict rows as :func:`~zeekml.runtime.spark.engine.score_dataframe` returns them
ROW_DTYPES = {**VERDICT_DTYPES, "file_idx": "int32", "source_line": "int64", "m": "int32",
              "source_file": "str"}


def _segments(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Output records sorted by segment -> each segment's rows in stream order."""
    held: list[Any] = []
    current = None
    for b in batches:
        parts = b["part"].to_numpy(dtype=np.int64)
        for part, data in zip(parts, b["data"], strict=True):
            if current is not None and part != current:
                yield _merged(held)
                held = []
            current = part
            held.append(data)
    if held:
        yield _merged(held)


def _merged(packs: list[Any]) -> pd.DataFrame:
    rows = unpack_all(packs, arrow_lists=True)
    assert rows is not None
    return rows.sort_values(["ord", "m"], kind="stable").reset_index(drop=True)


def _lists(b: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
    """List cells (numpy arrays from Spark rows) as lists, missing as None; list
    columns still in Arrow (from packs) stay as they are."""
    return b.assign(**{c: [None if v is None else list(v) for v in b[c]] for c in cols
                       if not isinstance(b[c].dtype, pd.ArrowDtype)})


def _format(frames: Iterator[pd.DataFrame], fmt: str, kind: str) -> Iterator[pd.DataFrame]:
    """Frames of one partition as one Zeek (or Zeek JSON) log: text values for Spark."""
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
    for b in frames:
        if not len(b):
            continue
        b = _lists(b, lists)
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


def format_verdicts(batches: Iterator[pd.DataFrame], fmt: str) -> Iterator[pd.DataFrame]:
    """Executor side of writing: a partition's output records -> its log text."""
    return _format(_segments(batches), fmt, "verdicts")


def format_incidents(batches: Iterator[pd.DataFrame], fmt: str) -> Iterator[pd.DataFrame]:
    """Executor side of writing incidents: rows in time order -> log text."""
    return _format(batches, fmt, "incidents")


def verdict_rows(batches: Iterator[pd.DataFrame], names: Any) -> Iterator[pd.DataFrame]:
    """Output records -> verdict rows (:data:`ROW_DTYPES`, ``names``: a broadcast of
    {file_idx: input name})."""
    files = names.value
    for rows in _segments(batches):
        rows = rows.drop(columns=["ord"])
        rows["source_file"] = pd.Series(
            [files.get(int(i), "") for i in rows["file_idx"].to_numpy()], dtype="str")
        yield sendable(rows[list(ROW_DTYPES)])


def _partitions(records: DataFrame, rows: int, opts: SparkOptions) -> DataFrame:
    """Output records range-partitioned by segment (at least one file per core once the
    output has 10,000 rows per core), sorted by segment inside each partition."""
    cores = records.sparkSession.sparkContext.defaultParallelism
    if opts.rows_per_file:
        parts = max(math.ceil(rows / opts.rows_per_file), min(cores, math.ceil(rows / 10_000)), 1)
    else:
        parts = max(cores, 1)
    return records.repartitionByRange(parts, "part").sortWithinPartitions("part")


def _out_path(out_dir: str) -> str:
    """A local output directory made absolute against the driver's working directory:
    Hadoop would resolve a relative one against the JVM's (where the session started)."""
    return executor_path(out_dir) if local_path(str(out_dir)) == str(out_dir) else str(out_dir)


def write_verdicts(records: DataFrame, out_dir: str, out_format: str, rows: int,
                   opts: SparkOptions, names: dict[int, str]) -> list[str]:
    """Write the output records as verdict files per partition, each in stream order;
    return their paths. ``names``: each input's name by ``file_idx`` (Parquet's
    ``source_file``)."""
    if out_format not in FORMATS:
        raise ConfigError(f"output format must be zeek, json or parquet, got {out_format!r}")
    out_dir = _out_path(out_dir)
    spark = records.sparkSession
    df = _partitions(records.select("part", "data"), rows, opts)
    if out_format == "parquet":
        from zeekml.runtime.spark.schemas import ddl

        bc = spark.sparkContext.broadcast(names)
        table = df.mapInPandas(guard(functools.partial(verdict_rows, names=bc)),
                               ddl(ROW_DTYPES))
        action(lambda: table.select(*VERDICT_DTYPES, "source_file", "source_line")
               .write.mode("overwrite").parquet(out_dir), "write parquet")
        return list_outputs(spark, out_dir, ".parquet", None)
    text = df.mapInPandas(guard(functools.partial(format_verdicts, fmt=out_format)),
                          "value string")
    action(lambda: text.write.mode("overwrite").text(out_dir), "write " + out_format)
    return list_outputs(spark, out_dir, ".txt", ".log" if out_format == "zeek" else ".json")


def list_outputs(spark: SparkSession, out_dir: str, suffix: str, rename: str | None
                 ) -> list[str]:
    """Part files Spark wrote (renamed to ``.log``/``.json``), through Hadoop's FileSystem."""
    jvm, path, fs = hadoop_fs(spark, out_dir)
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

    if out_format not in FORMATS:
        raise ConfigError(f"output format must be zeek, json or parquet, got {out_format!r}")
    out_dir = _out_path(out_dir)
    df = (incidents.withColumn("_closed", (F.col("state") == "closed").cast("int"))
          .coalesce(1).sortWithinPartitions("ts", "_closed", "incident").drop("_closed"))
    if out_format == "parquet":
        action(lambda: df.write.mode("overwrite").parquet(out_dir), "write incidents")
        return list_outputs(incidents.sparkSession, out_dir, ".parquet", None)
    text = df.mapInPandas(guard(functools.partial(format_incidents, fmt=out_format)),
                          "value string")
    action(lambda: text.write.mode("overwrite").text(out_dir), "write incidents")
    return list_outputs(incidents.sparkSession, out_dir, ".txt",
                        ".log" if out_format == "zeek" else ".json")
