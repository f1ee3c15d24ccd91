"""The SparkSession the engine runs on, and where the JVM's own output goes."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from zeekml.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


log = logging.getLogger(__name__)

#: Session settings of the engine (a ``conf`` given to :func:`get_session` overrides
#: them). The engine hands Spark a few large values per task (packs), so the JVM's own
#: fixed costs dominate its share: compiling generated code for every query plan
#: (whole-stage codegen buys nothing on a handful of rows), and shuffles cut into 200
#: partitions (the engine sizes every shuffle it makes; the rest are tiny counts).
#: Measured with ``tools/bench_spark.py`` on 8,000 flows: the JVM's CPU time during the
#: run 32 s with Spark's defaults, 7 s with these and the JIT setting below.
ENGINE_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.shuffle.partitions": "16",
}
#: A local JVM started here compiles with C1 only: C2 spent 10 s of CPU optimizing code
#: that runs for seconds (the JVM's work per flow is a few copies of pack bytes). Its heap
#: may grow to 4 GiB (a maximum, not a reservation): with Spark's default of 1 GiB the read
#: stage of 1M flows in 8 files on local[2] died of java.lang.OutOfMemoryError (twice in
#: the benchmark's runs), the driver being the executor in local mode. The parallel
#: collector instead of G1: packs are byte arrays of megabytes, "humongous" objects to G1;
#: 1M flows in 8 files on local[2] (``tools/bench_spark.py``, alternating): 19,390 and
#: 19,505 flows/s with it, the JVM 44-45 CPU-s, vs 17,497-18,245 flows/s and 49-56 CPU-s.
LOCAL_JVM_CONF = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC",
                  "spark.driver.memory": "4g"}


def get_session(master: str | None = None, app_name: str = "zeekml",
                conf: dict[str, str] | None = None, jvm_log: str | None = None
                ) -> SparkSession:
    """The active SparkSession, or a new one whose Python workers run this interpreter.

    Spark starts its Python workers with ``python3`` from PATH unless told otherwise,
    which would lack onnxruntime and pyarrow inside a virtualenv; so
    ``PYSPARK_PYTHON`` defaults to this interpreter. With ``jvm_log``, a JVM started
    here writes its standard error (log4j, progress bars, executor and Python worker
    tracebacks) to that file instead of the user's terminal. The session gets
    :data:`ENGINE_CONF` (and a local JVM started here :data:`LOCAL_JVM_CONF`) unless
    ``conf`` says otherwise.
    """
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("the Spark engine needs pyspark: pip install 'zeekml[spark]'") from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = dict(ENGINE_CONF)
    starting = SparkContext._active_spark_context is None  # a JVM starts here
    if starting and (master or os.environ.get("MASTER", "local")).startswith("local"):
        settings.update(LOCAL_JVM_CONF)
    settings.update(conf or {})
    for k, v in settings.items():
        builder = builder.config(k, v)
    if jvm_log and starting:
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
