"""Policy stages: suppression per key host, incidents per incident host, in stream order.

Thresholds and allow-lists are per row (applied where rows are scored). Suppression is
not: one notice per (host, verdict, model) per interval (host: the local responder of an
inbound flow, else the originator; with ``suppress_by = "orig"`` the originator), and a
window closes when the *stream's* log time (the running maximum of ``ts`` over every
flow before it, of every host) reaches its deadline. So the flagged rows (threshold crossed, not
allow-listed) go to a part by that host (:func:`route_scored`); each part, sorted by
stream order, goes through one :class:`~zeekml.policy.notice.NoticePolicy`, unchanged,
each row preceded by a *clock row* (no score, ``ts`` = the stream clock at the row)
that stands in for the flows of every other host (:func:`suppress_group`). So the
``notice`` flags and the notices' ``n`` equal the local engine's.

Sweepers (:mod:`zeekml.policy.sweep`) go first: with ``suppress_by = "host"`` an
inbound flagged row's key host depends on how many local hosts its originator was flagged
against, so those rows go to a part by originator (:data:`SWP`), where one
:class:`~zeekml.policy.sweep.SweepKeys` in stream order clears ``inbound`` where the
originator sweeps (:func:`sweep_group`), and then on to suppression.

Incidents: the flagged rows with their final notice flag go to a part by the
incident's host (the responder of inbound flows, else the originator); one
:class:`~zeekml.policy.incidents.IncidentTracker` per part, unchanged, builds the
incidents in stream order and closes what is open at the stream's last log time
(:func:`track_group`), so the records equal the local engine's.

Every stage's output is a *route record* (:data:`ROUTE_DDL`): ``kind`` says where its
pack goes (:data:`OUT` verdicts of segment ``part``, :data:`SUP` flagged rows of
key-host part ``part``, :data:`INC` flagged rows of incident-host part ``part``);
``rows`` and ``notes`` (notices per verdict, JSON) count an output pack without
opening it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.policy.incidents import IncidentConfig
from zeekml.policy.notice import (
    NoticePolicy,
    PolicyConfig,
    by_direction,
    subject_hosts,
    swept_of,
)
from zeekml.policy.sweep import SweepKeys
from zeekml.records.incidents import INCIDENT_DTYPES
from zeekml.records.verdicts import NOTICE, SUPPRESSED, VERDICT_COLUMNS
from zeekml.runtime.spark.packs import hash_parts, pack_parts, sendable, unpack_all

ROUTE_DDL = "`kind` int, `part` bigint, `rows` bigint, `notes` string, `data` binary"
OUT, SUP, INC, SWP = 0, 1, 2, 3
#: what an output pack holds of a verdict row
OUT_COLUMNS = (*VERDICT_COLUMNS, "file_idx", "source_line", "ord", "m")
#: what a flagged row carries to suppression and incidents
FLAGGED_COLUMNS = (*VERDICT_COLUMNS, "cls", "file_idx", "source_line", "ord", "seg", "clock",
                   "m", "inbound", "by_direction")
#: rows the policy and the tracker take per call (bounds a worker's memory)
STEP_ROWS = defaults.BATCH_ROWS


def _records(kind: int, items: list[tuple[int, bytes]], rows: dict[int, int],
             notes: dict[int, str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"kind": np.full(len(items), kind, dtype=np.int32),
                         "part": np.array([p for p, _ in items], dtype=np.int64),
                         "rows": np.array([rows[p] for p, _ in items], dtype=np.int64),
                         "notes": pd.Series([(notes or {}).get(p, "") for p, _ in items],
                                            dtype=object),
                         "data": pd.Series([d for _, d in items], dtype=object)})


def _none() -> pd.DataFrame:
    return _records(OUT, [], {})


def _sizes(part: np.ndarray) -> dict[int, int]:
    parts, n = np.unique(part, return_counts=True)
    return {int(p): int(c) for p, c in zip(parts, n, strict=True)}


def _notes(rows: pd.DataFrame, part: np.ndarray) -> dict[int, str]:
    """Per part: its notices per verdict, as JSON (counted without opening the pack)."""
    hit = rows["notice"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    out = {int(p): "{}" for p in np.unique(part)}
    if hit.any():
        counted = pd.DataFrame({"p": part[hit], "v": rows["verdict"].to_numpy(object)[hit]})
        for p, g in counted.groupby("p", sort=False)["v"]:
            vc = g.astype(str).value_counts()
            out[int(p)] = json.dumps({str(k): int(v) for k, v in vc.items()}, sort_keys=True)
    return out


def _hosts(rows: pd.DataFrame, about: bool) -> pd.Series:
    """Each row's originator, or with ``about`` the host it is about
    (:func:`~zeekml.policy.notice.subject_hosts` with the rows' ``inbound`` flags): what
    incidents are keyed by, and suppression with ``suppress_by = "host"``."""
    if not about:
        return rows["orig_h"]
    inbound = rows["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return subject_hosts(rows, np.arange(len(rows)), inbound)


def _host_part(rows: pd.DataFrame, parts: int, about: bool) -> np.ndarray:
    """Part of each row by its :func:`_hosts`."""
    return hash_parts(_hosts(rows, about).astype(object).fillna("-"), parts)


def _route(rows: pd.DataFrame, kind: int, parts: int, by: str = "orig") -> pd.DataFrame:
    """Flagged rows to suppression (by the key's host, ``by`` as ``suppress_by``) or
    incidents (by incident host)."""
    f = rows[[c for c in FLAGGED_COLUMNS if c in rows.columns]]
    part = _host_part(f, parts, kind == INC or by == "host")
    return _records(kind, pack_parts(f, part), _sizes(part))


def _outs(rows: pd.DataFrame) -> pd.DataFrame:
    """Verdict rows to write, one pack per segment, counted."""
    seg = rows["seg"].to_numpy(dtype=np.int64)
    return _records(OUT, pack_parts(rows[list(OUT_COLUMNS)], seg), _sizes(seg),
                    _notes(rows, seg))


def route_scored(decided: pd.DataFrame | None, config: PolicyConfig, parts: int,
                 incidents: bool) -> pd.DataFrame:
    """Thresholded rows of a scoring group -> route records.

    With suppression, flagged rows go to their key host's part (and the others,
    with ``--all``, to the output); without, flagged rows are notices at once.
    """
    if decided is None or not len(decided):
        return _none()
    flagged = decided["notice"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    out = []
    if config.suppress > 0:
        if flagged.any():
            f = decided[flagged]
            sweep = _sweep_rows(f, config)
            if sweep.any():
                out.append(_route(f[sweep], SWP, parts, "orig"))
            out.append(_route(f[~sweep], SUP, parts, config.suppress_by))
        if config.all_flows and not flagged.all():
            out.append(_outs(decided[~flagged]))
    else:
        out.append(_outs(decided if config.all_flows else decided[flagged]))
        if incidents and flagged.any():
            out.append(_route(decided[flagged], INC, parts))
    return pd.concat(out, ignore_index=True) if out else _none()


def _sweep_rows(rows: pd.DataFrame, config: PolicyConfig) -> np.ndarray:
    """Flagged rows whose key host a sweeper may change: inbound, by host, sweep keys on."""
    if config.suppress_by != "host" or config.sweep_hosts <= 0 or "inbound" not in rows:
        return np.zeros(len(rows), dtype=bool)
    return (rows["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool)
            & by_direction(rows))


def sweep_group(pdf: pd.DataFrame, config: PolicyConfig, parts: int) -> pd.DataFrame:
    """One originator part's inbound flagged rows, in stream order, through one
    :class:`~zeekml.policy.sweep.SweepKeys` (as the local policy's), then to suppression."""
    rows = unpack_all(pdf["data"])
    if rows is None or not len(rows):
        return _none()
    rows = rows.sort_values(["ord", "m"], kind="stable").reset_index(drop=True)
    sweep = SweepKeys(config.sweep_hosts, config.suppress)
    clock = rows["clock"].to_numpy(dtype=np.float64, na_value=np.nan)
    eff = np.where(np.isfinite(clock), clock, 0.0)  # as the local policy's: the clock
    inbound = np.array(rows["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool))
    for lo in range(0, len(rows), STEP_ROWS):
        hi = min(lo + STEP_ROWS, len(rows))
        swept = swept_of(sweep, rows, np.arange(lo, hi), eff[lo:hi], clock[lo:hi],
                         float(np.nanmax(clock[lo:hi])) if np.isfinite(clock[lo:hi]).any()
                         else -np.inf)
        inbound[lo:hi] &= ~swept
    rows["inbound"] = pd.array(inbound, dtype="boolean")
    return _route(rows, SUP, parts, "host")


def _notice_counts(rows: pd.DataFrame, by: str) -> np.ndarray:
    """``n`` of each row: the flagged rows of its (host, verdict, model) key from the
    key's notice before it up to its next notice (rows in stream order)."""
    host = _hosts(rows, by == "host").astype(object).fillna("-")
    key = pd.Series(pd.factorize(pd.MultiIndex.from_arrays(
        [host, rows["verdict"].astype(object), rows["m"]]))[0])
    notice = rows["notice"].astype("boolean").fillna(False).astype(np.int64)
    window = notice.groupby(key).cumsum()
    return rows.groupby([key, window])["ord"].transform("size").to_numpy(dtype=np.int64)


def suppress_group(pdf: pd.DataFrame, config: PolicyConfig, parts: int, incidents: bool
                   ) -> pd.DataFrame:
    """One key-host part's flagged rows, in stream order, through the real policy."""
    rows = unpack_all(pdf["data"])
    if rows is None or not len(rows):
        return _none()
    rows = rows.sort_values(["ord", "m"], kind="stable").reset_index(drop=True)
    # sweepers were decided by originator before (sweep_group): the rows' inbound says it
    policy = NoticePolicy(replace(config, all_flows=True, sweep_hosts=0))
    notice = np.zeros(len(rows), dtype=bool)
    for lo in range(0, len(rows), STEP_ROWS):
        b = rows.iloc[lo:lo + STEP_ROWS].reset_index(drop=True)
        n = len(b)
        scored = b.drop(columns=["verdict", "notice", "n"])
        ticks = scored.assign(ts=scored["clock"].to_numpy(), score=np.nan)
        order = np.empty(2 * n, dtype=np.int64)
        order[0::2] = np.arange(n) + n
        order[1::2] = np.arange(n)
        both = pd.concat([scored, ticks], ignore_index=True).iloc[order]
        decided = policy.decide(both.reset_index(drop=True)).iloc[1::2]
        notice[lo:lo + n] = decided["notice"].astype("boolean").fillna(False).to_numpy(bool)
    rows["notice"] = pd.array(notice, dtype="boolean")
    # every row here crossed its threshold and no endpoint is allow-listed
    rows["decision"] = pd.Series(np.where(notice, NOTICE, SUPPRESSED), dtype="str")
    out = []
    if config.all_flows:
        out.append(_outs(rows))
    else:
        rows["n"] = pd.array(_notice_counts(rows, config.suppress_by), dtype="Int64")
        if notice.any():
            out.append(_outs(rows[notice]))
    if incidents:
        out.append(_route(rows, INC, parts))
    return pd.concat(out, ignore_index=True) if out else _none()


def _flow_steps(ords: np.ndarray) -> Iterator[tuple[int, int]]:
    """Slices of about :data:`STEP_ROWS` rows that never cut a flow's rows apart."""
    n, lo = len(ords), 0
    while lo < n:
        hi = min(lo + STEP_ROWS, n)
        while hi < n and ords[hi] == ords[hi - 1]:
            hi += 1
        yield lo, hi
        lo = hi


def track_group(pdf: pd.DataFrame, config: IncidentConfig, end_clock: float) -> pd.DataFrame:
    """One incident-host part's flagged rows through one tracker, in stream order.

    A flow's rows (one per model) go in one update, so the models' agreement is seen
    as in the local engine; at the end, what is open closes at the stream's last log
    time.
    """
    from zeekml.policy.incidents import IncidentTracker, flagged_rows
    rows = unpack_all(pdf["data"])
    cols = list(INCIDENT_DTYPES)
    tracker = IncidentTracker(config)
    out = []
    if rows is not None and len(rows):
        rows = rows.sort_values(["ord", "m"], kind="stable").reset_index(drop=True)
        ords = rows["ord"].to_numpy(dtype=np.int64)
        for lo, hi in _flow_steps(ords):
            b = rows.iloc[lo:hi].reset_index(drop=True)
            n = len(b)
            x = flagged_rows(b, np.ones(n, dtype=bool), b["notice"].astype("boolean")
                             .fillna(False).to_numpy(dtype=bool), b["clock"].to_numpy(),
                             b["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool),
                             pd.factorize(ords[lo:hi])[0])
            got = tracker.update(x, float(np.max(b["clock"].to_numpy(dtype=np.float64))))
            if len(got):
                out.append(got[cols])
    got = tracker.finish(end_clock)
    if len(got):
        out.append(got[cols])
    if not out:
        return pd.DataFrame({c: pd.Series([], dtype=("object" if t == "object" else t))
                             for c, t in INCIDENT_DTYPES.items()})
    return sendable(pd.concat(out, ignore_index=True))
