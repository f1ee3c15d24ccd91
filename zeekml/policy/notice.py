"""Notice policy: turns scored rows into verdicts and notices. Scores and decisions apart.

A model reports, per flow, a score, the class it would report and the card's calibrated
threshold for that class. This module decides, vectorized over a batch:

1. **threshold**: the card's, unless overridden per class (``--threshold c2=0.9``, for
   every model) or per model and class (``--threshold amf_lstm:c2=0.9``); a row whose
   score is ``>=`` its threshold gets ``verdict`` = the class, else ``normal``;
2. **allow-list**: a flow with either endpoint in an allowed host or subnet never
   becomes a notice (its verdict is still written with ``--all``);
3. **suppression**, like Zeek's notice framework: the first crossing of a
   ``(host, verdict, model)`` key opens a window of ``suppress`` seconds of *log* time,
   from the stream clock at that flow (not its own ``ts``: a flow logged late, a long
   connection Zeek writes when it ends, would open a window already over);
   further crossings of that key inside the window are suppressed, and the window's
   one notice carries ``n`` = the flows it stands for.
   The notice is written when its window closes, that is when the stream's log time
   (the running maximum of ``ts``) reaches the deadline, or at :meth:`NoticePolicy.finish`
   (end of input). Closing by log time, at a row position, makes the output
   independent of how the stream was cut into batches or cron runs. ``suppress = 0``
   writes every crossing at once with ``n = 1``.

   The key's host is the host the notice is about (``suppress_by = "host"``, the
   default): the originator, except for an *inbound* flow (responder local,
   originator not; the incident tracker's rule, :func:`zeekml.records.addresses.inbound_flows`),
   where it is the local responder. A DDoS on one local server from ten thousand
   sources (spoofed or reflected: every shared DDoS capture has one responder and
   thousands of originators) is then one notice with ``n`` = the flows, not ten
   thousand; a local host attacking outward is still keyed by itself.
   ``suppress_by = "orig"`` keys every flow by its originator (Zeek's scan notices;
   zeekml before 2026-12). The rows given to :meth:`NoticePolicy.decide` may say
   which are inbound in an ``inbound`` column (the pipeline computes it from Zeek's
   ``local_orig``/``local_resp`` where marked, and sets it for every row of a model whose
   notices are about the responder: ``ScoreBatch.about_responder``, the flood detector;
   and clears it for every row of a model whose notices are about the originator:
   ``ScoreBatch.about_originator``, the scan detector's scanner);
   without it the addresses decide.
   One exception (:mod:`zeekml.policy.sweep`): an outside originator that a model
   flags, with one verdict, against ``sweep_hosts`` distinct local hosts (a sweep, not a
   flood) is keyed by itself from then on, as Zeek keys a scanner, rather than
   one notice per local host it reaches.

After each :meth:`NoticePolicy.decide`, :attr:`NoticePolicy.decision` holds what was
decided for every row of the batch (flagged, notice, stream clock): the incident
tracker (:mod:`zeekml.policy.incidents`) reads it.

With ``all_flows`` (``--all``) every scored row is written at once, in stream order,
with ``notice`` true on the rows that open a window (the ones that are notices) and
``n = 1`` (each row stands for itself).

State (open windows, log-time maximum, row counter) round-trips through plain numpy
arrays and JSON text (:meth:`state_dict`), never pickle.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import ConfigError, StateError
from zeekml.policy.sweep import SweepKeys
from zeekml.records.addresses import is_private
from zeekml.records.text_arrays import decode_texts, encode_texts
from zeekml.records.verdicts import (
    ALLOWED,
    BELOW,
    NORMAL,
    NOTICE,
    SUPPRESSED,
    VERDICT_COLUMNS,
    conform_verdicts,
    empty_verdicts,
)

#: 2: keys and the held records' JSON as UTF-8 bytes (:mod:`zeekml.records.text_arrays`),
#: not numpy str (4 bytes per character); 1 is still read
STATE_VERSION = 2
MAX_CONFIG_BYTES = 1 << 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: what ``suppress_by`` may be (see the module docstring)
SUPPRESS_BY = ("host", "orig")


def crosses(score: Any, threshold: Any) -> np.ndarray:
    """THE decision rule, everywhere (runtime, evaluation, calibration, reports): a flow is
    flagged when its score is at or above its threshold (``>=``; a missing score never)."""
    s = np.asarray(score, dtype=np.float64)
    return np.isfinite(s) & (s >= np.asarray(threshold, dtype=np.float64))


def parse_network(spec: str) -> Network:
    """A host (``10.0.0.5``, ``2001:db8::1``) or subnet (``10.0.0.0/8``); ConfigError if bad."""
    try:
        return ipaddress.ip_network(spec.strip(), strict=False)
    except ValueError as exc:
        raise ConfigError(f"not an IP address or subnet: {spec!r}") from exc


def parse_threshold(spec: str) -> tuple[str, float]:
    """``CLASS=VALUE`` or ``MODEL:CLASS=VALUE`` -> (key, value)."""
    key, sep, value = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"threshold must be CLASS=VALUE or MODEL:CLASS=VALUE, got {spec!r}")
    try:
        v = float(value)
    except ValueError as exc:
        raise ConfigError(f"threshold value for {key!r} is not a number: {value!r}") from exc
    if math.isnan(v):
        raise ConfigError(f"threshold value for {key!r} is NaN")
    return key, v


@dataclass(frozen=True)
class PolicyConfig:
    """Validated policy settings (from the CLI and/or a JSON config file)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    allow: tuple[Network, ...] = ()
    suppress: float = defaults.SUPPRESS_SECONDS
    all_flows: bool = False
    #: whose notices a suppression window folds: "host" (the local side of an inbound
    #: flow, else the originator) or "orig" (the originator); see the module docstring
    suppress_by: str = defaults.SUPPRESS_BY
    #: with ``suppress_by = "host"``: an outside originator flagged against this many
    #: local hosts (one model, one verdict) is the key's host itself; 0 = never
    sweep_hosts: int = defaults.SWEEP_HOSTS

    def __post_init__(self) -> None:
        if (not isinstance(self.sweep_hosts, int) or isinstance(self.sweep_hosts, bool)
                or self.sweep_hosts < 0):
            raise ConfigError(f"sweep_hosts must be a whole number >= 0, got "
                              f"{self.sweep_hosts!r}")
        if not (self.suppress >= 0 and math.isfinite(self.suppress)):
            raise ConfigError(f"suppression interval must be >= 0 seconds, got {self.suppress}")
        if self.suppress_by not in SUPPRESS_BY:
            raise ConfigError(f"suppress_by must be one of {', '.join(SUPPRESS_BY)}, "
                              f"got {self.suppress_by!r}")
        for k, v in self.thresholds.items():
            if not isinstance(k, str) or not k:
                raise ConfigError(f"bad threshold key {k!r}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
                raise ConfigError(f"threshold for {k!r} is not a number")

    @classmethod
    def from_json(cls, path: str | Path) -> PolicyConfig:
        """Read a config file into a validated config (unknown keys rejected).

        ``{"thresholds": {"c2": 0.9, "flow_lm:anomaly": 8.0},
        "allow": ["10.0.0.0/8", "192.0.2.7"], "suppress": 3600, "suppress_by": "host",
        "sweep_hosts": 5, "all": false}``
        """
        p = Path(path)
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: config file is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: config must be a JSON object")
        unknown = set(data) - {"thresholds", "allow", "suppress", "suppress_by", "sweep_hosts",
                               "all"}
        if unknown:
            raise ConfigError(f"{p}: unknown config keys: {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        th = data.get("thresholds", {})
        if not isinstance(th, dict):
            raise ConfigError(f"{p}: 'thresholds' must be an object of CLASS: number")
        out["thresholds"] = {}
        for k, v in th.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"{p}: threshold for {k!r} is not a number")
            out["thresholds"][str(k)] = float(v)
        allow = data.get("allow", [])
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise ConfigError(f"{p}: 'allow' must be a list of hosts/subnets")
        out["allow"] = tuple(parse_network(a) for a in allow)
        if "suppress" in data:
            s = data["suppress"]
            if not isinstance(s, (int, float)) or isinstance(s, bool):
                raise ConfigError(f"{p}: 'suppress' must be a number of seconds")
            out["suppress"] = float(s)
        if "suppress_by" in data:
            if data["suppress_by"] not in SUPPRESS_BY:
                raise ConfigError(f"{p}: 'suppress_by' must be one of {', '.join(SUPPRESS_BY)}")
            out["suppress_by"] = data["suppress_by"]
        if "sweep_hosts" in data:
            f = data["sweep_hosts"]
            if not isinstance(f, int) or isinstance(f, bool) or f < 0:
                raise ConfigError(f"{p}: 'sweep_hosts' must be a whole number >= 0")
            out["sweep_hosts"] = f
        if "all" in data:
            if not isinstance(data["all"], bool):
                raise ConfigError(f"{p}: 'all' must be true or false")
            out["all_flows"] = data["all"]
        return cls(**out)


class AllowList:
    """Membership of address strings in a set of networks, per distinct address."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, addrs: pd.Series) -> np.ndarray:
        if not self.networks or len(addrs) == 0:
            return np.zeros(len(addrs), dtype=bool)
        codes, uniques = pd.factorize(addrs, use_na_sentinel=True)
        hit = np.fromiter(
            (self._one(str(u)) for u in uniques), dtype=bool, count=len(uniques)
        )
        hit = np.append(hit, False)  # code -1 (missing) -> last
        return np.asarray(hit[codes])

    def _one(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self.networks)


@dataclass(frozen=True)
class Decision:
    """What :meth:`NoticePolicy.decide` decided for each row of its last batch.

    ``rows`` the batch's rows with ``verdict`` and ``threshold`` set; ``flagged`` the
    threshold was crossed and no endpoint is allow-listed; ``notice`` the row is a
    notice (opens a suppression window, or every flagged row with ``suppress = 0``);
    ``clock`` the stream's log clock at the row (running maximum of ``ts``).
    """

    rows: pd.DataFrame
    flagged: np.ndarray
    notice: np.ndarray
    clock: np.ndarray
    #: the batch positions ``rows`` holds when it holds only some (every flagged row is
    #: among them); ``None``: ``rows`` is the whole batch
    positions: np.ndarray | None = None
    #: per batch row: an inbound flow keyed by its originator, a sweeper
    #: (:mod:`zeekml.policy.sweep`); ``None``: none was
    swept: np.ndarray | None = None


def _running_max(ts: np.ndarray, start: float) -> np.ndarray:
    t = np.where(np.isfinite(ts), ts, -np.inf)
    return np.maximum.accumulate(np.concatenate([[start], t]))[1:]


#: verdict columns an open window keeps of its first flow (``notice``/``n`` are set at emission)
_RECORD_COLUMNS = tuple(c for c in VERDICT_COLUMNS if c not in ("notice", "n"))


def subject_hosts(df: pd.DataFrame, rows: np.ndarray, inbound: np.ndarray | None) -> pd.Series:
    """The host each of some rows' notices is about: the responder of an inbound flow,
    else the originator. ``inbound`` (per row of ``rows``) as the pipeline computed it,
    or ``None``: by address (responder private, originator not)."""
    orig = df["orig_h"].iloc[rows]
    resp = df["resp_h"].iloc[rows]
    if inbound is None:
        inbound = _inbound_by_address(df, rows)
    return resp.where(np.asarray(inbound, dtype=bool), orig)


def _inbound_by_address(df: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Per row of ``rows``: responder private, originator not (no ``inbound`` given)."""
    return np.asarray(is_private(df["resp_h"].iloc[rows]) & ~is_private(df["orig_h"].iloc[rows]),
                      dtype=bool)


def by_direction(df: pd.DataFrame, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Per row: does whom its notice is about follow the flow's direction (the
    ``by_direction`` column the pipeline writes; true where it is absent)? Only those rows
    may be a sweeper's (:mod:`zeekml.policy.sweep`)."""
    if "by_direction" not in df.columns:
        return np.ones(len(df) if isinstance(rows, slice) else len(rows), dtype=bool)
    col = df["by_direction"].iloc[rows].astype("boolean").fillna(True)
    return np.array(col.to_numpy(dtype=bool), dtype=bool)


def swept_of(sweep: SweepKeys, df: pd.DataFrame, rows: np.ndarray, t: np.ndarray,
             clock: np.ndarray, end_clock: float) -> np.ndarray:
    """Of ``df``'s inbound flagged rows ``rows`` (stream order; ``t`` and ``clock`` per
    row, as :meth:`SweepKeys.swept` takes them): which are a sweeper's. The local policy,
    the Spark engine's stage by originator and calibration all decide it here."""
    codes, keys = key_strings(df, rows, by="orig")
    return sweep.swept(codes, keys, df["resp_h"].iloc[rows].to_numpy(dtype=object), t, clock,
                       end_clock)


def key_strings(df: pd.DataFrame, rows: np.ndarray, inbound: np.ndarray | None = None,
                by: str = "orig") -> tuple[np.ndarray, np.ndarray]:
    """Factorize ``(host, verdict, model)`` of some rows: (codes, unique key strings).

    The host is the originator (``by = "orig"``) or :func:`subject_hosts`. The three
    columns are factorized separately and combined as integers, so strings are only
    built for the distinct keys, never per row.
    """
    codes = np.zeros(len(rows), dtype=np.int64)
    uniques: list[np.ndarray] = []
    host = df["orig_h"].iloc[rows] if by == "orig" else subject_hosts(df, rows, inbound)
    for values in (host, df["verdict"].iloc[rows], df["model"].iloc[rows]):
        c, u = pd.factorize(values.fillna("-"), use_na_sentinel=False)
        codes = codes * max(len(u), 1) + c
        uniques.append(np.asarray(u, dtype=object))
    codes, combo = pd.factorize(codes)
    keys = np.empty(len(combo), dtype=object)
    if len(combo):
        sizes = [max(len(u), 1) for u in uniques]
        m = combo % sizes[2]
        v = (combo // sizes[2]) % sizes[1]
        h = combo // (sizes[2] * sizes[1])
        keys[:] = uniques[0][h] + "\x1f" + uniques[1][v] + "\x1f" + uniques[2][m]
    return codes, keys


class NoticePolicy:
    """Stateful, vectorized notice decisions (one instance per stream).

    Open suppression windows live in parallel arrays (key, deadline, count, opener
    position) plus a verdict table of their first flows, so a batch touching many
    hosts costs array operations, not a Python step per host.
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.allow = AllowList(self.config.allow)
        self._max_ts = -np.inf
        self._seq = 0  # global row position of the next scored row
        self.suppressed = 0
        self.decision: Decision | None = None
        self._context: Callable[[np.ndarray], np.ndarray] | None = None
        self._swept: np.ndarray | None = None
        self._sweep = SweepKeys(
            self.config.sweep_hosts if self.config.suppress_by == "host" else 0,
            self.config.suppress)
        self._clear_open()

    def _clear_open(self) -> None:
        self._okeys = np.empty(0, dtype=object)
        self._odeadline = np.empty(0, dtype=np.float64)
        self._on = np.empty(0, dtype=np.int64)
        self._opos = np.empty(0, dtype=np.int64)
        self._orows = empty_verdicts()[list(_RECORD_COLUMNS)]

    #: :meth:`decide` may be given only the rows that cross their threshold
    sparse_ok = True

    # ----------------------------------------------------------------- decisions
    def thresholds(self, scored: pd.DataFrame) -> np.ndarray:
        """Per-row threshold: ``model:class`` override, else ``class`` override, else card."""
        th = np.array(scored["threshold"].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        over = self.config.thresholds
        if not over or not len(scored):
            return th
        cls = scored["cls"].astype(str)
        model = scored["model"].astype(str)
        for key, value in over.items():  # class-wide overrides first ...
            if ":" not in key:
                th[(cls == key).to_numpy(dtype=bool)] = value
        for key, value in over.items():  # ... then the more specific model:class ones
            m, sep, c = key.rpartition(":")
            if sep:
                th[((cls == c) & (model == m)).to_numpy(dtype=bool)] = value
        return th

    def decide(self, scored: pd.DataFrame, *, positions: np.ndarray | None = None,
               size: int | None = None, ts: np.ndarray | None = None,
               context: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
        """Scored rows (verdict columns plus ``cls``) -> the verdict rows to write now.

        A batch may be given sparse: ``scored`` holds only the rows at ``positions``
        (increasing) of a batch of ``size`` rows whose log times are ``ts``, and every row
        not given is below its threshold (the caller checked with :func:`crosses`). The
        rows below their threshold are never written (unless every flow is, which needs
        the whole batch) and only move the stream's clock, so a batch of a million rows
        with a few thousand crossings is decided at the cost of those.

        ``context`` (rows of ``scored`` -> their ``context`` cells) fills the context only
        for the rows that become notices, once they are known: of the rows that cross a
        threshold, most are suppressed or allow-listed and never written.
        """
        sparse = positions is not None
        if sparse and (size is None or ts is None):
            raise ValueError("a sparse batch needs its size and every row's ts")
        if sparse and self.config.all_flows:
            raise ValueError("writing every flow needs the whole batch, not a sparse one")
        b = int(size) if sparse else len(scored)  # type: ignore[arg-type]
        self.decision = None
        if b == 0:
            return empty_verdicts()
        df = scored.reset_index(drop=True)
        th = self.thresholds(df)
        score = df["score"].to_numpy(dtype=np.float64, na_value=np.nan)
        crossing = crosses(score, th)  # of the given rows
        inbound = (df["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool)
                   if "inbound" in df.columns else None)
        verdict = df["cls"].astype("str").where(crossing, NORMAL).fillna(NORMAL)
        given = crossing.copy()
        if self.allow:
            given &= ~(self.allow.contains(df["orig_h"]) | self.allow.contains(df["resp_h"]))
        if sparse:
            pos = np.asarray(positions, dtype=np.int64)
            candidate = np.zeros(b, dtype=bool)
            candidate[pos] = given
            loc = np.full(b, -1, dtype=np.int64)
            loc[pos] = np.arange(len(pos))
            ts = np.asarray(ts, dtype=np.float64)
        else:
            pos, loc = None, None
            candidate = given
            ts = df["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        cm = _running_max(ts, self._max_ts)
        # a window opens at the stream clock, not at the flow's own ts: a flow that arrives
        # late (a long connection Zeek logs when it ends, a shuffled CSV) would otherwise
        # open a window already past its deadline, and every crossing would be a notice
        eff_ts = np.where(np.isfinite(cm), cm, 0.0)
        decision = np.where(crossing, np.where(given, NOTICE, ALLOWED), BELOW).astype(object)
        out = conform_verdicts(df.assign(threshold=th, verdict=verdict, candidate=df["cls"],
                                         decision=decision))
        base = self._seq
        emitted = None
        self._context = context
        self._swept = None
        try:
            if self.config.suppress <= 0:
                notice = candidate
                self._fill_context(out, np.flatnonzero(notice if pos is None else notice[pos]))
            else:
                # the verdict rows drop the pipeline's by_direction: read from the input
                notice, emitted = self._suppress(out, loc, candidate, eff_ts, cm, base, inbound,
                                                 df[[c for c in ("by_direction",)
                                                     if c in df.columns]])
                held = candidate & ~notice
                if held.any():
                    decision[held if pos is None else held[pos]] = SUPPRESSED
                    out["decision"] = pd.Series(decision, dtype="str")
        finally:
            self._context = None
        self._seq += b
        self._max_ts = float(cm[-1])
        self.decision = Decision(out, candidate, notice, cm, pos, self._swept)
        if self.config.all_flows:
            out = out.assign(notice=pd.array(notice, dtype="boolean"),
                             n=pd.array(np.ones(b, dtype=np.int64), dtype="Int64"))
            return conform_verdicts(out)
        if emitted is None:
            return conform_verdicts(out[notice if pos is None else notice[pos]]
                                    .assign(notice=True, n=1))
        return emitted

    def _sweepers(self, df: pd.DataFrame, cand: np.ndarray, at_cand: np.ndarray,
                  about: np.ndarray | None, eff_ts: np.ndarray, cm: np.ndarray,
                  direction: pd.DataFrame) -> np.ndarray:
        """The candidates' ``inbound`` with those of a sweeping originator cleared
        (:mod:`zeekml.policy.sweep`); sets :attr:`_swept` per batch row."""
        about = np.array(_inbound_by_address(df, at_cand) if about is None else about,
                         dtype=bool)
        inb = np.flatnonzero(about & by_direction(direction, at_cand))
        swept = swept_of(self._sweep, df, at_cand[inb], eff_ts[cand[inb]], cm[cand[inb]],
                         float(cm[-1]) if len(cm) else -np.inf)
        if swept.any():
            about[inb[swept]] = False
            self._swept = np.zeros(len(cm), dtype=bool)
            self._swept[cand[inb[swept]]] = True
        return about

    def _fill_context(self, df: pd.DataFrame, rows: np.ndarray) -> None:
        """Context cells of the given rows of ``df`` from the ``context`` given to
        :meth:`decide` (nothing without one)."""
        if self._context is None or not len(rows):
            return
        cells = df["context"].to_numpy(dtype=object, copy=True)
        cells[rows] = self._context(rows)
        df["context"] = pd.Series(cells, dtype=object)

    def _suppress(
        self,
        df: pd.DataFrame,
        loc: np.ndarray | None,
        candidate: np.ndarray,
        eff_ts: np.ndarray,
        cm: np.ndarray,
        base: int,
        inbound: np.ndarray | None = None,
        direction: pd.DataFrame | None = None,
    ) -> tuple[np.ndarray, pd.DataFrame | None]:
        """Suppression windows, vectorized over keys (one loop round per window per key).

        Returns the mask of rows that open a window (the notices) and, unless every
        flow is written anyway, the notices of the windows that closed in this batch.
        ``df`` holds the batch's rows, or with ``loc`` only some: batch row ``r`` is
        ``df`` row ``loc[r]`` (every candidate is there); ``inbound`` is per ``df`` row.
        """
        b = len(candidate)
        interval = self.config.suppress
        notice = np.zeros(b, dtype=bool)
        cand = np.nonzero(candidate)[0]
        def at(r: np.ndarray) -> np.ndarray:
            return r if loc is None else loc[r]

        at_cand = at(cand)
        about = None if inbound is None else inbound[at_cand]
        if self.config.suppress_by == "host" and self._sweep.hosts > 0:
            about = self._sweepers(df, cand, at_cand, about, eff_ts, cm,
                                   df if direction is None else direction)
        codes, ukeys = key_strings(df, at_cand, about, self.config.suppress_by)
        u = len(ukeys)
        n_open = len(self._okeys)
        # where each open window closes in this batch (b = not in it)
        carried_close = np.searchsorted(cm, self._odeadline, side="left")
        j = pd.Index(self._okeys).get_indexer(ukeys) if n_open and u else np.full(u, -1)
        has = j >= 0
        cur_close = np.where(has, carried_close[np.maximum(j, 0)] if n_open else -1, -1)
        cur_n = np.where(has, self._on[np.maximum(j, 0)] if n_open else 0, 0).astype(np.int64)
        cur_open = np.full(u, -1, dtype=np.int64)  # opener row in this batch
        cur_src = np.where(has, j, -1).astype(np.int64)  # opener in the open table

        order = np.lexsort((cand, codes)) if len(cand) else np.zeros(0, dtype=np.int64)
        rows_sorted = cand[order]
        sizes = np.bincount(codes, minlength=u).astype(np.int64)
        start = np.cumsum(sizes) - sizes
        comp = codes[order].astype(np.int64) * (b + 1) + rows_sorted
        p = np.zeros(u, dtype=np.int64)  # next unprocessed candidate of each key
        ev_close: list[np.ndarray] = []  # closed windows: close row, batch opener row,
        ev_row: list[np.ndarray] = []  # open-table index, count
        ev_src: list[np.ndarray] = []
        ev_n: list[np.ndarray] = []

        def close(ks: np.ndarray) -> None:
            ev_close.append(cur_close[ks].copy())
            ev_row.append(cur_open[ks].copy())
            ev_src.append(cur_src[ks].copy())
            ev_n.append(cur_n[ks].copy())

        active = np.nonzero(sizes > 0)[0]
        while len(active):
            win = cur_close[active] >= 0
            limit = np.clip(cur_close[active], 0, b)
            upto = np.searchsorted(comp, active * (b + 1) + limit) - start[active]
            upto = np.where(win, np.maximum(upto, p[active]), p[active])
            cur_n[active] += upto - p[active]
            p[active] = upto
            ks = active[p[active] < sizes[active]]
            if len(ks):
                close(ks[cur_close[ks] >= 0])  # the window closes: a new one opens
                r = rows_sorted[start[ks] + p[ks]]
                notice[r] = True
                cur_open[ks] = r
                cur_src[ks] = -1
                cur_n[ks] = 1
                ends = np.searchsorted(cm, eff_ts[r] + interval, side="left")
                cur_close[ks] = np.maximum(ends, r + 1)
                p[ks] += 1
            active = ks
        self.suppressed += int(candidate.sum() - notice.sum())
        self._fill_context(df, at(np.flatnonzero(notice)))  # before any record is taken

        touched = np.nonzero(cur_close >= 0)[0]
        done = touched[cur_close[touched] < b]
        close(done)
        still = touched[cur_close[touched] >= b]
        absent = np.ones(n_open, dtype=bool)
        absent[j[has]] = False
        gone = np.nonzero(absent & (carried_close < b))[0]  # untouched windows that closed
        ev_close.append(carried_close[gone])
        ev_row.append(np.full(len(gone), -1, dtype=np.int64))
        ev_src.append(gone)
        ev_n.append(self._on[gone])
        keep = np.nonzero(absent & (carried_close >= b))[0]

        # the open table after this batch: untouched survivors, then this batch's keys
        from_batch = still[cur_open[still] >= 0]
        from_table = still[cur_open[still] < 0]
        old_idx = np.concatenate([keep, cur_src[from_table]])
        new_rows = cur_open[from_batch]
        emitted = None
        if not self.config.all_flows:
            emitted = self._emit_events(df, at, base, np.concatenate(ev_close),
                                        np.concatenate(ev_row), np.concatenate(ev_src),
                                        np.concatenate(ev_n))
        self._okeys = np.concatenate([self._okeys[old_idx], ukeys[from_batch]])
        self._odeadline = np.concatenate([self._odeadline[old_idx], eff_ts[new_rows] + interval])
        self._on = np.concatenate([self._on[keep], cur_n[from_table], cur_n[from_batch]])
        self._opos = np.concatenate([self._opos[old_idx], base + new_rows])
        if not self.config.all_flows:
            self._orows = pd.concat(
                [self._orows.iloc[old_idx], df.iloc[at(new_rows)][list(_RECORD_COLUMNS)]],
                ignore_index=True)
        return notice, emitted

    def _emit_events(self, df: pd.DataFrame, at: Callable[[np.ndarray], np.ndarray], base: int,
                     close_row: np.ndarray,
                     row: np.ndarray, src: np.ndarray, n: np.ndarray) -> pd.DataFrame:
        """Notices of closed windows, ordered by closing position, then opening position."""
        if not len(close_row):
            return empty_verdicts()
        in_batch = row >= 0
        opener = np.where(in_batch, base + row, self._opos[np.maximum(src, 0)]
                          if len(self._opos) else 0)
        recs = pd.concat([df.iloc[at(row[in_batch])][list(_RECORD_COLUMNS)],
                          self._orows.iloc[src[~in_batch]]], ignore_index=True)
        counts = np.concatenate([n[in_batch], n[~in_batch]])
        keys = (np.concatenate([close_row[in_batch], close_row[~in_batch]]) + base,
                np.concatenate([opener[in_batch], opener[~in_batch]]))
        order = np.lexsort((keys[1], keys[0]))
        recs = recs.iloc[order].reset_index(drop=True)
        recs["notice"] = True
        recs["decision"] = NOTICE
        recs["n"] = counts[order]
        return conform_verdicts(recs)

    def finish(self) -> pd.DataFrame:
        """End of input: write every open window's notice (in opening order)."""
        out = empty_verdicts()
        if not self.config.all_flows and len(self._okeys):
            order = np.argsort(self._opos, kind="stable")
            recs = self._orows.iloc[order].reset_index(drop=True)
            recs["notice"] = True
            recs["decision"] = NOTICE
            recs["n"] = self._on[order]
            out = conform_verdicts(recs)
        self._clear_open()
        return out

    @property
    def pending(self) -> int:
        """Notices held until their suppression window closes."""
        return 0 if self.config.all_flows else len(self._okeys)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, np.ndarray]:
        recs = [] if self.config.all_flows else _records(self._orows)
        key_bytes, key_offsets = encode_texts(self._okeys)
        return {
            "version": np.array(STATE_VERSION),
            "max_ts": np.array(self._max_ts, dtype=np.float64),
            "seq": np.array(self._seq, dtype=np.int64),
            "suppressed": np.array(self.suppressed, dtype=np.int64),
            "keys_utf8": key_bytes,
            "keys_offsets": key_offsets,
            "deadline": self._odeadline.astype(np.float64),
            "count": self._on.astype(np.int64),
            "opener": self._opos.astype(np.int64),
            "records_utf8": np.frombuffer(json.dumps(recs).encode("utf-8"), dtype=np.uint8),
            **self._sweep.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; validates everything first (StateError)."""
        try:
            version = int(state["version"])
            if version not in (1, STATE_VERSION):
                raise StateError(f"policy state version {version} is not supported")
            if version == 1:
                keys = np.asarray(state["keys"])
                if keys.ndim != 1 or (len(keys) and keys.dtype.kind != "U"):
                    raise StateError("policy state keys must be a 1-D string array")
                text = str(state["records_json"])
            else:
                keys = decode_texts(state["keys_utf8"], state["keys_offsets"], "policy state keys")
                raw = np.asarray(state["records_utf8"])
                if raw.ndim != 1 or raw.dtype != np.uint8:
                    raise StateError("policy state records are malformed")
                text = raw.tobytes().decode("utf-8")
            m = len(keys)
            arrays = {}
            for name, kind in (("deadline", "f"), ("count", "i"), ("opener", "i")):
                a = np.asarray(state[name])
                if a.shape != (m,) or (m and a.dtype.kind != kind):
                    raise StateError(f"policy state {name} has a wrong shape or type")
                arrays[name] = a
            if m and (arrays["count"] < 1).any():
                raise StateError("policy state counts must be >= 1")
            recs = json.loads(text)
            if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
                raise StateError("policy state records are malformed")
            if not self.config.all_flows and len(recs) != m:
                raise StateError("policy state has a record count that differs from its keys")
            for r in recs:
                unknown = set(r) - set(_RECORD_COLUMNS)
                if unknown:
                    raise StateError(f"policy state record has unknown fields {sorted(unknown)}")
            rows = conform_verdicts(pd.DataFrame.from_records(recs, columns=list(_RECORD_COLUMNS))
                                    if recs else empty_verdicts())[list(_RECORD_COLUMNS)]
            # state written before the candidate/decision fields: an open window's record
            # is always a notice whose candidate is its verdict
            rows["candidate"] = rows["candidate"].fillna(rows["verdict"])
            rows["decision"] = rows["decision"].fillna(NOTICE)
            self._sweep.load_state_dict(state)
            self._max_ts = float(state["max_ts"])
            self._seq = int(state["seq"])
            self.suppressed = int(state["suppressed"])
        except KeyError as exc:
            raise StateError(f"policy state lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise StateError(f"policy state is malformed: {exc}") from exc
        self._okeys = keys.astype(object)
        self._odeadline = arrays["deadline"].astype(np.float64)
        self._on = arrays["count"].astype(np.int64)
        self._opos = arrays["opener"].astype(np.int64)
        self._orows = rows if not self.config.all_flows else empty_verdicts()[list(_RECORD_COLUMNS)]


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts (:func:`_plain` values), converted column by column:
    numeric and text columns in one numpy/Arrow step each, only object columns per value."""
    names = list(df.columns)
    columns = [_plain_column(df[name]) for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _plain_column(s: pd.Series) -> list[Any]:
    """One column as :func:`_plain` would give each of its cells."""
    dtype = s.dtype
    missing = s.isna().to_numpy(dtype=bool)
    if pd.api.types.is_bool_dtype(dtype):
        values: list[Any] = s.to_numpy(dtype=bool, na_value=False).tolist()
    elif pd.api.types.is_integer_dtype(dtype):
        values = s.to_numpy(dtype=np.int64, na_value=0).tolist()
    elif pd.api.types.is_float_dtype(dtype):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan).tolist()
    elif isinstance(dtype, pd.StringDtype):
        values = s.to_numpy(dtype=object, na_value=None).tolist()
    else:  # object columns (lists of uids ...): cell by cell
        return [_plain(v) for v in s.astype(object).tolist()]
    if missing.any():
        values = [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]
    return values


def _plain(v: Any) -> Any:
    """A verdict cell as JSON (missing -> None, numpy scalars -> Python, lists of str)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x) for x in v]
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    return str(v)
