"""Notice policy: turns scored rows into verdicts and notices. Scores and decisions apart.

A model reports, per flow, a score, the class it would report and the card's calibrated
threshold for that class. This module decides, vectorized over a batch:

1. **threshold**: the card's, unless overridden per class (``--threshold c2=0.9``, for
   every model) or per model and class (``--threshold amf_lstm:c2=0.9``); a row whose
   score is ``>=`` its threshold gets ``verdict`` = the class, else ``normal``;
2. **allow-list**: a flow with either endpoint in an allowed host or subnet never
   becomes a notice (its verdict is still written with ``--all``);
3. **suppression**, like Zeek's notice framework: the first crossing of a
   ``(host, verdict, model)`` key (host = originator) opens a window of ``suppress``
   seconds of *log* time; further crossings of that key inside the window are
   suppressed, and the window's one notice carries ``n`` = the flows it stands for.
   The notice is written when its window closes, that is when the stream's log time
   (the running maximum of ``ts``) reaches the deadline, or at :meth:`NoticePolicy.finish`
   (end of input). Closing by log time, at a row position, makes the output
   independent of how the stream was cut into batches or cron runs. ``suppress = 0``
   writes every crossing at once with ``n = 1``.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml.errors import StateError, UsageError
from zeekml.records.verdicts import NORMAL, VERDICT_COLUMNS, conform_verdicts, empty_verdicts

STATE_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(spec: str) -> Network:
    """A host (``10.0.0.5``, ``2001:db8::1``) or subnet (``10.0.0.0/8``); UsageError if bad."""
    try:
        return ipaddress.ip_network(spec.strip(), strict=False)
    except ValueError as exc:
        raise UsageError(f"not an IP address or subnet: {spec!r}") from exc


def parse_threshold(spec: str) -> tuple[str, float]:
    """``CLASS=VALUE`` or ``MODEL:CLASS=VALUE`` -> (key, value)."""
    key, sep, value = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"threshold must be CLASS=VALUE or MODEL:CLASS=VALUE, got {spec!r}")
    try:
        v = float(value)
    except ValueError as exc:
        raise UsageError(f"threshold value for {key!r} is not a number: {value!r}") from exc
    if math.isnan(v):
        raise UsageError(f"threshold value for {key!r} is NaN")
    return key, v


@dataclass(frozen=True)
class PolicyConfig:
    """Validated policy settings (from the CLI and/or a JSON config file)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    allow: tuple[Network, ...] = ()
    suppress: float = 600.0
    all_flows: bool = False

    def __post_init__(self) -> None:
        if not (self.suppress >= 0 and math.isfinite(self.suppress)):
            raise UsageError(f"suppression interval must be >= 0 seconds, got {self.suppress}")
        for k, v in self.thresholds.items():
            if not isinstance(k, str) or not k:
                raise UsageError(f"bad threshold key {k!r}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
                raise UsageError(f"threshold for {k!r} is not a number")

    @staticmethod
    def from_json(path: str | Path) -> dict[str, Any]:
        """Read a config file into keyword arguments (validated; unknown keys rejected).

        ``{"thresholds": {"c2": 0.9, "flow_lm:anomaly": 8.0},
        "allow": ["10.0.0.0/8", "192.0.2.7"], "suppress": 3600, "all": false}``
        """
        p = Path(path)
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"{p}: config file is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{p}: config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"{p}: config must be a JSON object")
        unknown = set(data) - {"thresholds", "allow", "suppress", "all"}
        if unknown:
            raise UsageError(f"{p}: unknown config keys: {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        th = data.get("thresholds", {})
        if not isinstance(th, dict):
            raise UsageError(f"{p}: 'thresholds' must be an object of CLASS: number")
        out["thresholds"] = {}
        for k, v in th.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise UsageError(f"{p}: threshold for {k!r} is not a number")
            out["thresholds"][str(k)] = float(v)
        allow = data.get("allow", [])
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise UsageError(f"{p}: 'allow' must be a list of hosts/subnets")
        out["allow"] = tuple(parse_network(a) for a in allow)
        if "suppress" in data:
            s = data["suppress"]
            if not isinstance(s, (int, float)) or isinstance(s, bool):
                raise UsageError(f"{p}: 'suppress' must be a number of seconds")
            out["suppress"] = float(s)
        if "all" in data:
            if not isinstance(data["all"], bool):
                raise UsageError(f"{p}: 'all' must be true or false")
            out["all_flows"] = data["all"]
        return out


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
        return hit[codes]

    def _one(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self.networks)


@dataclass(frozen=True)
class Closed:
    """A window whose notice is due: written at stream position ``pos``."""

    pos: int
    opener: int
    record: Any  # dict of verdict fields (or, transiently, the opener's row index)
    n: int


def _running_max(ts: np.ndarray, start: float) -> np.ndarray:
    t = np.where(np.isfinite(ts), ts, -np.inf)
    return np.maximum.accumulate(np.concatenate([[start], t]))[1:]


class NoticePolicy:
    """Stateful, vectorized notice decisions (one instance per stream)."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.allow = AllowList(self.config.allow)
        self._max_ts = -np.inf
        self._seq = 0  # global row position of the next scored row
        # open windows: key -> [deadline, n, opener position, opener record dict]
        self._open: dict[str, list[Any]] = {}
        self.suppressed = 0

    # ----------------------------------------------------------------- decisions
    def thresholds(self, scored: pd.DataFrame) -> np.ndarray:
        """Per-row threshold: ``model:class`` override, else ``class`` override, else card."""
        th = scored["threshold"].to_numpy(dtype=np.float64, na_value=np.nan).copy()
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

    def decide(self, scored: pd.DataFrame) -> pd.DataFrame:
        """Scored rows (verdict columns plus ``cls``) -> the verdict rows to write now."""
        b = len(scored)
        if b == 0:
            return empty_verdicts()
        df = scored.reset_index(drop=True)
        th = self.thresholds(df)
        score = df["score"].to_numpy(dtype=np.float64, na_value=np.nan)
        crossing = np.isfinite(score) & (score >= th)
        cls = df["cls"].astype("str")
        verdict = cls.where(crossing, NORMAL).fillna(NORMAL)
        allowed = self.allow.contains(df["orig_h"]) | self.allow.contains(df["resp_h"])
        candidate = crossing & ~allowed
        ts = df["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        cm = _running_max(ts, self._max_ts)
        eff_ts = np.where(np.isfinite(ts), ts, np.where(np.isfinite(cm), cm, 0.0))
        base = self._seq
        out = df.assign(threshold=th, verdict=verdict)
        if self.config.suppress <= 0:
            notice = candidate
            closing: list[Closed] = []
        else:
            notice, closing = self._suppress(out, candidate, eff_ts, cm, base)
        self._seq += b
        if len(cm):
            self._max_ts = float(cm[-1])
        if self.config.all_flows:
            out = out.assign(notice=pd.array(notice, dtype="boolean"),
                             n=pd.array(np.ones(b, dtype=np.int64), dtype="Int64"))
            return conform_verdicts(out)
        if self.config.suppress <= 0:
            rows = out[notice].assign(notice=True, n=1)
            return conform_verdicts(rows)
        return self._emit(closing)

    def _suppress(
        self,
        df: pd.DataFrame,
        candidate: np.ndarray,
        eff_ts: np.ndarray,
        cm: np.ndarray,
        base: int,
    ) -> tuple[np.ndarray, list[Closed]]:
        """Window bookkeeping, vectorized over keys: one loop round per window per key.

        Returns the mask of rows that open a window (the notices) and the windows that
        closed in this batch.
        """
        b = len(df)
        interval = self.config.suppress
        notice = np.zeros(b, dtype=bool)
        closing: list[Closed] = []
        cand = np.nonzero(candidate)[0]
        if len(cand):
            parts = [df[c].astype(str).fillna("-").to_numpy(dtype=object)[cand]
                     for c in ("orig_h", "verdict", "model")]
            keys = parts[0] + "\x1f" + parts[1] + "\x1f" + parts[2]
        else:
            keys = np.zeros(0, dtype=object)
        codes, uniques = pd.factorize(keys)
        ukeys = [str(k) for k in uniques]
        u = len(ukeys)

        # windows carried from earlier batches: where (if at all) they close in this one
        open_keys = list(self._open)
        deadlines = np.array([self._open[k][0] for k in open_keys], dtype=np.float64)
        carried = dict(zip(open_keys, np.searchsorted(cm, deadlines, side="left").tolist(),
                           strict=True))

        order = np.lexsort((cand, codes)) if len(cand) else np.zeros(0, dtype=np.int64)
        rows_sorted = cand[order]
        sizes = np.bincount(codes, minlength=u).astype(np.int64)
        start = np.cumsum(sizes) - sizes
        comp = codes[order].astype(np.int64) * (b + 1) + rows_sorted
        p = np.zeros(u, dtype=np.int64)  # next unprocessed candidate of each key
        cur_close = np.full(u, -1, dtype=np.int64)  # current window closes before this row
        cur_n = np.zeros(u, dtype=np.int64)
        cur_open = np.full(u, -1, dtype=np.int64)  # opener row in this batch; -1 = carried
        for i, key in enumerate(ukeys):
            if key in self._open:
                cur_close[i] = carried[key]
                cur_n[i] = self._open[key][1]
        active = np.nonzero(sizes > 0)[0]
        while len(active):
            has_win = cur_close[active] >= 0
            limit = np.clip(cur_close[active], 0, b)
            upto = np.searchsorted(comp, active * (b + 1) + limit) - start[active]
            upto = np.where(has_win, np.maximum(upto, p[active]), p[active])
            cur_n[active] += upto - p[active]
            p[active] = upto
            ks = active[p[active] < sizes[active]]
            if len(ks):
                for k in ks[cur_close[ks] >= 0].tolist():  # the window closes: a new one opens
                    closing.append(self._closed(ukeys[k], int(cur_open[k]), int(cur_close[k]),
                                                int(cur_n[k]), base))
                r = rows_sorted[start[ks] + p[ks]]
                notice[r] = True
                cur_open[ks] = r
                cur_n[ks] = 1
                close = np.searchsorted(cm, eff_ts[r] + interval, side="left")
                cur_close[ks] = np.maximum(close, r + 1)
                p[ks] += 1
            active = ks
        self.suppressed += int(candidate.sum() - notice.sum())

        for k, key in enumerate(ukeys):  # where each touched key's window now stands
            if cur_close[k] < 0:
                continue
            if cur_close[k] < b:
                closing.append(self._closed(key, int(cur_open[k]), int(cur_close[k]),
                                            int(cur_n[k]), base))
                continue
            if cur_open[k] >= 0:
                r = int(cur_open[k])
                self._open[key] = [float(eff_ts[r] + interval), int(cur_n[k]), base + r, r]
            else:
                self._open[key][1] = int(cur_n[k])
        seen = set(ukeys)
        for key, cpos in carried.items():  # carried windows of keys absent from this batch
            if key not in seen and cpos < b:
                _, n, opos, rec = self._open.pop(key)
                closing.append(Closed(base + cpos, int(opos), rec, int(n)))
        # resolve in-batch openers to records, in bulk (only notices and open windows)
        want = sorted({c.record for c in closing if isinstance(c.record, int)}
                      | {w[3] for w in self._open.values() if isinstance(w[3], int)})
        if want:
            recs = dict(zip(want, self._records(df, np.array(want)), strict=True))
            closing = [c if not isinstance(c.record, int) else
                       Closed(c.pos, c.opener, recs[c.record], c.n) for c in closing]
            for w in self._open.values():
                if isinstance(w[3], int):
                    w[3] = recs[w[3]]
        return notice, closing

    def _closed(self, key: str, open_row: int, close_row: int, n: int, base: int) -> Closed:
        """A window closing at ``close_row``; its record is a row index until resolved."""
        if open_row >= 0:
            return Closed(base + close_row, base + open_row, open_row, n)
        _, _, opos, rec = self._open.pop(key)
        return Closed(base + close_row, int(opos), rec, n)

    @staticmethod
    def _records(df: pd.DataFrame, rows: np.ndarray) -> list[dict[str, Any]]:
        """JSON-able verdict records of some rows (missing -> None)."""
        cols = [c for c in VERDICT_COLUMNS if c in df.columns and c not in ("notice", "n")]
        sub = df.iloc[rows][cols]
        out: list[dict[str, Any]] = [{} for _ in range(len(rows))]
        for c in cols:
            s = sub[c]
            if c == "context":
                vals = [None if not isinstance(v, (list, tuple, np.ndarray)) else
                        [str(x) for x in v] for v in s.tolist()]
            elif pd.api.types.is_float_dtype(s.dtype):
                vals = [None if math.isnan(v) else float(v) for v in s.astype("float64").tolist()]
            elif pd.api.types.is_integer_dtype(s.dtype):
                vals = [None if v is pd.NA or v is None else int(v) for v in s.tolist()]
            else:
                vals = [None if not isinstance(v, str) else v for v in s.tolist()]
            for rec, v in zip(out, vals, strict=True):
                rec[c] = v
        return out

    def _emit(self, closing: list[Closed]) -> pd.DataFrame:
        if not closing:
            return empty_verdicts()
        closing.sort(key=lambda c: (c.pos, c.opener))
        recs = [{**c.record, "notice": True, "n": c.n} for c in closing]
        df = pd.DataFrame.from_records(recs)
        if "context" in df.columns:
            df["context"] = pd.Series([c.record.get("context") for c in closing], dtype=object)
        return conform_verdicts(df)

    def finish(self) -> pd.DataFrame:
        """End of input: write every open window's notice (in opening order)."""
        if self.config.all_flows or not self._open:
            self._open.clear()
            return empty_verdicts()
        closing = [Closed(0, int(opos), rec, int(n)) for _, n, opos, rec in self._open.values()]
        self._open.clear()
        return self._emit(closing)

    @property
    def pending(self) -> int:
        """Notices held until their suppression window closes."""
        return 0 if self.config.all_flows else len(self._open)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, np.ndarray]:
        doc = [[k, d, n, p, rec] for k, (d, n, p, rec) in self._open.items()]
        return {
            "version": np.array(STATE_VERSION),
            "max_ts": np.array(self._max_ts, dtype=np.float64),
            "seq": np.array(self._seq, dtype=np.int64),
            "suppressed": np.array(self.suppressed, dtype=np.int64),
            "open_json": np.array(json.dumps(doc)),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        try:
            if int(state["version"]) != STATE_VERSION:
                raise StateError(f"policy state version {int(state['version'])} is not supported")
            doc = json.loads(str(state["open_json"]))
            if not isinstance(doc, list):
                raise StateError("policy state windows are not a list")
            opened: dict[str, list[Any]] = {}
            for item in doc:
                if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
                        and isinstance(item[4], dict)):
                    raise StateError("policy state window is malformed")
                key, d, n, p, rec = item
                unknown = set(rec) - set(VERDICT_COLUMNS)
                if unknown:
                    raise StateError(f"policy state record has unknown fields {sorted(unknown)}")
                opened[key] = [float(d), int(n), int(p), rec]
            self._max_ts = float(state["max_ts"])
            self._seq = int(state["seq"])
            self.suppressed = int(state["suppressed"])
            self._open = opened
        except KeyError as exc:
            raise StateError(f"policy state lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise StateError(f"policy state is malformed: {exc}") from exc
