"""Labeled captures -> AMF-LSTM training windows, through the runtime's own code.

One feature path: every capture is read by :mod:`zeekml.sources` (the runtime's
readers), featurized by :func:`~zeekml.features.flow_stats.flow_features` and windowed
by a *fresh* :class:`~zeekml.windows.host_window.HostWindows` in file order, exactly
as ``zeekml score`` would see that file. Every flow is pushed (Background and
unlabeled flows too: they are part of a host's real history); only labeled flows
become training targets.

Captures, not rows, are the unit of every split:

* each file is one capture, named by its path;
* a file that is a copy of another (same flows: >= 90% of the smaller file's uids
  appear in the other, e.g. IoT-23 34-1 as Zeek log and as CSV conversion) is
  dropped, keeping the original Zeek log over a ``.csv`` conversion;
* CICFlowMeter CSVs (CICIDS2017) are *random per-class samples*: consecutive rows
  are not a host's consecutive flows, so their windows would be fiction. Their
  flows are used as context-free windows (only the flow itself is valid, as for a
  host's first flow), and files are grouped into one capture per calendar day (the
  original dataset is one capture per day), so a LOCO fold never trains on one
  DoS tool's sample and tests on another's from the same day and victim.

With ``drop_contradicted``, labels a capture contradicts are not trusted
(:func:`contradicted_benign`): a flow labeled benign between two hosts whose other
labeled flows in the same capture are nearly all malicious is left out of training and
of every figure, like a Background flow (it stays in the hosts' history and is scored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import FormatError
from zeekml.features.flow_stats import flow_features
from zeekml.records.labels import CLASSES, targets
from zeekml.windows.host_window import HostWindows, standalone

log = logging.getLogger(__name__)

#: :func:`contradicted_benign`: a host pair with at least this many malicious flows...
CONTRADICTION_MIN_MALICIOUS = 10
#: ... making up at least this share of its labeled flows in the capture
CONTRADICTION_SHARE = 0.9


def contradicted_benign(df: pd.DataFrame, binary: np.ndarray) -> np.ndarray:
    """Rows labeled benign (``binary == 0``) whose host pair (either direction) has at
    least :data:`CONTRADICTION_MIN_MALICIOUS` malicious flows making up at least
    :data:`CONTRADICTION_SHARE` of its labeled flows in this capture.

    Why: per-flow labels of public captures are set by rules over addresses, ports and
    times, and they miss flows. In IoT-23 34-1 an infected device's 11,169 IRC flows to
    its C&C server are labeled C&C and its 65 HTTP flows to the same server benign; as
    benign flows they set the C&C and port-scan thresholds (40 of the 95 benign
    out-of-fold alarms of the model shipped on 2026-12-05 were such flows). Such a label
    says nothing reliable either way, so the flow is neither trained on nor counted.
    """
    n = len(df)
    out = np.zeros(n, dtype=bool)
    labeled = binary >= 0
    if not n or not (binary == 1).any() or not (binary == 0).any():
        return out
    a = df["orig_h"].astype("str").fillna("").to_numpy(dtype=object)
    b = df["resp_h"].astype("str").fillna("").to_numpy(dtype=object)
    swap = a > b
    pair = pd.MultiIndex.from_arrays([np.where(swap, b, a), np.where(swap, a, b)])
    codes = pd.factorize(pair)[0]
    malicious = np.bincount(codes, weights=(binary == 1), minlength=codes.max() + 1)
    total = np.bincount(codes, weights=labeled, minlength=codes.max() + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = (malicious >= CONTRADICTION_MIN_MALICIOUS) & (malicious >= CONTRADICTION_SHARE * total)
    out = bad[codes] & (binary == 0)
    return out


def trusted_targets(df: pd.DataFrame, drop_contradicted: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~zeekml.records.labels.targets`, with the benign labels the capture
    contradicts (:func:`contradicted_benign`) set to -1 (not used) like Background
    (unless ``drop_contradicted`` is False: the labels as they are)."""
    binary, y = targets(df, CLASSES)
    if not drop_contradicted:
        return binary, y
    drop = contradicted_benign(df, binary)
    if drop.any():
        log.info("%d benign labels contradicted by their host pair's malicious flows: not used",
                 int(drop.sum()))
        binary, y = binary.copy(), y.copy()
        binary[drop] = -1
        y[drop] = -1
    return binary, y

DUPLICATE_OVERLAP = 0.9
_CICFLOW_MARKERS = ("Flow ID", "Src IP", "Flow Duration")


@dataclass
class Capture:
    """One labeled input file and the capture (LOCO unit) it belongs to."""

    path: str
    group: str
    flows: pd.DataFrame
    sampled: bool = False

    @property
    def rows(self) -> int:
        return len(self.flows)


@dataclass
class WindowSet:
    """Windows of labeled flows of several captures, aligned row by row."""

    x: np.ndarray  # [N, n, F] float32
    mask: np.ndarray  # [N, n] bool
    y: np.ndarray  # [N] class index, -1 = malicious without class
    binary: np.ndarray  # [N] 1 malicious / 0 benign
    group: np.ndarray  # [N] capture (group) name, object
    uids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype="S20"))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, sel: np.ndarray) -> WindowSet:
        return WindowSet(self.x[sel], self.mask[sel], self.y[sel], self.binary[sel], self.group[sel],
                         self.uids[sel] if len(self.uids) else self.uids,
                         self.row[sel] if len(self.row) else self.row)

    def concat(self, *others: WindowSet) -> WindowSet:
        """This set's rows, then each of ``others``' (same window length and features)."""
        parts = (self, *others)

        def cat(name: str) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            if name in ("uids", "row") and any(len(a) != len(p) for a, p in zip(arrays, parts,
                                                                                 strict=True)):
                return np.zeros((0,) + arrays[0].shape[1:], dtype=arrays[0].dtype)
            return np.concatenate(arrays)

        return WindowSet(cat("x"), cat("mask"), cat("y"), cat("binary"), cat("group"),
                         cat("uids"), cat("row"))


def is_cicflowmeter(path: str | Path) -> bool:
    """True when the file's first line is a CICFlowMeter CSV header (content, not name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.readline(defaults.SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return sum(m in head for m in _CICFLOW_MARKERS) >= 2


def _default_reader(path: str) -> pd.DataFrame:
    from zeekml.sources.open import read_table

    return read_table([path])


def _uid_set(df: pd.DataFrame) -> set[str]:
    return set(df["uid"].dropna().astype(str).tolist())


def _day_group(df: pd.DataFrame, path: str) -> str:
    ts = df["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    ts = ts[np.isfinite(ts)]
    days = np.unique(pd.to_datetime(ts, unit="s", utc=True).strftime("%Y-%m-%d")) if len(ts) else []
    if len(days) == 1:
        return f"cicflowmeter:{days[0]}"
    return f"cicflowmeter:{Path(path).name}"


def load_captures(
    paths: Sequence[str | Path], reader: Callable[[str], pd.DataFrame] | None = None
) -> list[Capture]:
    """Read every labeled file; drop copies; assign captures (see the module docstring).

    Files without label columns, or whose every row is excluded, are skipped with a
    log line (they cannot train a supervised model).
    """
    read = reader or _default_reader
    files = _expand(paths)
    caps: list[Capture] = []
    uid_sets: list[set[str]] = []
    # originals first: a .csv conversion is the copy when both exist
    for path in sorted(files, key=lambda p: (p.endswith(".csv"), p)):
        df = read(path)
        if "label" not in df.columns:
            log.info("%s: no label columns, not used for training", path)
            continue
        binary, _ = targets(df)
        if not (binary >= 0).any():
            log.info("%s: no usable labels (all Background/Unknown), not used", path)
            continue
        uids = _uid_set(df)
        dup = next(
            (c.path for c, u in zip(caps, uid_sets, strict=True)
             if uids and u and len(uids & u) >= DUPLICATE_OVERLAP * min(len(uids), len(u))),
            None,
        )
        if dup is not None:
            log.warning("%s: same flows as %s, dropped as a copy", path, dup)
            continue
        sampled = is_cicflowmeter(path)
        group = _day_group(df, path) if sampled else path
        caps.append(Capture(path=path, group=group, flows=df, sampled=sampled))
        uid_sets.append(uids)
    if not caps:
        raise FormatError("no labeled captures among the inputs")
    # sort back into the caller's order
    order = {p: i for i, p in enumerate(files)}
    caps.sort(key=lambda c: order[c.path])
    return caps


def _expand(paths: Sequence[str | Path]) -> list[str]:
    try:
        from zeekml.sources.open import expand_inputs

        return [str(p) for p in expand_inputs([str(p) for p in paths])]
    except ImportError:
        out: list[str] = []
        for p in map(Path, paths):
            out.extend(str(f) for f in sorted(p.rglob("*")) if f.is_file()) if p.is_dir() else out.append(str(p))
        return out


def capture_windows(cap: Capture, n: int, key: str, fanout: bool = False,
                    drop_contradicted: bool = False) -> WindowSet:
    """Windows of one capture's labeled flows (fresh HostWindows, file order)."""
    df = cap.flows
    feats = flow_features(df)
    hw = HostWindows(n, key, max_hosts=1_000_000, idle_timeout=3600.0, fanout=fanout)
    w = hw.push(df, feats)
    if cap.sampled:
        # random samples: no real history. Keep only the flow itself, which is the
        # window a host's first flow has.
        w = standalone(w)
    x, mask = w.x, w.mask
    binary, y = trusted_targets(df, drop_contradicted)
    keep = binary >= 0
    return WindowSet(
        x=x[keep], mask=mask[keep], y=y[keep], binary=binary[keep].astype(np.int8),
        group=np.full(int(keep.sum()), cap.group, dtype=object), uids=w.uids[keep],
    )


def build_windows(caps: Sequence[Capture], n: int, key: str, fanout: bool = False,
                  drop_contradicted: bool = False) -> WindowSet:
    """Windows of every capture, concatenated (captures stay contiguous)."""
    parts = [capture_windows(c, n, key, fanout, drop_contradicted) for c in caps]
    return WindowSet(
        x=np.concatenate([p.x for p in parts]),
        mask=np.concatenate([p.mask for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        binary=np.concatenate([p.binary for p in parts]),
        group=np.concatenate([p.group for p in parts]),
        uids=np.concatenate([p.uids for p in parts]),
    )


def stream_of(flows: pd.DataFrame) -> np.ndarray:
    """Per row, the input stream it was read from: an nfcapd file's directory (``zeekml
    score DIR`` reads a directory of nfcapd files as one stream), else the file."""
    if "source_file" not in flows.columns:
        return np.zeros(len(flows), dtype=np.int64)
    src = flows["source_file"].fillna("").astype(str)
    codes, uniques = pd.factorize(src)
    names = [str(Path(u).parent) if Path(u).name.startswith("nfcapd.") else str(u) for u in uniques]
    return pd.factorize(np.asarray(names, dtype=object)[codes])[0]


def corpus_capture_windows(cap, n: int, key: str, fanout: bool = False,
                           drop_contradicted: bool = False) -> WindowSet:
    """Windows of *every* row of a corpus capture (:class:`zeekml.eval.corpus.Capture`),
    in the capture's row order, as ``zeekml score`` would build them.

    Each input stream gets a fresh window store, fed in file order. Rows from random
    samples (``cap.sampled``) have no real history: they are never pushed into a
    store and are windowed alone (the window a host's first flow has). Rows the labels
    exclude keep ``binary == -1`` and ``y == -1``: they are part of the hosts' real
    history and are scored for the out-of-fold file, never trained on.
    """
    df = cap.flows
    feats = flow_features(df)
    n_rows = len(df)
    x = mask = uids = None
    streams = stream_of(df)
    sampled = np.asarray(cap.sampled, dtype=bool)
    parts = [(np.nonzero((streams == s) & ~sampled)[0], False) for s in np.unique(streams)]
    parts.append((np.nonzero(sampled)[0], True))
    for idx, alone in parts:
        if not len(idx):
            continue
        hw = HostWindows(n, key, max_hosts=1_000_000, idle_timeout=3600.0, fanout=fanout)
        sub = df.iloc[idx].reset_index(drop=True)
        w = standalone(hw.push(sub, feats[idx])) if alone else hw.push(sub, feats[idx])
        if x is None:
            x = np.zeros((n_rows, n, w.x.shape[2]), dtype=np.float32)
            mask = np.zeros((n_rows, n), dtype=bool)
            uids = np.zeros((n_rows, n), dtype=w.uids.dtype)
        x[idx], mask[idx], uids[idx] = w.x, w.mask, w.uids
    binary, y = trusted_targets(df, drop_contradicted)
    return WindowSet(x=x, mask=mask, y=y, binary=binary.astype(np.int8),
                     group=np.full(n_rows, cap.name, dtype=object), uids=uids,
                     row=np.arange(n_rows, dtype=np.int64))


def corpus_windows(caps, n: int, key: str, fanout: bool = False,
                   drop_contradicted: bool = False) -> WindowSet:
    """:func:`corpus_capture_windows` of every capture, concatenated (captures contiguous)."""
    parts = [corpus_capture_windows(c, n, key, fanout, drop_contradicted) for c in caps]
    return parts[0].concat(*parts[1:])


#: an input stream (file) is projected to its NetFlow view when it is not NetFlow (no
#: ``paired`` value) and at least this share of its TCP rows has a Zeek history (not a
#: CICFlowMeter export); its rows :func:`zeekml.sources.netflow_view.projectable` can
#: project are (IoT-23's zero-packet ``C`` flows are not: NetFlow has no such record)
VIEW_MIN_SHARE = 0.5


def netflow_view_captures(caps) -> list:
    """The labeled corpus captures' Zeek inputs, each as zeekml would have read it from
    NetFlow (:func:`zeekml.sources.netflow_view.netflow_view`, per input stream, same
    capture name, labels and sampled rows); NetFlow inputs (``paired`` set) have no
    other view. Every NetFlow capture of the shared corpus is an attack; these views are
    its benign NetFlow, for training and for measuring what a model does with benign
    traffic read as NetFlow."""
    from dataclasses import replace

    from zeekml.sources.netflow_view import netflow_view

    out = []
    for cap in caps:
        df = cap.flows
        if not cap.labeled or not len(df):
            continue
        streams = stream_of(df)
        sampled = np.asarray(cap.sampled, dtype=bool)
        netflow = df["paired"].notna().to_numpy()
        tcp = (df["proto"] == "tcp").to_numpy(dtype=bool, na_value=False)
        hist = df["history"].notna().to_numpy()
        views, marks = [], []
        for s in np.unique(streams):
            idx = np.flatnonzero(streams == s)
            t = idx[tcp[idx]]
            if netflow[idx].any() or (len(t) and hist[t].mean() < VIEW_MIN_SHARE):
                continue
            v = netflow_view(df.iloc[idx].reset_index(drop=True), path=f"{cap.name}.netflow")
            if not len(v):
                continue
            marks.append(sampled[idx][v["view_of"].to_numpy()])
            views.append(v.drop(columns=["view_of"]))
        if not views:
            continue
        flows = pd.concat(views, ignore_index=True)
        flows["source_file"] = flows["source_file"].astype(str) + ".netflow"
        out.append(replace(cap, flows=flows, sampled=np.concatenate(marks)))
    return out


def captures_from_files(paths: Sequence[str | Path], reader: Callable[[str], pd.DataFrame] | None = None):
    """Labeled files as corpus captures (:class:`zeekml.eval.corpus.Capture`), for
    ``zeekml train amf --data``: each file is its own capture, except CICFlowMeter
    samples, grouped by day (see :func:`load_captures`)."""
    from zeekml.eval.corpus import Capture as CorpusCapture
    from zeekml.records import schema

    by_group: dict[str, list[Capture]] = {}
    for c in load_captures(paths, reader):
        by_group.setdefault(c.group, []).append(c)
    out = []
    for name, items in by_group.items():
        flows = (schema.concat([c.flows for c in items]) if len(items) > 1 else items[0].flows)
        sampled = np.concatenate([np.full(c.rows, c.sampled) for c in items])
        out.append(CorpusCapture(name, flows.reset_index(drop=True), sampled,
                                 files=[c.path for c in items], labeled=True))
    return out
