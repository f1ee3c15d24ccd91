"""Segments: the stream cut into ordered pieces, the Spark engine's unit of order.

The local engine scores its inputs as one stream: the inputs in ``expand_inputs``
order, each one's rows in file order, and a host's window is its previous flows *in
that order* (Zeek writes conn.log when a connection ends, so ``ts`` is not monotonic
and sorting by it would give other windows). The Spark engine keeps that order
explicitly:

* a **segment** is one read batch of one input (at most ``batch_rows`` flows), its rows
  in stream order, in one pack; ``seg = file_idx << 32 | n`` (the input's n-th batch)
  sorts like the stream;
* every row carries ``ord``, its place in the stream (``file_idx << 40 | row``, or after
  NetFlow pairing the position of the flow's first record): whatever the local engine
  does in stream order, a Spark stage does in ``ord`` order.

What the later stages need from the stream as a whole becomes a small sum over
segments, recorded as each segment is made (:func:`finish`):

* ``lclock``, the running maximum of ``ts`` inside the segment: the stream's log clock
  at a row is the larger of it and the maximum ``ts`` of every earlier segment
  (:func:`clock_offsets`), the clock the notice policy and the incident tracker run on;
* ``k_<kind>``, each row's state key for each key kind the models use
  (:func:`~zeekml.runtime.spark.models.state_keys`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from zeekml.records import schema
from zeekml.runtime.spark.models import state_keys
from zeekml.runtime.spark.packs import pack

#: what a segment pack holds besides the canonical columns (without ``source_file``)
SEG_COLUMNS = {"file_idx": "int32", "seg": "int64", "ord": "int64", "lclock": "float64"}
#: a segment record: its id, input, rows, largest ts, NetFlow pairing candidates and
#: latest flow end (read stage), lines skipped while reading it, the pack
SEG_DDL = ("`seg` bigint, `file_idx` int, `rows` bigint, `max_ts` double, `cand` bigint, "
           "`max_end` double, `skipped` bigint, `data` binary")
#: the canonical columns the stages carry (labels and the file name stay behind: the
#: name is ``file_idx`` until the output joins it back)
FLOW_COLUMNS = tuple(c for c in schema.all_dtypes(with_labels=False) if c != "source_file")
ROW_BITS = 40


def seg_id(file_idx: int, n: int) -> int:
    """The id of the ``n``-th segment of input ``file_idx`` (sorts like the stream)."""
    return (int(file_idx) << 32) | int(n)


def flow_ord(file_idx: int, rows: np.ndarray) -> np.ndarray:
    """``ord`` of rows by their index in input ``file_idx``."""
    return (np.int64(file_idx) << np.int64(ROW_BITS)) + np.asarray(rows, dtype=np.int64)


def canonical(flows: pd.DataFrame) -> pd.DataFrame:
    """The canonical columns the stages carry, typed (absent ones missing)."""
    return schema.conform(flows, with_labels=False)[list(FLOW_COLUMNS)]


def finish(flows: pd.DataFrame, kinds: Sequence[str]) -> tuple[pd.DataFrame, float]:
    """A segment's rows (stream order) with ``lclock`` and one key column per kind;
    and its largest ``ts`` (-inf when it has none)."""
    ts = flows["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    t = np.where(np.isfinite(ts), ts, -np.inf)
    clock = np.maximum.accumulate(t) if len(t) else t
    flows["lclock"] = clock
    for kind in kinds:
        flows[f"k_{kind}"] = state_keys(flows, kind).array
    return flows, float(clock[-1]) if len(clock) else -math.inf


def record(flows: pd.DataFrame | None, seg: int, file_idx: int, max_ts: float,
           cand: int = 0, max_end: float = -math.inf, skipped: int = 0) -> dict:
    """One segment record (:data:`SEG_DDL`); ``flows`` None: no rows (skips only)."""
    return {"seg": int(seg), "file_idx": int(file_idx),
            "rows": 0 if flows is None else len(flows), "max_ts": float(max_ts),
            "cand": int(cand), "max_end": float(max_end), "skipped": int(skipped),
            "data": b"" if flows is None else pack(flows)}


def records_frame(recs: list[dict]) -> pd.DataFrame:
    """Segment records as the frame PySpark converts to :data:`SEG_DDL` rows."""
    return pd.DataFrame({
        "seg": np.array([r["seg"] for r in recs], dtype=np.int64),
        "file_idx": np.array([r["file_idx"] for r in recs], dtype=np.int32),
        "rows": np.array([r["rows"] for r in recs], dtype=np.int64),
        "max_ts": np.array([r["max_ts"] for r in recs], dtype=np.float64),
        "cand": np.array([r["cand"] for r in recs], dtype=np.int64),
        "max_end": np.array([r["max_end"] for r in recs], dtype=np.float64),
        "skipped": np.array([r["skipped"] for r in recs], dtype=np.int64),
        "data": pd.Series([r["data"] for r in recs], dtype=object),
    })


def clock_offsets(meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
    """(segment ids sorted, the largest ts of every segment before each, the stream's last
    log time) from segment metadata (``seg``, ``max_ts``)."""
    m = meta.sort_values("seg", kind="stable")
    segs = m["seg"].to_numpy(dtype=np.int64)
    mx = np.nan_to_num(m["max_ts"].to_numpy(dtype=np.float64), nan=-np.inf)
    before = np.maximum.accumulate(np.r_[-np.inf, mx])
    return segs, before[:-1], float(before[-1])


def offsets_of(segs: np.ndarray, before: np.ndarray, seg: int) -> float:
    """The clock offset of one segment (from :func:`clock_offsets`)."""
    i = int(np.searchsorted(segs, seg))
    if i >= len(segs) or segs[i] != seg:
        raise KeyError(seg)
    return float(before[i])
