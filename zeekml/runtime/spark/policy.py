"""Suppression per originator and incidents per incident host, in arrival order."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from zeekml.policy.incidents import IncidentConfig
from zeekml.policy.notice import NoticePolicy, PolicyConfig
from zeekml.records.incidents import (
    INCIDENT_DTYPES,
)
from zeekml.runtime.spark.errors import _guard
from zeekml.runtime.spark.schemas import _ddl, _flagged_cols, _sendable, _verdict_cols

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def _suppress(batches: Iterator[pd.DataFrame], config: PolicyConfig
              ) -> Iterator[pd.DataFrame]:
    """Crossing rows of whole originators, in arrival order, through the real NoticePolicy.

    One policy per partition, fed batch after batch (its state carries across them, so
    memory stays bounded by the batch however many rows a host has). Each row is
    preceded by a clock row (``ts`` = the stream clock at that row, no score, so never a
    crossing): the policy's log time is then the whole stream's, as in the local engine,
    and every window closes before the same flows. Rows come back 1:1 with the final
    ``notice`` flag (the rows that open a window).
    """
    policy = NoticePolicy(replace(config, all_flows=True))
    fcols = list(_flagged_cols())
    for b in batches:
        n = len(b)
        if not n:
            continue
        b = b.reset_index(drop=True)
        scored = b.drop(columns=["verdict", "notice", "n"])
        ticks = scored.assign(ts=scored["clock"].to_numpy(), score=np.nan)
        order = np.empty(2 * n, dtype=np.int64)
        order[0::2] = np.arange(n) + n
        order[1::2] = np.arange(n)
        both = pd.concat([scored, ticks], ignore_index=True).iloc[order].reset_index(drop=True)
        out = policy.decide(both).iloc[1::2].reset_index(drop=True)
        for col in ("file_idx", "source_line", "m", "clock", "inbound"):
            out[col] = b[col].to_numpy()
        yield _sendable(out[fcols])


def _decide(rows: DataFrame, config: PolicyConfig, buckets: int,
            cached: list[DataFrame], want_flagged: bool = False
            ) -> tuple[DataFrame, DataFrame | None]:
    """Thresholded rows -> verdict rows: suppression per originator, in arrival order.

    Suppression key = (originator, verdict, model), as in the local engine. The crossing
    rows are shuffled by originator and sorted by arrival inside each partition; a
    notice's ``n`` (the crossings its window stands for) is the number of crossings of
    its key from it up to the key's next notice, which is what the policy counts.
    With ``want_flagged`` also returns the flagged rows with their final ``notice``
    flag, stream clock and inbound flag (:func:`_flagged_cols`), for incidents.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    vcols = list(_verdict_cols())
    fcols = list(_flagged_cols())
    if config.suppress <= 0:
        keep = rows if config.all_flows else rows.filter(F.col("notice"))
        flagged = rows.filter(F.col("notice")).select(*fcols) if want_flagged else None
        return keep.select(*vcols), flagged
    if config.all_flows:
        rows = rows.persist()  # read twice below: score once
        cached.append(rows)
    host = F.coalesce(F.col("orig_h"), F.lit("-"))
    decided = (rows.filter(F.col("notice")).repartition(buckets, host)
               .sortWithinPartitions("file_idx", "source_line", "m")
               .mapInPandas(_guard(functools.partial(_suppress, config=config)),
                            _ddl(_flagged_cols())))
    flagged = None
    if want_flagged:
        decided = decided.persist()  # read twice: verdicts and incidents
        cached.append(decided)
        flagged = decided
    if config.all_flows:
        return rows.filter(~F.col("notice")).select(*vcols).unionByName(
            decided.select(*vcols)), flagged
    key = Window.partitionBy(host, "verdict", "m")
    upto = key.orderBy("file_idx", "source_line").rowsBetween(Window.unboundedPreceding,
                                                              Window.currentRow)
    return (decided.withColumn("w", F.sum(F.col("notice").cast("long")).over(upto))
            .withColumn("n", F.count(F.lit(1)).over(Window.partitionBy(host, "verdict", "m", "w")))
            .filter(F.col("notice")).select(*vcols)), flagged


def _track(batches: Iterator[pd.DataFrame], config: IncidentConfig, end_clock: float
           ) -> Iterator[pd.DataFrame]:
    """One incident tracker per partition of flagged rows (whole hosts, arrival order).

    A flow's rows (one per model) stay in one update call, so the models' agreement
    is seen as in the local engine; at the end, what is open closes at the stream's
    last log time.
    """
    from zeekml.policy.incidents import IncidentTracker, flagged_rows

    tracker = IncidentTracker(config)
    held: pd.DataFrame | None = None
    cols = list(INCIDENT_DTYPES)

    def feed(b: pd.DataFrame) -> pd.DataFrame:
        flow = b["file_idx"].to_numpy(dtype=np.int64) * (1 << 40) + \
            b["source_line"].to_numpy(dtype=np.int64)
        n = len(b)
        x = flagged_rows(b, np.ones(n, dtype=bool), b["notice"].astype("boolean")
                         .fillna(False).to_numpy(dtype=bool), b["clock"].to_numpy(),
                         b["inbound"].astype("boolean").fillna(False).to_numpy(dtype=bool),
                         pd.factorize(flow)[0])
        return tracker.update(x, float(np.max(b["clock"].to_numpy(dtype=np.float64))))

    for b in batches:
        if not len(b):
            continue
        b = b if held is None else pd.concat([held, b], ignore_index=True)
        b = b.reset_index(drop=True)
        last = (b["file_idx"] == b["file_idx"].iat[-1]) & \
            (b["source_line"] == b["source_line"].iat[-1])
        held = b[last.to_numpy()]
        ready = b[~last.to_numpy()]
        if len(ready):
            out = feed(ready)
            if len(out):
                yield _sendable(out[cols])
    if held is not None and len(held):
        out = feed(held)
        if len(out):
            yield _sendable(out[cols])
    out = tracker.finish(end_clock)
    if len(out):
        yield _sendable(out[cols])


def _incidents(flagged: DataFrame, config: IncidentConfig, end_clock: float,
               buckets: int) -> DataFrame:
    """Flagged rows -> incident records (see the module doc), one tracker per partition."""
    from pyspark.sql import functions as F

    host = F.coalesce(F.when(F.col("inbound"), F.col("resp_h")).otherwise(F.col("orig_h")),
                      F.lit("-"))
    return (flagged.repartition(buckets, host)
            .sortWithinPartitions("file_idx", "source_line", "m")
            .mapInPandas(_guard(functools.partial(_track, config=config, end_clock=end_clock)),
                         _ddl(INCIDENT_DTYPES)))
