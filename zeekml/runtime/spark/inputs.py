"""Inputs: listing (paths, globs, Hadoop URIs) and reading them into segments.

Reading runs in the executors with zeekml's own readers
(:func:`zeekml.sources.read_flows`), one task per input: local paths are opened
directly (executors must see the same path, e.g. a shared mount), URIs are fetched by
Spark's ``binaryFile`` source (any Hadoop file system) and parsed by the same reader.
Each read batch becomes one segment (:mod:`~zeekml.runtime.spark.segments`): its
canonical rows in a pack, finished with the log clock and state keys, plus (when
NetFlow pairing is on) each row's pairing marks
(:func:`~zeekml.sources.biflow.stream_marks`).
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from zeekml.errors import ConfigError
from zeekml.runtime.spark.errors import guard
from zeekml.runtime.spark.options import SparkOptions
from zeekml.runtime.spark.segments import (
    SEG_DDL,
    canonical,
    finish,
    flow_ord,
    record,
    records_frame,
    seg_id,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # hdfs://h/x, s3a://b/x, file:/x


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
            raise ConfigError("the Spark engine cannot read stdin ('-'); name files or URIs")
        if not URI.match(spec):
            found = expand_inputs([spec])
        elif spec.startswith("file:") and ":" in unquote(spec.rstrip("/").rsplit("/", 1)[-1]):
            found = expand_inputs([unquote(urlparse(spec).path)])  # see local_path
        else:
            found = list_uri(spark, spec, _DIR_FILE)
            bad = [p for p in found if local_path(p) is None and ":" in p.rsplit("/", 1)[-1]]
            if bad:
                raise ConfigError(f"{bad[0]}: Hadoop cannot read a file whose name has ':' "
                                 "(zeekctl archive names); copy it under another name")
        for p in found:
            key = os.path.realpath(p) if not URI.match(p) else p
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def local_path(p: str) -> str | None:
    """The local path to read ``p`` from directly, or None for a Hadoop URI.

    A ``file:`` URI whose name has a ``:`` (zeekctl archives: ``conn.00:00:00-01:00:00.log.gz``)
    is read as a local path: Hadoop paths cannot hold a colon in a name.
    """
    if not URI.match(p):
        return p
    if p.startswith("file:") and ":" in p.rsplit("/", 1)[-1]:
        return unquote(urlparse(p).path)
    return None


def executor_path(path: str) -> str:
    """``path`` as the executors must open it: absolute, resolved against the driver's
    working directory now.

    A relative path means the driver's working directory, but the executors' Python
    workers run in the directory the session was started from (or, on a cluster,
    somewhere else entirely), which is not the driver's once it has changed directory.
    The name the user gave stays what the verdicts and messages show.
    """
    return os.path.abspath(os.fspath(path))


def hadoop_fs(spark: SparkSession, uri: str) -> tuple[Any, Any, Any]:
    """(jvm, Hadoop Path, its FileSystem) for a URI: Spark's own file-system access."""
    jvm: Any = spark.sparkContext._jvm  # the Hadoop FileSystem API lives there
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return jvm, path, path.getFileSystem(conf)


def list_uri(spark: SparkSession, spec: str, names: re.Pattern[str]) -> list[str]:
    """Files of one URI spec (file, directory or glob), as :func:`list_inputs` orders them."""
    _, path, fs = hadoop_fs(spark, spec)
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


class _Segmenter:
    """One input's read batches -> segment records (ids, ``ord``, clock, keys, marks)."""

    def __init__(self, file_idx: int, kinds: Sequence[str], marks: bool) -> None:
        self.file_idx, self.kinds, self.marks = file_idx, list(kinds), marks
        self.n = 0  # segments so far
        self.rows = 0  # rows so far
        self.mark_clock = -math.inf  # the input's latest flow end so far (pairing)
        self.skipped = 0  # skips already reported

    def segment(self, frame: pd.DataFrame, skipped_total: int) -> dict:
        flows = canonical(frame)
        n = len(flows)
        seg = seg_id(self.file_idx, self.n)
        flows["file_idx"] = np.int32(self.file_idx)
        flows["seg"] = np.int64(seg)
        flows["ord"] = flow_ord(self.file_idx, self.rows + np.arange(n, dtype=np.int64))
        cand, max_end = 0, -math.inf
        if self.marks:
            from zeekml.sources.biflow import stream_marks

            cols, _, self.mark_clock = stream_marks(flows, self.rows, self.mark_clock)
            for c in cols.columns:
                flows[c] = cols[c].array
            cand = int(cols["_key"].notna().sum())
            end = cols["_end"].to_numpy(dtype=np.float64)
            end = end[np.isfinite(end)]
            max_end = float(end.max()) if len(end) else -math.inf
        flows, max_ts = finish(flows, self.kinds)
        self.n += 1
        self.rows += n
        rec = record(flows, seg, self.file_idx, max_ts, cand, max_end,
                     skipped_total - self.skipped)
        self.skipped = skipped_total
        return rec

    def tail(self, skipped_total: int) -> dict | None:
        """A record for lines skipped after the last batch (or in an input without rows)."""
        if skipped_total == self.skipped:
            return None
        rec = record(None, seg_id(self.file_idx, self.n), self.file_idx, -math.inf,
                     skipped=skipped_total - self.skipped)
        self.skipped = skipped_total
        return rec


def read_files(batches: Iterator[pd.DataFrame], kinds: list[str], strict: bool,
               batch_rows: int, tz: str | None, marks: bool) -> Iterator[pd.DataFrame]:
    """Executor side of reading: each (file_idx, path[, content]) row -> its segments."""
    from zeekml.sources import SkipLog, read_flows
    from zeekml.sources.options import ReadOptions

    read = ReadOptions(batch_rows=batch_rows, tz=tz)
    for batch in batches:
        has_content = "content" in batch.columns
        for i in range(len(batch)):
            idx = int(batch["file_idx"].iat[i])
            path = str(batch["path"].iat[i])
            skips = SkipLog(strict=strict)
            cut = _Segmenter(idx, kinds, marks)
            if has_content:  # a local copy under the same base name (nfdump uids use it)
                with tempfile.TemporaryDirectory(prefix="zeekml-in-") as tmp:
                    copy = os.path.join(tmp, unquote(path.rstrip("/").rsplit("/", 1)[-1]))
                    with open(copy, "wb") as fh:
                        fh.write(batch["content"].iat[i])
                    view = _RenamedSkips(skips, copy, path)
                    for frame in read_flows(copy, skips=view, batch_rows=batch_rows,
                                            options=read):
                        yield records_frame([cut.segment(frame, skips.total)])
            else:  # an absolute path; skips and errors name the input as it was given
                name = str(batch["name"].iat[i]) if "name" in batch.columns else path
                view = _RenamedSkips(skips, path, name) if name != path else skips
                try:
                    for frame in read_flows(path, skips=view, batch_rows=batch_rows,
                                            options=read):
                        yield records_frame([cut.segment(frame, skips.total)])
                except OSError as exc:
                    if exc.filename == path:
                        exc.filename = name
                    raise
            last = cut.tail(skips.total)
            if last is not None:
                yield records_frame([last])


def read_segments(spark: SparkSession, paths: Sequence[str], kinds: Sequence[str],
                  opts: SparkOptions) -> DataFrame:
    """Segment records (:data:`~zeekml.runtime.spark.segments.SEG_DDL`) of ``paths``,
    read by zeekml's readers in the executors, one task per input."""
    sc = spark.sparkContext
    fn = guard(functools.partial(read_files, kinds=list(kinds), strict=opts.strict,
                                 batch_rows=opts.batch_rows, tz=opts.tz, marks=opts.pair))
    local = [(i, executor_path(lp), lp) for i, p in enumerate(paths)
             if (lp := local_path(p)) is not None]
    remote = [(i, p) for i, p in enumerate(paths) if local_path(p) is None]
    frames = []
    if local:
        rdd = sc.parallelize(local, numSlices=len(local))
        files = spark.createDataFrame(rdd, "file_idx int, path string, name string")
        frames.append(files.mapInPandas(fn, SEG_DDL))
    if remote:
        idx = spark.createDataFrame(remote, "file_idx int, path string")
        raw = (spark.read.format("binaryFile").load([p for _, p in remote])
               .select("path", "content").join(idx, "path"))
        frames.append(raw.mapInPandas(fn, SEG_DDL))
    return frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])


def frames_to_segments(batches: Iterator[pd.DataFrame], kinds: list[str], batch_rows: int
                       ) -> Iterator[pd.DataFrame]:
    """Executor side of :func:`~zeekml.runtime.spark.engine.score_dataframe`: rows sorted
    by (``file_idx``, ``source_line``), each input whole in one partition -> segments."""
    cut: _Segmenter | None = None
    for batch in batches:
        fidx = batch["file_idx"].to_numpy(dtype=np.int64)
        cuts = np.flatnonzero(np.diff(fidx)) + 1
        for part in np.split(np.arange(len(batch)), cuts):
            if not len(part):
                continue
            idx = int(fidx[part[0]])
            if cut is None or cut.file_idx != idx:
                cut = _Segmenter(idx, kinds, marks=False)
            rows = batch.iloc[part].reset_index(drop=True)
            for lo in range(0, len(rows), batch_rows):
                yield records_frame([cut.segment(rows.iloc[lo:lo + batch_rows], 0)])
