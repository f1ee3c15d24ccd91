"""``zeekml eval`` for AMF-LSTM models: the paper's Table 1 plus a binary view.

Each input file is scored as the runtime would score it (the runtime's scorer, a
fresh per-host window store per file, rows in file order), except CICFlowMeter CSVs
(CICIDS2017 samples): their rows are random samples, not a host's consecutive flows,
so each is scored as a host's first flow, exactly as the trainer used them.

The decision rule is the runtime's: a flow is reported as class ``cls`` (its most
probable non-normal class) when ``score = 1 - P(normal)`` exceeds the card's threshold
for ``cls``; otherwise it is ``normal``. Rows labeled Background/Unknown/unlabeled
are excluded and counted. Metrics are :mod:`zeekml.eval.metrics` (numpy only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.eval.metrics import binary_report, classification_report
from zeekml.models.card import ModelCard, class_thresholds
from zeekml.policy.notice import crosses
from zeekml.records.labels import targets
from zeekml.sources.options import ReadOptions

log = logging.getLogger(__name__)


def _vector(thresholds: dict[str, float], classes: Sequence[str]) -> np.ndarray:
    return class_thresholds(thresholds, classes, missing=0.5)


def decide(
    probs: np.ndarray, classes: Sequence[str], thresholds: dict[str, float],
    unknown: np.ndarray | None = None, thresholds_unknown: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, flagged, predicted class index) under the runtime's decision rule: rows
    whose payload bytes are ``unknown`` are held to ``thresholds_unknown`` when given."""
    normal = list(classes).index("normal")
    score = 1.0 - probs[:, normal].astype(np.float64)
    nn = probs.astype(np.float64, copy=True)
    nn[:, normal] = -1.0
    cls = nn.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    thr = _vector(thresholds, classes)[cls]
    if unknown is not None and thresholds_unknown is not None:
        thr = np.where(unknown, _vector(thresholds_unknown, classes)[cls], thr)
    flagged = crosses(score, thr)  # the runtime's rule
    return score, flagged, np.where(flagged, cls, normal)


def metrics_from(
    probs: np.ndarray,
    y: np.ndarray,
    binary: np.ndarray,
    classes: Sequence[str],
    thresholds: dict[str, float],
    unknown: np.ndarray | None = None,
    thresholds_unknown: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The eval dict for scored rows (labels already mapped to ``y`` and ``binary``)."""
    score, flagged, pred = decide(probs, classes, thresholds, unknown, thresholds_unknown)
    return metrics_from_decisions(score, flagged, pred, y, binary, classes)


def metrics_from_decisions(
    score: np.ndarray,
    flagged: np.ndarray,
    pred: np.ndarray,
    y: np.ndarray,
    binary: np.ndarray,
    classes: Sequence[str],
) -> dict[str, Any]:
    """Per class, macro, accuracy and the binary view from decided rows."""
    has_class = y >= 0
    rep = classification_report(y[has_class], pred[has_class], classes)
    b = binary_report(binary, flagged, score)
    return {
        "classes": {
            c: {k: v[k] for k in ("precision", "recall", "f1", "support")}
            for c, v in rep["classes"].items()
        },
        "macro_precision": rep["macro_precision"],
        "macro_recall": rep["macro_recall"],
        "macro_f1": rep["macro_f1"],
        "accuracy": rep["accuracy"],
        "binary": {k: b[k] for k in ("precision", "recall", "f1", "auc", "fpr")},
        "binary_counts": {k: b[k] for k in ("tp", "fp", "fn", "tn")},
        "predicted": {c: int(v["predicted"]) for c, v in rep["classes"].items()},
        "confusion": rep["confusion"],
    }


def _score_file(scorer: Any, path: str, options: Any = None
                ) -> tuple[list[np.ndarray], list[pd.DataFrame]]:
    """Class probabilities, label columns and ``payload_unknown`` (which threshold set the
    runtime uses) of one file, scored from a fresh window store (NetFlow records paired
    within the file unless ``options.pair`` is False)."""
    from zeekml.features.flow_stats import flow_features, payload_unknown
    from zeekml.sources.open import pair_batches, read_flows, sniff_path
    from zeekml.windows.host_window import HostWindows, standalone

    sampled = sniff_path(path) == "cicflowmeter_csv"
    w0 = scorer.windows
    scorer.windows = HostWindows(w0.n, w0.key, max_hosts=scorer.options.max_hosts,
                                 idle_timeout=scorer.options.idle_timeout,
                                 fanout=w0.fanout is not None)
    probs, frames = [], []
    for batch in pair_batches(read_flows(path, options=options), options):
        feats = flow_features(batch)
        w = scorer.windows.push(batch, feats)
        if sampled:  # random samples: each row is scored as a host's first flow
            w = standalone(w)
        p, _ = scorer.infer_windows(w)
        probs.append(p)
        frame = batch[[c for c in ("label", "detailed_label") if c in batch.columns]].copy()
        frame["payload_unknown"] = payload_unknown(feats)
        frames.append(frame)
    return probs, frames


def evaluate(card: ModelCard, paths: Sequence[str], *, threads: int = defaults.THREADS,
             read: ReadOptions | None = None) -> dict[str, Any]:
    """Score every labeled input with the card's model; return the metrics dict.

    ``read``: how inputs are read (``--tz``, NetFlow pairing); the defaults otherwise.
    """
    from zeekml.models.amf_scorer import UNKNOWN_KEY, AmfScorer
    from zeekml.models.registry import ScorerOptions
    from zeekml.sources.open import expand_inputs

    read = read or ReadOptions()
    scorer = AmfScorer(card, ScorerOptions(threads=threads))
    classes = scorer.classes
    all_p, all_y, all_b, all_u = [], [], [], []
    files: dict[str, Any] = {}
    for path in expand_inputs([str(p) for p in paths]):
        probs, frames = _score_file(scorer, path, read)
        lab = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        p = np.concatenate(probs) if probs else np.zeros((0, len(classes)), np.float32)
        binary, y = targets(lab, tuple(classes)) if len(lab) else (np.zeros(0, np.int8), np.zeros(0, np.int64))
        keep = binary >= 0
        files[path] = {"rows": int(len(lab)), "excluded": int((~keep).sum())}
        all_p.append(p[keep])
        all_y.append(y[keep])
        all_b.append(binary[keep])
        all_u.append(lab["payload_unknown"].to_numpy(dtype=bool)[keep] if len(lab) else np.zeros(0, bool))
    p = np.concatenate(all_p) if all_p else np.zeros((0, len(classes)), np.float32)
    y = np.concatenate(all_y) if all_y else np.zeros(0, np.int64)
    b = np.concatenate(all_b) if all_b else np.zeros(0, np.int8)
    u = np.concatenate(all_u) if all_u else np.zeros(0, bool)
    # the runtime's thresholds row by row: payload bytes unknown or not (amf_scorer)
    out = metrics_from(p, y, b, classes, card.thresholds, u, card.data.get(UNKNOWN_KEY))
    out["excluded"] = int(sum(f["excluded"] for f in files.values()))
    out["rows"] = int(sum(f["rows"] for f in files.values()))
    out["model"] = card.name
    out["files"] = files
    return out


def _fmt(v: Any) -> str:
    return "  -  " if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def format_text(result: dict[str, Any]) -> str:
    """The paper's Table 1 layout, then macro averages, accuracy and the binary view."""
    lines = [f"model {result.get('model', '?')}: {result.get('rows', 0)} rows, "
             f"{result.get('excluded', 0)} excluded (Background/Unknown/unlabeled)", ""]
    lines.append(f"{'class':<14}{'precision':>10}{'recall':>10}{'F1':>10}{'flows':>10}")
    for c, v in result["classes"].items():
        lines.append(f"{c:<14}{_fmt(v['precision']):>10}{_fmt(v['recall']):>10}"
                     f"{_fmt(v['f1']):>10}{v['support']:>10}")
    lines.append(f"{'macro':<14}{_fmt(result.get('macro_precision')):>10}"
                 f"{_fmt(result.get('macro_recall')):>10}{_fmt(result['macro_f1']):>10}")
    lines.append(f"accuracy {_fmt(result['accuracy'])}")
    b = result["binary"]
    lines.append("")
    lines.append("binary malicious vs benign: " + ", ".join(
        f"{k} {_fmt(b[k])}" for k in ("precision", "recall", "f1", "auc", "fpr")))
    return "\n".join(lines) + "\n"
