"""Runtime scorer for AMF-LSTM models (ONNX + card); needs no torch.

Per batch of canonical flows: :func:`~zeekml.features.flow_stats.flow_features`, then
:class:`~zeekml.windows.host_window.HostWindows` (the same code the trainer used), then
one onnxruntime call per ``options.batch_size`` windows; it returns class probabilities
and attention weights. Two graph inputs are accepted: ``xs [n, batch, F]``, windows
time-major and normalized with the card's ``normalization`` (what ``zeekml train amf``
exports: the runtime normalizes each flow once, see
:class:`~zeekml.train.amf_lstm.TimeMajorAmf`), or ``x [batch, n, F]``, raw windows for
a graph that normalizes inside (models exported before it).

Per flow (see :class:`~zeekml.models.base.ScoreBatch`):

``score``      1 - P(normal)
``cls``        the most probable class other than ``normal``
``threshold``  the card's calibrated threshold for ``cls``: from ``thresholds_payload_unknown``
               when the card has them and the flow's payload bytes are unknown (NetFlow,
               Argus, some Zeek flows), else from ``thresholds``
``alt``        the most probable attack class other than ``cls`` (never ``normal``:
``alt_score``  P(normal) is ``1 - score``), and its probability: the runner-up attack
``context``    list of the uids of up to 3 *previous* flows in the window (valid
               positions, not the flow itself) with the highest attention weight,
               most attended first, to pivot in conn.log

The card is untrusted: its kind, feature list (must equal the runtime's
:data:`~zeekml.windows.host_window.WINDOW_FEATURES` exactly, in order), window
length and key, classes and thresholds are checked, and so are the graph's input and
output shapes, before anything is scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

import numpy as np
import onnxruntime as ort
import pandas as pd

from zeekml.errors import ModelError, StateError
from zeekml.features.flow_stats import flow_features, payload_unknown
from zeekml.models.base import Deferred, ScoreBatch
from zeekml.models.card import ModelCard, class_thresholds
from zeekml.models.context import uid_lists
from zeekml.models.registry import ScorerOptions
from zeekml.models.session import GraphChunks, open_session
from zeekml.windows.host_window import (
    FANOUT_WINDOW_FEATURES,
    WINDOW_FEATURES,
    WINDOW_KEYS,
    HostWindows,
    Normalization,
    Windows,
    time_major,
)

log = logging.getLogger(__name__)

KIND = "amf_lstm"
CONTEXT_FLOWS = 3
#: card field: per-class thresholds for flows whose payload bytes are unknown (optional;
#: calibrated on benign flows read that way, see zeekml.train.amf_training)
UNKNOWN_KEY = "thresholds_payload_unknown"
MAX_WINDOW = 1000


def validate_card(card: ModelCard) -> tuple[list[str], int, str]:
    """Check the AMF-specific card fields; return (classes, window, key)."""
    if card.kind != KIND:
        raise ModelError(f"{card.path}: model kind is {card.kind!r}, not {KIND!r}")
    feats = card.require("features", list)
    if feats not in (list(WINDOW_FEATURES), list(FANOUT_WINDOW_FEATURES)):
        raise ModelError(
            f"{card.path}: the model was trained on a different feature list "
            f"({len(feats)} features) than this zeekml computes ({len(WINDOW_FEATURES)}, or "
            f"{len(FANOUT_WINDOW_FEATURES)} with fan-out); retrain it with this version"
        )
    window = card.require("window", int)
    if not 1 <= window <= MAX_WINDOW:
        raise ModelError(f"{card.path}: window {window} out of range 1..{MAX_WINDOW}")
    key = card.require("window_key", str)
    if key not in WINDOW_KEYS:
        raise ModelError(f"{card.path}: window_key {key!r} not one of {', '.join(WINDOW_KEYS)}")
    classes = card.require("classes", list)
    if (
        len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
        or "normal" not in classes
    ):
        raise ModelError(f"{card.path}: classes must be >= 2 distinct names including 'normal'")
    unknown = card.data.get(UNKNOWN_KEY)
    if unknown is not None:
        if not isinstance(unknown, dict) or set(unknown) != set(card.thresholds):
            raise ModelError(f"{card.path}: {UNKNOWN_KEY} must name the same classes as "
                             "thresholds")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in unknown.values()):
            raise ModelError(f"{card.path}: a value of {UNKNOWN_KEY} is not a finite number")
    return classes, window, key


def uses_fanout(card: ModelCard) -> bool:
    """Whether a (validated) card's features include the fan-out ones."""
    return card.require("features", list) == list(FANOUT_WINDOW_FEATURES)


def _check_graph(sess: ort.InferenceSession, card: ModelCard, window: int,
                 n_classes: int) -> Normalization | None:
    """Check the graph's inputs and outputs against the card; the normalization the
    runtime applies (a time-major ``xs`` graph), or None (a raw ``x`` graph)."""
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    nf = len(card.require("features", list))
    if set(ins) not in ({"x", "mask"}, {"xs", "mask"}) or not {"probs", "attention"} <= set(outs):
        raise ModelError(
            f"{card.onnx_path}: graph inputs {sorted(ins)} / outputs {sorted(outs)}, expected "
            "x (or xs), mask -> probs, attention"
        )
    name = "xs" if "xs" in ins else "x"  # time-major [n, batch, F] or raw [batch, n, F]
    shape = list(ins[name][::2]) if name == "xs" else list(ins[name][1:])
    if shape != [window, nf] or list(ins["mask"][1:]) != [window]:
        raise ModelError(f"{card.onnx_path}: input {name} shape {ins[name]} does not match "
                         f"window {window} x {nf}")
    if outs["probs"][1:] != [n_classes]:
        raise ModelError(f"{card.onnx_path}: probs shape {outs['probs']} does not match {n_classes} classes")
    return _normalization(card, nf) if name == "xs" else None


def _normalization(card: ModelCard, nf: int) -> Normalization:
    """The card's ``normalization`` (the graph has none inside): ``nf`` finite means and
    finite, non-zero inverse standard deviations, or a ModelError naming the card."""
    norm = card.require("normalization", dict)
    vecs = []
    for field in ("mean", "inv_std"):
        v = norm.get(field)
        ok = isinstance(v, list) and len(v) == nf and all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)
        arr = np.asarray(v, dtype=np.float32) if ok else np.zeros(0, dtype=np.float32)
        if not ok or not np.isfinite(arr).all() or (field == "inv_std" and (arr == 0).any()):
            raise ModelError(f"{card.path}: normalization.{field} must be {nf} finite numbers"
                             f"{' (none zero)' if field == 'inv_std' else ''}: the graph "
                             "takes normalized windows")
        vecs.append(arr)
    return Normalization(mean=vecs[0], inv_std=vecs[1])


def _fill_object(lists: list[list[str]]) -> np.ndarray:
    return np.fromiter(lists, dtype=object, count=len(lists))


def context_uids(att: np.ndarray, mask: np.ndarray, uids: np.ndarray, k: int = CONTEXT_FLOWS) -> np.ndarray:
    """Object array ``[B]`` of lists: uids of the ``k`` most attended previous valid flows."""
    b, n = att.shape
    if b == 0 or n < 2:
        return _fill_object([[] for _ in range(b)])
    k = min(k, n - 1)
    prev = np.where(mask[:, :-1], att[:, :-1], -np.inf)
    top = np.argsort(-prev, axis=1, kind="stable")[:, :k]
    rows = np.arange(b)[:, None]
    have = np.minimum(mask[:, :-1].sum(axis=1), k)
    return uid_lists(uids[:, :-1][rows, top], have)


def _context_rows(att: np.ndarray, w: Windows, rows: np.ndarray) -> np.ndarray:
    return context_uids(att[rows], w.mask[rows], w.uid_rows(rows))


class AmfScorer:
    """Scorer for an AMF-LSTM card (see the module docstring for the outputs)."""

    #: a batch's windows (and the context they give) are arrays made for that batch, never
    #: the store's buffers: valid after the next push (zeekml.runtime.lanes)
    results_survive_next_score = True

    def __init__(self, card: ModelCard, options: ScorerOptions | None = None) -> None:
        options = options or ScorerOptions()
        self.card = card
        self.options = options
        self.name = card.name
        classes, window, key = validate_card(card)
        self.classes = classes
        self.normal = classes.index("normal")
        #: what --threshold may name, and the range its scores (1 - P(normal)) live in
        self.notice_classes = tuple(c for c in classes if c != "normal")
        self.score_range = (0.0, 1.0)
        # one onnxruntime thread per graph call, ``options.threads`` calls at once
        self.session = open_session(card.graph(), 1)
        self.chunks = GraphChunks(options.threads, self.name)
        self.norm = _check_graph(self.session, card, window, len(classes))
        self.windows = HostWindows(
            window, key, max_hosts=options.max_hosts, idle_timeout=options.idle_timeout,
            fanout=uses_fanout(card),
        )
        self._thr = class_thresholds(card.thresholds, classes)
        unknown = card.data.get(UNKNOWN_KEY)
        self._thr_unknown = None if unknown is None else class_thresholds(unknown, classes)
        self._names = np.array(classes, dtype=object)

    def infer(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph on raw windows ``x [B, n, F]`` in chunks of
        ``options.batch_size``: (probs, attention)."""
        norm = self.norm
        if norm is None:
            return self._run(lambda s, e: x[s:e], mask)
        return self._run(lambda s, e: time_major(x[s:e], mask[s:e], norm), mask)

    def infer_windows(self, w: Windows) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`infer` on a batch of windows, each chunk assembled just before its graph
        call (it is still in cache when the graph reads it)."""
        norm = self.norm
        if norm is None:
            return self._run(w.x_rows, w.mask)
        return self._run(lambda s, e: w.xs_rows(s, e, norm), w.mask)

    def _run(self, rows_x: Callable[[int, int], np.ndarray],
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rows_x(start, stop)``: the graph's window input for those rows.

        With several threads each chunk's windows are assembled by the thread that runs
        its graph call (:class:`~zeekml.models.session.GraphChunks`); with one, the next
        chunk is assembled in a helper thread while the graph runs this one (numpy and
        onnxruntime both release the GIL: one after the other they took about half of
        this scorer's time each).
        """
        bs = self.options.batch_size
        b = len(mask)
        probs = np.empty((b, len(self.classes)), dtype=np.float32)
        att = np.empty(mask.shape, dtype=np.float32)
        m = mask.astype(np.float32)
        name = "x" if self.norm is None else "xs"

        def chunk(s: int) -> np.ndarray:
            return np.ascontiguousarray(rows_x(s, s + bs), dtype=np.float32)

        def run(s: int, x: np.ndarray) -> None:
            p, a = self.session.run(["probs", "attention"], {name: x, "mask": m[s : s + bs]})
            probs[s : s + bs] = p
            att[s : s + bs] = a

        starts = range(0, b, bs)
        ahead = self.chunks.helper() if b > bs else None
        if ahead is None:
            self.chunks.run(lambda s: run(s, chunk(s)), starts)
            return probs, att
        nxt: Future[np.ndarray] | None = ahead.submit(chunk, 0)
        for s in starts:
            x = chunk(s) if nxt is None else nxt.result()
            nxt = ahead.submit(chunk, s + bs) if s + bs < b else None
            run(s, x)
        return probs, att

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        feats = flow_features(flows)
        w = self.windows.push(flows, feats)
        probs, att = self.infer_windows(w)
        b = len(probs)
        score = 1.0 - probs[:, self.normal].astype(np.float64)
        masked = probs.copy()
        masked[:, self.normal] = -1.0
        cls_i = masked.argmax(axis=1) if b else np.zeros(0, dtype=np.int64)
        # the runner-up attack class: neither the candidate nor normal (P(normal) = 1 - score)
        masked[np.arange(b), cls_i] = -1.0
        alt_i = masked.argmax(axis=1) if b else np.zeros(0, dtype=np.int64)
        has_alt = masked[np.arange(b), alt_i] >= 0.0  # a model with one attack class has none
        alt = self._names[alt_i].copy()
        alt[~has_alt] = None
        return ScoreBatch(
            model=self.name,
            score=score,
            cls=self._names[cls_i],
            threshold=self._thresholds(cls_i, feats),
            extra={
                "alt": alt,
                "alt_score": np.where(has_alt, probs[np.arange(b), alt_i], np.nan),
                "context": Deferred(b, partial(_context_rows, att, w)),
            },
        )

    def _thresholds(self, cls_i: np.ndarray, feats: np.ndarray) -> np.ndarray:
        if self._thr_unknown is None:
            return self._thr[cls_i]
        return np.where(payload_unknown(feats), self._thr_unknown[cls_i], self._thr[cls_i])

    def state_dict(self) -> dict[str, np.ndarray]:
        state = self.windows.state_dict()
        state["window_key"] = np.array(self.windows.key)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if "window_key" in state and str(np.asarray(state["window_key"])) != self.windows.key:
            raise StateError(
                f"window state was keyed by {str(np.asarray(state['window_key']))!r}, "
                f"model {self.name!r} uses {self.windows.key!r}"
            )
        self.windows.load_state_dict({k: v for k, v in state.items() if k != "window_key"})
