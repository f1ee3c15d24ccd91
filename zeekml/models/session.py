"""One way to open an ONNX model for scoring, shared by every built-in scorer.

A session is the costly, security-relevant step (the graph is untrusted input): CPU
provider only, ``threads`` intra-op threads and no inter-op pool (the pipeline batches,
so one operator at a time is the fast path on two cores), onnxruntime's own logging
silenced below errors, and any onnxruntime failure turned into a :class:`ModelError`
naming the file.

A scorer given several threads runs that many graph calls at once, each on chunks of its
own and one onnxruntime thread (:class:`GraphChunks`), rather than one call at a time on
several: the models are small recurrent graphs whose per-step work is too short to split
across threads without waiting on them. Measured on 2 cores (200k windows, the shipped
AMF-LSTM graph): two calls side by side 438-449k windows/s, one call on two onnxruntime
threads 342-351k.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime as ort

from zeekml.errors import ModelError


def open_session(path: str | Path, threads: int) -> ort.InferenceSession:
    """An onnxruntime session on ``path`` for CPU scoring with ``threads`` threads."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no busy-waiting between runs: a spinning worker would take a core from the numpy
    # work (windows, words) the pipeline does between two model calls
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: onnxruntime cannot load the model: {exc}") from exc


class GraphChunks:
    """Runs a scorer's graph calls over the chunks of a batch, ``threads`` at once.

    ``threads`` is the scorer's ``--threads``: with more than one, :meth:`run` hands the
    chunks to that many threads (each call in a thread of its own, on a session opened
    with one onnxruntime thread); with one, every chunk runs in the calling thread, and
    :meth:`helper` gives a scorer one thread to prepare its next chunk in meanwhile.
    The threads are made when first needed and live as long as the scorer.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    def run(self, call: Callable[[int], None], starts: range) -> None:
        """``call(start)`` for every chunk start; returns when all returned (the first
        exception raised is raised here)."""
        if self.threads == 1 or len(starts) < 2:
            for s in starts:
                call(s)
            return
        list(self.pool().map(call, starts))

    def helper(self) -> ThreadPoolExecutor | None:
        """The one helper thread of a one-thread scorer (None with several threads)."""
        return self.pool() if self.threads == 1 else None

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads,
                                            thread_name_prefix=f"zeekml-{self.name}-graph")
        return self._pool
