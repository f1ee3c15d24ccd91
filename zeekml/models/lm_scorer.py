"""Runtime scorer for the flow language model (ONNX + card); needs no torch.

Per batch of canonical flows: the card's tokenizer turns each flow into its per-flow
word key, :class:`~zeekml.windows.conversation.ConversationWindows` (the code the
trainer used) returns each flow's conversation window, the tokenizer turns windows
into word ids and component codes, and onnxruntime scores the windows in chunks of
``options.batch_size``. Identical windows inside a batch (a scanner's thousand
identical probes, a device's identical keep-alives) are scored once.

Design measured (``tools/bench_flow_lm.py``, onnxruntime at 2 threads): the exported
graph scores a whole window ``[B, T + 1]`` per call, rather than a single-step graph
carrying the LSTM state per conversation. The window graph costs ``T`` LSTM steps per
flow but takes a whole batch in one call and needs no per-conversation float state;
the step graph needs one call per position of a conversation inside the batch. On 40k
flows of the rita archive (T = 4): window 382k flows/s, window + dedupe 796k, step
82k (6,593 calls); with a T = 16 model: 103k, 247k, 83k.

Per flow (see :class:`~zeekml.models.base.ScoreBatch`):

``score``      the card's score rule (:mod:`zeekml.models.lm_score`) over the
               negative log-likelihoods (nats) of the flow's word given the previous
               ``T`` words of its conversation (``nll``) and given no context
               (``nll0``), and the word's unigram rarity (higher = more surprising)
``cls``        ``"anomaly"``
``threshold``  the card's threshold (a false-alarm rate on benign flows, see the card)
``alt``        the word the model expected most (readable, e.g. ``out tcp ssl 443 sf ...``;
               greedy over the word's components)
``alt_score``  that word's probability
``context``    uids of up to 5 previous flows of the conversation, newest first

The card is untrusted: kind, context length, tokenizer spec (components, edges,
vocabulary codes) and the graph's input and output names and shapes are checked
before anything is scored.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import numpy as np
import onnxruntime as ort
import pandas as pd

from zeekml.errors import ModelError
from zeekml.features.tokens import Tokenizer, TokenizerSpec
from zeekml.models.base import Deferred, ScoreBatch
from zeekml.models.card import ModelCard
from zeekml.models.context import uid_lists
from zeekml.models.lm_score import ScoreRule, Unigram
from zeekml.models.registry import ScorerOptions
from zeekml.models.session import GraphChunks, open_session
from zeekml.windows.conversation import KEY_NAME, ConversationWindow, ConversationWindows

log = logging.getLogger(__name__)

KIND = "flow_lm"
CLS = "anomaly"
CONTEXT_FLOWS = 5
MAX_CONTEXT = 512
INPUTS = ("words", "parts")
OUTPUTS = ("nll", "nll0", "alt", "alt_p")


def validate_card(card: ModelCard) -> tuple[int, TokenizerSpec]:
    """Check the LM-specific card fields; return (context, tokenizer spec)."""
    if card.kind != KIND:
        raise ModelError(f"{card.path}: model kind is {card.kind!r}, not {KIND!r}")
    context = card.require("context", int)
    if not 1 <= context <= MAX_CONTEXT:
        raise ModelError(f"{card.path}: context {context} out of range 1..{MAX_CONTEXT}")
    conv = card.require("conversation", dict)
    if conv.get("key") != KEY_NAME:
        raise ModelError(f"{card.path}: conversation key {conv.get('key')!r} is not {KEY_NAME!r}")
    try:
        spec = TokenizerSpec.from_json(card.require("tokenizer", dict))
    except ModelError as exc:
        raise ModelError(f"{card.path}: {exc}") from exc
    if CLS not in card.thresholds:
        raise ModelError(f"{card.path}: model card has no threshold for {CLS!r}")
    return context, spec


def _check_graph(sess: ort.InferenceSession, card: ModelCard, context: int, n_parts: int) -> None:
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    if set(ins) != set(INPUTS) or not set(OUTPUTS) <= set(outs):
        raise ModelError(
            f"{card.onnx_path}: graph inputs {sorted(ins)} / outputs {sorted(outs)}, expected "
            "words, parts -> nll, nll0, alt, alt_p (a model from an older zeekml: retrain it)"
        )
    if list(ins["words"][1:]) != [context + 1] or list(ins["parts"][1:]) != [context + 1, n_parts]:
        raise ModelError(
            f"{card.onnx_path}: input shapes {ins['words']}, {ins['parts']} do not match "
            f"context {context} with {n_parts} token components"
        )
    if list(outs["alt"][1:]) != [n_parts]:
        raise ModelError(f"{card.onnx_path}: alt shape {outs['alt']} is not [batch, {n_parts}]")


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of first occurrences, inverse) of the distinct rows of a 2-D int array."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a = np.ascontiguousarray(a)
    void = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, first, inv = np.unique(void, return_index=True, return_inverse=True)
    return first, inv.ravel()


def previous_uids(uids: np.ndarray, valid: np.ndarray, k: int = CONTEXT_FLOWS) -> np.ndarray:
    """Object array ``[B]`` of lists: uids of up to ``k`` previous flows, newest first."""
    if len(uids) == 0:
        return np.empty(0, dtype=object)
    prev = uids[:, :-1][:, ::-1][:, :k]
    ok = valid[:, :-1][:, ::-1][:, :k]
    # valid positions are contiguous from the newest end, so a count says which are real
    have = np.cumprod(ok, axis=1).sum(axis=1)
    return uid_lists(prev, have)


def _previous_rows(w: ConversationWindow, rows: np.ndarray) -> np.ndarray:
    return previous_uids(w.uid_rows(rows)[:, 1:], w.valid[rows, 1:])


class LmScorer:
    """Scorer for a flow LM card (see the module docstring for the outputs)."""

    #: a batch's windows (and the context they give) are arrays made for that batch, never
    #: the store's buffers: valid after the next push (zeekml.runtime.lanes)
    results_survive_next_score = True

    def __init__(self, card: ModelCard, options: ScorerOptions | None = None) -> None:
        options = options or ScorerOptions()
        self.card = card
        self.options = options
        self.name = card.name
        self.context, spec = validate_card(card)
        self.tokenizer = Tokenizer(spec)
        # one onnxruntime thread per graph call, ``options.threads`` calls at once
        self.session = open_session(card.graph(), 1)
        self.chunks = GraphChunks(options.threads, self.name)
        _check_graph(self.session, card, self.context, len(spec.components))
        trained = card.data["conversation"].get("idle_timeout")
        if isinstance(trained, (int, float)) and float(trained) != options.idle_timeout:
            log.warning(
                "%s: trained with an idle timeout of %ss, running with %ss: the 'first flow "
                "of a conversation' word changes meaning", card.name, trained, options.idle_timeout,
            )
        self.conversations = ConversationWindows(
            self.context, max_keys=options.max_hosts, idle_timeout=options.idle_timeout
        )
        self.threshold = float(card.threshold_for(CLS))
        #: what --threshold may name, and the range of its scores (NLL in nats)
        self.notice_classes = (CLS,)
        self.score_range = (0.0, math.inf)
        self.rule = ScoreRule.from_card(card)
        self.unigram = Unigram(card, spec.vocab_size, self.tokenizer.radices)

    def words(
        self, flows: pd.DataFrame, keys: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Push a batch into the conversation store: (words, parts, uids, valid).

        ``keys`` overrides the conversation key per row (evaluation scores each row
        of a random sample as a conversation of its own).
        """
        codes = self.tokenizer.flow_codes(flows)
        w = self.conversations.push(flows, codes, keys)
        words, parts = self.tokenizer.window_words(w.code, w.ts, w.valid)
        return words, parts, w.uids[:, 1:], w.valid[:, 1:]

    def infer(
        self, words: np.ndarray, parts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(nll, nll0, alt codes, alt probability) of each window; identical windows run once."""
        b = len(words)
        flat = np.concatenate([words, parts.reshape(b, -1)], axis=1)
        first, inv = unique_rows(flat)
        nll, nll0, alt, alt_p = self._run(words[first], parts[first])
        return nll[inv], nll0[inv], alt[inv], alt_p[inv]

    def _run(
        self, uw: np.ndarray, up: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The graph over windows as given, in chunks of ``options.batch_size``
        (:class:`~zeekml.models.session.GraphChunks`: ``options.threads`` at once)."""
        n, bs = len(uw), self.options.batch_size
        nll = np.empty(n, dtype=np.float32)
        nll0 = np.empty(n, dtype=np.float32)
        alt = np.empty((n, up.shape[2]), dtype=np.int64)
        alt_p = np.empty(n, dtype=np.float32)

        def call(s: int) -> None:
            n_, n0_, a_, p_ = self.session.run(
                list(OUTPUTS), {"words": uw[s : s + bs], "parts": up[s : s + bs]}
            )
            nll[s : s + bs], nll0[s : s + bs], alt[s : s + bs], alt_p[s : s + bs] = n_, n0_, a_, p_

        self.chunks.run(call, range(0, n, bs))
        return nll, nll0, alt, alt_p

    def terms(
        self, words: np.ndarray, parts: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The score's terms per window (float64), plus alt codes and alt probability."""
        if len(words):
            nll, nll0, alt, alt_p = self.infer(words, parts)
            uni = self.unigram.score(words, parts)
        else:
            nll = nll0 = alt_p = uni = np.zeros(0)
            alt = np.zeros((0, parts.shape[2]), np.int64)
        out = {"nll": nll.astype(np.float64), "nll0": nll0.astype(np.float64),
               "unigram": np.asarray(uni, dtype=np.float64)}
        return out, alt, np.asarray(alt_p, dtype=np.float64)

    def flow_terms(
        self, flows: pd.DataFrame, keys: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, ConversationWindow]:
        """Push a batch and compute every row's score terms (float64), alt codes and alt
        probability, plus the batch's conversation windows (uids, validity).

        Windows with the same word keys (most of a busy network's) are turned into words,
        run through the graph and scored once, then spread back: what :meth:`score`, the
        leave-one-capture-out scorer and ``zeekml eval`` all use. ``keys`` as in
        :meth:`words`."""
        w = self.conversations.push(flows, self.tokenizer.flow_codes(flows), keys)
        wkeys = self.tokenizer.window_keys(w.code, w.ts, w.valid)
        first, inv = unique_rows(wkeys)
        words, parts = self.tokenizer.key_words(wkeys[first])
        if len(first):
            nll, nll0, alt, alt_p = self._run(words, parts)
            uni = self.unigram.score(words, parts)
        else:
            nll = nll0 = alt_p = uni = np.zeros(0, dtype=np.float32)
            alt = np.zeros((0, parts.shape[2]), np.int64)
        terms = {"nll": nll.astype(np.float64)[inv], "nll0": nll0.astype(np.float64)[inv],
                 "unigram": np.asarray(uni, dtype=np.float64)[inv]}
        return terms, alt[inv], alt_p.astype(np.float64)[inv], w

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        b = len(flows)
        t, alt, alt_p, w = self.flow_terms(flows)
        return ScoreBatch(
            model=self.name,
            score=self.rule.combine(t["nll"], t["nll0"], t["unigram"]),
            cls=np.full(b, CLS, dtype=object),
            threshold=np.full(b, self.threshold, dtype=np.float64),
            extra={
                "alt": self.tokenizer.codes_text(alt),
                "alt_score": alt_p,
                "context": Deferred(b, partial(_previous_rows, w)),
            },
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.conversations.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.conversations.load_state_dict(state)
