"""Scoring: segments cut by (model, state key), scored in groups with the local scorers.

:func:`split_segments` gives every row of a segment, per model, its stream clock (the
segment's own running maximum of ``ts`` or the largest ``ts`` before the segment,
whichever is larger), its state key and chunk (:mod:`~zeekml.runtime.spark.heavy`),
and sends it to a bucket by a hash of (key, chunk): every flow of a key (chunk) meets
in one group. :func:`score_group` sorts a group by (key, chunk, stream order) and
scores whole keys per call with a fresh scorer state, one onnxruntime run per
``batch_size`` windows, as the local engine's scorer would see them; the per-row part
of the policy (thresholds, allow-list) is applied at once, and the rows leave for the
next stage by :func:`~zeekml.runtime.spark.policy.route_scored`.

A count detector's flows that its store never takes (an answered flow for the scan
detector, a flow that is no login attempt for the brute-force detector: the key
``ModelSpec.unkept``) need no state: they are not cut at all but scored in the task that
reads their segment (:func:`score_unkept`), with the same scorer, policy and routing.
Sent to their groups they were most of the cut: 2.2M of the 5M rows (five models) of
``tools/bench_spark.py``'s 1M flows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from zeekml.policy.notice import NoticePolicy, PolicyConfig
from zeekml.records import schema
from zeekml.runtime.spark.errors import guard, guard_group
from zeekml.runtime.spark.heavy import HeavyKeys, chunks
from zeekml.runtime.spark.models import ModelSpec, broadcast_models, worker_scorers
from zeekml.runtime.spark.options import SparkOptions
from zeekml.runtime.spark.packs import frame_of, pack_parts, read, unpack_all
from zeekml.runtime.spark.policy import ROUTE_DDL, route_scored
from zeekml.runtime.spark.segments import FLOW_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: a scoring record: the model's index, the bucket, the pack
SCORE_DDL = "`m` int, `bucket` bigint, `data` binary"
#: what a scoring pack holds of a row
_CARRY = (*FLOW_COLUMNS, "file_idx", "seg", "ord")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def buckets_of(keys: pd.Series, chunk: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each (key, chunk): the same in every process."""
    h = pd.util.hash_array(keys.astype(object).to_numpy(dtype=object), categorize=True)
    with np.errstate(over="ignore"):
        h = h + np.asarray(chunk, dtype=np.uint64) * _GOLDEN
    return (h % np.uint64(buckets)).astype(np.int64)


def _segment(data: Any, plan: dict[str, Any]) -> tuple[pa.Table, int, pa.Table]:
    """A segment pack's table, its id, and the columns its rows carry into scoring, with
    each row's stream clock (``plan``: the value of :func:`split_segments`' broadcast)."""
    seg = read(data)
    sid = int(seg.column("seg")[0].as_py())
    off = plan["before"][int(np.searchsorted(plan["segs"], sid))]
    clock = np.maximum(seg.column("lclock").to_numpy(), off)
    return seg, sid, seg.select(list(_CARRY)).append_column("clock", pa.array(clock))


def split_segments(batches: Iterator[pd.DataFrame], plan: Any) -> Iterator[pd.DataFrame]:
    """Executor side of the cut: segments -> per model, rows by (key, chunk) bucket.

    ``plan`` is a broadcast of {"segs", "before": clock offsets, "heavy": {kind:
    HeavyKeys}, "models": [(key kind, depth, unkept key)], "chunk_rows", "buckets"}.
    Done on the Arrow tables of the packs: only the key columns become pandas (to hash
    them). A model's unkept rows stay behind (:func:`score_unkept`).
    """
    p = plan.value
    for batch in batches:
        for data in batch["data"]:
            seg, sid, base = _segment(data, p)
            for m, (kind, depth, unkept) in enumerate(p["models"]):
                keys = frame_of(seg.select([f"k_{kind}"]))[f"k_{kind}"]
                kept = np.arange(len(keys))
                if unkept:  # scored where they are read (score_unkept)
                    kept = np.flatnonzero((keys != unkept).to_numpy(dtype=bool))
                    if not len(kept):
                        continue
                    keys = keys.iloc[kept].reset_index(drop=True)
                heavy: HeavyKeys | None = p["heavy"].get(kind)
                rows, chunk, emit = chunks(keys, sid, heavy, p["chunk_rows"], depth)
                rows_in_seg = kept[rows]
                # chunks() gives every row in order, then any copies: none, and none left out
                whole = len(kept) == seg.num_rows and len(rows) == len(keys)
                table = base if whole else base.take(rows_in_seg)
                skey = seg.column(f"k_{kind}")
                if not whole:
                    skey = skey.take(rows_in_seg)
                if len(rows) != len(keys):
                    keys = keys.iloc[rows].reset_index(drop=True)
                table = (table.append_column("skey", skey)
                         .append_column("chunk", pa.array(chunk))
                         .append_column("emit", pa.array(emit)))
                items = pack_parts(table, buckets_of(keys, chunk, p["buckets"]))
                yield pd.DataFrame({
                    "m": np.full(len(items), m, dtype=np.int32),
                    "bucket": np.array([b for b, _ in items], dtype=np.int64),
                    "data": pd.Series([d for _, d in items], dtype=object)})


def _calls(work: pd.DataFrame, call_rows: int) -> Iterator[pd.DataFrame]:
    """Rows sorted by (key, chunk, order) -> calls of whole (key, chunk) runs.

    A key's later chunks go to later calls ("generations"), so no call holds a key
    twice; a call takes the runs starting in its ``call_rows`` rows.
    """
    gen = work.groupby("skey", sort=False)["chunk"].rank(method="dense").to_numpy() - 1
    for g in np.unique(gen):
        part = work[gen == g].reset_index(drop=True)
        grp = (part["skey"] != part["skey"].shift()) | (part["chunk"] != part["chunk"].shift())
        starts = np.flatnonzero(grp.to_numpy())
        call = np.repeat(starts // call_rows, np.diff(np.append(starts, len(part))))
        for c in np.unique(call):
            yield part[call == c].reset_index(drop=True)


def _scored(rows: pd.DataFrame, scorer: Any, empty: dict[str, np.ndarray], m: int
            ) -> pd.DataFrame:
    """One call: rows holding whole keys (each key's in stream order) scored from a fresh
    state; the rows to emit, with their verdicts and what the policy stages read."""
    from zeekml.records.addresses import subject_by_direction, subject_inbound
    from zeekml.runtime.pipeline import assemble, notice_subjects

    flows = schema.conform(rows, with_labels=False)
    scorer.load_state_dict(empty)  # fresh windows: the call holds whole keys
    batch = scorer.score(flows)
    scored = assemble(flows, [batch])
    emit = rows["emit"].to_numpy(dtype=bool)
    scored = scored[emit].reset_index(drop=True)
    for col in ("ord", "seg", "file_idx", "source_line", "clock"):
        scored[col] = rows[col].to_numpy()[emit]
    scored["m"] = np.int32(m)
    # whom the notice is about, by the local engine's rule (one model: k = 1)
    about = notice_subjects([batch])
    scored["inbound"] = subject_inbound(flows, np.flatnonzero(emit), about)
    scored["by_direction"] = subject_by_direction(np.flatnonzero(emit), about)
    return scored


def _routed(out: list[pd.DataFrame], config: PolicyConfig, parts: int, incidents: bool
            ) -> pd.DataFrame:
    """Scored rows -> route records: each row with its ``verdict`` and ``notice`` =
    flagged (threshold crossed, not allow-listed); suppression, which spans rows, comes
    later."""
    scored = pd.concat(out, ignore_index=True)
    decided = NoticePolicy(replace(config, suppress=0.0, all_flows=True)).decide(scored)
    for col in ("cls", "ord", "seg", "file_idx", "source_line", "clock", "m", "inbound",
                "by_direction"):
        decided[col] = scored[col].to_numpy()
    return route_scored(decided, config, parts, incidents)


def score_group(pdf: pd.DataFrame, payload: Any, digest: str, call_rows: int,
                config: PolicyConfig, parts: int, incidents: bool) -> pd.DataFrame:
    """One (model, bucket) group: sort by key and stream order, score whole keys per call."""
    m = int(pdf["m"].iat[0])
    scorer, empty = worker_scorers(payload, digest)[m]
    work = unpack_all(pdf["data"])
    if work is None or not len(work):
        return route_scored(None, config, parts, incidents)
    work = work.sort_values(["skey", "chunk", "ord"], kind="stable").reset_index(drop=True)
    out = [_scored(rows, scorer, empty, m) for rows in _calls(work, call_rows)]
    return _routed(out, config, parts, incidents)


def score_unkept(batches: Iterator[pd.DataFrame], plan: Any, payload: Any, digest: str,
                 config: PolicyConfig, parts: int, incidents: bool
                 ) -> Iterator[pd.DataFrame]:
    """Executor side: each segment's flows that a count detector's store never takes
    (their key is the model's ``unkept`` key), scored in the segment's own task, all of
    them in one call from a fresh state (they need none), and routed as
    :func:`score_group` routes its rows."""
    p = plan.value
    for batch in batches:
        for data in batch["data"]:
            seg, _, base = _segment(data, p)
            for m, (kind, _depth, unkept) in enumerate(p["models"]):
                if not unkept:
                    continue
                keys = seg.column(f"k_{kind}").to_numpy(zero_copy_only=False)
                rows = np.flatnonzero(keys == unkept)
                if not len(rows):
                    continue
                table = base.take(rows).append_column(
                    "emit", pa.array(np.ones(len(rows), dtype=bool)))
                scorer, empty = worker_scorers(payload, digest)[m]
                yield _routed([_scored(frame_of(table), scorer, empty, m)], config, parts,
                              incidents)


def score_segments(segs: DataFrame, seg_index: np.ndarray, before: np.ndarray,
                   heavy: dict[str, HeavyKeys], models: list[ModelSpec],
                   config: PolicyConfig, opts: SparkOptions, flows: int,
                   incidents: bool) -> tuple[DataFrame, int]:
    """Segments -> routed verdict records (:data:`~zeekml.runtime.spark.policy.ROUTE_DDL`),
    and the number of buckets (groups per model) used."""
    spark = segs.sparkSession
    sc = spark.sparkContext
    buckets = opts.buckets or max(2 * sc.defaultParallelism, math.ceil(flows / opts.group_rows))
    plan = sc.broadcast({"segs": seg_index, "before": before, "heavy": heavy,
                         "models": [(m.key, m.depth, m.unkept) for m in models],
                         "chunk_rows": opts.chunk_rows, "buckets": buckets})
    payload, digest = broadcast_models(spark, models, {
        "threads": opts.threads, "max_hosts": opts.max_hosts,
        "idle_timeout": opts.idle_timeout, "batch_size": opts.batch_size})
    cut = segs.filter("rows > 0").select("data").mapInPandas(
        guard(functools.partial(split_segments, plan=plan)), SCORE_DDL)
    fn = guard_group(functools.partial(score_group, payload=payload, digest=digest,
                                 call_rows=min(opts.batch_rows, opts.max_hosts),
                                 config=config, parts=buckets, incidents=incidents))
    groups = cut.repartition(len(models) * buckets, "m", "bucket")  # a task per group, about
    scored = groups.groupBy("m", "bucket").applyInPandas(fn, ROUTE_DDL)
    if any(m.unkept for m in models):
        unkept = segs.filter("rows > 0").select("data").mapInPandas(guard(functools.partial(
            score_unkept, plan=plan, payload=payload, digest=digest, config=config,
            parts=buckets, incidents=incidents)), ROUTE_DDL)
        scored = scored.unionByName(unkept)
    return scored, buckets
