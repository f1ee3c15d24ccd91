"""Input listing (paths, globs, Hadoop URIs) and reading with zeekml's own readers in the executors."""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd

from zeekml.errors import UsageError
from zeekml.runtime.spark.annotate import _Annotator
from zeekml.runtime.spark.errors import _guard
from zeekml.runtime.spark.options import SparkOptions
from zeekml.runtime.spark.schemas import _annotated_cols, _ddl, _sendable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # hdfs://h/x, s3a://b/x, file:/x

class _RenamedSkips:
    """A SkipLog view that reports a temporary copy under its original URI."""

    def __init__(self, inner: Any, tmp: str, uri: str) -> None:
        self.inner, self.tmp, self.uri = inner, tmp, uri

    def add(self, path: str, line: int | None, reason: str, *, malformed: bool = True) -> None:
        self.inner.add(self.uri if path == self.tmp else path, line, reason, malformed=malformed)

    def add_many(self, path: str, lines: Any, reason: str, *, malformed: bool = True) -> None:
        self.inner.add_many(self.uri if path == self.tmp else path, lines, reason,
                            malformed=malformed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Marks:
    """A file's row count and log clock so far (NetFlow pairing columns per batch)."""

    def __init__(self) -> None:
        self.rows, self.clock = 0, -math.inf


def _marked(done: pd.DataFrame, frame: pd.DataFrame, mk: _Marks | None) -> pd.DataFrame:
    if mk is None:
        return done
    from zeekml.sources.biflow import stream_marks

    cols, mk.rows, mk.clock = stream_marks(frame, mk.rows, mk.clock)
    for c in cols.columns:
        done[c] = cols[c].to_numpy() if c not in ("_key", "_req") else cols[c].array
    return done


def _read_files(batches: Iterator[pd.DataFrame], kinds: list[str], strict: bool,
                batch_rows: int, skipped: Any, tz: str | None = None,
                marks: bool = False) -> Iterator[pd.DataFrame]:
    """Executor side of reading: each (file_idx, path[, content]) row -> annotated flows
    (with ``marks``: plus each row's pairing columns, :func:`~zeekml.sources.biflow.stream_marks`)."""
    from zeekml.sources import SkipLog, read_flows
    from zeekml.sources.options import ReadOptions

    read = ReadOptions(batch_rows=batch_rows, tz=tz)
    ann = _Annotator(kinds)
    for batch in batches:
        has_content = "content" in batch.columns
        for i in range(len(batch)):
            idx = int(batch["file_idx"].iat[i])
            path = str(batch["path"].iat[i])
            skips = SkipLog(strict=strict)
            ann.start()
            mk = _Marks() if marks else None
            if has_content:  # a local copy under the same base name (nfdump uids use it)
                with tempfile.TemporaryDirectory(prefix="zeekml-in-") as tmp:
                    copy = os.path.join(tmp, unquote(path.rstrip("/").rsplit("/", 1)[-1]))
                    with open(copy, "wb") as fh:
                        fh.write(batch["content"].iat[i])
                    view = _RenamedSkips(skips, copy, path)
                    for frame in read_flows(copy, skips=view, batch_rows=batch_rows,
                                            options=read):
                        yield _sendable(_marked(ann.annotate(frame, idx), frame, mk))
            else:
                for frame in read_flows(path, skips=skips, batch_rows=batch_rows, options=read):
                    yield _sendable(_marked(ann.annotate(frame, idx), frame, mk))
            if skips.total:
                skipped.add(skips.total)


def list_inputs(spark: SparkSession, specs: Sequence[str]) -> list[str]:
    """Input specs -> ordered file list, as the local engine orders them.

    Plain paths go through :func:`~zeekml.sources.expand_inputs`. URIs (``hdfs://``,
    ``s3a://``, ``file:`` ...) are listed through Hadoop's FileSystem, globs allowed: a
    URI naming a file is kept, a directory is searched recursively for the same conn
    log / nfcapd names as a local directory. Each spec's matches are sorted, spec order
    is kept, a file named twice is read once.
    """
    from zeekml.sources import expand_inputs
    from zeekml.sources.open import _DIR_FILE

    out: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        spec = str(spec)
        if spec == "-":
            raise UsageError("the Spark engine cannot read stdin ('-'); name files or URIs")
        if not _URI.match(spec):
            found = expand_inputs([spec])
        elif spec.startswith("file:") and ":" in unquote(spec.rstrip("/").rsplit("/", 1)[-1]):
            found = expand_inputs([unquote(urlparse(spec).path)])  # see _local_path
        else:
            found = _list_uri(spark, spec, _DIR_FILE)
            bad = [p for p in found if _local_path(p) is None and ":" in p.rsplit("/", 1)[-1]]
            if bad:
                raise UsageError(f"{bad[0]}: Hadoop cannot read a file whose name has ':' "
                                 "(zeekctl archive names); copy it under another name")
        for p in found:
            key = os.path.realpath(p) if not _URI.match(p) else p
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _local_path(p: str) -> str | None:
    """The local path to read ``p`` from directly, or None for a Hadoop URI.

    A ``file:`` URI whose name has a ``:`` (zeekctl archives: ``conn.00:00:00-01:00:00.log.gz``)
    is read as a local path: Hadoop paths cannot hold a colon in a name.
    """
    if not _URI.match(p):
        return p
    if p.startswith("file:") and ":" in p.rsplit("/", 1)[-1]:
        return unquote(urlparse(p).path)
    return None


def _hadoop_fs(spark: SparkSession, uri: str) -> tuple[Any, Any, Any]:
    """(jvm, Hadoop Path, its FileSystem) for a URI: Spark's own file-system access."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - the Hadoop FileSystem API lives there
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return jvm, path, path.getFileSystem(conf)


def _list_uri(spark: SparkSession, spec: str, names: re.Pattern[str]) -> list[str]:
    """Files of one URI spec (file, directory or glob), as :func:`list_inputs` orders them."""
    _, path, fs = _hadoop_fs(spark, spec)
    statuses = sorted(fs.globStatus(path) or [], key=lambda st: str(st.getPath().toString()))
    if not statuses:
        raise FileNotFoundError(2, "no such file or directory", spec)
    out: list[str] = []
    for st in statuses:
        if not st.isDirectory():
            out.append(str(st.getPath().toString()))
            continue
        files, it = [], fs.listFiles(st.getPath(), True)
        while it.hasNext():
            f = it.next().getPath()
            if names.match(f.getName()):
                files.append(str(f.toString()))
        out.extend(sorted(files))
    return out


def read_flows_df(spark: SparkSession, paths: Sequence[str], kinds: Sequence[str],
                  opts: SparkOptions) -> tuple[DataFrame, Any]:
    """Annotated canonical flows of ``paths``, parsed by zeekml's readers in the executors.

    Local paths: one task per file reads it with :func:`zeekml.sources.read_flows`
    (streamed, bounded memory; executors must see the same path, e.g. a shared
    mount). URIs: Spark's ``binaryFile`` source fetches the bytes (any Hadoop file
    system), the task parses them with the same reader.
    """
    sc = spark.sparkContext
    skipped = sc.accumulator(0)
    kinds = list(kinds)
    marks = opts.pair
    fn = functools.partial(_read_files, kinds=kinds, strict=opts.strict,
                           batch_rows=opts.batch_rows, skipped=skipped, tz=opts.tz,
                           marks=marks)
    out_schema = _ddl(_annotated_cols(kinds, marks))
    local = [(i, _local_path(p)) for i, p in enumerate(paths) if _local_path(p)]
    remote = [(i, p) for i, p in enumerate(paths) if not _local_path(p)]
    frames = []
    if local:
        rdd = sc.parallelize(local, numSlices=len(local))
        files = spark.createDataFrame(rdd, "file_idx int, path string")
        frames.append(files.mapInPandas(_guard(fn), out_schema))
    if remote:
        idx = spark.createDataFrame(remote, "file_idx int, path string")
        raw = (spark.read.format("binaryFile").load([p for _, p in remote])
               .select("path", "content").join(idx, "path"))
        frames.append(raw.mapInPandas(_guard(fn), out_schema))
    df = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    return df, skipped
