"""``zeekml score --engine spark``: the Spark engine behind ``zeekml score``'s options.

Only this layer knows argparse: it turns the parsed options into the library's typed
arguments (:class:`~zeekml.runtime.spark.SparkOptions`, an
:class:`~zeekml.policy.incidents.IncidentConfig`, paths), starts the session with the
JVM's own output sent to a log file, runs :func:`~zeekml.runtime.spark.score_files`
and prints its summary.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import tempfile
import warnings

from zeekml.errors import UsageError, ZeekmlError
from zeekml.policy.incidents import IncidentConfig
from zeekml.policy.notice import PolicyConfig
from zeekml.sources.options import DEFAULT_PAIR_HOLD

log = logging.getLogger(__name__)

#: ``--out`` when none is given: ``zeekml score``'s default names a file, Spark writes a directory
DEFAULT_OUT = "zeekml-spark"
#: ``zeekml score``'s own default ``--out``, which means "not given" here
SCORE_DEFAULT_OUT = "zeekml.log"


def spark_out(args: argparse.Namespace) -> str:
    """The output directory: ``--out``, or ``./zeekml-spark`` when it was not given."""
    if args.out == "-":
        raise UsageError("--engine spark writes files into a directory; --out - is not possible")
    return DEFAULT_OUT if args.out == SCORE_DEFAULT_OUT else args.out


def check_options(args: argparse.Namespace) -> None:
    """Options of ``zeekml score`` the Spark engine does not have are usage errors."""
    for flag, what in (("state", "--state"), ("notice", "--notice"), ("sink", "--sink")):
        if getattr(args, flag, None):
            raise UsageError(f"{what} is not supported with --engine spark")
    if getattr(args, "incidents", None) == "-":
        raise UsageError("--engine spark writes incidents into a directory; --incidents - is "
                         "not possible")


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def run(args: argparse.Namespace, config: PolicyConfig) -> int:
    """Score ``args.inputs`` on Spark with the checked policy ``config``; print the summary.

    ``--out`` names a directory (default ``./zeekml-spark``), so does ``--incidents``;
    onnxruntime runs one thread per task (a task is one core), so ``--threads`` does
    not apply.
    """
    from zeekml.cli.guards import refuse_inputs_inside  # Spark replaces --out as a whole
    from zeekml.runtime.spark import SparkOptions, get_session, score_files

    check_options(args)
    out = spark_out(args)
    refuse_inputs_inside(out, args.inputs)
    incidents = getattr(args, "incidents", None)
    icfg = (IncidentConfig(gap=args.incident_gap, update=args.incident_update)
            if incidents else None)
    opts = SparkOptions(threads=1, batch_rows=args.batch_size, strict=args.strict,
                        tz=getattr(args, "tz", None), pair=getattr(args, "pair", True),
                        pair_hold=getattr(args, "pair_hold", DEFAULT_PAIR_HOLD))
    # Spark's own output (JVM warnings, log4j, executor and worker tracebacks) goes to a
    # log file unless -v: the user gets zeekml's one-line error, and the file if it helps
    jvm_log = None
    if not getattr(args, "verbose", 0):
        fd, jvm_log = tempfile.mkstemp(prefix="zeekml-spark-", suffix=".log")
        os.close(fd)
        log.debug("Spark's own log: %s", jvm_log)
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                                category=FutureWarning)
    keep_log = False
    try:
        spark = get_session(getattr(args, "spark_master", None),
                            conf={"spark.ui.showConsoleProgress": "false"}, jvm_log=jvm_log)
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
