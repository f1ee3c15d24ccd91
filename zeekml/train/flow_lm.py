"""The flow language model in PyTorch: data preparation, training, ONNX export, card.

Model: each word of a conversation window is embedded as its word embedding plus the
sum of its component embeddings (direction, protocol, service, port, state, sizes,
duration, gap: see :mod:`zeekml.features.tokens`), so a rare or ``<unk>`` word still
tells the model what kind of flow it was. One LSTM layer reads the ``T`` context
words; the next word's components are predicted by the chain rule (see
:class:`FlowLM`), which gives every possible word, seen in training or not, an exact
probability.

Score (what the exported graph returns): the negative log-likelihood in nats of the
current word given its context. The unigram baseline (``-log`` training frequency of
the word; an ``<unk>`` word backs off to the product of its components' training
frequencies, renormalized over the words outside the vocabulary) is stored in the
card so ``zeekml eval`` measures both on the same flows in the same run.

Why chain rule rather than a softmax over the vocabulary: with a word softmax every
unseen word is the same ``<unk>``, so an unseen benign word (a new network's
multicast, a new size bucket) costs as much as an attack; measured on held-out
captures it doubled the false-positive rate (see ``onnx_models/flow_lm.md``).

Training examples are all windows of the training captures (one per flow, the flow
itself as the target, exactly as the runtime builds them with
:class:`~zeekml.windows.conversation.ConversationWindows`); the last
``val_fraction`` of each capture (by row order, i.e. later in time) is held out for
early stopping and for the threshold.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from zeekml.features import tokens as tk
from zeekml.windows.conversation import ConversationWindows

log = logging.getLogger(__name__)

INPUT_NAMES = ("words", "parts")
OUTPUT_NAMES = ("nll", "alt", "alt_p")


@dataclass
class LmConfig:
    """Hyper-parameters of one training run (recorded in the card)."""

    context: int = 4
    embed: int = 32
    hidden: int = 64
    epochs: int | None = None  # None: auto, see auto_epochs
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.15
    quantile: float = 0.999
    idle_timeout: float = 3600.0
    threads: int = 2
    fit: tk.FitOptions = field(default_factory=tk.FitOptions)


def auto_epochs(n_windows: int, batch_size: int) -> int:
    """Enough epochs for about 3000 optimizer steps, between 3 and 20.

    Small captures need many passes; big ones converge in a few (and each pass costs
    more): measured on the shared captures, validation NLL stops improving well before
    3000 steps.
    """
    steps = max(1, math.ceil(n_windows / batch_size))
    return int(min(20, max(3, math.ceil(3000 / steps))))


# ------------------------------------------------------------------ data
@dataclass
class Windows:
    """All conversation windows of one capture: ``[N, T + 2]`` arrays."""

    code: np.ndarray
    ts: np.ndarray
    valid: np.ndarray
    n_train: int  # rows [0, n_train) train, the rest validation


def capture_windows(
    flows: pd.DataFrame, flow_codes: np.ndarray, cfg: LmConfig
) -> Windows:
    """Windows of one capture, built with the runtime's own conversation store."""
    cw = ConversationWindows(cfg.context, idle_timeout=cfg.idle_timeout)
    w = cw.push(flows, flow_codes)
    n = len(flows)
    n_val = int(round(n * cfg.val_fraction)) if n >= 10 else 0
    return Windows(w.code, w.ts, w.valid, n - n_val)


def fit_tokenizer(tables: list[pd.DataFrame], cfg: LmConfig) -> tuple[tk.TokenizerSpec, list[Windows]]:
    """Learn components, gap edges and vocabulary from the training part of every capture."""
    n_train = [len(t) - (int(round(len(t) * cfg.val_fraction)) if len(t) >= 10 else 0) for t in tables]
    train_rows = pd.concat([t.iloc[:k] for t, k in zip(tables, n_train, strict=True)], ignore_index=True)
    flow_comps = tk.fit_components(train_rows, np.zeros(0), cfg.fit)
    tok = tk.Tokenizer(tk.TokenizerSpec(flow_comps))
    wins = [capture_windows(t, tok.flow_codes(t), cfg) for t in tables]
    gaps = np.concatenate(
        [(w.ts[: w.n_train, -1] - w.ts[: w.n_train, -2])[w.valid[: w.n_train, -2]] for w in wins]
    )
    comps = tk.fit_components(train_rows, gaps, cfg.fit)
    # per-flow components are unchanged, so the window codes stay valid
    assert comps[:-1] == flow_comps[:-1]
    tok = tk.Tokenizer(tk.TokenizerSpec(comps))
    keys = []
    for w in wins:
        g = tk.gap_codes(w.ts[:, -1] - w.ts[:, -2], w.valid[:, -2], comps[-1].edges)
        keys.append(tok.keys(w.code[: w.n_train, -1], g[: w.n_train]))
    vocab = tk.build_vocab(np.concatenate(keys), cfg.fit.min_count)
    return tk.TokenizerSpec(comps, vocab), wins


def encode(tok: tk.Tokenizer, wins: list[Windows], part: str) -> tuple[np.ndarray, np.ndarray]:
    """``words [N, T+1]`` and ``parts [N, T+1, C]`` of the train or validation rows."""
    words, parts = [], []
    for w in wins:
        sl = slice(0, w.n_train) if part == "train" else slice(w.n_train, None)
        ids, p = tok.window_words(w.code[sl], w.ts[sl], w.valid[sl])
        words.append(ids)
        parts.append(p)
    return np.concatenate(words), np.concatenate(parts)


def marginals(parts_last: np.ndarray, radices: np.ndarray) -> list[np.ndarray]:
    """Smoothed (add-0.5) log frequency of every code of every component."""
    out = []
    for j, r in enumerate(radices.tolist()):
        c = np.bincount(parts_last[:, j], minlength=r)[:r].astype(np.float64) + 0.5
        out.append(np.log(c / c.sum()))
    return out


def unk_log_z(spec: tk.TokenizerSpec, log_marg: list[np.ndarray]) -> float:
    """log of the ``Q`` mass left to words outside the vocabulary (normalizer of Q)."""
    codes = tk.decode_keys(spec.vocab, spec.radices)
    known = np.exp(sum(m[codes[:, j]] for j, m in enumerate(log_marg))).sum() if len(codes) else 0.0
    return float(np.log(max(1.0 - known, 1e-6)))


def unigram_log_probs(words_last: np.ndarray, vocab_size: int) -> np.ndarray:
    """Context-free log P(word) from training counts (add-0.5; ``<pad>`` impossible)."""
    c = np.bincount(words_last, minlength=vocab_size)[:vocab_size].astype(np.float64) + 0.5
    c[tk.PAD] = 0.0
    with np.errstate(divide="ignore"):
        lp = np.log(c / c.sum())
    lp[tk.PAD] = -1e9
    return lp


def backoff(parts_last: np.ndarray, log_marg: list[np.ndarray], log_z: float) -> np.ndarray:
    """``log Q(word | <unk>)`` of each row's last word."""
    return sum(m[parts_last[:, j]] for j, m in enumerate(log_marg)) - log_z


def unigram_nll(words: np.ndarray, parts: np.ndarray, uni: np.ndarray,
                log_marg: list[np.ndarray], log_z: float) -> np.ndarray:
    """Unigram baseline score of each window's last word (nats)."""
    last = words[:, -1]
    lp = uni[last] + np.where(last == tk.UNK, backoff(parts[:, -1], log_marg, log_z), 0.0)
    return -lp


# ------------------------------------------------------------------ model
class FlowLM(nn.Module):
    """Embedding (word + components) -> LSTM -> factored word distribution.

    ``P(word | ctx) = prod_j P(c_j | c_1 .. c_{j-1}, ctx)`` over the word's components
    in :data:`~zeekml.features.tokens.COMPONENTS` order (chain rule, exact): head ``j``
    reads the LSTM state plus the embeddings of the components before ``j``. Every
    possible word has a probability, so an unseen but coherent combination of familiar
    parts is not punished as if it were random. ``forward`` returns ``(nll [B],
    alt [B, C], alt_p [B])``: the word's NLL in nats, the greedy most probable word
    (component codes) and its probability.
    """

    def __init__(
        self,
        vocab_size: int,
        radices: np.ndarray,
        *,
        embed: int = 32,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden = hidden
        self.radices = [int(r) for r in radices]
        offsets = np.concatenate([[0], np.cumsum(radices)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.tensor(offsets))
        total = int(np.sum(radices))
        self.word_emb = nn.Embedding(vocab_size, embed, padding_idx=tk.PAD)
        self.part_emb = nn.Embedding(total, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, hidden)
        self.cond_emb = nn.Embedding(total, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, r) for r in self.radices)

    def state(self, words: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """LSTM summary of the first ``T`` words of each window, ``[B, H]``."""
        ctx_w = words[:, :-1]
        ctx_p = parts[:, :-1, :] + self.offsets
        real = (ctx_w != tk.PAD).unsqueeze(-1).to(torch.float32)
        x = self.word_emb(ctx_w) + self.part_emb(ctx_p).sum(dim=2) * real
        b = words.shape[0]
        h0 = torch.zeros(1, b, self.hidden, dtype=x.dtype, device=x.device)
        c0 = torch.zeros(1, b, self.hidden, dtype=x.dtype, device=x.device)
        out, _ = self.lstm(x, (h0, c0))
        return self.proj(out[:, -1, :])

    def nll(self, words: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each window's last word, ``[B]`` (teacher forcing)."""
        base = self.state(words, parts)
        target = parts[:, -1, :]
        cond = base
        total = torch.zeros_like(base[:, 0])
        for j, head in enumerate(self.heads):
            logp = torch.log_softmax(head(torch.tanh(cond)), dim=-1)
            total = total - logp.gather(1, target[:, j : j + 1]).squeeze(1)
            cond = cond + self.cond_emb(target[:, j] + self.offsets[j])
        return total

    def forward(self, words: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        base = self.state(words, parts)
        target = parts[:, -1, :]
        cond, greedy = base, base
        nll = torch.zeros_like(base[:, 0])
        alt_lp = torch.zeros_like(base[:, 0])
        alts = []
        for j, head in enumerate(self.heads):
            logp = torch.log_softmax(head(torch.tanh(cond)), dim=-1)
            nll = nll - logp.gather(1, target[:, j : j + 1]).squeeze(1)
            cond = cond + self.cond_emb(target[:, j] + self.offsets[j])
            glp = torch.log_softmax(head(torch.tanh(greedy)), dim=-1)
            best, arg = glp.max(dim=1)
            alt_lp = alt_lp + best
            alts.append(arg)
            greedy = greedy + self.cond_emb(arg + self.offsets[j])
        return nll, torch.stack(alts, dim=1), alt_lp.exp()


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    model: FlowLM
    history: list[dict[str, float]]
    best_epoch: int
    val_nll: np.ndarray
    seconds: float
    epochs: int


def _batches(n: int, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    return [idx[i : i + size] for i in range(0, n, size)]


def predict_nll(model: FlowLM, words: np.ndarray, parts: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The model's score of every window (torch, no grad)."""
    model.eval()
    out = []
    with torch.no_grad():
        for sl in _batches(len(words), batch, None):
            nll, _, _ = model(torch.from_numpy(words[sl]), torch.from_numpy(parts[sl]))
            out.append(nll.numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_model(
    model: FlowLM,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: LmConfig,
) -> TrainResult:
    """Adam on the mean NLL of in-vocabulary targets; keep the epoch with the best val NLL."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epochs = cfg.epochs or auto_epochs(len(train[0]), cfg.batch_size)
    steps = max(1, epochs * math.ceil(len(train[0]) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    words_t, parts_t = (torch.from_numpy(a) for a in train)
    best = (math.inf, -1, None)
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for sl in _batches(len(words_t), cfg.batch_size, rng):
            idx = torch.from_numpy(sl)
            w, p = words_t[idx], parts_t[idx]
            loss = model.nll(w, p).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(sl)
            count += len(sl)
        val_nll = predict_nll(model, *val) if len(val[0]) else np.zeros(0)
        v = float(val_nll.mean()) if len(val_nll) else total / max(count, 1)
        history.append({"epoch": epoch + 1, "train_nll": total / max(count, 1), "val_nll": v})
        log.info("epoch %d: train NLL %.4f, validation NLL %.4f", epoch + 1, total / max(count, 1), v)
        if v < best[0]:
            best = (v, epoch + 1, {k: t.clone() for k, t in model.state_dict().items()})
    if best[2] is not None:
        model.load_state_dict(best[2])
    val_nll = predict_nll(model, *val) if len(val[0]) else np.zeros(0)
    return TrainResult(model, history, best[1], val_nll, time.perf_counter() - t0, epochs)


def export_step_graph(model: FlowLM, path: str) -> None:
    """Export the single-step stateful alternative: (prev word, its parts, word's parts,
    h, c) -> (nll, h, c), one LSTM step per call.

    Only for ``tools/bench_flow_lm.py``, which measures this design against the window
    graph the runtime uses.
    """
    from zeekml.train.export import export_onnx

    class Step(nn.Module):
        def __init__(self, m: FlowLM) -> None:
            super().__init__()
            self.m = m

        def forward(self, prev_w, prev_p, parts, h, c):  # type: ignore[no-untyped-def]
            m = self.m
            real = (prev_w != tk.PAD).unsqueeze(-1).to(torch.float32)
            x = m.word_emb(prev_w) + m.part_emb(prev_p + m.offsets).sum(dim=1) * real
            out, (h2, c2) = m.lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
            cond = m.proj(out[:, -1, :])
            nll = torch.zeros_like(cond[:, 0])
            for j, head in enumerate(m.heads):
                logp = torch.log_softmax(head(torch.tanh(cond)), dim=-1)
                nll = nll - logp.gather(1, parts[:, j : j + 1]).squeeze(1)
                cond = cond + m.cond_emb(parts[:, j] + m.offsets[j])
            return nll, h2.squeeze(0), c2.squeeze(0)

    b = 4
    n_parts = len(model.radices)
    ex = {
        "prev_w": np.ones(b, dtype=np.int64),
        "prev_p": np.zeros((b, n_parts), dtype=np.int64),
        "parts": np.zeros((b, n_parts), dtype=np.int64),
        "h": np.zeros((b, model.hidden), dtype=np.float32),
        "c": np.zeros((b, model.hidden), dtype=np.float32),
    }
    export_onnx(Step(model).eval(), ex, ["nll", "h_out", "c_out"], path)
