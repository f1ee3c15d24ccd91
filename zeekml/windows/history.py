"""KeyedHistory: the last ``depth`` items per key, extended a whole batch at a time.

Both detectors need "this item plus the same key's previous items": the AMF-LSTM per
host, the flow language model per conversation. This module does that once, with
numpy gathers instead of a Python loop per flow:

* keys of a batch are factorized; a dict maps each *distinct* key to a slot (one
  dict operation per distinct key per batch, not per flow);
* each slot stores its last ``depth`` items in a ring (a batch writes only the planes of
  its new items, not every held position again), read back oldest first;
* for every row, the window is a gather from "stored items of its key followed by the
  batch's earlier rows of the same key", so the result depends only on the order of
  rows, never on where batch boundaries fall (tail micro-batches, cron runs and Spark
  partitions all give the same windows).

Bounded memory: at most ``max_keys`` slots; when full, the least recently used slots
are evicted (10% at once, so eviction cost is amortized). The item buffers are allocated
once for ``max_keys`` slots in a private anonymous mapping (the kernel maps pages only
when a slot is first written, so resident memory follows the keys in use) instead of growing by
doubling, whose copy briefly held the old and the new buffers (a 1.5x peak). They are
laid out position-major, ``[depth, max_keys, ...]``, and only positions that hold an item
are written: a key seen once (most keys of a scan or a sweep) makes one position's page
resident, not ``depth`` of them (1M one-flow hosts: a tenth of the memory). Idle expiry is by *log* time
(``ts``), never the wall clock, so replaying an archive equals running live: items
older than ``idle_timeout`` before the current row are masked out of its window.
Slots are not freed for being idle at a batch end: Zeek writes conn.log in connection
*end* order, so ``ts`` goes back by hours for long connections, and freeing a slot
between batches would make a later window depend on where the batches were cut (tail
micro-batches would differ from one batch run). Memory is bounded by ``max_keys``.

State round-trips through plain numpy arrays (:meth:`state_dict`), saved with
``np.savez`` and loaded with ``allow_pickle=False``: no pickle anywhere.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd

from zeekml.errors import StateError
from zeekml.records.text_arrays import decode_texts, encode_texts

#: 2: keys as UTF-8 bytes and offsets (:mod:`zeekml.records.text_arrays`), items of the
#: held positions only; 1 (numpy str keys, every position) is still read
STATE_VERSION = 2


def _lazy_zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zero-filled array whose pages the kernel maps on first write, 4 KiB at a time.

    An anonymous mmap, not ``np.zeros``: numpy asks the kernel for transparent huge pages
    on large arrays, and one write into each of ``depth`` position planes would then make
    ``depth`` x 2 MiB resident per field for even a handful of keys.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0 or not hasattr(mmap, "MAP_PRIVATE"):  # (not Unix: numpy's calloc)
        return np.zeros(shape, dtype=dtype)
    # private and anonymous: a read of a page never written maps the shared zero page
    mem = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux
        mem.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(mem, dtype=dtype).reshape(shape)


def _held(count: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(key, position) of every stored position that holds an item: right-aligned, a key
    with ``count`` items holds positions ``depth - count .. depth - 1``."""
    key_i, pos_i = np.nonzero(np.arange(depth)[None, :] >= depth - count[:, None])
    return key_i, pos_i


def _plane(head: np.ndarray, offset: np.ndarray, depth: int) -> np.ndarray:
    """The ring plane ``offset`` places after ``head``. For a held item at right-aligned
    position ``p`` (``depth - count .. depth - 1``), ``offset = p`` gives its plane
    (``head - count + (p - depth + count)`` mod ``depth``); for a batch's ``t``-th new item,
    ``offset = t``."""
    return (head + offset) % depth


@dataclass
class KeySequences:
    """A batch's windows before assembly (:meth:`KeyedHistory.extend_seq`).

    ``items[name]``: the field's per-key segments, first axis = position; row ``i``'s
    window is ``items[name][start[i] : start[i] + n]`` (oldest first, the row last),
    ``valid [B, n]`` says which positions hold an item of the row's key within the idle
    timeout; ``ts [B, n]`` is the gathered ``ts`` window (not zeroed where invalid).
    Invalid positions of a gathered field hold zeros, a real item that fell out of the
    idle timeout, or an item of another key (segments are packed): callers mask with
    ``valid``.
    """

    items: dict[str, np.ndarray]
    start: np.ndarray
    valid: np.ndarray
    ts: np.ndarray

    def index(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``[B, n]`` positions in ``items`` of each (or the given) row's window."""
        start = self.start if rows is None else self.start[rows]
        return start[:, None] + np.arange(self.valid.shape[1])[None, :]

    def gather(self, arr: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``arr`` (an ``items`` field, or an array aligned with it) as windows
        ``[B, n, ...]``, a fresh contiguous array."""
        return np.take(arr, self.index(rows), axis=0)

    def gather_valid(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The ``items`` field ``name`` as windows of the given (or all) rows, zero where
        ``valid`` says the position holds none of the row's key's items."""
        out = self.gather(self.items[name], rows)
        invalid = ~(self.valid if rows is None else self.valid[rows])
        np.copyto(out, np.zeros((), dtype=out.dtype),
                  where=invalid.reshape(invalid.shape + (1,) * (out.ndim - 2)))
        return out


@dataclass(frozen=True)
class FieldSpec:
    """dtype and per-item shape of one stored field."""

    dtype: np.dtype
    shape: tuple[int, ...] = ()


class KeyedHistory:
    """Per-key ring of the last ``depth`` items of several fixed-width fields."""

    def __init__(
        self,
        depth: int,
        fields: dict[str, FieldSpec],
        *,
        max_keys: int = 1_000_000,
        idle_timeout: float = 3600.0,
    ) -> None:
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
        self.depth = depth
        self.fields = {"ts": FieldSpec(np.dtype(np.float64)), **fields}
        self.max_keys = max_keys
        self.idle_timeout = float(idle_timeout)
        self._slot_of: dict[str, int] = {}
        self._cap = 0
        self._keys = np.empty(0, dtype=object)
        self._count = np.zeros(0, dtype=np.int16)
        # the ring plane each slot's next item goes to: its held items are planes
        # head - count .. head - 1 (mod depth), oldest first
        self._head = np.zeros(0, dtype=np.int16)
        self._last_ts = np.zeros(0, dtype=np.float64)
        self._last_use = np.zeros(0, dtype=np.int64)
        self._buf: dict[str, np.ndarray] = {}
        self._free: list[int] = []
        self._seq = 0
        self._max_ts = -np.inf
        self.evicted = 0
        self._grow(min(1024, max_keys))

    # ----------------------------------------------------------------- storage
    def _grow(self, new_cap: int) -> None:
        old = self._cap
        if new_cap <= old:
            return
        self._keys = np.concatenate([self._keys, np.empty(new_cap - old, dtype=object)])
        self._count = np.concatenate([self._count, np.zeros(new_cap - old, dtype=np.int16)])
        self._head = np.concatenate([self._head, np.zeros(new_cap - old, dtype=np.int16)])
        self._last_ts = np.concatenate([self._last_ts, np.zeros(new_cap - old)])
        self._last_use = np.concatenate([self._last_use, np.zeros(new_cap - old, np.int64)])
        if not self._buf:  # once, for every slot there can be: pages mapped on first write
            self._buf = {name: _lazy_zeros((self.depth, self.max_keys, *spec.shape), spec.dtype)
                         for name, spec in self.fields.items()}
        self._free.extend(range(new_cap - 1, old - 1, -1))
        self._cap = new_cap

    def __len__(self) -> int:
        return len(self._slot_of)

    def memory_bytes(self) -> int:
        """Bytes of the slot arrays in use (not counting the key dict; the item buffers'
        pages beyond the slots in use are not resident)."""
        total = (self._count.nbytes + self._head.nbytes + self._last_ts.nbytes
                 + self._last_use.nbytes)
        total += self._keys.nbytes + sum(b.strides[1] * self.depth * self._cap
                                         for b in self._buf.values())
        return int(total)

    def _release(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            key = self._keys[s]
            if key is not None:
                del self._slot_of[key]
                self._keys[s] = None
                self._count[s] = 0
                self._free.append(s)

    def _evict_lru(self, need: int, protect: np.ndarray) -> None:
        """Free at least ``need`` slots, least recently used first, never ``protect``."""
        active = np.nonzero(self._keys != None)[0]  # noqa: E711 - elementwise
        active = np.setdiff1d(active, protect, assume_unique=False)
        want = min(len(active), max(need, self.max_keys // 10))
        if want <= 0:
            return
        victims = active[np.argpartition(self._last_use[active], want - 1)[:want]]
        self.evicted += len(victims)
        self._release(victims)

    def _slots_for(self, uniques: np.ndarray) -> np.ndarray:
        # dict.get mapped in C over the distinct keys (no Python frame per key)
        slots = np.fromiter(map(self._slot_of.get, uniques.tolist(), repeat(-1)),
                            dtype=np.int64, count=len(uniques))
        new = np.nonzero(slots < 0)[0]
        if len(new):
            if len(new) > self.max_keys:
                raise ValueError("a batch has more distinct keys than max_keys")
            short = len(new) - len(self._free)
            if short > 0 and self._cap < self.max_keys:
                self._grow(min(self.max_keys, max(self._cap * 2, self._cap + short)))
                short = len(new) - len(self._free)
            if short > 0:
                self._evict_lru(short, slots[slots >= 0])
            # the free list's last entries, in the order pop() would give them
            fresh = np.array(self._free[-len(new):][::-1], dtype=np.int64)
            del self._free[-len(new):]
            new_keys = uniques[new]
            self._slot_of.update(zip(new_keys.tolist(), fresh.tolist(), strict=True))
            self._keys[fresh] = new_keys
            self._count[fresh] = 0
            self._head[fresh] = 0
            slots[new] = fresh
        return slots

    # ----------------------------------------------------------------- extend
    def extend(
        self, keys: np.ndarray, values: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Append a batch (rows in arrival order) and return each row's window.

        ``keys``: 1-D array of str, one per row. ``values``: one array per field
        (including ``ts``), first axis = rows. Returns ``(windows, valid)`` where
        ``windows[name]`` has shape ``[B, depth + 1, *shape]`` (oldest first, the row
        itself last), zero where not valid, and ``valid`` is a ``[B, depth + 1]`` bool mask.
        """
        seq = self.extend_seq(keys, values)
        wins = {name: seq.gather_valid(name) for name in seq.items if name != "ts"}
        wins["ts"] = np.where(seq.valid, seq.ts, 0.0)  # gathered already
        return wins, seq.valid

    def extend_seq(self, keys: np.ndarray, values: dict[str, np.ndarray], *,
                   factorized: tuple[np.ndarray, np.ndarray] | None = None) -> KeySequences:
        """Append a batch like :meth:`extend`, but return the windows unassembled.

        Every field becomes one array of per-key segments, "the key's stored items
        followed by the batch's rows of that key", packed after ``depth`` zero rows; row
        ``i``'s window is the ``depth + 1`` consecutive items from ``start[i]``, of which
        the positions before its key's first item are not ``valid``. Packed (a key with
        fewer than ``depth`` stored items takes no room for the others), the arrays hold
        ``depth + B + stored items`` rows, not ``B + keys x depth``: a batch of new keys
        (a scan, a sweep, 1M hosts) is ten times smaller. One scatter of the batch
        and one gather of the stored items per distinct key build it, instead of a gather
        from the batch and another from the store per window position; the caller gathers
        only the fields and the rows it needs (:meth:`KeySequences.gather`).

        ``factorized``: the keys' ``(codes, distinct keys)`` in first-appearance order,
        when the caller has them (saves hashing every row's key again).
        """
        b = len(keys)
        n = self.depth + 1
        depth = self.depth
        vals = {k: np.asarray(values[k], dtype=s.dtype) for k, s in self.fields.items()}
        if b == 0:
            return KeySequences(
                items={k: np.zeros((0, *s.shape), dtype=s.dtype) for k, s in self.fields.items()},
                start=np.zeros(0, dtype=np.int64), valid=np.zeros((0, n), dtype=bool),
                ts=np.zeros((0, n)))
        if factorized is None:
            codes, uniques = pd.factorize(np.asarray(keys, dtype=object), use_na_sentinel=False)
        else:
            codes, uniques = factorized
        uniques = np.asarray(uniques, dtype=object)
        slots = self._slots_for(uniques)
        u = len(uniques)
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=u)
        gstart = np.cumsum(sizes) - sizes
        rank = np.empty(b, dtype=np.int64)
        rank[order] = np.arange(b) - gstart[codes[order]]
        counts = self._count[slots].astype(np.int64)

        # key u's segment: its counts[u] stored items, then its sizes[u] batch rows; the
        # segments follow ``depth`` zero rows, so every window's first position is >= 0
        seg_len = counts + sizes
        seg_start = depth + np.cumsum(seg_len) - seg_len
        pos = seg_start[codes] + counts[codes] + rank  # where each batch row sits
        start = pos - depth
        items: dict[str, np.ndarray] = {}
        if depth:
            # the stored items (planes depth - count .. depth - 1 of each key), in place
            old_i, old_p = _held(counts, depth)
            store_dst = seg_start[old_i] + old_p - (depth - counts[old_i])
            store_slot = slots[old_i]
            heads = self._head[slots].astype(np.int64)
            store_plane = _plane(heads[old_i], old_p, depth)
        total = depth + b + int(counts.sum())
        for name, spec in self.fields.items():
            arr = np.empty((total, *spec.shape), dtype=spec.dtype)
            arr[:depth] = 0
            arr[pos] = vals[name]
            if depth:
                arr[store_dst] = self._buf[name][store_plane, store_slot]
            items[name] = arr

        # position j of a row's window holds an item of its key from j = depth - stored
        # items - the row's rank in the batch on (one [B] subtraction, one broadcast test)
        first = depth - counts[codes] - rank
        positions = np.arange(n)
        valid = positions[None, :] >= first[:, None]
        ts_w = items["ts"][start[:, None] + positions[None, :]]
        gap = ts_w - ts_w[:, -1:]
        np.abs(gap, out=gap)
        valid &= gap <= self.idle_timeout

        # store update: each key keeps its last depth items; only its new items that stay
        # are written, each to the ring plane after the previous one (the batch's t-th row
        # of a key to plane head + t), so a key's older items are not written again
        new_count = np.minimum(depth, counts + sizes)
        if depth:
            keep = np.flatnonzero(rank >= sizes[codes] - depth)
            plane = _plane(heads[codes[keep]], rank[keep], depth)
            slot_k = slots[codes[keep]]
            for name in self.fields:
                self._buf[name][plane, slot_k] = vals[name][keep]
            self._head[slots] = ((heads + sizes) % depth).astype(np.int16)
        self._count[slots] = new_count.astype(np.int16)
        last_row = order[gstart + sizes - 1]
        self._last_ts[slots] = vals["ts"][last_row]
        self._seq += 1
        self._last_use[slots] = self._seq
        finite = vals["ts"][np.isfinite(vals["ts"])]
        if len(finite):
            self._max_ts = max(self._max_ts, float(finite.max()))
        return KeySequences(items=items, start=start, valid=valid, ts=ts_w)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays describing every live key (for ``np.savez``; no pickle)."""
        used = np.nonzero(self._keys != None)[0]  # noqa: E711
        m = len(used)
        # slots 0..m-1 in use (no eviction yet): views, no copy
        live: np.ndarray | slice = slice(0, m) if m and used[-1] == m - 1 else used
        key_bytes, key_offsets = encode_texts(self._keys[live])
        out = {
            "version": np.array(STATE_VERSION),
            "depth": np.array(self.depth),
            "keys_utf8": key_bytes,
            "keys_offsets": key_offsets,
            "count": self._count[live],
            "last_ts": self._last_ts[live],
            "last_use": self._last_use[live],
            "seq": np.array(self._seq),
            "max_ts": np.array(self._max_ts),
        }
        # only the positions that hold an item, key by key, oldest first: a key seen once
        # stores one item, not depth of them (1M one-flow hosts: a ninth of the bytes)
        key_i, pos_i = _held(np.asarray(self._count[live], dtype=np.int64), self.depth)
        slot_i = np.arange(m)[key_i] if isinstance(live, slice) else live[key_i]
        plane_i = _plane(self._head[slot_i].astype(np.int64), pos_i, self.depth) if self.depth else pos_i
        for name, buf in self._buf.items():
            out["held_" + name] = buf[plane_i, slot_i]
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict`; validates version, depth, shapes and dtypes."""
        try:
            version = int(state["version"])
            if version not in (1, STATE_VERSION):
                raise StateError(f"window state version {version} is not supported")
            if int(state["depth"]) != self.depth:
                raise StateError(
                    f"window state depth {int(state['depth'])} != model depth {self.depth}"
                )
            if version == 1:
                keys = np.asarray(state["keys"])
                if keys.dtype.kind != "U" or keys.ndim != 1:
                    raise StateError("window state keys must be a 1-D string array")
                keys = keys.astype(object)
            else:
                keys = decode_texts(state["keys_utf8"], state["keys_offsets"], "window state keys")
            m = len(keys)
            if m > self.max_keys:
                raise StateError(f"window state holds {m} keys, more than max_keys")
            self._slot_of.clear()
            self._cap = 0
            self._keys = np.empty(0, dtype=object)
            self._count = np.zeros(0, dtype=np.int16)
            self._head = np.zeros(0, dtype=np.int16)
            self._last_ts = np.zeros(0)
            self._last_use = np.zeros(0, dtype=np.int64)
            self._buf = {}
            self._free = []
            count = np.asarray(state["count"])
            if (count.shape != (m,) or count.dtype.kind not in "iu" or (count < 0).any()
                    or (count > self.depth).any()):
                raise StateError("window state counts are out of range")
            self._grow(max(min(1024, self.max_keys), m))
            # the positions holding items only: a key with one item maps one row's page
            key_i, pos_i = _held(count, self.depth)
            for name, spec in self.fields.items():
                if version == 1:  # every position of every key, (keys, depth, ...)
                    arr = np.asarray(state["buf_" + name])
                    if arr.shape != (m, self.depth, *spec.shape) or arr.dtype != spec.dtype:
                        raise StateError(f"window state field {name!r} has wrong shape or dtype")
                    arr = arr[key_i, pos_i]
                else:  # the held positions only, in _held order
                    arr = np.asarray(state["held_" + name])
                    if arr.shape != (len(key_i), *spec.shape) or arr.dtype != spec.dtype:
                        raise StateError(f"window state field {name!r} has wrong shape or dtype")
                self._buf[name][pos_i, key_i] = arr
            self._count[:m] = count.astype(np.int16)
            self._last_ts[:m] = np.asarray(state["last_ts"], dtype=np.float64)
            self._last_use[:m] = np.asarray(state["last_use"], dtype=np.int64)
            self._keys[:m] = keys
            self._slot_of = {str(k): i for i, k in enumerate(keys.tolist())}
            if len(self._slot_of) != m:
                raise StateError("window state has duplicate keys")
            self._free = list(range(self._cap - 1, m - 1, -1))
            self._seq = int(state["seq"])
            self._max_ts = float(state["max_ts"])
        except KeyError as exc:
            raise StateError(f"window state lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise StateError(f"window state is malformed: {exc}") from exc
