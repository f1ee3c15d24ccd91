"""An alert budget on the user's own traffic: per-class thresholds for at most N a day.

``zeekml calibrate --data DAYS --budget N`` scores the given logs once with the runtime
scorers, keeps every *candidate* row (a score at or above the lowest threshold the
calibration may choose, endpoints not allow-listed) with the stream clock at its row,
then, per model, finds thresholds such that this traffic would have produced at most
N notices (or, with ``unit="incident"``, N incidents) on any UTC day of log time. The
runtime decides exactly as the search assumes: ``score >= threshold``, then the real
:class:`~zeekml.policy.notice.NoticePolicy` with the configured suppression (notices)
or the real :class:`~zeekml.policy.incidents.IncidentTracker` (incidents).

**Rule.** Classes of one model are independent in the policy (its suppression key
holds the class), so each class has a curve "threshold -> most notices on one day".
The model's budget is shared max-min fairly: the largest allowance K with
``sum(min(n_c, K)) <= N`` (``n_c`` the class's most per day at its floor), so a class
that stays under K keeps its threshold and the classes that flood are cut to K (what is
left of N goes one by one to the cut classes). A cut class gets the lowest threshold
(a score observed in the data, found by bisection and checked) that keeps it at or
under its allowance. The sum of per-class daily maxima bounds every day's total, so
the model stays within N; the report gives the real total per day, measured with all
classes at their new thresholds.

**Floors.** A threshold is never lowered below the one in force (the card's, or the
base ``--config``/``--threshold``) unless ``allow_lower`` is set; then the floor is the
lowest score seen and a class under its allowance gets the lowest threshold that keeps
it there (so the budget is filled).

**Days** are UTC calendar days of the flows' ``ts`` (the notice's, or the incident's
``first_seen``); a day only partly in the data counts as a day. Incidents are counted
per model as if it were the only model (models sharing a class share incidents at
run time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from zeekml.errors import ConfigError
from zeekml.policy.incidents import INPUT_COLUMNS, IncidentConfig, IncidentTracker
from zeekml.policy.notice import (
    Decision,
    NoticePolicy,
    PolicyConfig,
    by_direction,
    crosses,
    swept_of,
)
from zeekml.policy.sweep import SweepKeys
from zeekml.records.verdicts import NORMAL, empty_verdicts

DAY = 86400.0
UNITS = ("notice", "incident")


# --------------------------------------------------------------------------- collecting


class CandidatePolicy(NoticePolicy):
    """A notice policy that writes nothing and marks every row that could be flagged.

    Run inside a normal :class:`~zeekml.runtime.pipeline.Pipeline` (so inputs are read
    and scored exactly as ``zeekml score`` does), it sets :attr:`decision` with
    ``flagged`` = score at or above the calibration floor and no endpoint allow-listed;
    the pipeline hands those rows (with the stream clock and the inbound flag) to a
    :class:`CandidateRecorder` in place of the incident tracker.
    """

    def __init__(self, config: PolicyConfig, allow_lower: bool) -> None:
        super().__init__(config)
        self.allow_lower = allow_lower
        self.floors: dict[tuple[str, str], float] = {}
        #: classes whose flows were held to more than one threshold (the floor is the
        #: highest): counted at the thresholds each flow had, and named in the policy only
        #: when cut, at the highest or above, so that no flow's threshold is lowered
        self.mixed: set[tuple[str, str]] = set()
        self._in_force: list[pd.DataFrame] = []
        self.first_ts = math.inf
        self.last_ts = -math.inf

    #: every row's score is recorded, not only the rows at or above a threshold
    sparse_ok = False

    def decide(self, scored: pd.DataFrame, *, positions: np.ndarray | None = None,
               size: int | None = None, ts: np.ndarray | None = None,
               context: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
        if positions is not None:
            raise ValueError("calibration records every row: it needs the whole batch")
        self.decision = None
        b = len(scored)
        if not b:
            return empty_verdicts()
        df = scored.reset_index(drop=True)
        th = self.thresholds(df)  # what is in force (card, or the base config)
        score = df["score"].to_numpy(dtype=np.float64, na_value=np.nan)
        ts = df["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(ts)
        if ok.any():
            self.first_ts = min(self.first_ts, float(ts[ok].min()))
            self.last_ts = max(self.last_ts, float(ts[ok].max()))
        t = np.where(np.isfinite(ts), ts, -np.inf)
        cm = np.maximum.accumulate(np.concatenate([[self._max_ts], t]))[1:]
        self._max_ts = float(cm[-1])
        floor = np.full(b, -np.inf) if self.allow_lower else th
        flagged = np.isfinite(score) & (score >= floor)
        if self.allow:
            flagged &= ~(self.allow.contains(df["orig_h"]) | self.allow.contains(df["resp_h"]))
        # a class's floor is the highest threshold in force for it: a model may hold flows
        # of one class to different thresholds (the AMF-LSTM's flows with payload bytes
        # unknown), and a policy threshold applies to all of them, so one below that
        # would lower some flows' thresholds and raise alerts the budget never counted
        keys = pd.DataFrame({"m": df["model"].astype(str), "c": df["cls"].astype(str),
                             "t": th}).groupby(["m", "c"], sort=False)["t"].agg(["min", "max"])
        for (m, c), lo, hi in keys.itertuples(name=None):
            seen = self.floors.get((m, c))
            if lo != hi or (seen is not None and not lo == hi == seen):
                self.mixed.add((m, c))
            self.floors[(m, c)] = max(-math.inf if seen is None else seen, float(hi))
        if flagged.any():
            self._in_force.append(pd.DataFrame({
                "model": df["model"].astype(str).to_numpy()[flagged],
                "uid": df["uid"].astype(str).to_numpy()[flagged], "in_force": th[flagged]}))
        rows = df.assign(verdict=df["cls"].astype("str").fillna(NORMAL), threshold=th)
        self.decision = Decision(rows, flagged, flagged, cm)
        return empty_verdicts()


    def with_in_force(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The recorder's candidate ``rows`` with ``in_force``: the threshold each had."""
        if not len(rows) or not self._in_force:
            return rows.assign(in_force=np.nan)
        t = pd.concat(self._in_force, ignore_index=True).drop_duplicates(["model", "uid"])
        key = rows[["model", "uid"]].astype(str)
        return rows.assign(in_force=key.merge(t, on=["model", "uid"], how="left")["in_force"]
                           .to_numpy(dtype=np.float64))


class CandidateRecorder:
    """Stands in for the incident tracker: keeps the candidate rows (no evidence lists)."""

    pending = 0

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def update(self, x: pd.DataFrame, clock: float) -> pd.DataFrame:
        if len(x):
            self.frames.append(x.drop(columns=["context"]).assign(context=None))
        from zeekml.records.incidents import empty_incidents

        return empty_incidents()

    def finish(self, clock: float | None = None) -> pd.DataFrame:
        from zeekml.records.incidents import empty_incidents

        return empty_incidents()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def table(self) -> pd.DataFrame:
        if not self.frames:
            return pd.DataFrame(columns=list(INPUT_COLUMNS))
        return pd.concat(self.frames, ignore_index=True)


# --------------------------------------------------------------------------- counting


def _days(ts: np.ndarray) -> np.ndarray:
    ts = np.asarray(ts, dtype=np.float64)
    return np.asarray(np.floor(ts[np.isfinite(ts)] / DAY).astype(np.int64))


def _most_per_day(ts: np.ndarray) -> int:
    d = _days(ts)
    return int(np.bincount(d - d.min()).max()) if len(d) else 0


def notice_times(rows: pd.DataFrame, thresholds: dict[str, float], base: PolicyConfig
                 ) -> np.ndarray:
    """The ``ts`` of every notice the real policy writes for these candidate rows.

    ``rows`` are one model's candidates in stream order; each is preceded by a clock row
    (no score, ``ts`` = the stream clock at it), so suppression windows close at the
    same flows as at run time.
    """
    n = len(rows)
    if not n:
        return np.zeros(0)
    policy = NoticePolicy(replace(base, thresholds={**base.thresholds, **thresholds},
                                  all_flows=False))
    scored = pd.DataFrame({
        "ts": rows["ts"].to_numpy(dtype=np.float64), "uid": rows["uid"].to_numpy(),
        "orig_h": rows["orig_h"].to_numpy(), "resp_h": rows["resp_h"].to_numpy(),
        "resp_p": rows["resp_p"].to_numpy(), "model": rows["model"].to_numpy(),
        "cls": rows["verdict"].to_numpy(), "score": rows["score"].to_numpy(dtype=np.float64),
        "threshold": np.full(n, np.inf),
    })
    if "inbound" in rows.columns:  # the suppression key's host, as at run time
        scored["inbound"] = rows["inbound"].to_numpy(dtype=bool)
    if "by_direction" in rows.columns:  # which rows may be a sweeper's
        scored["by_direction"] = by_direction(rows)
    ticks = scored.assign(ts=rows["act"].to_numpy(dtype=np.float64), score=np.nan)
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2] = np.arange(n) + n
    order[1::2] = np.arange(n)
    both = pd.concat([scored, ticks], ignore_index=True).iloc[order].reset_index(drop=True)
    out = [policy.decide(both), policy.finish()]
    return np.concatenate([o["ts"].to_numpy(dtype=np.float64) for o in out])


def swept_rows(rows: pd.DataFrame, base: PolicyConfig) -> pd.DataFrame:
    """Candidate rows (stream order) with ``inbound`` cleared where the notice policy's
    sweep rule (:mod:`zeekml.policy.sweep`) keys them by their originator, as at run
    time: the recorder keeps each row's subject from before the rule, which depends on
    which rows cross the thresholds being tried."""
    if (base.suppress <= 0 or base.suppress_by != "host" or base.sweep_hosts <= 0
            or "inbound" not in rows.columns or not len(rows)):
        return rows
    r = rows.reset_index(drop=True)
    at = np.flatnonzero(r["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool)
                        & by_direction(r))
    if not len(at):
        return rows
    act = r["act"].to_numpy(dtype=np.float64)
    swept = swept_of(SweepKeys(base.sweep_hosts, base.suppress), r, at, act[at], act[at],
                     float(np.nanmax(act)))
    if not swept.any():
        return rows
    # a copy: to_numpy may hand back the caller's own memory
    inbound = np.array(r["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool))
    inbound[at[swept]] = False
    return r.assign(inbound=inbound)


def incident_times(rows: pd.DataFrame, config: IncidentConfig, end: float,
                   base: PolicyConfig | None = None) -> np.ndarray:
    """``first_seen`` of every incident the real tracker makes of these candidate rows
    (with ``base``, an incident's host as the sweep rule makes it: :func:`swept_rows`)."""
    if not len(rows):
        return np.zeros(0)
    if base is not None:
        rows = swept_rows(rows, base)
    t = IncidentTracker(config)
    recs = pd.concat([t.update(rows, end), t.finish(end)], ignore_index=True)
    return np.asarray(recs.loc[recs["state"] == "closed", "first_seen"].to_numpy(dtype=np.float64))


# --------------------------------------------------------------------------- search


def lowest_threshold(scores: np.ndarray, floor: float, allowance: int,
                     count: Callable[[float], int]) -> tuple[float, int]:
    """The lowest threshold >= ``floor`` with ``count(threshold) <= allowance``.

    Candidates are the distinct scores at or above the floor (a threshold equal to a
    score keeps that score), then one just above the highest (nothing flagged).
    Bisection assumes fewer alerts for a higher threshold; the returned threshold is
    checked, and if suppression made the curve bend, the next candidates up are tried.
    """
    at_floor = count(floor)
    if at_floor <= allowance:
        return floor, at_floor
    cand = np.unique(scores[np.isfinite(scores) & (scores >= floor)])
    top = float(np.nextafter(cand[-1], np.inf)) if len(cand) else floor
    values = [*map(float, cand), top]
    lo, hi = 0, len(values) - 1  # count(values[hi]) == 0 <= allowance
    cache: dict[int, int] = {len(values) - 1: 0}

    def c(i: int) -> int:
        if i not in cache:
            cache[i] = count(values[i])
        return cache[i]

    while lo < hi:
        mid = (lo + hi) // 2
        if c(mid) <= allowance:
            hi = mid
        else:
            lo = mid + 1
    i = lo
    while c(i) > allowance:  # the check (a non-monotone bend): go up until it holds
        i += 1
    return values[i], c(i)


def allowances(most: dict[str, int], budget: int) -> dict[str, int]:
    """Max-min fair shares of ``budget`` for classes wanting ``most`` a day each."""
    if sum(most.values()) <= budget:
        return dict(most)
    ks = sorted(most.values())
    k, below = 0, 0  # the largest K with sum(min(n, K)) <= budget (water filling)
    for i, n in enumerate(ks):
        rest = len(ks) - i
        if below + n * rest <= budget:
            below += n
            continue
        k = (budget - below) // rest
        break
    share = {c: min(n, k) for c, n in most.items()}
    left = budget - sum(share.values())
    for c in sorted((c for c, n in most.items() if n > k), key=lambda c: (-most[c], c)):
        if left <= 0:
            break
        share[c] += 1
        left -= 1
    return share


# --------------------------------------------------------------------------- results


@dataclass
class ClassCost:
    """What the budget did to one model's class."""

    model: str
    cls: str
    floor: float
    threshold: float
    before: int  # most alerts on one day at the floor
    after: int  # ... at the new threshold
    flagged: int  # candidate flows at or above the floor
    cut: int  # of those, flows now below the threshold
    cut_low: float = math.nan  # the range of scores cut
    cut_high: float = math.nan
    #: its flows were held to more than one threshold in force (``floor`` is the highest)
    mixed: bool = False
    #: the policy names it (moved; or a mixed class cut to one threshold for all its flows)
    named: bool = False
    #: kept above the model's score range: a class the card does not emit (too thin, or
    #: left to another detector), not a threshold the traffic chose
    not_emitted: bool = False

    @property
    def key(self) -> str:
        return f"{self.model}:{self.cls}"


@dataclass
class Calibration:
    """Per-class thresholds for a budget, and what they cost."""

    budget: int
    unit: str
    days: int
    classes: list[ClassCost] = field(default_factory=list)
    #: per model: most alerts on one day, all classes together, before and after
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)

    def thresholds(self) -> dict[str, float]:
        return {c.key: c.threshold for c in self.classes}

    def policy_json(self, base: PolicyConfig) -> dict[str, Any]:
        """The policy file ``--config`` reads (:meth:`PolicyConfig.from_json`'s format):
        the base policy's thresholds and every class the calibration moved. A class left
        at the card's own threshold is not repeated: the card still applies, and a card
        may hold thresholds a policy file may not (a class the model does not emit has
        one above its score range)."""
        th = {k: float(v) for k, v in base.thresholds.items()}
        th.update({c.key: c.threshold for c in self.classes
                   if c.threshold != c.floor or c.key in th or c.named})
        out: dict[str, Any] = {"thresholds": th, "suppress": base.suppress,
                               "suppress_by": base.suppress_by,
                               "sweep_hosts": base.sweep_hosts}
        if base.allow:
            out["allow"] = [str(n) for n in base.allow]
        return out

    def report(self) -> str:
        unit = "notices" if self.unit == "notice" else "incidents"
        lines = [f"budget: {self.budget} {unit} a day per model, over {self.days} days "
                 "of log time (UTC)"]
        for model, (before, after) in sorted(self.totals.items()):
            lines.append(f"{model}: at most {before} {unit} a day before, {after} after")
            for c in (c for c in self.classes if c.model == model):
                cost = (f"cuts {c.cut} of {c.flagged} flagged flows, scores "
                        f"{c.cut_low:.6g}..{c.cut_high:.6g}" if c.cut else "cuts nothing")
                move = ("not emitted: above every score" if c.not_emitted else
                        "set for all its flows at the highest of their thresholds" if c.named
                        and c.threshold == c.floor else "kept" if c.threshold == c.floor else
                        f"{'raised' if c.threshold > c.floor else 'lowered'} from "
                        f"{c.floor:.6g}")
                shown = f"{c.threshold:.7g}" if c.not_emitted else f"{c.threshold:.6g}"
                lines.append(f"  {c.cls}: threshold {shown} ({move}); most {unit} "
                             f"a day {c.before} -> {c.after}; {cost}")
        return "\n".join(lines)


def calibrate(rows: pd.DataFrame, floors: dict[tuple[str, str], float], base: PolicyConfig,
              budget: int, *, unit: str = "notice", incidents: IncidentConfig | None = None,
              end: float = -math.inf, span: tuple[float, float] = (math.nan, math.nan),
              allow_lower: bool = False, mixed: set[tuple[str, str]] | None = None,
              ranges: dict[str, tuple[float, float] | None] | None = None) -> Calibration:
    """Thresholds so that ``rows`` (:class:`CandidateRecorder` table) give at most
    ``budget`` alerts a day per model (see the module doc). ``mixed``: classes whose flows
    were held to more than one threshold (:attr:`CandidatePolicy.mixed`; ``rows`` then
    carry ``in_force``, :meth:`CandidatePolicy.with_in_force`): counted at the threshold
    each flow had; left to the card when within the budget, else one threshold for all
    their flows, from the highest up (a policy threshold applies to every flow of a
    class, and none may be lowered). ``ranges``: each model's score range; a threshold
    just above the highest score seen that lies beyond it (a count detector's window
    full, a probability of 1) becomes ``inf`` (never), the value a policy file may hold
    there."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise ConfigError(f"the budget must be a whole number >= 0, got {budget!r}")
    if unit not in UNITS:
        raise ConfigError(f"budget unit must be one of {', '.join(UNITS)}, got {unit!r}")
    icfg = incidents or IncidentConfig()
    first, last = span
    days = (int(math.floor(last / DAY) - math.floor(first / DAY)) + 1
            if math.isfinite(first) and math.isfinite(last) else 0)
    result = Calibration(budget=budget, unit=unit, days=days)
    models = sorted({m for m, _ in floors})
    for model in models:
        mine = rows[rows["model"].astype(str) == model] if len(rows) else rows
        classes = sorted({c for m, c in floors if m == model and c != NORMAL})
        per: dict[str, pd.DataFrame] = {c: mine[mine["verdict"].astype(str) == c]
                                        for c in classes}

        lowest = {c: (float(per[c]["score"].min()) if allow_lower and len(per[c])
                      else floors[(model, c)]) for c in classes}
        counts = {c: _counter(per[c], f"{model}:{c}", unit, base, icfg, end) for c in classes}
        mix = {c for c in classes
               if (model, c) in (mixed or set()) and "in_force" in per[c].columns}
        held = {c: _in_force_count(per[c], unit, base, icfg, end) for c in mix}
        most = {c: (held[c] if c in mix and not allow_lower else counts[c](lowest[c]))
                for c in classes}
        share = allowances(most, budget)
        for c in classes:
            score = per[c]["score"].to_numpy(dtype=np.float64)
            floor = floors[(model, c)]
            if c in mix and not allow_lower and most[c] <= share[c]:
                # within its share at the thresholds its flows had: the card stays
                result.classes.append(ClassCost(
                    model=model, cls=c, floor=floor, threshold=floor, before=most[c],
                    after=most[c], flagged=int(np.isfinite(score).sum()), cut=0, mixed=True))
                continue
            # from the floor up (with allow_lower from the lowest score: fills the budget)
            new, after = lowest_threshold(score, lowest[c], share[c], counts[c])
            top = (ranges or {}).get(model)
            if top is not None and floor <= top[1] < new:  # raised out of the range
                new = math.inf
            if c in mix:  # every recorded flow crossed the threshold it had
                base_count = held[c]
                live = score[np.isfinite(score)]
            else:
                base_count = most[c] if lowest[c] == floor else counts[c](floor)
                live = score[np.isfinite(score) & (score >= min(floor, new))]
            cut = live[live < new]
            result.classes.append(ClassCost(
                model=model, cls=c, floor=floor, threshold=new, before=base_count, after=after,
                flagged=len(live) if c in mix else int((live >= floor).sum()), cut=int(len(cut)),
                mixed=c in mix, named=c in mix,
                cut_low=float(cut.min()) if len(cut) else math.nan,
                cut_high=float(cut.max()) if len(cut) else math.nan))
        costs = [c for c in result.classes if c.model == model]
        chosen = {c.key: c.threshold for c in costs}
        floors_m = {f"{model}:{c}": floors[(model, c)] for c in classes}
        as_carded = {c.key for c in costs if c.mixed and not c.named}
        result.totals[model] = (
            _model_total(mine, floors_m, base, unit, icfg, end,
                         {f"{model}:{c}" for c in mix}),
            _model_total(mine, chosen, base, unit, icfg, end, as_carded))
    for i, cost in enumerate(result.classes):
        top = (ranges or {}).get(cost.model)
        if top is not None and cost.threshold == cost.floor > top[1]:
            result.classes[i] = replace(cost, not_emitted=True)
    return result


def _counter(rows: pd.DataFrame, key: str, unit: str, base: PolicyConfig,
             icfg: IncidentConfig, end: float) -> Callable[[float], int]:
    """threshold -> most alerts on one day, for one model's class (its candidate rows)."""
    score = rows["score"].to_numpy(dtype=np.float64)

    def count(threshold: float) -> int:
        chosen = rows[crosses(score, threshold)]
        if unit == "notice":
            return _most_per_day(notice_times(chosen, {key: threshold}, base))
        return _most_per_day(incident_times(chosen, icfg, end, base))

    return count


def _in_force_count(rows: pd.DataFrame, unit: str, base: PolicyConfig, icfg: IncidentConfig,
                    end: float) -> int:
    """Most alerts on one day for one model's class, each flow at the threshold it had."""
    return _model_total(rows, {}, base, unit, icfg, end,
                        set(rows["model"].astype(str) + ":" + rows["verdict"].astype(str)))


def _model_total(rows: pd.DataFrame, thresholds: dict[str, float], base: PolicyConfig,
                 unit: str, icfg: IncidentConfig, end: float,
                 as_carded: set[str] | None = None) -> int:
    """Most alerts on one day for one model with every class at ``thresholds``, and the
    classes ``as_carded`` at the threshold each flow had (``in_force``)."""
    if not len(rows):
        return 0
    key = rows["model"].astype(str) + ":" + rows["verdict"].astype(str)
    t = key.map(thresholds).to_numpy(dtype=np.float64)
    if as_carded and "in_force" in rows.columns:
        own = key.isin(as_carded).to_numpy(dtype=bool)
        t = np.where(own, rows["in_force"].to_numpy(dtype=np.float64), t)
        thresholds = {**thresholds, **{k: -math.inf for k in as_carded}}
    chosen = rows[rows["score"].to_numpy(dtype=np.float64) >= np.nan_to_num(t, nan=np.inf)]
    if unit == "notice":
        return _most_per_day(notice_times(chosen, thresholds, base))
    return _most_per_day(incident_times(chosen, icfg, end, base))


def all_classes(floors: dict[tuple[str, str], float], cards: Iterable[Any],
                base: PolicyConfig) -> None:
    """Add every class a model's card names (classes or thresholds), at the threshold in
    force for it (the card's, unless the base policy overrides it)."""
    policy = NoticePolicy(base)
    for card in cards:
        data = getattr(card, "data", {}) or {}
        names = [c for c in data.get("classes", []) if c != NORMAL] or \
            [c for c in data.get("thresholds", {}) if c != "default"]
        for c in names:
            if (card.name, str(c)) in floors:
                continue
            one = pd.DataFrame({"model": [card.name], "cls": [str(c)],
                                "threshold": [float(card.threshold_for(str(c)))]})
            floors[(card.name, str(c))] = float(policy.thresholds(one)[0])
