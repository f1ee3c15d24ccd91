"""The rules of NetFlow pairing, as pure vectorized functions (the stage is :mod:`~zeekml.sources.biflow`).

:func:`classify` says which records can pair, under which key and in which direction;
:func:`match` pairs a working set of records sorted by key and stream position (a
stack per key, decided for a whole batch at once with prefix scans, never a Python
loop per record); :func:`join_pairs` makes one canonical flow of each pair (who
originated, ``history`` and ``conn_state`` from both directions). The rules, the
choices and the measurements behind them are in :mod:`zeekml.sources.biflow`'s
docstring; :class:`~zeekml.sources.biflow.Pairer` keeps the state between batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.errors import ConfigError
from zeekml.records import schema

#: seconds of log time an open record waits for its reverse (see the module docstring)
DEFAULT_HOLD = 120.0
#: seconds allowed between one record's end and the other's start
DEFAULT_SLACK = 10.0
#: an open record waits for at most this many later records (bounds memory)
DEFAULT_MAX_HELD = 1_000_000
#: open records per key (deeper: the newest replaces the top)
STACK_DEPTH = 32
#: longest hold accepted (a day)
MAX_HOLD = 86400.0

#: ICMP type -> (exchange kind, is the request); kinds > 0 pair, v4 and v6 apart
_ICMP4 = {8: (1, True), 0: (1, False), 13: (2, True), 14: (2, False),
          15: (3, True), 16: (3, False), 17: (4, True), 18: (4, False)}  # fmt: skip
_ICMP6 = {128: (1, True), 129: (1, False), 133: (5, True), 134: (5, False),
          135: (6, True), 136: (6, False)}  # fmt: skip
_MULTICAST = r"^(22[4-9]|23[0-9])\.|^255\.255\.255\.255$|^[fF][fF][0-9a-fA-F]{0,2}:"
_SYN_ONLY_STATES = ("S0", "SH", "RSTOS0")


def _kind_table(spec: Mapping[int, tuple[int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    kind = np.zeros(256, dtype=np.int64)
    req = np.zeros(256, dtype=bool)
    for t, (k, r) in spec.items():
        kind[t], req[t] = k, r
    return kind, req


_K4, _R4 = _kind_table(_ICMP4)
_K6, _R6 = _kind_table(_ICMP6)


@dataclass(frozen=True)
class PairOptions:
    """How records are paired (validated: a bad value is a :class:`ConfigError`)."""

    hold: float = DEFAULT_HOLD
    slack: float = DEFAULT_SLACK
    max_held: int = DEFAULT_MAX_HELD

    def __post_init__(self) -> None:
        if not (isinstance(self.hold, (int, float)) and math.isfinite(self.hold)
                and 0 < self.hold <= MAX_HOLD):
            raise ConfigError(f"--pair-hold must be > 0 and <= {MAX_HOLD:.0f} seconds, "
                             f"got {self.hold!r}")
        if not (isinstance(self.slack, (int, float)) and math.isfinite(self.slack)
                and 0 <= self.slack <= MAX_HOLD):
            raise ConfigError(f"pairing slack must be >= 0 seconds, got {self.slack!r}")
        if not isinstance(self.max_held, int) or self.max_held < 1:
            raise ConfigError(f"pairing max_held must be >= 1 record, got {self.max_held!r}")


def _seg_cummax(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Inclusive running maximum of ``values`` restarting where ``start`` is True."""
    out = values.astype(np.float64, copy=True)
    seg = np.cumsum(start)
    d = 1
    n = len(out)
    while d < n:
        same = seg[d:] == seg[:-d]
        cand = np.maximum(out[d:], out[:-d])
        out[d:] = np.where(same, cand, out[d:])
        d *= 2
    return out


def _levels(step: np.ndarray, start: np.ndarray, depth: int) -> np.ndarray:
    """Stack level after each record: a running sum of ``step`` clamped to
    [-depth, depth], restarting at 0 where ``start`` is True.

    Each record is the function ``s -> clip(s + a, lo, hi)``; such functions compose
    into the same form, so an inclusive prefix scan (log2 n vectorized passes)
    gives every level; a restart is the constant function ``s -> step``.
    """
    n = len(step)
    a = np.where(start, 0, step).astype(np.int64)
    lo = np.where(start, step, -depth).astype(np.int64)
    hi = np.where(start, step, depth).astype(np.int64)
    d = 1
    while d < n:
        a_f, lo_f, hi_f = a[:-d], lo[:-d], hi[:-d]
        a_g, lo_g, hi_g = a[d:], lo[d:], hi[d:]
        new_a = a_f + a_g
        new_lo = np.clip(lo_f + a_g, lo_g, hi_g)
        new_hi = np.clip(hi_f + a_g, lo_g, hi_g)
        a = np.concatenate([a[:d], new_a])
        lo = np.concatenate([lo[:d], new_lo])
        hi = np.concatenate([hi[:d], new_hi])
        d *= 2
    return np.clip(a, lo, hi)


LARGE = pa.large_string()


def text_array(s: pd.Series) -> pa.Array:
    """A text column as one Arrow ``large_string`` array (zero-copy for ``str`` columns)."""
    try:
        arr = pa.array(s.array)
    except (TypeError, ValueError, pa.ArrowInvalid):
        arr = pa.array(s.astype(object).where(s.notna(), None), type=LARGE)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == LARGE else arr.cast(LARGE)


def str_series(arr: pa.Array) -> pd.Series:
    """An Arrow text array as a ``str`` Series."""
    return pd.Series(arr.cast(LARGE).to_pandas(types_mapper={LARGE: _STR_DTYPE}.get),
                     dtype=schema.STR)


_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)


def text_isin(s: pd.Series | pa.Array, values: pa.Array | pd.Series) -> np.ndarray:
    """``s.isin(values)`` for text, in Arrow (pandas' own loops over Python objects)."""
    a = s if isinstance(s, pa.Array) else text_array(s)
    vals = values if isinstance(values, pa.Array) else text_array(values)
    if not len(a) or not len(vals):
        return np.zeros(len(a), dtype=bool)
    m = pc.is_in(a, value_set=vals.cast(LARGE))
    return np.asarray(pc.fill_null(m, False).to_numpy(zero_copy_only=False), dtype=bool)


def _has(hist: pa.Array, letter: str) -> np.ndarray:
    m = pc.match_substring(hist, letter)
    return np.asarray(pc.fill_null(m, False).to_numpy(zero_copy_only=False), dtype=bool)


# --------------------------------------------------------------------------- classify


@dataclass
class Classified:
    cand: np.ndarray  # bool per row
    key: pa.Array  # key text per candidate row
    step: np.ndarray  # +1/-1 per candidate row
    req: np.ndarray  # ICMP request type, per candidate row


def classify(df: pd.DataFrame) -> Classified:
    """Which rows can pair, and their key and direction (see the module docstring)."""
    paired = df["paired"].astype("boolean")
    one_way = (~paired.fillna(True)).to_numpy(dtype=bool)
    if not one_way.any():
        return Classified(one_way, pa.array([], LARGE), np.zeros(0, np.int8),
                           np.zeros(0, bool))
    ts = df["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    proto = df["proto"].to_numpy(dtype=object, na_value="")
    tcp, udp, icmp = proto == "tcp", proto == "udp", proto == "icmp"
    oh, rh = text_array(df["orig_h"]), text_array(df["resp_h"])
    op = df["orig_p"].to_numpy(dtype=np.float64, na_value=np.nan)
    rp = df["resp_p"].to_numpy(dtype=np.float64, na_value=np.nan)
    v6 = np.asarray(pc.fill_null(pc.match_substring(oh, ":"), False)
                    .to_numpy(zero_copy_only=False), dtype=bool)
    itype = np.where(icmp & np.isfinite(op) & (op >= 0) & (op < 256), op, 0).astype(np.int64)
    kind = np.where(v6, _K6[itype], _K4[itype]) * icmp
    req = np.where(v6, _R6[itype], _R4[itype]) & icmp
    ports_ok = np.isfinite(op) & np.isfinite(rp)
    multicast = np.asarray(pc.fill_null(pc.match_substring_regex(rh, _MULTICAST), True)
                           .to_numpy(zero_copy_only=False), dtype=bool)
    have_h = np.asarray(pc.and_(pc.is_valid(oh), pc.is_valid(rh)).to_numpy(zero_copy_only=False),
                        dtype=bool)
    cand = one_way & np.isfinite(ts) & have_h & ~multicast & (
        ((tcp | udp) & ports_ok) | (kind > 0))
    idx = np.flatnonzero(cand)
    if not len(idx):
        return Classified(cand, pa.array([], LARGE), np.zeros(0, np.int8),
                           np.zeros(0, bool))
    take = pa.array(idx)
    icmp_c = icmp[idx]
    sep = pa.scalar("|", LARGE)
    oport = pc.cast(pa.array(np.where(icmp_c, 0, op[idx]).astype(np.int64)), LARGE)
    rport = pc.cast(pa.array(np.where(icmp_c, 0, rp[idx]).astype(np.int64)), LARGE)
    a = pc.binary_join_element_wise(oh.take(take), oport, sep)
    b = pc.binary_join_element_wise(rh.take(take), rport, sep)
    fwd = np.asarray(pc.less(a, b).to_numpy(zero_copy_only=False), dtype=bool)
    same = np.asarray(pc.equal(a, b).to_numpy(zero_copy_only=False), dtype=bool)
    tag = np.where(tcp[idx], "t", np.where(udp[idx], "u", "i")).astype(object)
    tag = np.char.add(tag.astype(str), kind[idx].astype(str))
    lo = pc.if_else(pa.array(fwd), a, b)
    hi = pc.if_else(pa.array(fwd), b, a)
    key = pc.binary_join_element_wise(pa.array(tag, LARGE), lo, hi, pa.scalar("/", LARGE))
    if same.any():  # both endpoints equal: no direction to tell apart
        cand[idx[same]] = False
        keep = pa.array(~same)
        key, fwd, idx = key.filter(keep), fwd[~same], idx[~same]
    step = np.where(fwd, 1, -1).astype(np.int8)
    return Classified(cand, key, step, req[idx])


# --------------------------------------------------------------------------- matching


@dataclass
class Match:
    """Decisions for a working set (indices into it)."""

    pair_x: np.ndarray  # the open record of each pair
    pair_j: np.ndarray  # the record that closed it
    one_way: np.ndarray  # bool: decided one-way now (not ghosts)
    on_stack: np.ndarray  # bool: left open on its key's stack
    depth: np.ndarray  # slot depth of the records left open
    key_last: np.ndarray  # per key code: pos of its last record
    key_base: np.ndarray  # per key code: segment base (deadline - hold)
    key_open: np.ndarray  # per key code: stack not empty


def match(kc: np.ndarray, pos: np.ndarray, step: np.ndarray, ts: np.ndarray, end: np.ndarray,
          arr: np.ndarray, base: np.ndarray, ghost: np.ndarray, replay: np.ndarray,
          seed_has: np.ndarray, seed_base: np.ndarray, seed_last: np.ndarray,
          options: PairOptions, depth: int = STACK_DEPTH) -> Match:
    """Pair a working set sorted by (key code ``kc``, stream position ``pos``).

    ``replay`` rows are the open records (``ghost``: already given out one-way) of a
    key's stack carried over from earlier batches, bottom first; the rest are new
    records. ``arr`` is the log clock when a record arrived, ``base`` = max(its end,
    ``arr``): it waits until the clock passes ``base + hold``. ``seed_*`` (per key
    code) describe the key's state before this batch: whether it has one, its
    segment base and the position of its last record. Pure function of its inputs.
    """
    hold, slack, cap = float(options.hold), float(options.slack), int(options.max_held)
    w = len(kc)
    n_keys = len(seed_has)
    empty_i = np.zeros(0, np.int64)
    if w == 0:
        return Match(empty_i, empty_i, np.zeros(0, bool), np.zeros(0, bool), empty_i,
                      np.zeros(n_keys, np.int64), np.full(n_keys, -np.inf),
                      np.zeros(n_keys, bool))
    first = np.r_[True, kc[1:] != kc[:-1]]
    gid = np.cumsum(first) - 1
    group_key = kc[first]
    nr = ~replay
    prev_nr_same = np.r_[False, (kc[1:] == kc[:-1]) & nr[:-1]]
    first_nr = nr & ~prev_nr_same
    has = seed_has[kc]
    prev_pos = np.where(first_nr, seed_last[kc], np.r_[0, pos[:-1]])
    count_b = nr & ((first_nr & ~has) | (pos - prev_pos > cap))
    sup_start = first | count_b
    v = np.where(nr, base, -np.inf)
    inc = _seg_cummax(v, sup_start)
    exc = np.r_[-np.inf, inc[:-1]]
    exc[sup_start] = -np.inf
    sup = np.cumsum(sup_start)
    continuing = has & (sup == sup[np.flatnonzero(first)][gid])
    cm_before = np.maximum(exc, np.where(continuing, seed_base[kc], -np.inf))
    clock_b = nr & ~count_b & (arr > cm_before + hold)
    bound = count_b | clock_b
    stale_group = np.zeros(len(group_key), dtype=bool)
    stale_group[gid[bound & first_nr]] = True
    stale = replay & stale_group[gid]

    one_way = stale & ~ghost
    keep = np.flatnonzero(~stale)
    k_first = np.r_[True, kc[keep][1:] != kc[keep][:-1]]
    start = k_first | bound[keep]
    st = step[keep].astype(np.int64)
    lev = _levels(st, start, depth)
    prev = np.r_[0, lev[:-1]]
    prev[start] = 0
    clamped = lev == prev
    push = (np.abs(lev) > np.abs(prev)) | clamped
    edge = np.where(clamped, np.where(lev > 0, depth - 1, -depth), np.minimum(prev, lev))
    seg = np.cumsum(start)
    kpos = pos[keep]
    order = np.lexsort((kpos, edge, seg))
    so_seg, so_edge = seg[order], edge[order]
    nxt_same = np.r_[(so_seg[1:] == so_seg[:-1]) & (so_edge[1:] == so_edge[:-1]), False]
    prv_same = np.r_[False, nxt_same[:-1]]
    so_push = push[order]
    # pops: partner is the previous event of the edge group (a push)
    is_pop = ~so_push & prv_same
    j_loc = order[is_pop]
    x_loc = order[np.flatnonzero(is_pop) - 1]
    xj, jj = keep[x_loc], keep[j_loc]
    ok = (~ghost[xj] & (ts[xj] <= end[jj] + slack) & (ts[jj] <= end[xj] + slack)
          & (arr[jj] <= base[xj] + hold) & (pos[jj] - pos[xj] <= cap))
    one_way[jj[~ok]] = True
    bad_x = xj[~ok]
    one_way[bad_x[~ghost[bad_x]]] = True
    # a push followed by a push on its edge: displaced (only at the clamped top)
    displaced = keep[order[so_push & nxt_same & np.r_[so_push[1:], False]]]
    one_way[displaced[~ghost[displaced]]] = True
    # pushes never followed on their edge: open in their segment
    last_push = np.zeros(len(keep), dtype=bool)
    last_push[order[so_push & ~nxt_same]] = True
    kgid = gid[keep]
    k_last = np.r_[k_first[1:], True]  # the last kept record of each key
    last_seg = np.zeros(len(group_key), dtype=np.int64)
    last_seg[kgid[k_last]] = seg[k_last]
    in_last = seg == last_seg[kgid]
    on_stack = np.zeros(w, dtype=bool)
    on_stack[keep[last_push & in_last]] = True
    old_open = keep[last_push & ~in_last]
    one_way[old_open[~ghost[old_open]]] = True
    dep = np.zeros(w, dtype=np.int64)
    dep[keep] = np.where(edge >= 0, edge, -edge - 1)

    # per key: base of its last segment (seeded when it continues the saved one), last pos
    v2 = np.where(nr[keep], base[keep], -np.inf)
    cont_first = k_first & continuing[keep] & ~bound[keep]
    v2 = np.where(cont_first, np.maximum(v2, seed_base[kc[keep]]), v2)
    seg_max = _seg_cummax(v2, start)
    key_base = np.full(n_keys, -np.inf)
    key_base[kc[keep][k_last]] = seg_max[k_last]  # the running max of its last segment
    key_last = np.zeros(n_keys, dtype=np.int64)
    g_last = np.r_[first[1:], True]
    key_last[kc[g_last]] = pos[g_last]  # sorted by pos within a key: its newest record
    key_open = np.zeros(n_keys, dtype=bool)
    key_open[kc[on_stack]] = True
    return Match(xj[ok], jj[ok], one_way, on_stack, dep, key_last, key_base, key_open)


# --------------------------------------------------------------------------- joining


def join_pairs(work: pd.DataFrame, xi: np.ndarray, ji: np.ndarray, cols: list[str],
          first_cols: tuple[str, ...] = ("uid", "source_file", "source_line")) -> pd.DataFrame:
    """Canonical flows from record pairs: rows ``xi`` (read first) and ``ji`` of ``work``.

    ``first_cols`` (identity, place in the stream) come from the record read first."""
    n = len(xi)
    proto = work["proto"].to_numpy(dtype=object, na_value="")[xi]
    tcp, udp, icmp = proto == "tcp", proto == "udp", proto == "icmp"
    hist_all = text_array(work["history"])
    state_all = work["conn_state"].to_numpy(dtype=object, na_value="")
    syn_only = np.isin(state_all, _SYN_ONLY_STATES)
    lone = _has(hist_all, "H")
    syn = _has(hist_all, "S") | lone
    ack = _has(hist_all, "A")
    req = work["_req"].fillna(False).to_numpy(dtype=bool)
    ts_all = work["ts"].to_numpy(dtype=np.float64)
    end_all = work["_end"].to_numpy(dtype=np.float64)
    xts, jts = ts_all[xi], ts_all[ji]
    xo = work["orig_p"].to_numpy(dtype=np.float64, na_value=np.nan)[xi]
    xr = work["resp_p"].to_numpy(dtype=np.float64, na_value=np.nan)[xi]
    # one side's SYN, both sides' ACKs: the SYN may be the responder's SYN-ACK with the
    # originator's SYN never seen (a flow that began before the capture or the exporter),
    # or the originator's with the SYN-ACK unseen: the flags cannot tell, the ports can
    # (nfpcapd on CTU-Normal-40: 373 connections whose client SYN is missing)
    unclear = tcp & (syn[xi] != syn[ji]) & ack[xi] & ack[ji] & (xr != xo)
    x_orig = np.select(
        [tcp & (syn_only[xi] != syn_only[ji]), tcp & (lone[xi] != lone[ji]), unclear,
         tcp & (syn[xi] != syn[ji]), icmp & (req[xi] != req[ji]), xts != jts, ~icmp & (xr != xo)],
        [syn_only[xi], lone[ji], xr < xo, syn[xi], req[xi], xts < jts, xr < xo],
        True,
    ).astype(bool)  # fmt: skip
    oi = np.where(x_orig, xi, ji)
    ri = np.where(x_orig, ji, xi)
    out = work[cols].take(oi).reset_index(drop=True)
    resp = work[["orig_pkts", "orig_ip_bytes", "orig_bytes"]].take(ri).reset_index(drop=True)
    ts = np.minimum(xts, jts)
    out["ts"] = ts
    # microseconds, as Zeek writes them (end - start adds float noise to ms values)
    out["duration"] = np.round(np.maximum(end_all[xi], end_all[ji]) - ts, 6)
    out["resp_pkts"] = resp["orig_pkts"].astype("Int64")
    out["resp_ip_bytes"] = resp["orig_ip_bytes"].astype("Int64")
    out["resp_bytes"] = resp["orig_bytes"].astype("Int64")
    ol = {c: _has(hist_all, c)[oi] for c in "SHADFR"}
    rl = {c: _has(hist_all, c)[ri] for c in "SHADFR"}
    o_syn, r_syn = ol["S"] | ol["H"], rl["S"] | rl["H"]
    parts = [(tcp & ol["S"], "S"), (tcp & ol["H"], "H"), (tcp & r_syn, "h"),
             (tcp & ol["A"], "A"), ((tcp | udp) & ol["D"], "D"), (tcp & rl["A"], "a"),
             ((tcp | udp) & rl["D"], "d"), (tcp & ol["F"], "F"), (tcp & rl["F"], "f"),
             (tcp & ol["R"], "R"), (tcp & rl["R"], "r")]  # fmt: skip
    hist = pc.binary_join_element_wise(
        *[pc.if_else(pa.array(c), pa.scalar(s), pa.scalar("")) for c, s in parts], "")
    history = pd.Series(hist.to_pandas(), dtype=schema.STR)
    no_hist = np.asarray(pc.is_null(hist_all).to_numpy(zero_copy_only=False), dtype=bool)
    no_flags = tcp & no_hist[oi] & no_hist[ri]
    history[~(tcp | udp) | (history == "").to_numpy() | no_flags] = np.nan
    oF, oR, rF, rR = ol["F"], ol["R"], rl["F"], rl["R"]
    state = np.select(
        [tcp & ~o_syn & ~r_syn, tcp & ~o_syn & rR, tcp & ~o_syn & rF, tcp & ~o_syn,
         tcp & ~r_syn & rR, tcp & ~r_syn & oR, tcp & ~r_syn & oF, tcp & ~r_syn,
         tcp & oR, tcp & rR, tcp & oF & rF, tcp & oF, tcp & rF, tcp, udp],
        ["OTH", "RSTRH", "SHR", "OTH", "REJ", "RSTOS0", "SH", "OTH",
         "RSTO", "RSTR", "SF", "S2", "S3", "S1", "SF"],
        "OTH",
    )  # fmt: skip
    conn_state = pd.Series(state, dtype=schema.STR)
    conn_state[no_flags] = np.nan
    out["history"] = history
    out["conn_state"] = conn_state
    present = [c for c in first_cols if c in work.columns]
    first = work[present].take(xi).reset_index(drop=True)
    for c in present:
        out[c] = first[c]
    out["paired"] = pd.array(np.ones(n, dtype=bool), dtype="boolean")
    return out
