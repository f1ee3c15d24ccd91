"""Every default a user can change, stated once.

Options objects, the CLI's ``--help`` texts and the trainers read their defaults here, so a
default changes in one place and the help never disagrees with the code. Nothing here is
imported from below (no zeekml imports): every layer may depend on it.
"""

from __future__ import annotations

#: graph calls of the first model run at once, each on one onnxruntime thread (the models
#: of a batch run side by side; each other one gets THREADS / models, see
#: ``registry.side_threads`` and ``models.session.GraphChunks``), and torch threads when
#: training
THREADS = 2
#: flows per batch read from a file (memory bound of reading; the Spark engine's batches)
BATCH_ROWS = 65536
#: flows per batch ``score`` and ``calibrate`` read and score together (the local engine):
#: on the 1M-flow benchmark file (2 cores, both bundled models) 131,072 gave 108-110k
#: flows/s where 65,536 gave 96-99k (alternating runs, 2026-12-05; 32,768: 86-88k), peak
#: RSS 826 vs 701 MiB: the flow LM runs each distinct window of a batch once, and a larger
#: batch holds more repeats (323k graph rows for 1M flows at 48k-row batches), and every
#: batch pays fixed costs (threads, policy, pandas calls); verdicts are the same. With the
#: scorers in lanes (a batch scored while the last is decided: two batches alive),
#: 131,072 took 1M one-flow hosts to 1,499-1,525 MiB peak RSS, 98,304 to 1,392-1,428 MiB;
#: on the 1M-flow file 98,304 gave 115.4-116.8k flows/s, 131,072 117.4-121.7k (four
#: alternating rounds, 2026-12-06): the memory target is kept at a few percent of speed
SCORE_BATCH_ROWS = 98304
#: flows per batch in ``tail`` (smaller: latency matters more than throughput there)
TAIL_BATCH_ROWS = 16384
#: failed flows the scan detector counts at once (bounds its [rows, 32] temporaries beside the
#: other scorers': 1M one-SYN hosts, docs/benchmarks.md)
SCAN_PIECE_ROWS = 16384
#: windows per onnxruntime call: with both models side by side on 2 cores, 1,024 gave
#: 87-93k flows/s on the 1M-flow benchmark file, 2,048 83-88k, 512 89-90k (alternating
#: runs, 2026-12-05; 2,048 had beaten 4,096 before): the AMF graph's working set stays in
#: cache (one thread: 199k windows/s at 1,024, 181-187k at 2,048); verdicts are the same
MODEL_BATCH = 1024
#: input pieces (about one batch each) ``score`` reads ahead while it scores (0: none)
READ_AHEAD = 1
#: hosts whose windows are kept (the least recently seen are evicted beyond it)
MAX_HOSTS = 1_000_000
#: seconds of silence after which a host's window is dropped
IDLE_TIMEOUT = 3600.0
#: seconds one notice stands for the later crossings of its (host, verdict, model)
SUPPRESS_SECONDS = 600.0
#: the host of that key: "host" (the local responder of an inbound flow, else the
#: originator: one notice for a flood on one server) or "orig" (always the originator)
SUPPRESS_BY = "host"
#: with it: an outside host a model flags against this many distinct local hosts (one
#: verdict, within the suppression interval) is the key's host itself (a sweep: one
#: notice about the sweeper, not one per local host)
SWEEP_HOSTS = 5
#: outside originators the sweep rule remembers at once (the least recently flagged are
#: forgotten beyond it: a flood of spoofed sources cannot grow the state without bound)
SWEEP_MAX_GROUPS = 100_000
#: seconds between state checkpoints of ``score`` over large inputs
CHECKPOINT_SECONDS = 60.0
#: seconds: ``score --state`` commits after an input whose rows are all written, but not
#: sooner than this after the last commit: a commit waits for the scorers' lanes and saves
#: every model's state, and a zeekctl archive ends an input every ~1,500 flows (the shared
#: RITA archive: 80-86k -> 100k flows/s with none of those commits); a crash re-scores at
#: most this much work, never a row twice
INPUT_COMMIT_SECONDS = 5.0
#: seconds between state checkpoints of ``tail``
TAIL_CHECKPOINT_SECONDS = 5.0
#: seconds ``tail`` lets a flow wait for its batch before scoring it
TAIL_MAX_LATENCY = 0.1
#: seconds between ``tail``'s looks for new data (file-system events wake it sooner)
TAIL_POLL_INTERVAL = 0.25
#: how far back ``score --state`` and ``tail`` look for rotated generations (7 days)
LOOKBACK_SECONDS = 7 * 86400.0
#: input cursors a state file keeps
MAX_CURSORS = 100_000
#: seconds of log time without a flagged flow after which an incident closes
INCIDENT_GAP = 1800.0
#: seconds of log time between the updates of an incident still going on
INCIDENT_UPDATE = 3600.0
#: bytes read from the head of a file to recognise its format
SNIFF_BYTES = 65536
