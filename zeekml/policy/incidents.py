"""Incidents: the flagged flows of one host and one behaviour over an episode, as one record.

A flow-level notice stream is what analysts learn to ignore; an incident says "host H
did (or suffered) behaviour C from first_seen to last_seen: F flows, N notices, P peers,
Q ports, scores up to S, models M agreed, strongest evidence U".

**What goes in.** Every *flagged* flow: a scored row whose score crossed its threshold
and whose endpoints are not allow-listed (what the notice policy calls a candidate),
whether it became a notice or was suppressed. So every notice (the rows that open a
suppression window) is inside exactly one incident, and the incident's ``flows`` count
equals the ``n`` of its notices summed. Counting flows rather than notices also keeps
incidents independent of ``--suppress``.

**Key.** ``(host, class)``. The host is the originator, except for *inbound* flows,
where it is the responder (many internet sources probing one local host is one
incident about that host); ``role`` says which it was (``both`` when the incident
holds flows of each kind). A flow is inbound when its responder is local and its
originator is not: local as Zeek marked it (``local_orig``/``local_resp``, from
``Site::local_nets``) when it marked either side of the flow, else by address
(RFC 1918, unique-local, link-local and loopback ranges; see
:func:`zeekml.records.addresses.is_private`), and its originator is not one the notice
policy keys by itself as a sweeper (:mod:`zeekml.policy.sweep`). Models that
report the same class for one host share its incidents.

**Episode (log time).** Each flagged flow has an *activity time*: the stream's log
clock at its row (the running maximum of ``ts``, as the notice policy uses). An
incident closes when ``gap`` seconds (default 1800) of log time pass without a new
flagged flow of its key; the closing record's ``ts`` is that moment (last activity +
gap). A later flagged flow of the key opens a new incident. An incident still going
on is written at ``update`` intervals (default 3600 s of log time, counted from its
first activity): at ``first + k * update`` when it got new flows since its last
record and has not closed before. The first record of an incident still going on
says ``open``, later ones ``update``, the last ``closed``. At the end of an input
read without ``--state`` every open incident is closed (``ts`` = the input's last log
time); with ``--state`` open incidents persist to the next run like suppression
windows.

Every decision is a function of the key's flagged flows and their activity times
only: a record at logical time T holds exactly the flows with activity before T. So
the output does not depend on how the stream was cut into batches, cron runs or
Spark partitions, and the Spark engine, feeding each host's flagged flows in arrival
order, writes the same incidents as the local engine.

Vectorized: a batch's flagged flows are grouped by key with array operations (sort,
cumulative sums, ``reduceat``); Python runs per new incident (its id) and per record
written, never per flow.

State (open incidents, their peer and port sets, evidence) round-trips through plain
numpy arrays and JSON text (:meth:`IncidentTracker.state_dict`), never pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import ConfigError, StateError
from zeekml.records.addresses import subject_by_direction, subject_inbound
from zeekml.records.incidents import INCIDENT_COLUMNS, INCIDENT_DTYPES, empty_incidents

STATE_VERSION = 1
DEFAULT_GAP = defaults.INCIDENT_GAP
DEFAULT_UPDATE = defaults.INCIDENT_UPDATE
DEFAULT_EVIDENCE = 5
#: model sets are bit masks in an int64
MAX_MODELS = 62

#: columns :func:`flagged_rows` takes from the decided rows
FLOW_FIELDS = ("ts", "uid", "orig_h", "resp_h", "resp_p", "model", "verdict", "score",
               "context")
#: the tracker's input columns (:func:`flagged_rows` makes them)
INPUT_COLUMNS = (*FLOW_FIELDS, "act", "opener", "inbound", "flow", "by_direction")

_SEP = "\x1f"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)


@dataclass(frozen=True)
class IncidentConfig:
    """Episode gap and update interval (seconds of log time), evidence flows kept."""

    gap: float = DEFAULT_GAP
    update: float = DEFAULT_UPDATE
    evidence: int = DEFAULT_EVIDENCE

    def __post_init__(self) -> None:
        for name in ("gap", "update"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"incident {name} must be a positive number of seconds, got {v}")
        if not 1 <= self.evidence <= 100:
            raise ConfigError(f"incident evidence must be 1..100 flows, got {self.evidence}")


# --------------------------------------------------------------------------- inputs


def activity(clock: np.ndarray) -> np.ndarray:
    """Activity times from stream-clock values (a clock before any ``ts`` counts as 0)."""
    c = np.asarray(clock, dtype=np.float64)
    return np.where(np.isfinite(c), c, 0.0)


def flagged_rows(rows: pd.DataFrame, crossing: np.ndarray, opener: np.ndarray,
                 clock: np.ndarray, inbound: np.ndarray, flow: np.ndarray) -> pd.DataFrame:
    """The tracker's input from one batch of decided rows (every array is per row).

    ``crossing``: flagged (threshold crossed, not allow-listed); ``opener``: the row is
    a notice; ``clock``: the stream clock at the row; ``inbound``: its flow is inbound;
    ``flow``: an id of its flow (rows of one flow share it: the models' agreement).
    """
    idx = np.nonzero(np.asarray(crossing, dtype=bool))[0]
    x = rows.iloc[idx][list(FLOW_FIELDS)].reset_index(drop=True)
    x["act"] = activity(np.asarray(clock)[idx])
    x["opener"] = np.asarray(opener, dtype=bool)[idx]
    x["inbound"] = np.asarray(inbound, dtype=bool)[idx]
    x["flow"] = np.asarray(flow, dtype=np.int64)[idx]
    return x


def flagged_from_decision(decision: Any, flows: pd.DataFrame, models: int,
                          subjects: np.ndarray | None = None) -> pd.DataFrame:
    """The tracker's input from :attr:`NoticePolicy.decision` over ``flows`` scored by
    ``models`` models (rows are flow-major: row ``r`` is flow ``r // models``);
    ``subjects`` (per model, :func:`~zeekml.runtime.pipeline.notice_subjects`):
    1 its rows count as inbound (the flood detector's notices are about the victim,
    whatever the direction), -1 never (the scan detector's are about the scanner)."""
    flagged = np.asarray(decision.flagged, dtype=bool)
    idx = np.nonzero(flagged)[0]
    inbound = np.zeros(len(flagged), dtype=bool)
    inbound[idx] = subject_inbound(flows, idx, np.zeros(models, dtype=np.int8)
                                   if subjects is None else subjects)
    swept = getattr(decision, "swept", None)
    if swept is not None:  # a sweeper: the notice is about it (zeekml.policy.sweep)
        inbound &= ~np.asarray(swept, dtype=bool)
    # rows holds the batch, or only the positions the decision names (the flagged among them)
    pos = getattr(decision, "positions", None)
    on = slice(None) if pos is None else pos
    x = flagged_rows(decision.rows, flagged[on], np.asarray(decision.notice)[on],
                     np.asarray(decision.clock)[on], inbound[on],
                     (np.arange(len(flagged)) // models)[on])
    # which rows' subject follows the direction (what a sweeper's may be): calibration
    # decides notices again from these rows
    about = np.zeros(models, dtype=np.int8) if subjects is None else subjects
    x["by_direction"] = subject_by_direction(np.arange(len(flagged))[on][flagged[on]], about)
    return x


def _text(values: Any) -> np.ndarray:
    """A column as an object array of str, ``-`` for missing."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(s.dtype, pd.StringDtype):
        return np.asarray(s.to_numpy(dtype=object, na_value="-"), dtype=object)
    return np.asarray(s.astype("str").fillna("-").to_numpy(dtype=object), dtype=object)


def _hash(values: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash per string (pandas' siphash with its fixed key)."""
    return np.asarray(pd.util.hash_array(np.asarray(values, dtype=object), categorize=False),
                      dtype=np.uint64)


def _mix(iid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One 64-bit key per (incident, value) pair (collisions: ~2^-64 per pair)."""
    with np.errstate(over="ignore"):
        h = values.astype(np.uint64) ^ (iid.astype(np.uint64) * _M1)
        h = (h ^ (h >> np.uint64(31))) * _M2
        return np.asarray(h ^ (h >> np.uint64(29)), dtype=np.uint64)


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    if not len(table):
        return np.zeros(len(values), dtype=bool)
    i = np.searchsorted(table, values)
    return np.asarray(table[np.minimum(i, len(table) - 1)] == values, dtype=bool)


def _incident_id(text: str) -> str:
    """``I`` + 17 base62 characters of a digest (as Zeek's uids look)."""
    n = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                       digest_size=13).digest(), "big")
    out = []
    for _ in range(17):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "I" + "".join(out)


class _Runs:
    """Runs of equal values in a sorted key array (the groups of one incident)."""

    def __init__(self, seg: np.ndarray) -> None:
        start = np.r_[True, seg[1:] != seg[:-1]] if len(seg) else np.zeros(0, dtype=bool)
        self.first = np.nonzero(start)[0]
        self.run = np.cumsum(start) - 1
        bounds = np.r_[self.first, len(seg)]
        long = np.nonzero(np.diff(bounds) > 1)[0]
        self.long = [(int(bounds[i]), int(bounds[i + 1])) for i in long]

    def cum(self, fn: Any, v: np.ndarray) -> np.ndarray:
        """``fn.accumulate`` inside each run."""
        if fn is np.add:
            c = np.cumsum(v)
            return c - (c[self.first] - v[self.first])[self.run] if len(v) else c
        out = v.copy()
        for a, b in self.long:  # an incident spanning update epochs in one batch: rare
            out[a:b] = fn.accumulate(v[a:b])
        return out


# --------------------------------------------------------------------------- tables

#: open incidents, one entry per incident (struct of arrays)
_NUM: dict[str, Any] = {
    "iid": np.int64, "first_seen": np.float64, "last_seen": np.float64,
    "first_act": np.float64, "last_act": np.float64, "next_update": np.float64,
    "records": np.int64, "flows": np.int64, "notices": np.int64, "max_score": np.float64,
    "sum_score": np.float64, "peers": np.int64, "ports": np.int64, "own": np.int64,
    "agree": np.int64, "roles": np.int64,
}
_STR = ("key", "host", "verdict", "incident")
#: roles bit mask -> the record's ``role``
_ROLE_NAMES = np.array(["-", "orig", "resp", "both"], dtype=object)
#: evidence kept per open incident (its strongest flows)
_EV_NUM: dict[str, Any] = {"iid": np.int64, "score": np.float64, "uh": np.uint64,
                           "mh": np.uint64}
_EV_OBJ = ("uid", "model", "context")
#: what a record's content is made of
_CONTENT = ("flows", "notices", "max_score", "sum_score", "first_seen", "last_seen", "peers",
            "ports", "own", "agree", "roles")

Table = dict[str, np.ndarray]


def _empty_table(num: dict[str, Any], obj: tuple[str, ...]) -> Table:
    return {**{c: np.zeros(0, dtype=t) for c, t in num.items()},
            **{c: np.zeros(0, dtype=object) for c in obj}}


def _take(tab: Table, idx: np.ndarray) -> Table:
    return {c: a[idx] for c, a in tab.items()}


def _cat(a: Table, b: Table) -> Table:
    return {c: np.concatenate([a[c], b[c]]) for c in a}


def _top(ev: Table, group: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` strongest items of each group (score, then uid and model hash)."""
    if not len(group):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((ev["mh"], ev["uh"], -ev["score"], group))
    g = group[order]
    first = np.searchsorted(g, g, side="left")
    return order[np.arange(len(g)) - first < k]


# --------------------------------------------------------------------------- tracker


class IncidentTracker:
    """Stateful, vectorized incidents of one stream (see the module doc).

    :meth:`update` takes a batch's flagged rows (:func:`flagged_rows`, stream order)
    and the stream clock at the batch's end and returns the incident records due, in
    log-time order; :meth:`finish` closes what is open at the end of the input.
    """

    def __init__(self, config: IncidentConfig | None = None) -> None:
        self.config = config or IncidentConfig()
        self._clock = -math.inf
        self._next_iid = 0
        self.records_written = 0
        self._models: list[str] = []
        self._last_evidence: tuple[Table, np.ndarray, np.ndarray] | None = None
        self._reset_open()

    def _reset_open(self) -> None:
        self._open = _empty_table(_NUM, _STR)
        self._ev = _empty_table(_EV_NUM, _EV_OBJ)
        self._peer_keys = np.zeros(0, dtype=np.uint64)  # sorted
        self._peer_iid = np.zeros(0, dtype=np.int64)
        self._port_keys = np.zeros(0, dtype=np.uint64)
        self._port_iid = np.zeros(0, dtype=np.int64)

    @property
    def pending(self) -> int:
        """Incidents open (not yet closed)."""
        return len(self._open["iid"])

    def _model_bits(self, names: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(names.astype(str), return_inverse=True)
        bits = np.zeros(len(uniq), dtype=np.int64)
        for i, name in enumerate(uniq.tolist()):
            if name not in self._models:
                if len(self._models) >= MAX_MODELS:
                    raise ConfigError(f"incidents track at most {MAX_MODELS} models")
                self._models.append(name)
            bits[i] = np.int64(1) << np.int64(self._models.index(name))
        return bits[inv]

    def _names(self, mask: int) -> list[str]:
        """The models of a bit mask, sorted: bits are given in order of first appearance,
        which depends on how the stream was cut into batches."""
        return sorted(m for i, m in enumerate(self._models) if (mask >> i) & 1)

    # ----------------------------------------------------------------- update
    def update(self, x: pd.DataFrame, clock: float) -> pd.DataFrame:
        """Add one batch's flagged rows (stream order); return the records now due."""
        cfg = self.config
        c = -math.inf if clock is None or math.isnan(float(clock)) else float(clock)
        n = len(x)
        if n:
            c = max(c, float(np.max(x["act"].to_numpy(dtype=np.float64))))
        now = max(self._clock, c)
        op = self._open
        m = len(op["iid"])
        if n == 0 and m == 0:
            self._clock = now
            return empty_incidents()
        if n:
            b = self._batch(x, m)
            t = _cat(op, b["new"]) if len(b["new"]["iid"]) else op
        else:
            b = None
            t = op
        nt = len(t["iid"])
        g = self._groups(b, t) if b is not None else None
        ng = 0 if g is None else len(g["ti"])
        # content of each group: its instance's carried values and every group up to it
        cum = None
        if g is not None:
            ti = g["ti"]
            r = _Runs(ti)
            cum = {
                "flows": r.cum(np.add, g["cnt"]) + t["flows"][ti],
                "notices": r.cum(np.add, g["not"]) + t["notices"][ti],
                "sum_score": r.cum(np.add, g["sum"]) + t["sum_score"][ti],
                "peers": r.cum(np.add, g["peer"]) + t["peers"][ti],
                "ports": r.cum(np.add, g["port"]) + t["ports"][ti],
                "max_score": np.fmax(r.cum(np.fmax, g["max"]), t["max_score"][ti]),
                "first_seen": np.fmin(r.cum(np.fmin, g["tmin"]), t["first_seen"][ti]),
                "last_seen": np.fmax(r.cum(np.fmax, g["tmax"]), t["last_seen"][ti]),
                "own": r.cum(np.bitwise_or, g["own"]) | t["own"][ti],
                "agree": r.cum(np.bitwise_or, g["agree"]) | t["agree"][ti],
                "roles": r.cum(np.bitwise_or, g["roles"]) | t["roles"][ti],
            }
        last_g = np.full(nt, -1, dtype=np.int64)
        first_g = np.full(nt, -1, dtype=np.int64)
        if ng:
            assert g is not None
            ti = g["ti"]
            is_last = np.r_[ti[1:] != ti[:-1], True]
            is_first = np.r_[True, ti[1:] != ti[:-1]]
            last_g[ti[is_last]] = np.nonzero(is_last)[0]
            first_g[ti[is_first]] = np.nonzero(is_first)[0]
        has_rows = last_g >= 0
        last_act = t["last_act"].copy()
        if ng:
            assert g is not None
            last_act[has_rows] = g["last"][last_g[has_rows]]
        followed = np.zeros(nt, dtype=bool)
        if b is not None:
            followed[b["followed"]] = True
        deadline = last_act + cfg.gap
        closes = followed | (deadline <= now)
        first_act = t["first_act"]
        events: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        next_update = np.full(nt, np.inf)
        # updates of groups: every group but an instance's last is followed by a later
        # epoch of the same incident; the last one is due once the clock passed it
        if ng:
            assert g is not None
            ti = g["ti"]
            bnd = first_act[ti] + (g["k"] + 1) * cfg.update
            is_last = np.r_[ti[1:] != ti[:-1], True]
            emit = ~is_last | ((bnd < g["last"] + cfg.gap) & (bnd <= now))
            gi = np.nonzero(emit)[0]
            events.append(("update", ti[gi], gi, bnd[gi]))
            waiting = is_last & ~emit
            next_update[ti[waiting]] = bnd[waiting]
        # a carried incident's pending update whose epoch got no rows in this batch
        cb = t["next_update"][:m]
        pend = np.nonzero(np.isfinite(cb))[0]
        if len(pend):
            ck = np.rint((cb[pend] - first_act[pend]) / cfg.update).astype(np.int64) - 1
            fg = first_g[pend]
            gk = g["k"] if g is not None else np.zeros(0, dtype=np.int64)
            joins = (fg >= 0) & (np.where(fg >= 0, gk[np.maximum(fg, 0)], -2) == ck
                                 if ng else False)
            lone = pend[~joins]
            ok = cb[lone] < op["last_act"][lone] + cfg.gap
            due = ok & (cb[lone] <= now)
            events.append(("update", lone[due], np.full(int(due.sum()), -1, dtype=np.int64),
                           cb[lone[due]]))
            wait = lone[ok & ~due]
            next_update[wait] = cb[wait]
        ci = np.nonzero(closes)[0]
        events.append(("closed", ci, last_g[ci], deadline[ci]))
        recs, updates = self._records(t, events, cum, b, g)
        self._carry(t, ~closes, cum, last_g, last_act, next_update, updates, b, g)
        self._clock = now
        self.records_written += len(recs)
        return recs

    def finish(self, clock: float | None = None) -> pd.DataFrame:
        """End of input: records due up to ``clock``, then every open incident closed
        (``ts`` = the stream's last log time)."""
        recs = self.update(pd.DataFrame(columns=list(INPUT_COLUMNS)),
                           -math.inf if clock is None else clock)
        ni = self.pending
        if not ni:
            return recs
        events = [("closed", np.arange(ni), np.full(ni, -1, dtype=np.int64),
                   np.full(ni, self._clock))]
        last, _ = self._records(self._open, events, None, None, None)
        self.records_written += len(last)
        self._reset_open()
        return pd.concat([recs, last], ignore_index=True) if len(recs) else last

    # ----------------------------------------------------------------- internals
    def _batch(self, x: pd.DataFrame, m: int) -> dict[str, Any]:
        """Sort a batch's rows by incident key and assign each to an incident instance."""
        cfg = self.config
        n = len(x)
        inbound = x["inbound"].to_numpy(dtype=bool)
        orig, resp = _text(x["orig_h"]), _text(x["resp_h"])
        host = np.where(inbound, resp, orig)
        peer = np.where(inbound, orig, resp)
        verdict = _text(x["verdict"])
        hc, hu = pd.factorize(host)
        vc, vu = pd.factorize(verdict)
        codes, combo = pd.factorize(hc.astype(np.int64) * max(len(vu), 1) + vc)
        hu, vu = np.asarray(hu, dtype=object), np.asarray(vu, dtype=object)
        ukeys = hu[combo // max(len(vu), 1)] + _SEP + vu[combo % max(len(vu), 1)]
        order = np.argsort(codes, kind="stable")
        cs = codes[order]
        act = x["act"].to_numpy(dtype=np.float64)[order]
        j = (pd.Index(self._open["key"]).get_indexer(ukeys) if m
             else np.full(len(ukeys), -1, dtype=np.int64))
        jk = j[cs]
        first_of_key = np.r_[True, cs[1:] != cs[:-1]]
        prev = np.r_[np.nan, act[:-1]]
        carried = self._open["last_act"]
        fk = np.nonzero(first_of_key)[0]
        prev[fk] = np.where(jk[fk] >= 0, carried[np.maximum(jk[fk], 0)] if m else np.nan,
                            np.nan)
        brk = np.isnan(prev) | (act - prev >= cfg.gap)
        cb = np.cumsum(brk)
        key_start = np.maximum.accumulate(np.where(first_of_key, np.arange(n), 0))
        before = cb[key_start] - brk[key_start]
        ti = np.where(cb - before == 0, jk, m + cb - 1).astype(np.int64)
        starts = np.nonzero(brk)[0]  # first row of each new instance
        # instances followed by a later instance of their key (they close in this batch)
        inner = starts[~first_of_key[starts]]
        carried_broken = jk[starts[first_of_key[starts]]]
        followed = np.r_[ti[inner - 1], carried_broken[carried_broken >= 0]].astype(np.int64)
        rows = order[starts]
        uid = _text(x["uid"])
        q = len(starts)
        ids = [_incident_id(f"{h}{_SEP}{v}{_SEP}{u}{_SEP}{a!r}") for h, v, u, a in
               zip(host[rows], verdict[rows], uid[rows], act[starts], strict=True)]
        iid = np.arange(self._next_iid, self._next_iid + q, dtype=np.int64)
        self._next_iid += q
        new: Table = {c: np.zeros(q, dtype=dt) for c, dt in _NUM.items()}
        new.update(iid=iid, first_act=act[starts].copy(), last_act=act[starts].copy(),
                   next_update=np.full(q, np.inf), first_seen=np.full(q, np.nan),
                   last_seen=np.full(q, np.nan), max_score=np.full(q, np.nan))
        new.update(key=(host[rows] + _SEP + verdict[rows]).astype(object),
                   host=host[rows].astype(object),
                   verdict=verdict[rows].astype(object),
                   incident=np.array(ids, dtype=object))
        return {"order": order, "ti": ti, "act": act, "new": new, "followed": followed,
                "peer": peer[order], "uid": uid[order], "host": hc[order], "x": x}

    def _groups(self, b: dict[str, Any], t: Table) -> dict[str, np.ndarray]:
        """Per (instance, update epoch) group of the sorted rows: counts and maxima."""
        cfg = self.config
        order, ti, act, x = b["order"], b["ti"], b["act"], b["x"]
        n = len(ti)
        k = np.floor((act - t["first_act"][ti]) / cfg.update).astype(np.int64)
        gstart = np.r_[True, (ti[1:] != ti[:-1]) | (k[1:] != k[:-1])]
        starts = np.nonzero(gstart)[0]
        gid = np.cumsum(gstart) - 1
        score = x["score"].to_numpy(dtype=np.float64)[order]
        ts = x["ts"].to_numpy(dtype=np.float64, na_value=np.nan)[order]
        model = _text(x["model"])[order]
        own = self._model_bits(model)
        flow = x["flow"].to_numpy(dtype=np.int64)[order]
        # agreement: the models that flagged the same flow about the same host (a scan
        # notice is about the scanner, another model's on the same inbound flow about
        # the local host: different incidents, and the Spark engine tracks each host's
        # rows apart)
        hcode = np.asarray(b["host"], dtype=np.int64)
        _, finv = np.unique(flow * (int(hcode.max()) + 1 if n else 1) + hcode,
                            return_inverse=True)
        fmask = np.zeros(int(finv.max()) + 1 if n else 0, dtype=np.int64)
        np.bitwise_or.at(fmask, finv, own)
        agree = fmask[finv]
        iid = t["iid"][ti]
        ph = _mix(iid, _hash(b["peer"]))
        port = x["resp_p"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)[order]
        pk = _mix(iid, port.astype(np.uint64))
        new_peer = self._first_new(ph, self._peer_keys)
        new_port = self._first_new(pk, self._port_keys)
        ng = len(starts)
        b.update(gid=gid, score=score, own_row=own, ph=ph, pk=pk, new_peer=new_peer,
                 new_port=new_port, iid_rows=iid, model=model)
        return {
            "ti": ti[starts], "k": k[starts],
            "cnt": np.diff(np.r_[starts, n]).astype(np.int64),
            "not": np.add.reduceat(x["opener"].to_numpy(dtype=np.int64)[order], starts),
            "max": np.fmax.reduceat(score, starts),
            "sum": np.add.reduceat(np.nan_to_num(score), starts),
            "tmin": np.fmin.reduceat(ts, starts),
            "tmax": np.fmax.reduceat(ts, starts),
            "last": act[np.r_[starts[1:], n] - 1],
            "peer": np.bincount(gid[new_peer], minlength=ng).astype(np.int64),
            "port": np.bincount(gid[new_port], minlength=ng).astype(np.int64),
            "own": np.bitwise_or.reduceat(own, starts),
            "agree": np.bitwise_or.reduceat(agree, starts),
            "roles": np.bitwise_or.reduceat(
                np.where(x["inbound"].to_numpy(dtype=bool)[order], 2, 1).astype(np.int64),
                starts),
        }

    @staticmethod
    def _first_new(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Rows whose key is not known and appears for the first time in the batch."""
        first = np.zeros(len(keys), dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        return np.asarray(first & ~_in_sorted(keys, known))

    def _evidence(self, t: Table, b: dict[str, Any] | None, g: Any) -> tuple[Table, np.ndarray,
                                                                            np.ndarray]:
        """Evidence candidates: carried items (group -1) and each group's strongest rows.

        Returns (items, their instance, their group)."""
        ev = self._ev
        pos = pd.Index(t["iid"]).get_indexer(ev["iid"]) if len(ev["iid"]) else \
            np.zeros(0, dtype=np.int64)
        ok = pos >= 0
        items = _take(ev, np.nonzero(ok)[0])
        e_ti = pos[ok].astype(np.int64)
        e_g = np.full(len(e_ti), -1, dtype=np.int64)
        if b is not None and g is not None:
            x, order = b["x"], b["order"]
            cand: Table = {
                "iid": b["iid_rows"], "score": b["score"], "uh": _hash(b["uid"]),
                "mh": _hash(b["model"]), "uid": b["uid"], "model": b["model"],
                "context": x["context"].to_numpy(dtype=object)[order],
            }
            top = _top(cand, b["gid"], self.config.evidence)
            items = _cat(items, _take(cand, top))
            e_ti = np.r_[e_ti, b["ti"][top]]
            e_g = np.r_[e_g, b["gid"][top]]
        return items, e_ti, e_g

    def _records(self, t: Table, events: list[Any], cum: dict[str, np.ndarray] | None,
                 b: dict[str, Any] | None, g: Any) -> tuple[pd.DataFrame, np.ndarray]:
        """Incident records of ``events`` (kind, instance, group up to, ts), in log-time
        order; also the number of update records per instance."""
        nt = len(t["iid"])
        kinds = np.concatenate([np.full(len(e[1]), e[0], dtype=object) for e in events])
        r_ti = np.concatenate([e[1] for e in events]).astype(np.int64)
        updates = np.bincount(r_ti[kinds == "update"], minlength=nt)
        self._last_evidence = None
        if not len(kinds):
            return empty_incidents(), updates
        r_g = np.concatenate([e[2] for e in events]).astype(np.int64)
        r_ts = np.concatenate([e[3] for e in events]).astype(np.float64)
        nr = len(r_ti)
        content = {c: t[c][r_ti].copy() for c in _CONTENT}
        with_g = r_g >= 0
        if cum is not None and with_g.any():
            for c in _CONTENT:
                content[c][with_g] = cum[c][r_g[with_g]]
        incident = t["incident"][r_ti]
        upd = kinds == "update"
        order = np.lexsort((incident.astype(str), np.where(upd, 0, 1), r_ts))
        # open / update / closed: a record's earlier records are the carried ones plus
        # the updates of its incident before it in this batch
        seq = pd.Series(upd[order].astype(np.int64)).groupby(r_ti[order]).cumsum().to_numpy()
        before = np.empty(nr, dtype=np.int64)
        before[order] = t["records"][r_ti[order]] + seq - upd[order]
        state = np.where(~upd, "closed", np.where(before == 0, "open", "update"))
        uids, context = self._evidence_lists(t, b, g, r_ti, r_g)
        flows = content["flows"].astype(np.int64)

        def objs(values: list[list[str]]) -> np.ndarray:
            a = np.empty(nr, dtype=object)
            a[:] = values
            return a[order]

        cols: dict[str, Any] = {
            "ts": r_ts, "incident": incident, "state": state, "host": t["host"][r_ti],
            "role": _ROLE_NAMES[content["roles"] & 3], "verdict": t["verdict"][r_ti],
            "first_seen": content["first_seen"], "last_seen": content["last_seen"],
            "flows": flows, "notices": content["notices"], "peers": content["peers"],
            "ports": content["ports"], "max_score": content["max_score"],
            "mean_score": content["sum_score"] / np.maximum(flows, 1),
        }
        # typed columns built directly: DataFrame.astype costs milliseconds per batch
        out = {c: pd.array(np.asarray(v)[order], dtype=INCIDENT_DTYPES[c])
               for c, v in cols.items()}
        out["models"] = objs([self._names(int(v)) for v in content["own"]])
        out["agreed"] = objs([self._names(int(a) & ~int(o)) for a, o in
                              zip(content["agree"], content["own"], strict=True)])
        out["uids"] = objs(uids)
        out["context"] = objs(context)
        return pd.DataFrame({c: out[c] for c in INCIDENT_COLUMNS}), updates

    def _evidence_lists(self, t: Table, b: Any, g: Any, r_ti: np.ndarray, r_g: np.ndarray
                        ) -> tuple[list[list[str]], list[list[str]]]:
        """Per record: its strongest flows' uids and the context of the strongest."""
        items, e_ti, e_g = self._evidence(t, b, g)
        self._last_evidence = (items, e_ti, e_g)
        srt = np.lexsort((e_g, e_ti))
        s_ti = e_ti[srt]
        lo = np.searchsorted(s_ti, r_ti, side="left")
        hi = np.searchsorted(s_ti, r_ti, side="right")
        k = self.config.evidence
        uids: list[list[str]] = []
        context: list[list[str]] = []
        for a, z, upto in zip(lo, hi, r_g, strict=True):  # per record
            sel = srt[a:z]
            sel = sel[e_g[sel] <= upto]
            if not len(sel):
                uids.append([])
                context.append([])
                continue
            best = sel[np.lexsort((items["mh"][sel], items["uh"][sel], -items["score"][sel]))[:k]]
            uids.append([str(u) for u in items["uid"][best]])
            ctx = items["context"][best[0]]
            context.append([str(v) for v in ctx] if isinstance(ctx, (list, tuple, np.ndarray))
                           else [])
        return uids, context

    def _carry(self, t: Table, stay: np.ndarray, cum: dict[str, np.ndarray] | None,
               last_g: np.ndarray, last_act: np.ndarray, next_update: np.ndarray,
               updates: np.ndarray, b: dict[str, Any] | None, g: Any) -> None:
        """The open table, member sets and evidence after this batch."""
        keep = np.nonzero(stay)[0]
        new = _take(t, keep)
        lg = last_g[keep]
        has = lg >= 0
        if cum is not None and has.any():
            for c in _CONTENT:
                new[c][has] = cum[c][lg[has]]
        new["last_act"] = last_act[keep]
        new["next_update"] = next_update[keep]
        new["records"] = new["records"] + updates[keep]
        alive = np.sort(new["iid"])
        # member sets: the surviving incidents' pairs, old and new
        pk, piid = self._peer_keys, self._peer_iid
        qk, qiid = self._port_keys, self._port_iid
        if b is not None:
            np_, nq = b["new_peer"], b["new_port"]
            pk, piid = np.r_[pk, b["ph"][np_]], np.r_[piid, b["iid_rows"][np_]]
            qk, qiid = np.r_[qk, b["pk"][nq]], np.r_[qiid, b["iid_rows"][nq]]
        self._peer_keys, self._peer_iid = _members(pk, piid, alive)
        self._port_keys, self._port_iid = _members(qk, qiid, alive)
        # evidence: the surviving incidents' strongest items
        if self._last_evidence is not None:
            items, _, _ = self._last_evidence
        else:
            items, _, _ = self._evidence(t, b, g)
        items = _take(items, np.nonzero(np.isin(items["iid"], alive))[0])
        self._ev = _take(items, _top(items, items["iid"], self.config.evidence))
        self._open = new

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, np.ndarray]:
        op, ev = self._open, self._ev
        arrays: dict[str, np.ndarray] = {
            "version": np.array(STATE_VERSION),
            "clock": np.array(self._clock, dtype=np.float64),
            "next_iid": np.array(self._next_iid, dtype=np.int64),
            "records_written": np.array(self.records_written, dtype=np.int64),
            "models_json": np.array(json.dumps(self._models)),
            "peer_keys": self._peer_keys, "peer_iid": self._peer_iid,
            "port_keys": self._port_keys, "port_iid": self._port_iid,
        }
        for c, dt in _NUM.items():
            arrays[f"open.{c}"] = op[c].astype(dt)
        for c in _STR:
            arrays[f"open.{c}"] = np.array([str(v) for v in op[c]], dtype=str)
        for c, dt in _EV_NUM.items():
            arrays[f"ev.{c}"] = ev[c].astype(dt)
        arrays["ev_json"] = np.array(json.dumps([
            [str(u), str(mm), [str(v) for v in cx] if isinstance(cx, (list, tuple, np.ndarray))
             else None] for u, mm, cx in zip(ev["uid"], ev["model"], ev["context"], strict=True)
        ]))
        return arrays

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; validates everything first (StateError)."""
        try:
            if int(state["version"]) != STATE_VERSION:
                raise StateError(f"incident state version {int(state['version'])} is not "
                                 "supported")
            op = {c: _plain(state, f"open.{c}", "if") .astype(dt) for c, dt in _NUM.items()}
            for c in _STR:
                op[c] = _plain(state, f"open.{c}", "U").astype(object)
            m = len(op["iid"])
            if any(len(a) != m for a in op.values()):
                raise StateError("incident state columns differ in length")
            if m and ((op["flows"] < 1).any() or len(np.unique(op["iid"])) != m):
                raise StateError("incident state has malformed incidents")
            ev = {c: _plain(state, f"ev.{c}", "iuf").astype(dt) for c, dt in _EV_NUM.items()}
            texts = json.loads(str(state["ev_json"]))
            if not isinstance(texts, list) or len(texts) != len(ev["iid"]) or not all(
                    isinstance(r, list) and len(r) == 3 for r in texts):
                raise StateError("incident state evidence is malformed")
            ev["uid"] = np.array([str(r[0]) for r in texts], dtype=object)
            ev["model"] = np.array([str(r[1]) for r in texts], dtype=object)
            ctx = np.empty(len(texts), dtype=object)
            ctx[:] = [None if r[2] is None else [str(v) for v in r[2]] for r in texts]
            ev["context"] = ctx
            models = json.loads(str(state["models_json"]))
            if not isinstance(models, list) or not all(isinstance(s, str) for s in models) \
                    or len(models) > MAX_MODELS:
                raise StateError("incident state model list is malformed")
            sets = {}
            for name in ("peer", "port"):
                keys = _plain(state, f"{name}_keys", "u").astype(np.uint64)
                iid = _plain(state, f"{name}_iid", "i").astype(np.int64)
                if len(keys) != len(iid) or (len(keys) > 1 and (np.diff(keys) <= 0).any()):
                    raise StateError(f"incident state {name} set is malformed")
                sets[name] = (keys, iid)
            clock = float(state["clock"])
            next_iid = int(state["next_iid"])
            written = int(state["records_written"])
        except KeyError as exc:
            raise StateError(f"incident state lacks {exc}") from exc
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise StateError(f"incident state is malformed: {exc}") from exc
        self._open, self._ev, self._models = op, ev, models
        self._peer_keys, self._peer_iid = sets["peer"]
        self._port_keys, self._port_iid = sets["port"]
        self._clock = clock
        self._next_iid = max(next_iid, int(op["iid"].max()) + 1 if m else 0)
        self.records_written = written


def _plain(state: Mapping[str, np.ndarray], name: str, kinds: str) -> np.ndarray:
    a = np.asarray(state[name])
    if a.ndim != 1 or (len(a) and a.dtype.kind not in kinds):
        raise StateError(f"incident state {name} has a wrong shape or type")
    return a


def _members(keys: np.ndarray, iid: np.ndarray, alive: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """The (key, incident) pairs of incidents still open, sorted by key."""
    keep = np.isin(iid, alive)
    keys, iid = keys[keep], iid[keep]
    order = np.argsort(keys, kind="stable")
    return keys[order].astype(np.uint64), iid[order].astype(np.int64)
