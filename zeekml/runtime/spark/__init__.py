"""The Spark engine: the same readers, windows, ONNX models and policy, on a cluster.

``zeekml score --engine spark`` (:mod:`zeekml.cli.spark`) and the library entry points
:func:`score_files` (paths or Hadoop URIs in, verdict files out),
:func:`score_dataframe` (a Spark DataFrame of canonical flows in, a DataFrame of
verdicts out) and :func:`read_flows_df` (inputs in, a DataFrame of canonical flows out)
run the local engine's code inside the executors; pyspark is imported only inside
functions.

It gives the local engine's results: the same verdicts, notices and ``n``, incident
records and NetFlow pairs (``tests/test_spark.py`` compares them row for row on real
captures). How, module by module:

* :mod:`.packs`: Spark moves *packs* (a pandas frame as one Arrow IPC value) between
  stages, not rows: the JVM's cost per row and column was most of the engine's time;
* :mod:`.segments`: the stream cut into ordered segments (one read batch of one input);
  every row carries its place in the stream, so "in stream order" survives every
  shuffle, and the log clock is a running maximum per segment plus an offset;
* :mod:`.inputs`: input listing (paths, globs, URIs) and reading with zeekml's readers,
  one task per input;
* :mod:`.pairing`: NetFlow records paired over the whole run, as the local engine pairs
  its stream;
* :mod:`.heavy`: keys with more than ``chunk_rows`` flows cut into chunks with context
  copies, so one scanner does not sit on one core and windows stay exact;
* :mod:`.scoring`: rows cut by (model, state key, chunk), scored with the local
  scorers in groups of whole keys; :mod:`.models` holds what the engine assumes about
  scorers and loads each model once per Python worker;
* :mod:`.policy`: suppression per key host, incidents per incident host, each in
  stream order with the stream's log clock, through the unchanged policy and tracker;
* :mod:`.output`: verdict files per range of segments, in stream order;
* :mod:`.engine`: the entry points and the order of the jobs; :mod:`.options`,
  :mod:`.session`, :mod:`.errors` (a zeekml error in a task reaches the driver as
  itself), :mod:`.schemas`.

Where the engines can differ: the local engine evicts the least recently used keys
beyond ``max_hosts`` (default one million) per scorer; the Spark engine keeps every
key's history (each call starts fresh and holds whole keys). Below that many keys the
results are the same.
"""

from __future__ import annotations

from zeekml.runtime.spark.engine import read_flows_df, score_dataframe, score_files
from zeekml.runtime.spark.inputs import list_inputs
from zeekml.runtime.spark.models import prepare_models
from zeekml.runtime.spark.options import SparkCounts, SparkOptions
from zeekml.runtime.spark.output import write_incidents, write_verdicts
from zeekml.runtime.spark.session import get_session

__all__ = [
    "SparkCounts",
    "SparkOptions",
    "get_session",
    "list_inputs",
    "prepare_models",
    "read_flows_df",
    "score_dataframe",
    "score_files",
    "write_incidents",
    "write_verdicts",
]
