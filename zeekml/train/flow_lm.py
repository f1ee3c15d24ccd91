"""The flow language model in PyTorch: model, training, unigram baseline, ONNX outputs.

Model: each word of a conversation window is embedded as its word embedding plus the
sum of its component embeddings (direction, protocol, application family, state,
sizes, duration, gap: see :mod:`zeekml.features.tokens`), so a rare or ``<unk>`` word
still tells the model what kind of flow it was. One LSTM layer reads the ``T``
context words; the next word's components are predicted by the chain rule (see
:class:`FlowLM`), which gives every possible word, seen in training or not, an exact
probability.

The exported graph returns two negative log-likelihoods (nats) of the current word:
``nll`` given its conversation's previous words, and ``nll0`` given no context at all
(the model's own estimate of how rare the word is anywhere). Training blanks the
context of a share of the windows (``blank_share``) so that the model learns both.
How the runtime turns them (and the unigram baseline) into one score is the card's
``score`` rule (:mod:`zeekml.models.lm_score`).

The unigram baseline (``-log`` training frequency of the word; an ``<unk>`` word backs
off to the product of its components' training frequencies, renormalized over the
words outside the vocabulary) is stored in the card so ``zeekml eval`` measures both
on the same flows in the same run.

Why chain rule rather than a softmax over the vocabulary: with a word softmax every
unseen word is the same ``<unk>``, so an unseen benign word (a new network's
multicast, a new size bucket) costs as much as an attack; measured on held-out
captures it doubled the false-positive rate (see ``onnx_models/flow_lm.md``).

Training ends on validation, not on an epoch count: identical windows are trained
once with their count as weight (sampled in proportion to it), each epoch is a fixed
number of optimizer steps, and training stops when the validation NLL (the last
``val_fraction`` of each stream, never trained on) has not improved for ``patience``
epochs; the best epoch's weights are kept.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zeekml import defaults
from zeekml.features import tokens as tk

log = logging.getLogger(__name__)

INPUT_NAMES = ("words", "parts")
OUTPUT_NAMES = ("nll", "nll0", "alt", "alt_p")


@dataclass
class LmConfig:
    """Hyper-parameters of one training run (recorded in the card)."""

    context: int = 4
    embed: int = 32
    hidden: int = 64
    max_epochs: int = 60
    patience: int = 5
    steps_per_epoch: int | None = None  # None: auto_steps
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    blank_share: float = 0.2
    seed: int = 0
    val_fraction: float = 0.15
    fpr: float = 0.001
    min_flows_above: int = 50
    idle_timeout: float = 3600.0
    threads: int = defaults.THREADS
    max_rows_per_stream: int | None = 30000
    fit: tk.FitOptions = field(default_factory=tk.FitOptions)


def auto_steps(n_windows: int, batch_size: int) -> int:
    """Optimizer steps per epoch: one pass over the windows, between 20 and 100 steps
    (a small network's epoch is still enough steps to measure progress on; a big
    corpus is checked against validation every 100 steps)."""
    return int(min(100, max(20, math.ceil(n_windows / max(batch_size, 1)))))


# ------------------------------------------------------------------ unigram baseline
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
    nll0 [B], alt [B, C], alt_p [B])``: the word's NLL in nats given its context and
    given an empty context, the greedy most probable word (component codes) given the
    context, and its probability.
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

    def empty_state(self, words: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """The state of an all-``<pad>`` context (one row: it is the same for every flow)."""
        return self.state(torch.zeros_like(words[:1]), torch.zeros_like(parts[:1]))

    def word_nll(self, base: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``-log P(target | state)`` by the chain rule over components, ``[B]``."""
        cond = base.expand(target.shape[0], -1)
        total = torch.zeros_like(target[:, 0], dtype=cond.dtype)
        for j, head in enumerate(self.heads):
            logp = torch.log_softmax(head(torch.tanh(cond)), dim=-1)
            total = total - logp.gather(1, target[:, j : j + 1]).squeeze(1)
            cond = cond + self.cond_emb(target[:, j] + self.offsets[j])
        return total

    def nll(self, words: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each window's last word, ``[B]`` (teacher forcing)."""
        return self.word_nll(self.state(words, parts), parts[:, -1, :])

    def forward(self, words: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        base = self.state(words, parts)
        target = parts[:, -1, :]
        nll = self.word_nll(base, target)
        nll0 = self.word_nll(self.empty_state(words, parts), target)
        greedy = base
        alt_lp = torch.zeros_like(base[:, 0])
        alts = []
        for j, head in enumerate(self.heads):
            glp = torch.log_softmax(head(torch.tanh(greedy)), dim=-1)
            best, arg = glp.max(dim=1)
            alt_lp = alt_lp + best
            alts.append(arg)
            greedy = greedy + self.cond_emb(arg + self.offsets[j])
        return nll, nll0, torch.stack(alts, dim=1), alt_lp.exp()


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    model: FlowLM
    history: list[dict[str, float]]
    best_epoch: int
    epochs: int
    stopped_early: bool
    val_nll: np.ndarray
    seconds: float
    unique_train: int
    unique_val: int
    steps_per_epoch: int


def dedupe(words: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct windows and how often each occurs (a keep-alive repeated 10,000 times is
    one training example of weight 10,000)."""
    b = len(words)
    if b == 0:
        return words, parts, np.zeros(0, dtype=np.float64)
    flat = np.ascontiguousarray(np.concatenate([words, parts.reshape(b, -1)], axis=1))
    view = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first, counts = np.unique(view, return_index=True, return_counts=True)
    order = np.sort(first)  # keep stream order of first occurrences (deterministic)
    cnt = dict(zip(first.tolist(), counts.tolist(), strict=True))
    return words[order], parts[order], np.array([cnt[i] for i in order.tolist()], dtype=np.float64)


def predict(model: FlowLM, words: np.ndarray, parts: np.ndarray, batch: int = 8192,
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(nll, nll0)`` of every window (torch, no grad)."""
    model.eval()
    out, out0 = [], []
    with torch.no_grad():
        for i in range(0, len(words), batch):
            w, p = torch.from_numpy(words[i : i + batch]), torch.from_numpy(parts[i : i + batch])
            base = model.state(w, p)
            out.append(model.word_nll(base, p[:, -1, :]).numpy())
            out0.append(model.word_nll(model.empty_state(w, p), p[:, -1, :]).numpy())
    if not out:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(out).astype(np.float64), np.concatenate(out0).astype(np.float64)


def predict_nll(model: FlowLM, words: np.ndarray, parts: np.ndarray, batch: int = 8192) -> np.ndarray:
    """The model's contextual NLL of every window (torch, no grad)."""
    return predict(model, words, parts, batch)[0]


def _weighted_mean(model: FlowLM, w: torch.Tensor, p: torch.Tensor, c: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        total = 0.0
        for i in range(0, len(w), 8192):
            total += float((model.nll(w[i : i + 8192], p[i : i + 8192]) * c[i : i + 8192]).sum())
    return total / float(c.sum())


def train_model(
    model: FlowLM,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: LmConfig,
) -> TrainResult:
    """AdamW on the NLL of sampled windows; stop when validation NLL stops improving.

    Each epoch is ``steps_per_epoch`` (default :func:`auto_steps`) batches of windows drawn in proportion to their
    count; a share ``blank_share`` of them has its context blanked (so ``nll0`` is
    learned). After each epoch the count-weighted validation NLL is measured; two
    epochs without improvement halve the learning rate, ``patience`` end training,
    and the best epoch's weights are restored. Without validation rows the training
    rows stand in (a tiny input), which the card records.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    tw, tp, tc = dedupe(*train)
    vw, vp, vc = dedupe(*val) if len(val[0]) else (tw, tp, tc)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    words_t, parts_t = torch.from_numpy(tw), torch.from_numpy(tp)
    val_t = (torch.from_numpy(vw), torch.from_numpy(vp), torch.from_numpy(vc))
    prob = tc / tc.sum()
    steps = cfg.steps_per_epoch or auto_steps(len(train[0]), cfg.batch_size)
    best = (math.inf, 0, {k: t.clone() for k, t in model.state_dict().items()})
    history: list[dict[str, float]] = []
    bad = 0
    stopped = False
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        total = 0.0
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(tw), size=cfg.batch_size, p=prob))
            w, p = words_t[idx], parts_t[idx]
            if cfg.blank_share > 0:
                blank = torch.from_numpy(rng.random(len(idx)) < cfg.blank_share)
                if bool(blank.any()):
                    w, p = w.clone(), p.clone()
                    w[blank, :-1] = tk.PAD
                    p[blank, :-1, :] = 0
            loss = model.nll(w, p).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.item())
        v = _weighted_mean(model, *val_t)
        history.append({"epoch": epoch, "train_nll": total / steps, "val_nll": v})
        log.info("epoch %d: train NLL %.4f, validation NLL %.4f", epoch, total / steps, v)
        if v < best[0] - 1e-3:
            best = (v, epoch, {k: t.clone() for k, t in model.state_dict().items()})
            bad = 0
        else:
            bad += 1
            if bad == 2:
                for g in opt.param_groups:
                    g["lr"] *= 0.5
            if bad >= cfg.patience:
                stopped = True
                break
    model.load_state_dict(best[2])
    val_nll = predict_nll(model, *val) if len(val[0]) else np.zeros(0)
    return TrainResult(model, history, best[1], epoch, stopped, val_nll,
                       time.perf_counter() - t0, len(tw), len(vw), steps)


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
