"""One way to open an ONNX model for scoring, shared by every built-in scorer.

A session is the costly, security-relevant step (the graph is untrusted input): CPU
provider only, ``threads`` intra-op threads and no inter-op pool (the pipeline batches,
so one operator at a time is the fast path on two cores), onnxruntime's own logging
silenced below errors, and any onnxruntime failure turned into a :class:`ModelError`
naming the file.
"""

from __future__ import annotations

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
