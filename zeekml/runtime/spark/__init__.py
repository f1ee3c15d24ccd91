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

from zeekml.runtime.spark.engine import score_dataframe, score_files
from zeekml.runtime.spark.inputs import list_inputs, read_flows_df
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
