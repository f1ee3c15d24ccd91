"""The scoring pipeline: the only loop, by batch, never per flow.

::

    canonical flow batch -> [NetFlow pairing] -> every scorer (ONNX, batched)
                         -> notice policy -> every sink

:func:`score_frame` is the pure core (no I/O): a flow table, the scorers and the policy
in, the verdict rows to write out. Spark applies it per partition; :class:`Pipeline`
applies it per batch and adds sinks, counters and checkpoints; ``zeekml score``
(:func:`zeekml.runtime.batch_run.score_inputs`) and ``zeekml tail`` drive a Pipeline.

Rows of the verdict table are flow-major: for flow *i* and models *m1, m2*, the rows
are (i, m1), (i, m2), (i+1, m1), ... so an output is in stream order whatever the
number of models.

Exactly-once with a state file (:mod:`zeekml.runtime.state`): a commit
(:meth:`Pipeline.commit`) flushes (fsyncs) every sink, then saves, atomically and
together, each input's cursor (byte offset of the last complete line consumed, parser
state), every scorer's and the policy's state, and each sink's checkpoint. A run
commits once *before* it writes anything, so a run that dies is always cut back to a
commit by the next; a run that fails cuts its outputs back itself
(:meth:`Pipeline.abort`). A run resuming from a state truncates the outputs back to
their checkpoints and reads each input from its offset, so every flow is scored and
written once even across crashes. Inputs are read through the one input path
(:mod:`zeekml.sources.stream`) and recognised by content
(:mod:`zeekml.sources.generation`), so a growing ``current/conn.log`` continues where
the last run stopped, an unchanged archive is skipped, and a generation rotated away
between two runs is finished before the new one is read.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from zeekml.errors import FormatError, SinkError
from zeekml.models.base import Deferred, ScoreBatch, Scorer
from zeekml.models.card import ModelCard
from zeekml.policy.incidents import IncidentTracker, flagged_from_decision
from zeekml.policy.notice import NoticePolicy, crosses
from zeekml.records.addresses import subject_by_direction, subject_inbound
from zeekml.records.verdicts import empty_verdicts
from zeekml.runtime.lanes import ScorerLanes, can_lane
from zeekml.runtime.state import RunState, StateStore
from zeekml.sinks.base import Delivery, RunContext, Sink, call_optional, sink_delivery
from zeekml.sources.background import Background
from zeekml.sources.skips import SkipLog

if TYPE_CHECKING:
    from zeekml.sources.biflow import Pairer

log = logging.getLogger(__name__)

#: flow columns copied into every verdict row
FLOW_COLUMNS = ("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto")
#: a growing file's unfinished last line is only consumed once it is this old
SETTLE_SECONDS = 60.0


# --------------------------------------------------------------------------- pure core


def _context_cells(ctx: Any, n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Per-row uid lists from a scorer's ``context`` (object array of lists, 2-D array or
    :class:`Deferred`), for every row or only ``rows`` (the others stay missing)."""
    out = np.empty(n, dtype=object)
    if ctx is None:
        return out
    if isinstance(ctx, Deferred):
        idx = np.arange(n) if rows is None else rows
        if len(idx):
            out[idx] = ctx.take(idx)
        return out
    if rows is not None:
        out[rows] = _context_cells(ctx, n)[rows]
        return out
    arr = np.asarray(ctx, dtype=object) if not isinstance(ctx, np.ndarray) else ctx
    if arr.ndim == 2:
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8", errors="replace")
        out[:] = [[str(x) for x in row if str(x)] for row in arr.tolist()]
        return out
    out[:] = list(arr)
    return out


_STR = pd.StringDtype("pyarrow", na_value=np.nan)


def _str_series(values: Any) -> pd.Series:
    """Low-cardinality labels (model names, classes) as a ``str`` Series, fast.

    Converting an object array to pandas' arrow strings element by element is the
    slow path; factorizing first and casting a dictionary array costs one hash per
    row and one string per distinct value.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    dictionary = pa.array([str(u) for u in uniques], type=pa.large_string())
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=codes < 0),
                                         dictionary)
    return pd.Series(arr.cast(pa.large_string()).to_pandas(types_mapper={
        pa.large_string(): _STR}.get))


def _missing_str(n: int) -> pd.Series:
    """An all-missing ``str`` Series (built from arrow nulls, not element by element)."""
    return pd.Series(pa.nulls(n, pa.large_string()).to_pandas(
        types_mapper={pa.large_string(): _STR}.get))


def assemble(flows: pd.DataFrame, batches: Sequence[ScoreBatch],
             context: bool = True, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Flows and each model's :class:`ScoreBatch` -> scored rows (flow-major), with ``cls``.

    The result has the verdict columns (``verdict``/``notice``/``n`` not yet decided)
    plus ``cls``, the class each model would report; :meth:`NoticePolicy.decide` turns
    it into verdict rows. With ``context=False`` the ``context`` column is left empty,
    for :func:`fill_context` to fill where it is needed. ``rows`` (flow-major positions,
    increasing) builds only those rows: row ``r`` is flow ``r // k`` scored by model
    ``r % k`` for ``k`` models.
    """
    n, k = len(flows), len(batches)
    for b in batches:
        if len(b) != n:
            raise ValueError(f"scorer {b.model!r} returned {len(b)} scores for {n} flows")
    if n == 0 or k == 0:
        out = empty_verdicts()
        out["cls"] = pd.Series([], dtype="str")
        return out
    pos = np.arange(n * k) if rows is None else np.asarray(rows, dtype=np.int64)
    m = len(pos)
    flow_of, model_of = pos // k, pos % k
    dense = rows is None

    def pick(values: list[Any], dtype: Any = None, fill: Any = None) -> np.ndarray:
        """Each row's value from its model's per-flow array (``fill`` for a model without)."""
        if dense:
            return _flow_major(values, n, dtype, fill)
        out = np.empty(m, dtype=dtype)
        for j, v in enumerate(values):
            sel = model_of == j
            out[sel] = fill if v is None else np.asarray(v, dtype=dtype)[flow_of[sel]]
        return out

    def extra(*names: str) -> list[Any] | None:
        got = [next((b.extra[a] for a in names if a in b.extra), None) for b in batches]
        return None if all(v is None for v in got) else got

    cols: dict[str, Any] = {}
    for c in FLOW_COLUMNS:
        arr = flows[c].array
        cols[c] = pd.Series(arr if k == 1 and dense else arr.take(flow_of))
    cols["model"] = _str_series(np.array([b.model for b in batches], dtype=object)[model_of])
    cls = _str_series(pick([b.cls for b in batches], object))
    cols["candidate"] = cls
    cols["verdict"] = _missing_str(m)
    cols["score"] = pick([b.score for b in batches], np.float64)
    cols["threshold"] = pick([b.threshold for b in batches], np.float64)
    cols["notice"] = pd.array(np.zeros(m, dtype=bool), dtype="boolean")
    cols["decision"] = _missing_str(m)
    alt = extra("alt")
    cols["alt"] = _missing_str(m) if alt is None else _str_series(pick(alt, object))
    alt_score = extra("alt_score", "alt_p")
    cols["alt_score"] = (np.full(m, np.nan) if alt_score is None else
                         pick(alt_score, np.float64, np.nan))
    cols["n"] = pd.array(np.ones(m, dtype=np.int64), dtype="Int64")
    ctx = extra("context") if context else None
    cols["context"] = pd.Series(np.empty(m, dtype=object) if ctx is None else
                                _pick_context(ctx, n, flow_of, model_of), dtype=object)
    cols["cls"] = cls
    return pd.DataFrame(cols)


def _flow_major(values: Sequence[Any], n: int, dtype: Any = None, fill: Any = None
                ) -> np.ndarray:
    """Per-model arrays of ``n`` flows as one flow-major array (flow 0's models, flow 1's
    ...), ``fill`` for a model without values."""
    arrays = [np.asarray(np.full(n, fill) if v is None else v, dtype=dtype) for v in values]
    return arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=1).reshape(-1)


def _pick_context(ctx: list[Any], n: int, flow_of: np.ndarray, model_of: np.ndarray
                  ) -> np.ndarray:
    """Context cells of the rows (flow ``flow_of``, model ``model_of``), each model's
    cells built for its rows' flows only."""
    cells = np.empty(len(flow_of), dtype=object)
    for j, v in enumerate(ctx):
        sel = np.flatnonzero(model_of == j)
        if v is not None and len(sel):
            cells[sel] = _context_cells(v, n, flow_of[sel])[flow_of[sel]]
    return cells


def fill_context(scored: pd.DataFrame, batches: Sequence[ScoreBatch], need: np.ndarray,
                 rows: np.ndarray | None = None) -> None:
    """Fill ``scored``'s ``context`` where ``need``: rows of :func:`assemble` (all
    flow-major rows, or the positions ``rows`` it was built for)."""
    k = len(batches)
    if not k or not need.any():
        return
    pos = np.arange(len(scored)) if rows is None else np.asarray(rows, dtype=np.int64)
    want = np.flatnonzero(need)
    cells = np.empty(len(scored), dtype=object)
    cells[want] = _pick_context([b.extra.get("context") for b in batches],
                                len(batches[0]), pos[want] // k, pos[want] % k)
    scored["context"] = pd.Series(cells, dtype=object)


def _score_all(flows: pd.DataFrame, scorers: Sequence[Scorer]) -> list[ScoreBatch]:
    """Every scorer's batch, the scorers run side by side (each in its own thread but the
    first): they share nothing but the read-only flows, and one's numpy work fills the
    time the other spends in onnxruntime."""
    if len(scorers) < 2:
        return [s.score(flows) for s in scorers]
    others = [Background(s.score, flows) for s in scorers[1:]]
    try:
        first = scorers[0].score(flows)
    finally:  # never leave a scorer running behind an error
        rest = [job.wait() for job in others]
    return [first, *(job.result() for job in rest)]


def score_frame(flows: pd.DataFrame, scorers: Sequence[Scorer], policy: NoticePolicy,
                flagged_context: bool = False) -> pd.DataFrame:
    """Score a canonical flow batch with every scorer and decide: the rows to write now.

    Pure apart from the scorers' and the policy's own state (per-host windows,
    suppression windows), which is what makes consecutive batches one stream. The
    context uids (costly lists) are built only for the rows that are written: every row
    with ``--all``, else the notices once the policy knows them, or with
    ``flagged_context`` (incidents on: an incident shows the context of its strongest
    flagged flow) every row whose score crosses its threshold.
    """
    return decide_frame(flows, _score_all(flows, scorers), policy, flagged_context)


def notice_subjects(batches: Sequence[ScoreBatch]) -> np.ndarray:
    """Per model of a batch, whom its notices are about (``subject_inbound``'s ``about``):
    1 the responder of every flow (:attr:`ScoreBatch.about_responder`: its rows count as
    inbound for the suppression key's and the incident's host), -1 the originator of
    every flow (:attr:`ScoreBatch.about_originator`: never inbound), 0 as the flow's
    direction says."""
    return np.array([1 if b.about_responder else -1 if b.about_originator else 0
                     for b in batches], dtype=np.int8)


def _keys_by_host(policy: NoticePolicy) -> bool:
    """Does the policy's suppression key need to know which flows are inbound?"""
    return policy.config.suppress > 0 and policy.config.suppress_by == "host"


def decide_frame(flows: pd.DataFrame, batches: Sequence[ScoreBatch], policy: NoticePolicy,
                 flagged_context: bool = False) -> pd.DataFrame:
    """The second half of :func:`score_frame`: the scorers' ``batches`` for ``flows``
    decided by the policy (for a pipeline whose scorers ran in lanes)."""
    k = len(batches)
    subjects = notice_subjects(batches)
    if policy.config.all_flows or not policy.sparse_ok:
        scored = assemble(flows, batches, context=False)
        crossing = crosses(scored["score"].to_numpy(dtype=np.float64, na_value=np.nan),
                           policy.thresholds(scored))
        need = np.ones(len(scored), dtype=bool) if policy.config.all_flows else crossing
        fill_context(scored, batches, need)
        if _keys_by_host(policy):
            inbound = np.zeros(len(scored), dtype=bool)
            hit = np.flatnonzero(crossing)
            inbound[hit] = subject_inbound(flows, hit, subjects)
            scored["inbound"] = inbound
            scored["by_direction"] = subject_by_direction(np.arange(len(scored)), subjects)
        return policy.decide(scored)
    # only rows that cross their threshold can be written: those are assembled and decided,
    # every other row is below its threshold and only moves the stream's clock
    n = len(flows)
    score = _flow_major([b.score for b in batches], n, np.float64)
    card = _flow_major([b.threshold for b in batches], n, np.float64)
    if policy.config.thresholds:
        light = pd.DataFrame({
            "threshold": card, "cls": _flow_major([b.cls for b in batches], n, object),
            "model": np.tile(np.array([b.model for b in batches], dtype=object), n)})
        card = policy.thresholds(light)
    rows = np.flatnonzero(crosses(score, card))
    scored = assemble(flows, batches, context=False, rows=rows)
    if _keys_by_host(policy):
        scored["inbound"] = subject_inbound(flows, rows, subjects)
        scored["by_direction"] = subject_by_direction(rows, subjects)
    ts = np.repeat(flows["ts"].to_numpy(dtype=np.float64, na_value=np.nan), k)
    if flagged_context:  # the incident tracker shows the context of any flagged flow
        fill_context(scored, batches, np.ones(len(scored), dtype=bool), rows)
        return policy.decide(scored, positions=rows, size=n * k, ts=ts)
    ctxs = [b.extra.get("context") for b in batches]

    def context(at: np.ndarray) -> np.ndarray:  # only the rows that become notices
        return _pick_context(ctxs, n, rows[at] // k, rows[at] % k)

    return policy.decide(scored, positions=rows, size=n * k, ts=ts, context=context)


# --------------------------------------------------------------------------- counters


@dataclass
class Counters:
    """What a run did, for the summary line and the benchmark."""

    files: int = 0
    files_unchanged: int = 0
    flows_read: int = 0
    flows_scored: int = 0
    rows_written: int = 0
    notices: Counter[str] = field(default_factory=Counter)
    #: incident records written, by state (open / update / closed)
    incidents: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    #: per sink that reports it (network sinks), taken when the pipeline closed
    delivery: dict[str, Delivery] = field(default_factory=dict)
    #: inputs that could not be read at all (unknown format, not a conn log): message each
    unreadable: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.started

    @property
    def flows_per_second(self) -> float:
        s = self.seconds or (time.perf_counter() - self.started)
        return self.flows_scored / s if s > 0 else 0.0

    def summary(self, skips: SkipLog | None = None, models: Sequence[str] = (),
                pending: int = 0, pairing: str = "", open_incidents: int = 0) -> str:
        nots = sum(self.notices.values())
        per = ", ".join(f"{c} {n}" for c, n in sorted(self.notices.items()))
        lines = [
            f"files: {self.files}" + (f" ({self.files_unchanged} with nothing new)"
                                      if self.files_unchanged else ""),
            f"flows read: {self.flows_read}" + (f"\n{pairing}" if pairing else ""),
            f"skipped: {skips.summary() if skips else '0 skipped'}"
            + "".join(f"\n  e.g. {ex}" for ex in (skips.examples[:3] if skips else [])),
            f"scored: {self.flows_scored}" + (f" by {', '.join(models)}" if models else ""),
            f"rows written: {self.rows_written}",
            f"notices: {nots}" + (f" ({per})" if per else "")
            + (f"; {pending} held until their suppression interval ends" if pending else ""),
            f"speed: {self.flows_per_second:,.0f} flows/s ({self.seconds:.2f} s)",
        ]
        lines += [f"sink {name}: {d.describe()}" for name, d in self.delivery.items()]
        lines += [f"not read: {msg}" for msg in self.unreadable]
        if self.incidents or open_incidents:
            per = ", ".join(f"{n} {s}" for s, n in sorted(self.incidents.items()))
            lines.insert(-1, f"incident records: {sum(self.incidents.values())}"
                         + (f" ({per})" if per else "")
                         + (f"; {open_incidents} incidents still open" if open_incidents
                            else ""))
        return "\n".join(lines)

    def unreadable_error(self, others_scored: bool = True) -> FormatError | None:
        """One error naming the inputs that could not be read."""
        if not self.unreadable:
            return None
        more = f" (and {len(self.unreadable) - 1} more input(s))" if len(self.unreadable) > 1 else ""
        rest = "; every other input was scored" if others_scored else ""
        return FormatError(f"{self.unreadable[0]}{more}{rest}")

    def lost_records(self) -> SinkError | None:
        """One error naming every sink that lost records (dropped or never delivered).

        The process is ending: records still queued in a network sink are gone, so
        the run fails (exit 1) and says how many went missing where, and why.
        """
        parts = []
        for name, d in self.delivery.items():
            if not d.lost:
                continue
            how = []
            if d.dropped:
                how.append(f"{d.dropped} dropped while the collector was down (buffer full)")
            if d.queued:
                how.append(f"{d.queued} still unsent when the run ended")
            why = f"; last error: {d.error}" if d.error else ""
            parts.append(f"{name}: {d.lost} {d.unit} not delivered ({', '.join(how)}{why})")
        if not parts:
            return None
        return SinkError("; ".join(parts) + " - they are lost")


# --------------------------------------------------------------------------- pipeline


def sink_unit(sink: Sink) -> str:
    """What a sink takes: ``notice`` (verdict rows, the default) or ``incident`` records."""
    return "incident" if getattr(sink, "unit", "notice") == "incident" else "notice"


class Pipeline:
    """Scorers, policy and sinks for one stream; :meth:`process` is called per batch.

    ``pairer`` (a :class:`~zeekml.sources.biflow.Pairer`, the NetFlow pairing stage)
    joins unidirectional NetFlow records of the stream before they are scored; what
    it holds is saved with the rest of the state (``RunState.stages["pair"]``).
    With ``incidents`` (an :class:`~zeekml.policy.incidents.IncidentTracker`), every
    batch's flagged rows also go to the tracker, and the incident records it returns
    go to the sinks whose unit is ``incident`` (:func:`sink_unit`); the other sinks
    get the verdict rows.
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        policy: NoticePolicy,
        sinks: Sequence[Sink],
        *,
        counters: Counters | None = None,
        pairer: Pairer | None = None,
        incidents: IncidentTracker | None = None,
        write_behind: bool = False,
        lanes: bool = False,
    ) -> None:
        names = [s.name for s in scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"two scorers share a name: {names}")
        self.scorers = list(scorers)
        self.policy = policy
        self.sinks = list(sinks)
        self.counters = counters or Counters()
        self.pairer = pairer
        from zeekml.sources.biflow import PairStats

        self._pair_stats0 = PairStats()
        self.incidents = incidents
        #: called with every batch of incident records written (``tail --metrics``)
        self.on_incidents: Callable[[pd.DataFrame], None] | None = None
        #: a batch's records are written in a helper thread while the next batch is scored
        #: (:meth:`_send`); every flush, commit, close and abort waits for it. ``zeekml
        #: score --all`` turns it on: writing every verdict took 40% of its time (1M flows:
        #: 23.0-25.9 -> 19.7-19.9 s, peak RSS 1.36-1.41 -> 1.53-1.65 GB). Not for notices
        #: only: a few rows a batch, and the helper thread's own malloc arena cost ~80 MB
        #: of RSS the one time it ran on the 1M-flow benchmark.
        self.write_behind = write_behind
        self._writing: Background[None] | None = None
        #: every scorer in a thread of its own, a batch ahead of the policy
        #: (:mod:`zeekml.runtime.lanes`); ``zeekml score`` turns it on, ``tail`` does not
        #: (it writes each batch at once: its latency bound)
        self.lanes = lanes and can_lane(self.scorers)
        self._lanes: ScorerLanes | None = None
        self._held: list[pd.DataFrame] = []  # submitted to the lanes, not decided yet

    def process(self, flows: pd.DataFrame) -> pd.DataFrame:
        """Score one canonical batch and write its verdicts (and incidents) to the sinks;
        the verdicts written. With ``lanes`` the batch is scored while the previous one
        is decided and written: the verdicts returned are the previous batch's
        (:meth:`drain` decides and writes the last)."""
        self.counters.flows_read += len(flows)
        if self.pairer is not None:  # NetFlow pairing (zeekml.sources.biflow)
            flows = self.pairer.push(flows)
        return self._score(flows)

    def _score(self, flows: pd.DataFrame) -> pd.DataFrame:
        if len(flows) == 0:
            return empty_verdicts()
        if not self.lanes:
            return self._decide(flows, _score_all(flows, self.scorers))
        if self._lanes is None:
            self._lanes = ScorerLanes(self.scorers)
        self._lanes.submit(flows)
        self._held.append(flows)
        return self._decide_oldest() if len(self._held) > 1 else empty_verdicts()

    def _decide_oldest(self) -> pd.DataFrame:
        assert self._lanes is not None
        batches = self._lanes.collect()
        return self._decide(self._held.pop(0), batches)

    def drain(self) -> None:
        """Decide and write every batch still being scored in the lanes."""
        while self._held:
            self._decide_oldest()

    def _decide(self, flows: pd.DataFrame, batches: Sequence[ScoreBatch]) -> pd.DataFrame:
        verdicts = decide_frame(flows, batches, self.policy,
                                flagged_context=self.incidents is not None)
        self.counters.flows_scored += len(flows)
        records = None
        if self.incidents is not None and self.policy.decision is not None:
            d = self.policy.decision
            x = flagged_from_decision(d, flows, len(self.scorers), notice_subjects(batches))
            records = self.incidents.update(x, float(d.clock[-1]))
        self._write(verdicts, records)
        return verdicts

    def _write(self, verdicts: pd.DataFrame, incidents: pd.DataFrame | None = None) -> None:
        """Count a batch's verdict rows and incident records and send them to their sinks
        (in a helper thread with ``write_behind``)."""
        work = []
        if len(verdicts):
            work.append(("notice", verdicts))
            self.counters.rows_written += len(verdicts)
            nots = verdicts["verdict"][verdicts["notice"].fillna(False).to_numpy(dtype=bool)]
            self.counters.notices.update(nots.value_counts().to_dict())
        if incidents is not None and len(incidents):
            work.append(("incident", incidents))
            self.counters.incidents.update(incidents["state"].value_counts().to_dict())
        if not work:
            return
        # one write in flight: the outputs keep batch order and memory holds one batch
        self.wait_writes()
        if self.write_behind:
            self._writing = Background(self._send, work)
        else:
            self._send(work)
        if incidents is not None and len(incidents) and self.on_incidents is not None:
            self.on_incidents(incidents)

    def _send(self, work: list[tuple[str, pd.DataFrame]]) -> None:
        """Write records to every sink of their unit (``notice``: verdict rows;
        ``incident``: incident records, :func:`sink_unit`)."""
        for unit, records in work:
            for sink in self.sinks:
                if sink_unit(sink) == unit:
                    sink.write(records)

    def wait_writes(self) -> None:
        """Wait for the write in flight (``write_behind``); raise what it raised."""
        job, self._writing = self._writing, None
        if job is not None:
            job.result()

    def finish(self) -> pd.DataFrame:
        """End of the stream: NetFlow records still waiting for their reverse are scored
        one-way, notices still held for suppression are written, incidents closed."""
        if self.pairer is not None:
            self._score(self.pairer.finish())
        self.drain()
        out = self.policy.finish()
        self._write(out, None if self.incidents is None else self.incidents.finish())
        return out

    def pairing_summary(self) -> str:
        """One line on NetFlow pairing for the run summary ('' when nothing was paired)."""
        p = self.pairer
        if p is None:
            return ""
        before = self._pair_stats0  # the counts a restored state brought (earlier runs)
        candidates = p.stats.candidates - before.candidates
        pairs = p.stats.pairs - before.pairs
        if not candidates:
            return ""
        waiting = p.held + p.waiting
        return (f"paired: {pairs} flows from {2 * pairs} of {candidates} one-way NetFlow "
                "records"
                + (f"; {waiting} records waiting for their reverse (kept in the state)"
                   if waiting else ""))

    def flush(self) -> None:
        self.drain()
        self.wait_writes()
        for sink in self.sinks:
            sink.flush()

    def begin(self, run: RunContext) -> None:
        """Tell every sink how this run uses outputs (before anything is written)."""
        for sink in self.sinks:
            call_optional(sink, "begin", run)

    def close(self) -> None:
        """Finish every output (a replaced file is swapped in now: the run succeeded),
        then record each sink's delivery in the counters."""
        try:
            self.drain()
        finally:
            self._stop_lanes()
        self.wait_writes()
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close every sink, then report
                errors.append(exc)
        self.counters.delivery = self.delivery()
        if errors:
            raise errors[0]

    def abort(self) -> None:
        """The run failed before its commit: every output back to its last commit."""
        self._held = []  # scored, not written: the next run scores them again
        self._stop_lanes()
        try:  # never cut an output back under a write still going on
            self.wait_writes()
        except Exception as exc:  # the run fails anyway: name this failure too
            log.error("writing: %s", exc)
        for sink in self.sinks:
            try:
                call_optional(sink, "abort")
            except Exception as exc:  # abort every sink, report each
                log.error("%s: %s", sink.name, exc)

    def _stop_lanes(self) -> None:
        lanes, self._lanes = self._lanes, None
        if lanes is not None:
            lanes.close()

    def delivery(self) -> dict[str, Delivery]:
        """Sink name -> its delivery accounting, for the sinks that report one."""
        out = {}
        for sink in self.sinks:
            report = sink_delivery(sink)
            if report is not None:
                out[sink.name] = report
        return out

    # ------------------------------------------------------------------ state
    def model_ids(self) -> dict[str, str]:
        """Model name -> ONNX digest, or a card-only model's card digest (a state made by
        another model is not reused)."""
        out = {}
        for s in self.scorers:
            card = getattr(s, "card", None)
            out[s.name] = (card.digest if isinstance(card, ModelCard)
                           else type(s).__name__)
        return out

    def capture(self, inputs: dict[str, dict[str, Any]], meta: dict[str, Any]) -> RunState:
        """Flush every sink, then collect the state that goes with what was written."""
        self.flush()
        return RunState(
            inputs=inputs,
            scorers={s.name: s.state_dict() for s in self.scorers},
            policy=self.policy.state_dict(),
            incidents={} if self.incidents is None else self.incidents.state_dict(),
            sinks={s.name: s.checkpoint() for s in self.sinks},
            meta={**meta, "models": self.model_ids()},
            stages={"pair": self.pairer.state_dict()} if self.pairer is not None else {},
        )

    def commit(self, store: StateStore, inputs: dict[str, dict[str, Any]],
               meta: dict[str, Any]) -> RunState:
        """Flush every sink, save the state with the input cursors, then tell the sinks
        the state holding their checkpoints is saved (what a failure cuts back to)."""
        state = self.capture(inputs, meta)
        store.save(state)
        for sink in self.sinks:
            call_optional(sink, "mark_committed")
        return state

    def restore(self, state: RunState) -> None:
        """Load scorer, policy and sink state saved by :meth:`capture`."""
        saved_models = state.meta.get("models", {})
        ids = self.model_ids()
        for s in self.scorers:
            arrays = state.scorers.get(s.name)
            if arrays is None:
                continue
            if saved_models.get(s.name) != ids[s.name]:
                log.warning("model %s changed since the state was saved: its per-host context "
                            "starts empty", s.name)
                continue
            s.load_state_dict(arrays)
        if state.policy:
            self.policy.load_state_dict(state.policy)
        if self.incidents is not None and state.incidents:
            self.incidents.load_state_dict(state.incidents)
        for sink in self.sinks:
            pos = state.sinks.get(sink.name)
            if pos:
                sink.restore(pos)
        saved_pairs = state.stages.get("pair")
        if saved_pairs:
            from zeekml.sources.biflow import Pairer

            if self.pairer is not None:
                self.pairer.load_state_dict(saved_pairs)
                self._pair_stats0 = dataclasses.replace(self.pairer.stats)
            else:  # pairing turned off since: what the last run held leaves one-way now
                leftover = Pairer()
                leftover.load_state_dict(saved_pairs)
                flows = leftover.finish()
                if len(flows):
                    log.info("pairing is off: %d NetFlow records held by the last run are "
                             "scored one-way", len(flows))
                    self._score(flows)
