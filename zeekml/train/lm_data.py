"""Training data of the flow language model: streams, what may be learned, windows, words.

A *stream* is one capture read in order (a ``--data`` input, or a corpus capture):
conversation state runs through it. Per row it knows whether the row may be trained
on (``trainable``), its label (``binary``: 1 malicious, 0 benign, -1 excluded or
unlabeled; ``y`` the class index) and whether it comes from a random sample
(``sampled``: consecutive rows are not a conversation, so such a row is scored and
trained as a conversation of its own, without history).

What may be trained on: with labels, flows labeled benign (Background/unknown flows
are left out: nobody said they are normal); with ``drop_malicious`` on unlabeled-
tolerant inputs (``zeekml train lm --data``) every flow not labeled malicious; in an
unlabeled corpus capture, every flow (presumed benign) unless the capture is excluded
from training by name.

The words are learned only from the training part of each stream (its first
``1 - val_fraction`` of trainable rows); the rest is validation, never trained on.
This module uses no torch (the LOCO driver and tests share it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml.features import tokens as tk
from zeekml.records import schema
from zeekml.records.labels import targets
from zeekml.windows.conversation import ConversationWindows, conversation_keys

log = logging.getLogger(__name__)


@dataclass
class LmStream:
    """One capture in stream order, with what the LM may learn from it."""

    name: str
    flows: pd.DataFrame
    sampled: np.ndarray
    binary: np.ndarray
    y: np.ndarray
    trainable: np.ndarray
    labeled: bool = True
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.flows)

    def n_trainable(self) -> int:
        return int(self.trainable.sum())


def stream_keys(flows: pd.DataFrame, sampled: np.ndarray) -> np.ndarray:
    """Conversation key of each row; a sampled row gets a key of its own (no history)."""
    keys = conversation_keys(flows)
    if sampled.any():
        keys = keys.copy()
        idx = np.nonzero(sampled)[0]
        keys[idx] = np.array([f"\x00sampled:{i}" for i in idx.tolist()], dtype=object)
    return keys


def make_stream(name: str, flows: pd.DataFrame, *, sampled: np.ndarray | None = None,
                labeled: bool | None = None, trainable: str = "benign",
                files: list[dict[str, Any]] | None = None) -> LmStream:
    """Wrap a canonical table. ``trainable``: ``"benign"`` (labeled benign rows),
    ``"not-malicious"`` (every row not labeled malicious), ``"all"`` or ``"none"``."""
    flows = flows.reset_index(drop=True)
    n = len(flows)
    has_labels = schema.has_labels(flows) if labeled is None else labeled
    if has_labels:
        binary, y = targets(flows)
        binary, y = np.asarray(binary, dtype=np.int8), np.asarray(y, dtype=np.int64)
    else:
        binary, y = np.full(n, -1, dtype=np.int8), np.full(n, -1, dtype=np.int64)
    rule = {
        "benign": binary == 0,
        "not-malicious": binary != 1,
        "all": np.ones(n, dtype=bool),
        "none": np.zeros(n, dtype=bool),
    }
    if trainable not in rule:
        raise ValueError(f"unknown trainable rule {trainable!r}")
    s = np.zeros(n, dtype=bool) if sampled is None else np.asarray(sampled, dtype=bool)
    return LmStream(name, flows, s, binary, y, rule[trainable], bool(has_labels), files or [])


def corpus_streams(path: str | Path, *, exclude_training: Sequence[str] = (),
                   root: str | Path | None = None) -> list[LmStream]:
    """Every capture of a corpus file as a stream (see the module docstring).

    ``exclude_training`` names captures (or whole corpus entries/families, matched on
    the part before ``:``) that are scored but never trained on.
    """
    from zeekml.eval.corpus import load_corpus

    caps = load_corpus(path, root=root)
    excluded = set(exclude_training)
    known = {c.name for c in caps} | {c.name.split(":", 1)[0] for c in caps}
    unknown = excluded - known
    if unknown:
        from zeekml.errors import UsageError

        raise UsageError(f"{path}: no capture named {', '.join(sorted(unknown))}")
    out = []
    for c in caps:
        skip = c.name in excluded or c.name.split(":", 1)[0] in excluded
        rule = "none" if skip else ("benign" if c.labeled else "all")
        out.append(make_stream(c.name, c.flows, sampled=c.sampled, labeled=c.labeled, trainable=rule,
                               files=[{"path": f} for f in c.files]))
    return out


# ------------------------------------------------------------------ windows
@dataclass
class Windows:
    """Conversation windows of one stream's trainable rows: ``[N, T + 2]`` arrays."""

    code: np.ndarray
    ts: np.ndarray
    valid: np.ndarray
    n_train: int  # rows [0, n_train) train, the rest validation


def stream_windows(flows: pd.DataFrame, sampled: np.ndarray, flow_codes: np.ndarray,
                   context: int, idle_timeout: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(code, ts, valid)`` windows of every row, with the runtime's conversation store."""
    cw = ConversationWindows(context, idle_timeout=idle_timeout)
    w = cw.push(flows, flow_codes, stream_keys(flows, sampled))
    return w.code, w.ts, w.valid


def split_point(n: int, val_fraction: float) -> int:
    """Rows ``[0, k)`` train, ``[k, n)`` validation (later in time)."""
    n_val = int(round(n * val_fraction)) if n >= 10 else 0
    return n - n_val


def training_rows(stream: LmStream, max_rows: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The stream's trainable rows (stream order), at most ``max_rows`` (the first ones)."""
    idx = np.nonzero(stream.trainable)[0]
    if max_rows is not None and len(idx) > max_rows:
        idx = idx[:max_rows]
    return stream.flows.iloc[idx].reset_index(drop=True), stream.sampled[idx]


def fit_tokenizer(parts: list[tuple[pd.DataFrame, np.ndarray]], context: int, idle_timeout: float,
                  val_fraction: float, fit: tk.FitOptions) -> tuple[tk.TokenizerSpec, list[Windows]]:
    """Learn components, gap edges and vocabulary from the training part of every stream."""
    n_train = [split_point(len(f), val_fraction) for f, _ in parts]
    train_rows = schema.concat([f.iloc[:k] for (f, _), k in zip(parts, n_train, strict=True)])
    flow_comps = tk.fit_components(train_rows, np.zeros(0), fit)
    tok = tk.Tokenizer(tk.TokenizerSpec(flow_comps))
    wins = []
    for (f, s), k in zip(parts, n_train, strict=True):
        code, ts, valid = stream_windows(f, s, tok.flow_codes(f), context, idle_timeout)
        wins.append(Windows(code, ts, valid, k))
    gaps = np.concatenate(
        [(w.ts[: w.n_train, -1] - w.ts[: w.n_train, -2])[w.valid[: w.n_train, -2]] for w in wins]
    ) if wins else np.zeros(0)
    comps = tk.fit_components(train_rows, gaps, fit)
    # per-flow components are unchanged, so the window codes stay valid
    assert comps[:-1] == flow_comps[:-1]
    tok = tk.Tokenizer(tk.TokenizerSpec(comps))
    keys = []
    for w in wins:
        g = tk.gap_codes(w.ts[:, -1] - w.ts[:, -2], w.valid[:, -2], comps[-1].edges)
        keys.append(tok.keys(w.code[: w.n_train, -1], g[: w.n_train]))
    vocab = tk.build_vocab(np.concatenate(keys) if keys else np.zeros(0, np.int64), fit.min_count)
    return tk.TokenizerSpec(comps, vocab), wins


def encode(tok: tk.Tokenizer, wins: list[Windows], part: str) -> tuple[np.ndarray, np.ndarray]:
    """``words [N, T+1]`` and ``parts [N, T+1, C]`` of the train or validation rows."""
    words, parts = [], []
    for w in wins:
        sl = slice(0, w.n_train) if part == "train" else slice(w.n_train, None)
        ids, p = tok.window_words(w.code[sl], w.ts[sl], w.valid[sl])
        words.append(ids)
        parts.append(p)
    if not words:
        n = len(tok.radices)
        return np.zeros((0, 1), np.int64), np.zeros((0, 1, n), np.int64)
    return np.concatenate(words), np.concatenate(parts)
