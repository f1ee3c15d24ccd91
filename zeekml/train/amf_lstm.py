"""The AMF-LSTM (attention-based multi-flow LSTM) in PyTorch, and its training loop.

Model (after the paper's Fig. 1): the window of a host's last ``n`` flows, oldest
first, runs through one LSTM layer; an additive attention layer scores every output
step (masked positions get no weight); the attention-weighted sum of the outputs is
concatenated with the output at the current flow (the last step) and a small
classifier head turns it into class probabilities.

Feature normalization (per-feature mean and inverse standard deviation, computed over
valid window positions of the training data) is a pair of buffers applied inside
``forward``, and masked positions are zeroed after normalization, so ``forward`` takes
raw :func:`~zeekml.features.flow_stats.flow_features` windows exactly as
:class:`~zeekml.windows.host_window.HostWindows` returns them and returns ``(probs [B,
C], attention [B, n])``; graphs exported from it that way still load. The exported
graph is :class:`TimeMajorAmf`: the same weights fed normalized, time-major windows.

``attention=False`` gives the plain-LSTM baseline of the paper's comparison: the
classifier sees only the last LSTM output (its "attention" output is all weight on
the current flow, so both variants share one interface).
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
from zeekml.features.flow_stats import FEATURES

log = logging.getLogger(__name__)

NEG_INF = -1e9


class AmfLstm(nn.Module):
    """LSTM over a flow window + attention + softmax classifier."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden: int = 64,
        *,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden = hidden
        self.attention = attention
        mean = np.zeros(n_features) if mean is None else np.asarray(mean, dtype=np.float64)
        std = np.ones(n_features) if std is None else np.asarray(std, dtype=np.float64)
        inv = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 1.0)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.tensor(inv, dtype=torch.float32))
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.att = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        width = 2 * hidden if attention else hidden
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def logits(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalized class scores ``[B, C]`` and attention weights ``[B, n]``."""
        m = mask.to(x.dtype)
        z = (x - self.mean) * self.inv_std * m.unsqueeze(-1)
        h, _ = self.lstm(z)
        return self.head_logits(h, m)

    def head_logits(self, h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention and classifier over the LSTM outputs ``h [B, n, H]`` (``m``: the mask
        as floats): unnormalized class scores and attention weights."""
        last = h[:, -1, :]
        if not self.attention:
            a = torch.zeros_like(m)
            a[:, -1] = 1.0
            return self.head(last), a
        e = self.att(h).squeeze(-1) + (1.0 - m) * NEG_INF
        a = torch.softmax(e, dim=1)
        ctx = torch.sum(a.unsqueeze(-1) * h, dim=1)
        return self.head(torch.cat([ctx, last], dim=1)), a

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lg, a = self.logits(x, mask)
        return torch.softmax(lg, dim=1), a


class AmfEnsemble(nn.Module):
    """Mean of several :class:`AmfLstm` members (same data, different seeds).

    With a few dozen captures, which flows of an unseen capture a single model gets
    right depends visibly on the seed (leave-one-capture-out results of one capture
    swung between 0.49 and 0.99 F1 across seeds); averaging members' probabilities
    removes most of that variance. Exported as one graph with the same inputs and
    outputs as a single member: ``probs`` and ``attention`` are the members' means.
    """

    def __init__(self, members: list[AmfLstm]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.n_classes = members[0].n_classes
        self.n_features = members[0].n_features
        self.hidden = members[0].hidden

    @property
    def mean(self) -> torch.Tensor:
        return self.members[0].mean

    @property
    def inv_std(self) -> torch.Tensor:
        return self.members[0].inv_std

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x, mask) for m in self.members]
        k = float(len(outs))
        probs = outs[0][0]
        att = outs[0][1]
        for p, a in outs[1:]:
            probs = probs + p
            att = att + a
        return probs / k, att / k


class TimeMajorAmf(nn.Module):
    """The deployed form of an :class:`AmfLstm` or :class:`AmfEnsemble`: the same weights
    and outputs, fed ``xs [n, B, F]``, the windows time-major, already normalized
    (``(x - mean) * inv_std`` in float32) and zero at masked positions, plus the mask.

    Why: in the self-contained graph the normalization, the masking and the transpose to
    the LSTM's time-major layout ran per window position, ten times per flow, and took
    a quarter of the graph's time; the runtime now normalizes each flow's features once
    and writes the windows time-major as it assembles them
    (:meth:`zeekml.windows.host_window.Windows.xs_rows`). Those are the same float32
    operations in the same order, so the outputs are the self-contained graph's, bit for
    bit (tests/test_amf_scorer.py). The card carries ``mean`` and ``inv_std``.
    """

    def __init__(self, model: AmfLstm | AmfEnsemble) -> None:
        super().__init__()
        members = list(model.members) if isinstance(model, AmfEnsemble) else [model]
        for m in members[1:]:
            if not (torch.equal(m.mean, members[0].mean)
                    and torch.equal(m.inv_std, members[0].inv_std)):
                raise ValueError("ensemble members normalize differently: no shared input")
        self.members = nn.ModuleList(members)
        self.ensemble = isinstance(model, AmfEnsemble)
        self.lstms = nn.ModuleList()
        for m in members:  # the same weights, time-major: no transpose in the graph
            tm = nn.LSTM(m.lstm.input_size, m.lstm.hidden_size)
            tm.load_state_dict(m.lstm.state_dict())
            self.lstms.append(tm)
        self.register_buffer("mean", members[0].mean.clone())
        self.register_buffer("inv_std", members[0].inv_std.clone())

    def forward(self, xs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.to(xs.dtype)
        outs = []
        for member, lstm in zip(self.members, self.lstms, strict=True):
            h, _ = lstm(xs)
            lg, a = member.head_logits(h.transpose(0, 1), m)
            outs.append((torch.softmax(lg, dim=1), a))
        if not self.ensemble:
            return outs[0]
        k = float(len(outs))  # as AmfEnsemble.forward: the members' mean
        probs, att = outs[0]
        for p, a in outs[1:]:
            probs = probs + p
            att = att + a
        return probs / k, att / k


def normalization(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean/std over the valid positions of training windows."""
    v = x[mask.astype(bool)]
    if len(v) == 0:
        return np.zeros(x.shape[-1]), np.ones(x.shape[-1])
    v = v.astype(np.float64)
    return v.mean(axis=0), v.std(axis=0)


def sample_weights(
    y: np.ndarray, groups: np.ndarray, n_classes: int, normal_share: float = 0.5
) -> np.ndarray:
    """Per-row loss weights that balance classes and, within a class, captures.

    Each class gets an equal share of the total weight except ``normal`` (index 0),
    which gets ``normal_share`` (benign traffic is the most varied class and false
    positives are the costly error). Inside a class, each capture's share is
    proportional to the square root of its row count, so one large capture (IoT-23
    34-1's 14k DDoS flows) does not drown the others. Weights average 1.
    """
    w = np.zeros(len(y), dtype=np.float64)
    present = [c for c in range(n_classes) if (y == c).any()]
    attacks = [c for c in present if c != 0]
    for c in present:
        share = normal_share if c == 0 else (1 - normal_share) / max(len(attacks), 1)
        if 0 not in present or not attacks:
            share = 1.0 / len(present)
        rows = np.nonzero(y == c)[0]
        g, counts = np.unique(groups[rows], return_counts=True)
        gshare = np.sqrt(counts) / np.sqrt(counts).sum()
        per_row = dict(zip(g.tolist(), (gshare / counts).tolist(), strict=True))
        w[rows] = share * np.array([per_row[k] for k in groups[rows].tolist()])
    valid = y >= 0
    if valid.any():
        w[valid] *= valid.sum() / w[valid].sum()
    return w.astype(np.float32)


@dataclass
class TrainConfig:
    hidden: int = 64
    epochs: int = 8
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 1e-5
    seed: int = 0
    threads: int = defaults.THREADS
    attention: bool = True
    normal_share: float = 0.5
    ensemble: int = 1
    #: windows drawn per epoch, in proportion to their weights (0 = every window once,
    #: loss weighted). Drawing by weight shows the rare classes and captures as often
    #: as the weights say at a fraction of the cost of a full pass over large captures.
    samples_per_epoch: int = 0
    #: share of the windows of each training batch shown as NetFlow shows them: payload
    #: bytes unknown (see :func:`hide_payload_bytes`)
    hide_bytes: float = 0.0


#: the flow features NetFlow and Argus cannot give (payload bytes), and the indicator
#: that says so (their columns in a window's features)
PAYLOAD_FEATURES = ("log_orig_bytes", "log_resp_bytes")
PAYLOAD_MISSING = "bytes_missing"
_PAYLOAD_COLS = [FEATURES.index(name) for name in PAYLOAD_FEATURES]
_MISSING_COL = FEATURES.index(PAYLOAD_MISSING)


def hide_payload_bytes(x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x [B, n, F]`` with the windows ``rows`` (bool ``[B]``) as a NetFlow or Argus
    reader would give them: payload bytes unknown at every real position (0 and the
    missing indicator set, as :func:`~zeekml.features.flow_stats.flow_features` writes
    them). Every NetFlow capture of the shared corpus is an attack, so without this the
    model learns "payload bytes missing" as a sign of attack and flags benign NetFlow and
    Argus traffic (an Android phone's Argus day: 22% of its flows). Returns a copy."""
    x = x.clone()
    real = (mask > 0) & rows[:, None]
    for col in _PAYLOAD_COLS:
        x[..., col] = torch.where(real, 0.0, x[..., col])
    x[..., _MISSING_COL] = torch.where(real, 1.0, x[..., _MISSING_COL])
    return x


@dataclass
class TrainResult:
    model: AmfLstm
    seconds: float
    losses: list[float] = field(default_factory=list)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def train(
    x: np.ndarray,
    mask: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
) -> TrainResult:
    """Fit an :class:`AmfLstm` on windows ``x [N, n, F]`` with labels ``y`` (-1 = skip).

    Seeded and single-process; ``cfg.threads`` caps torch's intra-op threads (the
    machine is shared). Returns the model in eval mode.
    """
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    keep = y >= 0
    x, mask, y, groups = x[keep], mask[keep], y[keep], groups[keep]
    mean, std = normalization(x, mask)
    model = AmfLstm(x.shape[-1], n_classes, cfg.hidden, mean=mean, std=std, attention=cfg.attention)
    w = sample_weights(y, groups, n_classes, cfg.normal_share)
    # start from the (weighted) class priors: classes without training data begin
    # near probability 0 instead of 1/C, so a short run never predicts them
    prior = np.bincount(y, weights=w, minlength=n_classes) / max(float(w.sum()), 1e-9)
    with torch.no_grad():
        model.head[-1].bias.copy_(torch.tensor(np.log(np.maximum(prior, 1e-4)), dtype=torch.float32))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = cfg.samples_per_epoch or len(y)
    steps = cfg.epochs * math.ceil(per_epoch / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    mt = torch.from_numpy(mask.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    wt = torch.from_numpy(w)
    gen = torch.Generator().manual_seed(cfg.seed)
    lossf = nn.CrossEntropyLoss(reduction="none")
    losses: list[float] = []
    model.train()
    drawn = cfg.samples_per_epoch > 0
    ones = torch.ones(len(yt))
    for epoch in range(cfg.epochs):
        if drawn:
            perm = torch.multinomial(wt.double(), cfg.samples_per_epoch, replacement=True, generator=gen)
        else:
            perm = torch.randperm(len(yt), generator=gen)
        total, weight = 0.0, 0.0
        for s in range(0, len(perm), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            xb = xt[idx]
            if cfg.hide_bytes > 0:
                xb = hide_payload_bytes(xb, mt[idx],
                                        torch.rand(len(idx), generator=gen) < cfg.hide_bytes)
            lg, _ = model.logits(xb, mt[idx])
            bw = ones[idx] if drawn else wt[idx]
            loss = (lossf(lg, yt[idx]) * bw).sum() / bw.sum().clamp_min(1e-9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total += loss.item() * float(bw.sum())
            weight += float(bw.sum())
        losses.append(total / max(weight, 1e-9))
        log.info("epoch %d/%d loss %.4f", epoch + 1, cfg.epochs, losses[-1])
    model.eval()
    return TrainResult(model=model, seconds=time.perf_counter() - t0, losses=losses)


def train_ensemble(
    x: np.ndarray, mask: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int,
    cfg: TrainConfig,
) -> tuple[AmfEnsemble, float, list[list[float]]]:
    """``cfg.ensemble`` members with seeds ``cfg.seed``, ``cfg.seed + 1``, ...;
    returns (ensemble, seconds, losses per member)."""
    members, losses, seconds = [], [], 0.0
    for k in range(max(1, cfg.ensemble)):
        res = train(x, mask, y, groups, n_classes, TrainConfig(**{**cfg.__dict__, "seed": cfg.seed + k}))
        members.append(res.model)
        losses.append(res.losses)
        seconds += res.seconds
    return AmfEnsemble(members).eval(), seconds, losses


@torch.no_grad()
def predict(model: AmfLstm | AmfEnsemble, x: np.ndarray, mask: np.ndarray, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``[N, C]`` and attention ``[N, n]`` from the torch model (eval mode)."""
    model.eval()
    probs, atts = [], []
    for s in range(0, len(x), batch):
        p, a = model(torch.from_numpy(np.ascontiguousarray(x[s : s + batch], dtype=np.float32)),
                     torch.from_numpy(mask[s : s + batch].astype(np.float32)))
        probs.append(p.numpy())
        atts.append(a.numpy())
    if not probs:
        return np.zeros((0, model.n_classes), np.float32), np.zeros((0, x.shape[1]), np.float32)
    return np.concatenate(probs), np.concatenate(atts)
