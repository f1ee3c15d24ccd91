"""``zeekml eval`` for the count detectors (scan, bruteforce, flood): the binary view, and how
each does on the label class its verdicts name.

Each input file is scored as ``zeekml score`` scores it (the runtime's scorer, a fresh
per-originator store per file, rows in file order, NetFlow records paired unless
``--no-pair``), except CICFlowMeter CSVs: their rows are random samples, not a host's
consecutive flows, so each is scored alone (one failed flow is one target, one login one
attempt: never a notice). The decision is the runtime's (``score >= threshold``). A
flagged flow counts as predicted the label class of its verdict (:data:`LABEL_OF`: both
scan classes ``portscan``, ``repeated_attempts`` ``c2`` (a bot retrying its C&C), both
guessing classes ``bruteforce``, the flood's ``ddos`` ``ddos``), every other flow as ``normal``; rows labeled
Background/Unknown/unlabeled are excluded and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import ModelError
from zeekml.eval.amf_eval import format_text as amf_format_text
from zeekml.eval.amf_eval import metrics_from_decisions
from zeekml.models.card import ModelCard
from zeekml.policy.notice import crosses
from zeekml.records.labels import CLASSES, targets
from zeekml.sources.options import ReadOptions

#: the label class (:data:`zeekml.records.labels.CLASSES`) each count verdict names
LABEL_OF = {"address_scan": "portscan", "port_scan": "portscan", "repeated_attempts": "c2",
            "login_guessing": "bruteforce", "http_guessing": "bruteforce", "ddos": "ddos"}


def _score_file(card: ModelCard, path: str, read: ReadOptions
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """(score, threshold, label class index of the verdict, label columns) of one file,
    from a fresh scorer."""
    from zeekml.models.registry import ScorerOptions, load_scorer
    from zeekml.sources.open import pair_batches, read_flows, sniff_path

    sampled = sniff_path(path) == "cicflowmeter_csv"
    scorer: Any = load_scorer(str(card.path), ScorerOptions())  # a count scorer: score_alone
    index = {v: CLASSES.index(c) for v, c in LABEL_OF.items()}
    scores, thresholds, said, frames = [], [], [], []
    for batch in pair_batches(read_flows(path, options=read), read):
        b = scorer.score_alone(batch) if sampled else scorer.score(batch)
        scores.append(b.score)
        thresholds.append(b.threshold)
        said.append(pd.Series(b.cls, dtype=object).map(index).to_numpy(dtype=np.int64))
        frames.append(batch[[c for c in ("label", "detailed_label") if c in batch.columns]])
    lab = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return _cat(scores), _cat(thresholds), _cat(said).astype(np.int64), lab


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def evaluate(card: ModelCard, paths: Sequence[str], *, threads: int = defaults.THREADS,
             read: ReadOptions | None = None) -> dict[str, Any]:
    """Score every labeled input with a count detector's card; return the metrics dict."""
    from zeekml.sources.open import expand_inputs

    read = read or ReadOptions()
    normal = CLASSES.index("normal")
    unknown = [c for c in card.thresholds if c not in LABEL_OF]
    if unknown:
        raise ModelError(f"{card.path}: no label class for the verdict(s) {unknown}")
    parts: list[tuple[np.ndarray, ...]] = []
    files: dict[str, Any] = {}
    for path in expand_inputs([str(p) for p in paths]):
        score, thr, said, lab = _score_file(card, path, read)
        if len(lab):
            binary, y = targets(lab, CLASSES)
        else:
            binary, y = np.zeros(0, np.int8), np.zeros(0, np.int64)
        keep = binary >= 0
        files[path] = {"rows": int(len(lab)), "excluded": int((~keep).sum())}
        parts.append((score[keep], thr[keep], y[keep], binary[keep], said[keep]))
    score, thr, y, binary, said = (np.concatenate([p[i] for p in parts]) if parts
                                  else np.zeros(0) for i in range(5))
    flagged = crosses(score, thr)
    pred = np.where(flagged, said.astype(np.int64), normal)
    out = metrics_from_decisions(score, flagged, pred, y.astype(np.int64),
                                 binary.astype(np.int8), CLASSES)
    shown = ("normal", *dict.fromkeys(LABEL_OF[c] for c in card.thresholds))
    out["classes"] = {c: out["classes"][c] for c in shown}
    out["excluded"] = int(sum(f["excluded"] for f in files.values()))
    out["rows"] = int(sum(f["rows"] for f in files.values()))
    out["model"] = card.name
    out["files"] = files
    return out


def format_text(result: dict[str, Any]) -> str:
    """The per-class table (normal and the detector's label classes), macro averages and
    the binary view."""
    return amf_format_text(result)
