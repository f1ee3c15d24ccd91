"""ONNX export and the export-time parity check, shared by every trainer.

Generic on purpose (the AMF-LSTM and the flow language model both use it): a module,
named example inputs and named outputs go in; one self-contained ``.onnx`` file
comes out (no external-data side files), with the batch axis dynamic. The parity
check runs the exported graph in onnxruntime on *real* inputs and compares every
output with PyTorch's; a difference above the tolerance is an error, never a
warning, because a model that scores differently in production than in training
invalidates every figure on its card.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import external_data_helper

from zeekml import defaults
from zeekml.errors import ModelError
from zeekml.models.card import sha256_file

log = logging.getLogger(__name__)

OPSET = 17
PARITY_ATOL = 1e-4


def export_onnx(
    module: torch.nn.Module,
    inputs: dict[str, np.ndarray],
    output_names: Sequence[str],
    path: str | Path,
    *,
    dynamic: dict[str, dict[int, str]] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``module(*inputs.values())`` to ``path`` as one ONNX file.

    ``inputs`` maps input names to example arrays (their order is the call order).
    ``dynamic`` maps input/output names to their dynamic axes; by default axis 0 of
    every input and output is the dynamic ``batch`` axis. Uses the TorchScript
    exporter (``dynamo=False``), which handles ``nn.LSTM`` as one ONNX LSTM node.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())
    if dynamic is None:
        dynamic = {name: {0: "batch"} for name in [*inputs, *output_names]}
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    check_single_file(path)
    return path


def check_single_file(path: str | Path) -> None:
    """Raise ModelError unless the model is valid and keeps every tensor inside the file."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            raise ModelError(f"{path}: exported model uses external data ({tensor.name})")
    onnx.checker.check_model(model)


def session(path: str | Path, threads: int = defaults.THREADS) -> ort.InferenceSession:
    """A CPU onnxruntime session with ``threads`` intra-op threads and one inter-op thread."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def check_parity(
    module: torch.nn.Module,
    path: str | Path,
    inputs: dict[str, np.ndarray],
    *,
    atol: float = PARITY_ATOL,
    threads: int = defaults.THREADS,
    batch_axes: dict[str, int] | None = None,
) -> float:
    """Run torch and onnxruntime on the same real inputs; return the max abs difference.

    ``batch_axes``: the batch axis of inputs where it is not 0 (outputs: always 0).
    Raises ModelError if any output differs by more than ``atol``.
    """
    module = module.eval()
    with torch.no_grad():
        ref = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    ref_list = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = session(path, threads)
    axes = {k: (batch_axes or {}).get(k, 0) for k in inputs}
    first = next(iter(inputs))
    n = inputs[first].shape[axes[first]]
    worst = 0.0
    # the whole set, then small batches: the batch axis is dynamic and must stay so
    for rows in (slice(0, n), slice(0, 1), slice(0, min(n, 7))):
        got = sess.run(None, {k: np.ascontiguousarray(np.take(v, np.arange(n)[rows], axis=axes[k]))
                              for k, v in inputs.items()})
        if len(got) != len(ref_list):
            raise ModelError(f"{path}: ONNX graph has {len(got)} outputs, torch {len(ref_list)}")
        for r, g in zip(ref_list, got, strict=True):
            r = r.numpy()[rows]
            if r.shape != g.shape:
                raise ModelError(f"{path}: output shape {g.shape} != torch {r.shape}")
            worst = max(worst, float(np.max(np.abs(r - g))) if r.size else 0.0)
    if not worst <= atol:
        raise ModelError(f"{path}: onnxruntime differs from torch by {worst:.3g} > {atol:g}")
    log.info("parity: max |torch - onnxruntime| = %.3g over %d rows", worst, n)
    return worst


def file_entry(path: str | Path, rows: int, root: str | Path | None = None) -> dict[str, Any]:
    """``{path, sha256, rows}`` for a training file (path relative to ``root`` if given)."""
    p = Path(path)
    shown = str(p)
    if root is not None:
        try:
            shown = str(p.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            shown = str(p)
    return {"path": shown, "sha256": sha256_file(p), "rows": int(rows)}
