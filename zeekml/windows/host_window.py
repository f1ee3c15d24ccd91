"""Per-host flow windows for the AMF-LSTM: ``[batch, n, features]`` plus a mask.

For each flow: the same host's previous ``n - 1`` flows and the flow itself, oldest
first, in log (arrival) order. Zeek writes conn.log in connection-*end* order, so
``ts`` is not monotonic inside a log; the window follows the order the log was
written, which makes a window independent of how the stream was cut into batches
(live tail, cron runs and Spark partitions agree), while every time gap is measured
with ``ts`` (log time, never the wall clock).

Window key (configurable): ``orig`` (originator address), ``resp`` (responder
address) or ``local`` (the side Zeek marks local, else the private-address side,
else the originator). The other side is the flow's *peer*.

Each window position carries the flow's :data:`~zeekml.features.flow_stats.FEATURES`
(with ``fanout``, then the flow's fan-out, :mod:`zeekml.windows.fanout`) plus the
:data:`RELATIONAL_FEATURES` against the current flow, which describe the host's behaviour
without encoding any address identity, e.g.:

``log_dt``         ``log1p`` of seconds between that flow and the current one;
``same_peer``      1 when that flow's peer is the current flow's peer;
``same_peer_port`` 1 when that flow's peer port is the current flow's peer port.

Storage per tracked host, at ``n = 10`` with 28 features: 9 x (28 x 2 bytes float16
features + 8 ts + 16 meta + 20 uid) = 900 bytes plus about 30 bytes of slot bookkeeping
(the key string and dict entry come on top); only the positions holding an item are
written (a host seen once maps one position). Features are stored as
float16, and the current flow's features are rounded the same way, so a value read
back from the store equals the value the flow had when it was current.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from zeekml.errors import StateError
from zeekml.features.flow_stats import FEATURES
from zeekml.records.addresses import is_private, private_values
from zeekml.records.distinct import factorized, per_distinct
from zeekml.windows.fanout import FANOUT_FEATURES, FanoutHistory, alone
from zeekml.windows.history import FieldSpec, KeyedHistory, KeySequences

WINDOW_KEYS = ("orig", "resp", "local", "local_dir")
RELATIONAL_FEATURES: tuple[str, ...] = (
    "log_dt", "same_peer", "same_peer_port", "same_service_port", "host_is_orig", "peer_repeat",
)
WINDOW_FEATURES: tuple[str, ...] = FEATURES + RELATIONAL_FEATURES
#: the window features of a model that also sees each flow's fan-out
#: (:mod:`zeekml.windows.fanout`): the flow's own features, its fan-out, the relations
FANOUT_WINDOW_FEATURES: tuple[str, ...] = FEATURES + FANOUT_FEATURES + RELATIONAL_FEATURES
UID_BYTES = 20


def window_features(fanout: bool) -> tuple[str, ...]:
    """The per-position feature names of a window, in order."""
    return FANOUT_WINDOW_FEATURES if fanout else WINDOW_FEATURES


class Windows:
    """A batch of windows: ``x [B, n, F]`` float32, ``mask [B, n]`` bool, ``uids [B, n]``.

    Built from the batch's :class:`~zeekml.windows.history.KeySequences`, the windows are
    assembled on demand: :meth:`x_rows` for a run of rows (the scorer assembles one model
    batch at a time, so the window tensor is written and read while it is in cache instead
    of ``B x n x F`` floats going through memory twice), ``x`` for all of them, and the uids
    (which name context flows) only for the rows a run writes (:meth:`uid_rows`).
    """

    def __init__(self, x: np.ndarray | None, mask: np.ndarray, uids: np.ndarray | None = None,
                 *, assemble: _Assembly | None = None) -> None:
        if assemble is None and (x is None or uids is None):
            raise ValueError("Windows needs x and uids, or the sequences to build them from")
        self._x = x
        self.mask = mask
        self._uids = uids
        self._assemble = assemble

    @property
    def x(self) -> np.ndarray:
        if self._x is None:
            self._x = self.x_rows(0, len(self.mask))
        return self._x

    def x_rows(self, start: int, stop: int) -> np.ndarray:
        """``x[start:stop]``, assembled for these rows only (a fresh array unless ``x`` is
        already held)."""
        if self._x is not None or self._assemble is None:
            return self.x[start:stop]
        return self._assemble.x(start, stop)

    def xs_rows(self, start: int, stop: int, norm: Normalization) -> np.ndarray:
        """Rows ``start:stop`` as a time-major graph takes them: ``[n, rows, F]`` float32,
        each position ``(x - mean) * inv_std`` (float32, as the self-contained graph
        computes it) and zero where masked; see :func:`time_major`."""
        if self._x is not None or self._assemble is None:
            return time_major(self.x[start:stop], self.mask[start:stop], norm)
        return self._assemble.xs(start, stop, norm)

    @property
    def uids(self) -> np.ndarray:
        if self._uids is None:
            self._uids = self.uid_rows(None)
        return self._uids

    def uid_rows(self, rows: np.ndarray | None) -> np.ndarray:
        """``uids`` of the given rows (all with ``None``), empty where not valid."""
        if self._uids is not None or self._assemble is None:
            return self.uids if rows is None else self.uids[rows]
        return self._assemble.seq.gather_valid("uid", rows)  # mask is the sequences' valid


@dataclass(frozen=True)
class Normalization:
    """A model's per-feature ``mean`` and ``inv_std`` (float32, one per window feature)."""

    mean: np.ndarray
    inv_std: np.ndarray


def time_major(x: np.ndarray, mask: np.ndarray, norm: Normalization) -> np.ndarray:
    """Windows ``x [B, n, F]`` (raw) as a time-major AMF graph takes them: ``[n, B, F]``
    float32, ``(x - mean) * inv_std`` at valid positions and 0 at masked ones: the
    operations the self-contained graph runs first, in float32 and in the same order, so
    its outputs do not change (the scorer's general path; assembled windows take the
    faster :meth:`_Assembly.xs`)."""
    z = (np.asarray(x, dtype=np.float32) - norm.mean) * norm.inv_std
    z[~np.asarray(mask, dtype=bool)] = 0.0
    return np.ascontiguousarray(z.transpose(1, 0, 2))


@dataclass
class _Assembly:
    """What :meth:`HostWindows.push` keeps to assemble windows: the key sequences, whose
    items' own features are widened to float32 (and normalized, for the graph) once per
    item, not once per window position, when windows are first assembled."""

    seq: KeySequences
    width: int  # window features: a flow's own, then the relational ones
    n_flow: int  # columns of a flow's own features (the relational ones follow)

    _wide: np.ndarray | None = None
    _norm: tuple[Normalization, np.ndarray] | None = None
    #: the scorer assembles chunks in several threads at once: the items above are made
    #: by one of them
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def wide(self) -> np.ndarray:
        """The items' own features widened to float32 with room for the relational
        columns (raw windows only: the scorer's normalized path reads the items directly)."""
        with self._lock:
            if self._wide is None:
                feat = self.seq.items["feat"]
                wide = np.empty((len(feat), self.width), dtype=np.float32)
                wide[:, : self.n_flow] = feat
                self._wide = wide
            return self._wide

    def x(self, start: int, stop: int) -> np.ndarray:
        """Raw windows ``[rows, n, F]``."""
        idx = self._positions(start, stop)
        x = np.take(self.wide, idx, axis=0)
        m = np.take(self.seq.items["meta"], idx, axis=0)
        valid = self.seq.valid[start:stop]
        # a view: the relational features are written in place
        self._relations(x[:, :, self.n_flow:], m, valid, self.seq.ts[start:stop])
        x[~valid] = 0.0
        return x

    def xs(self, start: int, stop: int, norm: Normalization) -> np.ndarray:
        """Normalized time-major windows ``[n, rows, F]`` (:func:`time_major`), gathered
        in that layout from items whose own features are normalized once per item, not
        once per window position; the relational features are written by the same code as
        in :meth:`x`, one contiguous plane per feature, normalized, then put in place."""
        nf = self.n_flow
        with self._lock:
            if self._norm is None or self._norm[0] is not norm:
                # float16 items widen exactly to float32: the same values as normalizing
                # the widened copy, without writing that copy first
                feat = self.seq.items["feat"]
                wide = np.empty((len(feat), self.width), dtype=np.float32)
                np.subtract(feat, norm.mean[:nf], out=wide[:, :nf])
                wide[:, :nf] *= norm.inv_std[:nf]
                self._norm = (norm, wide)
            items = self._norm[1]
        idx = self._positions(start, stop)
        xs = np.take(items, idx.T, axis=0)
        m = np.take(self.seq.items["meta"], idx, axis=0)
        valid = self.seq.valid[start:stop]
        # one contiguous plane per relational feature (written through a [rows, n, R]
        # view): the per-feature stores and the normalization then run on contiguous memory
        planes = np.empty((xs.shape[2] - nf, *valid.shape), dtype=np.float32)
        self._relations(planes.transpose(1, 2, 0), m, valid, self.seq.ts[start:stop])
        planes -= norm.mean[nf:, None, None]
        planes *= norm.inv_std[nf:, None, None]
        xs[:, :, nf:] = planes.transpose(2, 1, 0)
        xs[~valid.T] = 0.0
        return xs

    def _positions(self, start: int, stop: int) -> np.ndarray:
        seq = self.seq
        return seq.start[start:stop, None] + np.arange(seq.valid.shape[1])[None, :]

    @staticmethod
    def _relations(rel: np.ndarray, m: np.ndarray, valid: np.ndarray, ts_w: np.ndarray) -> None:
        """Write the relational features of windows into ``rel [rows, n, R]`` (``m``: the
        positions' meta, ``valid`` and ``ts_w``: the windows' mask and times)."""
        rel[:, :, 0] = np.log1p(np.maximum(ts_w[:, -1:] - ts_w, 0.0))
        np.equal(m[:, :, 0], m[:, -1:, 0], out=rel[:, :, 1], casting="unsafe")
        np.equal(m[:, :, 1], m[:, -1:, 1], out=rel[:, :, 2], casting="unsafe")
        np.equal(m[:, :, 2], m[:, -1:, 2], out=rel[:, :, 3], casting="unsafe")
        rel[:, :, 4] = m[:, :, 3]
        # peer_repeat: the position's peer appears at an earlier valid position
        pr = m[:, :, 0]
        seen = np.zeros(valid.shape, dtype=bool)
        for d in range(1, valid.shape[1]):
            eq = pr[:, d:] == pr[:, :-d]
            eq &= valid[:, :-d]
            seen[:, d:] |= eq
        rel[:, :, 5] = seen


def key_sides(flows: pd.DataFrame, key: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Return (host, peer, peer_port) columns for a window key."""
    host, peer, port, _ = key_sides_dir(flows, key)
    return host, peer, port


def key_sides_dir(flows: pd.DataFrame, key: str) -> tuple[pd.Series, pd.Series, pd.Series, np.ndarray]:
    """(host, peer, peer_port, host_is_orig) for a window key."""
    n = len(flows)
    if key == "orig":
        return flows["orig_h"], flows["resp_h"], flows["resp_p"], np.ones(n, dtype=bool)
    if key == "resp":
        return flows["resp_h"], flows["orig_h"], flows["orig_p"], np.zeros(n, dtype=bool)
    if key in ("local", "local_dir"):
        lo = flows["local_orig"].fillna(False).to_numpy(dtype=bool)
        lr = flows["local_resp"].fillna(False).to_numpy(dtype=bool)
        known = flows["local_orig"].notna().to_numpy() | flows["local_resp"].notna().to_numpy()
        priv_o = is_private(flows["orig_h"])
        priv_r = is_private(flows["resp_h"])
        use_resp = np.where(known, lr & ~lo, priv_r & ~priv_o)
        host = flows["orig_h"].where(~use_resp, flows["resp_h"])
        peer = flows["resp_h"].where(~use_resp, flows["orig_h"])
        port = flows["resp_p"].where(~use_resp, flows["orig_p"])
        if key == "local_dir":
            # one window for what the local host starts, another for what reaches it
            host = host.fillna("").astype(str) + np.where(use_resp, "<", ">")
        return host, peer, port, ~use_resp
    raise ValueError(f"window key must be one of {', '.join(WINDOW_KEYS)}, got {key!r}")


def host_sides(flows: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a window needs of :func:`key_sides_dir`, computed per distinct address.

    Returns (host key ``str`` per row as an object array, missing -> ``""``; peer hash
    ``uint32`` as :func:`_hash32`; peer port ``int32``, missing -> -1; host is originator).
    Each address column's factorization (shared with the other scorer, see
    :func:`~zeekml.records.distinct.factorized`) is merged into one table of distinct
    addresses, and the private-address test, the hash and the ``local_dir`` key text are
    computed per distinct address (or address and direction), never per row.
    """
    n = len(flows)
    if key not in WINDOW_KEYS:
        raise ValueError(f"window key must be one of {', '.join(WINDOW_KEYS)}, got {key!r}")
    # each column's factorization is shared with the other scorer's tests of it; their
    # distinct values are merged into one table (a few thousand values, not rows)
    co_own, uo = factorized(flows["orig_h"])
    cr_own, ur = factorized(flows["resp_h"])
    merged, uniques = pd.factorize(pd.concat([uo, ur], ignore_index=True))
    text = pd.Series(np.asarray(uniques, dtype=object), dtype="str")
    names = np.append(text.to_numpy(dtype=object), "")  # code -1 (missing) -> ""
    co = np.append(merged[: len(uo)], -1)[co_own]
    cr = np.append(merged[len(uo):], -1)[cr_own]
    op = flows["orig_p"].fillna(-1).to_numpy(dtype=np.int32)
    rp = flows["resp_p"].fillna(-1).to_numpy(dtype=np.int32)
    if key == "orig":
        use_resp = np.zeros(n, dtype=bool)
    elif key == "resp":
        use_resp = np.ones(n, dtype=bool)
    else:
        lo = flows["local_orig"].fillna(False).to_numpy(dtype=bool)
        lr = flows["local_resp"].fillna(False).to_numpy(dtype=bool)
        known = flows["local_orig"].notna().to_numpy() | flows["local_resp"].notna().to_numpy()
        private = np.append(private_values(text), False)
        use_resp = np.where(known, lr & ~lo, private[cr] & ~private[co])
    host = np.where(use_resp, cr, co)
    peer = np.where(use_resp, co, cr)
    hashes = hash_values(pd.Series(names, dtype="str"))  # names[-1] = "" serves code -1
    if key == "local_dir":
        # one window for what the local host starts, another for what reaches it
        pair, first = np.unique((host + 1) * 2 + use_resp, return_inverse=True)
        suffixed = np.array([names[h] + (">", "<")[d] for h, d in
                             zip((pair // 2 - 1).tolist(), (pair % 2).tolist(), strict=True)],
                            dtype=object)
        keys = suffixed[first]
    else:
        keys = names[host]
    return keys, hashes[peer], np.where(use_resp, op, rp), ~use_resp


def standalone(w: Windows) -> Windows:
    """The windows as if every flow were its host's first: only the flow itself.

    For rows that are random samples (CICIDS2017, iot23-subsample): consecutive rows are
    not a host's consecutive flows, so their history would be fiction. The flow's
    relations to itself hold as they are; "peer seen earlier" looks at nothing.
    """
    x, mask, uids = w.x.copy(), w.mask.copy(), w.uids.copy()
    names = window_features(x.shape[2] == len(FANOUT_WINDOW_FEATURES))
    x[:, :-1, :] = 0.0
    mask[:, :-1] = False
    uids[:, :-1] = b""
    x[:, -1, names.index("peer_repeat")] = 0.0
    if names is FANOUT_WINDOW_FEATURES:  # its fan-out: that of a flow seen alone
        fan = names.index(FANOUT_FEATURES[0])
        x[:, -1, fan : fan + len(FANOUT_FEATURES)] = alone(x[:, -1, names.index("no_reply")] > 0)
    return Windows(x=x, mask=mask, uids=uids)


def arrow_text(column: pd.Series) -> pa.Array:
    """A text column as one contiguous Arrow (large) string array, nulls kept; a column
    that is not text is converted through ``str``."""
    arr = pa.array(column, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pa.array(column.astype(str).where(column.notna()).to_numpy(dtype=object),
                       pa.large_string(), from_pandas=True)
    return arr


def uid_bytes(uids: pd.Series) -> np.ndarray:
    """uids as fixed-width bytes (``S20``): their UTF-8 bytes, longer uids cut (they only
    name context flows); missing -> empty. Copied from the Arrow buffers in one gather."""
    arr = arrow_text(uids)
    n = len(arr)
    out = np.zeros((n, UID_BYTES), dtype=np.uint8)
    if n and arr.buffers()[2] is not None:
        width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + n + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        width_all = int(offsets[1] - offsets[0]) if n else 0
        if (not arr.null_count and 0 < width_all <= UID_BYTES
                and int(offsets[-1] - offsets[0]) == n * width_all
                and bool((np.diff(offsets) == width_all).all())):
            # every uid the same length (Zeek's are 18 characters): one block copy
            start = int(offsets[0])
            out[:, :width_all] = data[start : start + n * width_all].reshape(n, width_all)
            return out.view(f"S{UID_BYTES}").ravel()
        lengths = np.minimum(np.diff(offsets), UID_BYTES)
        if arr.null_count:
            lengths[np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)] = 0
        pos = np.arange(UID_BYTES)
        take = pos[None, :] < lengths[:, None]
        out[take] = data[(offsets[:-1, None].astype(np.int64) + pos[None, :])[take]]
    return out.view(f"S{UID_BYTES}").ravel()


def hash_values(u: pd.Series) -> np.ndarray:
    """32-bit hash of each value's text (the peer identity a window compares and a state
    file keeps: changing it would need a new state version)."""
    # the values are distinct already: pandas' own factorize first (categorize) is wasted
    # work; the hashes are the same either way
    return (pd.util.hash_array(u.to_numpy(dtype=object), categorize=False)
            & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _hash32(s: pd.Series) -> np.ndarray:
    """:func:`hash_values` of each row (missing hashes as ""), each distinct value once."""
    return per_distinct(s, hash_values,
                        hash_values(pd.Series([""], dtype="str"))[0]).astype(np.uint32)


class HostWindows:
    """Bounded store of each host's last flows; :meth:`push` returns their windows."""

    def __init__(
        self,
        n: int = 10,
        key: str = "orig",
        *,
        max_hosts: int = 1_000_000,
        idle_timeout: float = 3600.0,
        fanout: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError(f"window length n must be >= 1, got {n}")
        if key not in WINDOW_KEYS:
            raise ValueError(f"window key must be one of {', '.join(WINDOW_KEYS)}, got {key!r}")
        self.n = n
        self.key = key
        #: per-position feature names of the windows :meth:`push` returns
        self.features = window_features(fanout)
        self.fanout = FanoutHistory(max_keys=max_hosts) if fanout else None
        self._n_flow = len(self.features) - len(RELATIONAL_FEATURES)
        self.history = KeyedHistory(
            n - 1,
            {
                "feat": FieldSpec(np.dtype(np.float16), (self._n_flow,)),
                # peer hash, peer port, service (responder) port, host is originator:
                # one int32 block, gathered in one operation
                "meta": FieldSpec(np.dtype(np.int32), (4,)),
                "uid": FieldSpec(np.dtype(f"S{UID_BYTES}")),
            },
            max_keys=max_hosts,
            idle_timeout=idle_timeout,
        )

    @property
    def depth(self) -> int:
        """Previous flows of a key that a window's values depend on: the window's ``n - 1``,
        plus, with fan-out, the fan-out history of the oldest of them (the Spark engine
        precedes a cut of a key's flows with this many)."""
        return self.history.depth + (self.fanout.depth if self.fanout is not None else 0)

    def push(self, flows: pd.DataFrame, feats: np.ndarray) -> Windows:
        """Append a canonical flow batch (with its :func:`flow_features`) in row order."""
        keys, peer_hash, port, is_orig = host_sides(flows, self.key)
        ts = flows["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        ts = np.where(np.isfinite(ts), ts, 0.0)
        meta = np.empty((len(flows), 4), dtype=np.int32)
        meta[:, 0] = peer_hash.view(np.int32)
        meta[:, 1] = port
        meta[:, 2] = flows["resp_p"].fillna(-1).to_numpy(dtype=np.int32)
        meta[:, 3] = is_orig
        coded = None
        if self.fanout is not None:
            codes, uniques = pd.factorize(np.asarray(keys, dtype=object), use_na_sentinel=False)
            coded = (codes, np.asarray(uniques, dtype=object))
            feats = np.concatenate([feats, self.fanout.push(
                keys, ts, peer_hash, service_codes(flows),
                feats[:, FEATURES.index("no_reply")] > 0, is_orig, factorized=coded)], axis=1)
        values = {"ts": ts, "feat": feats.astype(np.float16), "meta": meta, "uid": uid_bytes(flows["uid"])}
        seq = self.history.extend_seq(keys, values, factorized=coded)
        return Windows(None, seq.valid,
                       assemble=_Assembly(seq, len(self.features), self._n_flow))

    def state_dict(self) -> dict[str, np.ndarray]:
        state = self.history.state_dict()
        if self.fanout is not None:
            state.update({_FANOUT + k: v for k, v in self.fanout.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        own = {k: v for k, v in state.items() if not k.startswith(_FANOUT)}
        if self.fanout is not None:
            fan = {k[len(_FANOUT):]: v for k, v in state.items() if k.startswith(_FANOUT)}
            if not fan:
                raise StateError("window state lacks the fan-out history this model uses")
            self.fanout.load_state_dict(fan)
        self.history.load_state_dict(own)


#: prefix of the fan-out history's arrays in a window state
_FANOUT = "fanout_"


def service_codes(flows: pd.DataFrame) -> np.ndarray:
    """A flow's service as one int32: responder port and protocol (tcp, udp, icmp, other)."""
    codes, values = factorized(flows["proto"])
    low = values.str.lower()
    proto = np.zeros(len(values) + 1, dtype=np.int32)
    proto[:-1][(low == "tcp").to_numpy(dtype=bool)] = 1
    proto[:-1][(low == "udp").to_numpy(dtype=bool)] = 2
    proto[:-1][low.str.startswith("icmp").to_numpy(dtype=bool, na_value=False)] = 3
    port = flows["resp_p"].fillna(-1).to_numpy(dtype=np.int64)
    return (np.clip(port, -1, 1 << 20).astype(np.int32) * 4 + proto[codes]).astype(np.int32)
