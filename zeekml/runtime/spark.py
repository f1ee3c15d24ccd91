"""The Spark engine: the same readers, windows, ONNX models and policy, on a cluster.

``zeekml score --engine spark`` and the library entry points :func:`score_files`
(paths or Hadoop URIs in, verdict files out) and :func:`score_dataframe` (a Spark
DataFrame of canonical flows in, a DataFrame of verdicts out) run the local engine's
code inside the executors; pyspark is imported only inside this module's functions.

Stages (each a vectorized pandas function over Arrow batches, never per flow)::

    files --(one task per file: zeekml's own reader)--> canonical flows + arrival order
          --(per model: its state key; heavy keys cut into chunks)-->
          --(groupBy(model, bucket).applyInPandas: sort, window, onnxruntime)--> scores
          --(stateless thresholds; suppression per originator in arrival order)-->
          --> verdicts (Zeek TSV / Zeek JSON / Parquet files per partition) + counts

**Arrival order, not ts.** The local engine scores inputs in ``expand_inputs`` order
and rows in file order, and a host's window is its previous flows *in that order*:
Zeek writes conn.log when a connection *ends*, so ``ts`` (its start) is not monotonic
and sorting by ts would give other windows than the local engine (and than a live
``tail``). Every row therefore carries ``file_idx`` (its input's position in the
ordered list) and ``source_line``, and each group is sorted by them.

**Windows.** A scorer's state is keyed: the AMF-LSTM by host (``orig``/``resp``/
``local`` from its card), the flow LM by host pair; a window is the key's previous
``depth`` flows. Rows are shuffled by (model, key), so each key's flows meet in one
group, sorted by arrival; a group holds many keys and is scored in calls of whole keys
(fresh scorer state per call, one onnxruntime run per ``batch_size`` windows). A key
with more than ``chunk_rows`` flows (a scanner, a NAT gateway, a DDoS target) is cut
into chunks of ``chunk_rows`` consecutive flows, each preceded by copies of the
previous ``depth`` flows of that key (scored again for context, not emitted), so the
chunks spread over tasks and every window is exactly the local engine's.

**Policy.** Thresholds and allow-lists are per row (stateless). Suppression is not: one
notice per (originator, verdict, model) per interval, and a window closes when the
*stream's* log time (the running maximum of ``ts`` over every flow before it, of every
host) reaches its deadline. Each row carries that stream clock (per-file running
maxima, offset by the maximum of the files before). The crossing rows are shuffled by
originator and sorted by arrival inside each partition (Spark's sort spills, so a
host with billions of alerts streams through), and one
:class:`~zeekml.policy.notice.NoticePolicy` per partition, unchanged, decides them in
that order, each row preceded by a *clock row* (no score, ``ts`` = the stream clock)
that stands in for the flows of every other host. So the ``notice`` flags, the
notices and their ``n`` equal the local engine's.

**Incidents.** The flagged rows (threshold crossed, not allow-listed), with their
final notice flag, stream clock and inbound flag, are shuffled by the incident's host
(the responder of inbound flows, else the originator) and sorted by arrival; one
:class:`~zeekml.policy.incidents.IncidentTracker` per partition, unchanged, builds the
incidents (each decision depends only on a key's flagged flows and their stream
clock), then closes what is open at the stream's last log time. So the incident
records equal the local engine's, in the same order once sorted by time.

Where the engines can differ: the local engine evicts the least recently used keys
beyond ``max_hosts`` (default one million) per scorer; the Spark engine keeps every
key's history (each call starts fresh and holds whole keys). Below that many keys the
results are the same.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from zeekml.errors import ModelError, ParseError, UsageError, ZeekmlError
from zeekml.policy.incidents import IncidentConfig
from zeekml.policy.notice import NoticePolicy, PolicyConfig
from zeekml.records import schema
from zeekml.records.incidents import (
    INCIDENT_DTYPES,
    INCIDENT_LOG_PATH,
    incident_fields,
    incident_types,
)
from zeekml.records.verdicts import VERDICT_DTYPES, zeek_fields, zeek_types
from zeekml.sources.options import DEFAULT_PAIR_HOLD

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from zeekml.models.base import Scorer

log = logging.getLogger(__name__)

#: pandas dtype -> Spark SQL type
_SPARK_TYPE = {"float64": "double", "str": "string", "Int32": "int", "Int64": "bigint",
               "int32": "int", "int64": "bigint", "boolean": "boolean",
               "object": "array<string>"}
#: columns that carry a row's place in the stream through every stage
ORDER = {"file_idx": "int32", "source_line": "int64", "clock": "float64"}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # hdfs://h/x, s3a://b/x, file:/x
_ERROR_MARK = "ZEEKML-ERROR"


@dataclass(frozen=True)
class SparkOptions:
    """Knobs of the Spark engine (validated here)."""

    #: most flows of one key scored in one call; heavier keys are cut into chunks
    chunk_rows: int = 65536
    #: target flows per applyInPandas group (bounds an executor's memory per task)
    group_rows: int = 65536
    #: groups per model (default: from the row count and the cluster's parallelism)
    buckets: int | None = None
    #: onnxruntime threads per Python worker (a task is one core)
    threads: int = 1
    batch_size: int = 4096
    batch_rows: int = 65536
    max_hosts: int = 1_000_000
    idle_timeout: float = 3600.0
    #: most verdict rows per output file (there is at least one file per core once the
    #: output has 10,000 rows per core; ``None``: the final stage's partitions as they are)
    rows_per_file: int | None = 1_000_000
    strict: bool = False
    #: zone of timestamps written without one (``--tz``; Argus binetflow); None = UTC
    tz: str | None = None
    #: join unidirectional NetFlow records with their reverse (as the local engine does)
    pair: bool = True
    pair_hold: float = DEFAULT_PAIR_HOLD

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "group_rows", "threads", "batch_size", "batch_rows",
                     "max_hosts"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.buckets is not None and self.buckets < 1:
            raise UsageError(f"buckets must be >= 1, got {self.buckets}")
        if self.rows_per_file is not None and self.rows_per_file < 1:
            raise UsageError(f"rows_per_file must be >= 1, got {self.rows_per_file}")
        if not self.idle_timeout > 0:
            raise UsageError(f"idle_timeout must be > 0 s, got {self.idle_timeout}")
        from zeekml.sources.options import ReadOptions

        ReadOptions(tz=self.tz)  # validates the zone (UsageError)
        if self.pair:
            self.pair_options()  # validates pair_hold

    def pair_options(self) -> Any:
        """The pairing options (a :class:`~zeekml.sources.biflow.PairOptions`), or None."""
        if not self.pair:
            return None
        from zeekml.sources.biflow import PairOptions

        return PairOptions(hold=float(self.pair_hold))


@dataclass
class SparkCounts:
    """What a Spark run did (every figure from a Spark action, not an estimate)."""

    files: int = 0
    flows_read: int = 0
    records: int = 0  # NetFlow records before pairing (0: nothing to pair)
    pairs: int = 0
    skipped: int = 0
    flows_scored: int = 0
    rows_written: int = 0
    heavy_keys: int = 0
    models: list[str] = field(default_factory=list)
    notices: Counter[str] = field(default_factory=Counter)
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: incident records by state (open / update / closed), with --incidents
    incidents: Counter[str] = field(default_factory=Counter)
    incident_outputs: list[str] = field(default_factory=list)
    #: the stream's last log time (maximum ts over every input)
    end_clock: float = -math.inf

    def summary(self) -> str:
        nots = sum(self.notices.values())
        per = ", ".join(f"{c} {n}" for c, n in sorted(self.notices.items()))
        rate = self.flows_scored / self.seconds if self.seconds > 0 else 0.0
        return "\n".join([
            f"files: {self.files}",
            f"flows read: {self.flows_read}",
            *([f"paired: {self.pairs} flows from {2 * self.pairs} of {self.records} records"]
              if self.records else []),
            f"skipped: {self.skipped}",
            f"scored: {self.flows_scored}"
            + (f" by {', '.join(self.models)}" if self.models else ""),
            f"rows written: {self.rows_written} in {len(self.outputs)} files",
            f"notices: {nots}" + (f" ({per})" if per else ""),
            *([f"incident records: {sum(self.incidents.values())} ("
               + ", ".join(f"{n} {s}" for s, n in sorted(self.incidents.items()))
               + f") in {len(self.incident_outputs)} files"] if self.incident_outputs else []),
            f"speed: {rate:,.0f} flows/s ({self.seconds:.2f} s, engine spark)",
        ])


# --------------------------------------------------------------------------- session


def get_session(master: str | None = None, app_name: str = "zeekml",
                conf: dict[str, str] | None = None, jvm_log: str | None = None
                ) -> SparkSession:
    """The active SparkSession, or a new one whose Python workers run this interpreter.

    Spark starts its Python workers with ``python3`` from PATH unless told otherwise,
    which would lack onnxruntime and pyarrow inside a virtualenv; so
    ``PYSPARK_PYTHON`` defaults to this interpreter. With ``jvm_log``, a JVM started
    here writes its standard error (log4j, progress bars, executor and Python worker
    tracebacks) to that file instead of the user's terminal.
    """
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise UsageError("the Spark engine needs pyspark: pip install 'zeekml[spark]'") from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for k, v in (conf or {}).items():
        builder = builder.config(k, v)
    if jvm_log and SparkContext._active_spark_context is None:  # noqa: SLF001 - a JVM starts
        with _stderr_to(jvm_log):
            return builder.getOrCreate()
    return builder.getOrCreate()


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` while a child (the JVM) is started, then back."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


# --------------------------------------------------------------------------- schemas


def _ddl(cols: dict[str, str]) -> str:
    return ", ".join(f"`{c}` {_SPARK_TYPE.get(t, t)}" for c, t in cols.items())


def _flow_cols() -> dict[str, str]:
    """What the stages carry of a flow: canonical columns and arrival order.

    Labels and ``source_file`` stay behind (the file is ``file_idx``; its name is joined
    back at the end): every column crossing between the JVM and Python costs time.
    """
    cols = {c: t for c, t in schema.all_dtypes(with_labels=False).items()
            if c != "source_file"}
    return {**cols, "file_idx": "int32", "clock": "float64"}


def _verdict_cols() -> dict[str, str]:
    return {**VERDICT_DTYPES, "file_idx": "int32", "source_line": "int64", "m": "int32"}


def _scored_cols() -> dict[str, str]:
    """Verdict columns after the per-row policy, plus ``cls``, arrival order, inbound."""
    return {**VERDICT_DTYPES, "cls": "str", **ORDER, "m": "int32", "inbound": "boolean"}


def _flagged_cols() -> dict[str, str]:
    """Flagged rows with their final notice flag: what the incident trackers take."""
    return {**_verdict_cols(), "clock": "float64", "inbound": "boolean"}


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class _Model:
    """What an executor needs to rebuild one scorer, as plain data."""

    name: str
    target: str  # "module:attr" of the scorer class
    key: str  # orig | resp | local | pair
    depth: int  # previous flows of the same key a window holds
    card: str
    onnx: bytes


def _target_of(kind: str) -> str:
    from importlib import metadata

    from zeekml.models.registry import BUILTIN_KINDS

    if kind in BUILTIN_KINDS:
        return BUILTIN_KINDS[kind]
    for ep in metadata.entry_points(group="zeekml.scorers"):
        if ep.name == kind:
            return ep.value
    raise ModelError(f"no scorer for model kind {kind!r}")


def _state_layout(scorer: Scorer) -> tuple[str, int]:
    """(state key, window depth) of a scorer, read from the window store it holds.

    The built-in scorers (and plugins built the same way) keep their state in one
    :class:`~zeekml.windows.host_window.HostWindows` (keyed by host) or
    :class:`~zeekml.windows.conversation.ConversationWindows` (keyed by host pair);
    a window holds the key's previous ``depth`` flows. A scorer with other state
    cannot be partitioned safely and is refused.
    """
    from zeekml.windows.conversation import ConversationWindows
    from zeekml.windows.host_window import HostWindows

    found = set()
    for value in vars(scorer).values():
        if isinstance(value, HostWindows):
            found.add((value.key, value.history.depth))
        elif isinstance(value, ConversationWindows):
            found.add(("pair", value.history.depth))
    if len(found) == 1:
        return found.pop()
    if not found and not scorer.state_dict():
        return "orig", 0  # stateless: any partitioning is exact
    raise ModelError(f"model {scorer.name!r} keeps state the Spark engine cannot partition "
                     "(it needs exactly one HostWindows or ConversationWindows)")


def prepare_models(specs: Sequence[str] | None) -> list[_Model]:
    """Resolve and validate models on the driver (a bad card fails here, not in a task)."""
    from zeekml.models.card import load_card
    from zeekml.models.registry import ScorerOptions, bundled_models, load_scorer, resolve_model

    paths = [resolve_model(s) for s in specs] if specs else bundled_models()
    if not paths:
        raise ModelError("no models given and none bundled")
    out: list[_Model] = []
    for p in paths:
        card = load_card(p)
        scorer = load_scorer(str(p), ScorerOptions(threads=1))
        key, depth = _state_layout(scorer)
        out.append(_Model(scorer.name, _target_of(card.kind), key, depth,
                          card.path.read_text(encoding="utf-8"), Path(p).read_bytes()))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise UsageError(f"two models share a name: {names}")
    return out


#: per Python worker: payload digest -> [(scorer, its empty state)]
_WORKER_SCORERS: dict[str, list[tuple[Any, dict[str, np.ndarray]]]] = {}


def _worker_scorers(payload: Any, digest: str) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """The scorers of this run in this Python worker: built once, then reused.

    Model bytes arrive once per executor through a broadcast; the card is checked
    again here (its SHA-256 must match the ONNX bytes), then the onnxruntime session
    is created once per worker process, never per group or row.
    """
    cached = _WORKER_SCORERS.get(digest)
    if cached is not None:
        return cached
    import importlib

    from zeekml.models.card import card_path, load_card
    from zeekml.models.registry import ScorerOptions

    value = payload.value
    opts = ScorerOptions(**value["scorer_options"])
    tmp = tempfile.mkdtemp(prefix="zeekml-models-")
    atexit.register(shutil.rmtree, tmp, True)
    built = []
    for i, m in enumerate(value["models"]):
        onnx = Path(tmp) / f"m{i}.onnx"
        onnx.write_bytes(m.onnx)
        card_path(onnx).write_text(m.card, encoding="utf-8")
        module, _, attr = m.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        scorer = cls(load_card(onnx), opts)
        built.append((scorer, scorer.state_dict()))
    _WORKER_SCORERS[digest] = built
    return built


def _broadcast_models(spark: SparkSession, models: list[_Model], opts: SparkOptions
                      ) -> tuple[Any, str]:
    import hashlib

    h = hashlib.sha256()
    for m in models:
        h.update(m.name.encode() + m.target.encode() + m.onnx + m.card.encode())
    so = {"threads": opts.threads, "max_hosts": opts.max_hosts,
          "idle_timeout": opts.idle_timeout, "batch_size": opts.batch_size}
    h.update(json.dumps(so, sort_keys=True).encode())
    digest = h.hexdigest()
    return spark.sparkContext.broadcast({"models": models, "scorer_options": so}), digest


# --------------------------------------------------------------------------- errors


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an executor function; a ZeekmlError travels to the driver as marked text."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except ZeekmlError as exc:
            raise RuntimeError(_mark(exc)) from exc
        return _guard_iter(out) if isinstance(out, Iterator) else out

    return wrapped


def _guard_iter(it: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from it
    except ZeekmlError as exc:
        raise RuntimeError(_mark(exc)) from exc


def _mark(exc: ZeekmlError) -> str:
    doc = {"cls": type(exc).__name__, "msg": str(exc)}
    if isinstance(exc, ParseError):
        doc.update(path=exc.path, line=exc.line, reason=exc.reason)
    return f"{_ERROR_MARK}{json.dumps(doc)}{_ERROR_MARK}"


def _action(fn: Callable[[], Any], what: str = "spark job") -> Any:
    """Run a Spark action; a zeekml error raised in a task is re-raised here as itself."""
    t0 = time.perf_counter()
    try:
        out = fn()
        log.debug("%s: %.2f s", what, time.perf_counter() - t0)
        return out
    except Exception as exc:  # pyspark wraps task failures in its own exception types
        text = str(exc)
        i = text.find(_ERROR_MARK)
        j = text.find(_ERROR_MARK, i + len(_ERROR_MARK)) if i >= 0 else -1
        if j < 0:
            raise
        import zeekml.errors as errors

        doc = json.loads(text[i + len(_ERROR_MARK):j])
        if doc.get("cls") == "ParseError":
            raise ParseError(doc["path"], doc["line"], doc["reason"]) from None
        cls = getattr(errors, str(doc.get("cls")), ZeekmlError)
        if not (isinstance(cls, type) and issubclass(cls, ZeekmlError)):
            cls = ZeekmlError
        raise cls(doc["msg"]) from None


# --------------------------------------------------------------------------- annotate


def _keys(flows: pd.DataFrame, kind: str) -> np.ndarray:
    """The state key of each flow, computed by the same functions the scorers use."""
    if kind == "pair":
        from zeekml.windows.conversation import conversation_keys

        return conversation_keys(flows)
    from zeekml.windows.host_window import key_sides

    return key_sides(flows, kind)[0].fillna("").astype(str).to_numpy(dtype=object)


class _Annotator:
    """Per input file, in row order: the file's running ts maximum, and per state-key
    kind each row's key and its rank among the file's rows of that key."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = list(kinds)
        self.start()

    def start(self) -> None:
        self.clock = -np.inf
        self.counts: dict[str, pd.Series] = {k: pd.Series(dtype="int64") for k in self.kinds}

    def annotate(self, flows: pd.DataFrame, file_idx: int) -> pd.DataFrame:
        out = schema.conform(flows, with_labels=False).drop(columns=["source_file"])
        ts = out["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        t = np.where(np.isfinite(ts), ts, -np.inf)
        clock = np.maximum.accumulate(np.concatenate([[self.clock], t]))[1:]
        if len(clock):
            self.clock = float(clock[-1])
        out["file_idx"] = np.int32(file_idx)
        out["clock"] = clock
        for kind in self.kinds:
            keys = _keys(out, kind)
            codes, uniques = pd.factorize(keys)
            before = self.counts[kind].reindex(uniques, fill_value=0).to_numpy(dtype=np.int64)
            rank = before[codes] + pd.Series(codes).groupby(codes).cumcount().to_numpy()
            sizes = np.bincount(codes, minlength=len(uniques))
            self.counts[kind] = self.counts[kind].add(
                pd.Series(sizes, index=uniques), fill_value=0).astype("int64")
            out[f"k_{kind}"] = pd.Series(keys, dtype="str")
            out[f"r_{kind}"] = rank.astype(np.int64)
        return out


def _annotated_cols(kinds: Sequence[str], marks: bool = False) -> dict[str, str]:
    cols = _flow_cols()
    for k in kinds:
        cols[f"k_{k}"] = "str"
        cols[f"r_{k}"] = "int64"
    if marks:  # NetFlow pairing: each row's place in its file and its pairing key
        from zeekml.sources.biflow import MARK_COLUMNS

        cols.update(MARK_COLUMNS)
    return cols


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


def _annotate_frames(batches: Iterator[pd.DataFrame], kinds: list[str]
                     ) -> Iterator[pd.DataFrame]:
    """Executor side of :func:`score_dataframe`: rows sorted by (file_idx, source_line)."""
    ann = _Annotator(kinds)
    current = None
    for batch in batches:
        fidx = batch["file_idx"].to_numpy(dtype=np.int64)
        cuts = np.nonzero(np.diff(fidx))[0] + 1
        for part in np.split(np.arange(len(batch)), cuts):
            if not len(part):
                continue
            idx = int(fidx[part[0]])
            if idx != current:
                ann.start()
                current = idx
            yield _sendable(ann.annotate(batch.iloc[part].reset_index(drop=True), idx))


# --------------------------------------------------------------------------- inputs


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


# --------------------------------------------------------------------------- pairing


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


# --------------------------------------------------------------------------- scoring


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


def _sendable(df: pd.DataFrame) -> pd.DataFrame:
    """Make a frame PySpark can send back: pandas 3 keeps a concatenated "str" column
    as a chunked Arrow array, which PySpark 4.3's converter rejects; such columns go
    as plain objects (other columns are untouched, zero-copy)."""
    import pyarrow as pa

    for c in df.columns:
        if df[c].dtype == "str" and isinstance(pa.array(df[c], from_pandas=True),
                                                pa.ChunkedArray):
            df[c] = df[c].astype(object)
    return df


def _empty(cols: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=("object" if t == "object" else t))
                         for c, t in cols.items()})


# --------------------------------------------------------------------------- policy


def _suppress(batches: Iterator[pd.DataFrame], config: PolicyConfig
              ) -> Iterator[pd.DataFrame]:
    """Crossing rows of whole originators, in arrival order, through the real NoticePolicy.

    One policy per partition, fed batch after batch (its state carries across them, so
    memory stays bounded by the batch however many rows a host has). Each row is
    preceded by a clock row (``ts`` = the stream clock at that row, no score, so never a
    crossing): the policy's log time is then the whole stream's, as in the local engine,
    and every window closes before the same flows. Rows come back 1:1 with the final
    ``notice`` flag (the rows that open a window).
    """
    policy = NoticePolicy(replace(config, all_flows=True))
    fcols = list(_flagged_cols())
    for b in batches:
        n = len(b)
        if not n:
            continue
        b = b.reset_index(drop=True)
        scored = b.drop(columns=["verdict", "notice", "n"])
        ticks = scored.assign(ts=scored["clock"].to_numpy(), score=np.nan)
        order = np.empty(2 * n, dtype=np.int64)
        order[0::2] = np.arange(n) + n
        order[1::2] = np.arange(n)
        both = pd.concat([scored, ticks], ignore_index=True).iloc[order].reset_index(drop=True)
        out = policy.decide(both).iloc[1::2].reset_index(drop=True)
        for col in ("file_idx", "source_line", "m", "clock", "inbound"):
            out[col] = b[col].to_numpy()
        yield _sendable(out[fcols])


def _decide(rows: DataFrame, config: PolicyConfig, buckets: int,
            cached: list[DataFrame], want_flagged: bool = False
            ) -> tuple[DataFrame, DataFrame | None]:
    """Thresholded rows -> verdict rows: suppression per originator, in arrival order.

    Suppression key = (originator, verdict, model), as in the local engine. The crossing
    rows are shuffled by originator and sorted by arrival inside each partition; a
    notice's ``n`` (the crossings its window stands for) is the number of crossings of
    its key from it up to the key's next notice, which is what the policy counts.
    With ``want_flagged`` also returns the flagged rows with their final ``notice``
    flag, stream clock and inbound flag (:func:`_flagged_cols`), for incidents.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    vcols = list(_verdict_cols())
    fcols = list(_flagged_cols())
    if config.suppress <= 0:
        keep = rows if config.all_flows else rows.filter(F.col("notice"))
        flagged = rows.filter(F.col("notice")).select(*fcols) if want_flagged else None
        return keep.select(*vcols), flagged
    if config.all_flows:
        rows = rows.persist()  # read twice below: score once
        cached.append(rows)
    host = F.coalesce(F.col("orig_h"), F.lit("-"))
    decided = (rows.filter(F.col("notice")).repartition(buckets, host)
               .sortWithinPartitions("file_idx", "source_line", "m")
               .mapInPandas(_guard(functools.partial(_suppress, config=config)),
                            _ddl(_flagged_cols())))
    flagged = None
    if want_flagged:
        decided = decided.persist()  # read twice: verdicts and incidents
        cached.append(decided)
        flagged = decided
    if config.all_flows:
        return rows.filter(~F.col("notice")).select(*vcols).unionByName(
            decided.select(*vcols)), flagged
    key = Window.partitionBy(host, "verdict", "m")
    upto = key.orderBy("file_idx", "source_line").rowsBetween(Window.unboundedPreceding,
                                                              Window.currentRow)
    return (decided.withColumn("w", F.sum(F.col("notice").cast("long")).over(upto))
            .withColumn("n", F.count(F.lit(1)).over(Window.partitionBy(host, "verdict", "m", "w")))
            .filter(F.col("notice")).select(*vcols)), flagged


def _track(batches: Iterator[pd.DataFrame], config: IncidentConfig, end_clock: float
           ) -> Iterator[pd.DataFrame]:
    """One incident tracker per partition of flagged rows (whole hosts, arrival order).

    A flow's rows (one per model) stay in one update call, so the models' agreement
    is seen as in the local engine; at the end, what is open closes at the stream's
    last log time.
    """
    from zeekml.policy.incidents import IncidentTracker, flagged_rows

    tracker = IncidentTracker(config)
    held: pd.DataFrame | None = None
    cols = list(INCIDENT_DTYPES)

    def feed(b: pd.DataFrame) -> pd.DataFrame:
        flow = b["file_idx"].to_numpy(dtype=np.int64) * (1 << 40) + \
            b["source_line"].to_numpy(dtype=np.int64)
        n = len(b)
        x = flagged_rows(b, np.ones(n, dtype=bool), b["notice"].astype("boolean")
                         .fillna(False).to_numpy(dtype=bool), b["clock"].to_numpy(),
                         b["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool),
                         pd.factorize(flow)[0])
        return tracker.update(x, float(np.max(b["clock"].to_numpy(dtype=np.float64))))

    for b in batches:
        if not len(b):
            continue
        b = b if held is None else pd.concat([held, b], ignore_index=True)
        b = b.reset_index(drop=True)
        last = (b["file_idx"] == b["file_idx"].iat[-1]) & \
            (b["source_line"] == b["source_line"].iat[-1])
        held = b[last.to_numpy()]
        ready = b[~last.to_numpy()]
        if len(ready):
            out = feed(ready)
            if len(out):
                yield _sendable(out[cols])
    if held is not None and len(held):
        out = feed(held)
        if len(out):
            yield _sendable(out[cols])
    out = tracker.finish(end_clock)
    if len(out):
        yield _sendable(out[cols])


def _incidents(flagged: DataFrame, config: IncidentConfig, end_clock: float,
               buckets: int) -> DataFrame:
    """Flagged rows -> incident records (see the module doc), one tracker per partition."""
    from pyspark.sql import functions as F

    host = F.coalesce(F.when(F.col("inbound"), F.col("resp_h")).otherwise(F.col("orig_h")),
                      F.lit("-"))
    return (flagged.repartition(buckets, host)
            .sortWithinPartitions("file_idx", "source_line", "m")
            .mapInPandas(_guard(functools.partial(_track, config=config, end_clock=end_clock)),
                         _ddl(INCIDENT_DTYPES)))


# --------------------------------------------------------------------------- engine


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


# --------------------------------------------------------------------------- output


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


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def run_cli(args: Any, config: PolicyConfig) -> int:
    """``zeekml score --engine spark``: called by :mod:`zeekml.cli.score`.

    ``--out`` names a directory (default ``./zeekml-spark``), so does ``--incidents``;
    onnxruntime runs one thread per task (a task is one core), so ``--threads`` does
    not apply.
    """
    for flag, what in (("state", "--state"), ("notice", "--notice"), ("sink", "--sink")):
        if getattr(args, flag, None):
            raise UsageError(f"{what} is not supported with --engine spark")
    if args.out == "-":
        raise UsageError("--engine spark writes files into a directory; --out - is not possible")
    out = args.out if args.out != "zeekml.log" else "zeekml-spark"
    from zeekml.cli.guards import refuse_inputs_inside  # Spark replaces --out as a whole

    refuse_inputs_inside(out, args.inputs)
    # Spark's own output (JVM warnings, log4j, executor and worker tracebacks) goes to a
    # log file unless -v: the user gets zeekml's one-line error, and the file if it helps
    jvm_log = None
    if not getattr(args, "verbose", 0):
        fd, jvm_log = tempfile.mkstemp(prefix="zeekml-spark-", suffix=".log")
        os.close(fd)
        log.debug("Spark's own log: %s", jvm_log)
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                                category=FutureWarning)
    incidents = getattr(args, "incidents", None)
    if incidents == "-":
        raise UsageError("--engine spark writes incidents into a directory; --incidents - is "
                         "not possible")
    icfg = IncidentConfig(gap=args.incident_gap, update=args.incident_update) \
        if incidents else None
    keep_log = False
    try:
        spark = get_session(getattr(args, "spark_master", None),
                            conf={"spark.ui.showConsoleProgress": "false"}, jvm_log=jvm_log)
        opts = SparkOptions(threads=1, batch_rows=args.batch_size, strict=args.strict,
                            tz=getattr(args, "tz", None), pair=getattr(args, "pair", True),
                            pair_hold=getattr(args, "pair_hold", DEFAULT_PAIR_HOLD))
        counts = score_files(spark, args.inputs, out, models=args.model or None,
                             config=config, options=opts, out_format=args.out_format,
                             incidents_dir=incidents, incident_config=icfg)
    except (ZeekmlError, OSError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a Spark/JVM failure that is no zeekml error: one line
        keep_log = jvm_log is not None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        where = f"; Spark's log: {jvm_log}" if keep_log else ""
        raise ZeekmlError(f"the Spark job failed: {first}{where}") from exc
    finally:
        if jvm_log is not None and not keep_log:
            atexit.register(_unlink_quietly, jvm_log)
    if not args.quiet:
        text = counts.summary()
        print("zeekml score: " + text.replace("\n", "\n  "), file=sys.stderr)
    return 0
