"""Per input file, in row order: the file's log clock and each row's state keys and ranks."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from zeekml.records import schema
from zeekml.runtime.spark.schemas import _sendable

log = logging.getLogger(__name__)


def _keys(flows: pd.DataFrame, kind: str) -> np.ndarray:
    """The state key of each flow, computed by the same functions the scorers use."""
    if kind == "pair":
        from zeekml.windows.conversation import conversation_keys

        return conversation_keys(flows)
    from zeekml.windows.host_window import key_sides

    return key_sides(flows, kind)[0].fillna("").astype(str).to_numpy(dtype=object)


class _Annotator:
    """Per input file, in row order: the file's running ts maximum, and per state-key
    kind each row's key and its rank among the file's rows of that key."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = list(kinds)
        self.start()

    def start(self) -> None:
        self.clock = -np.inf
        self.counts: dict[str, pd.Series] = {k: pd.Series(dtype="int64") for k in self.kinds}

    def annotate(self, flows: pd.DataFrame, file_idx: int) -> pd.DataFrame:
        out = schema.conform(flows, with_labels=False).drop(columns=["source_file"])
        ts = out["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        t = np.where(np.isfinite(ts), ts, -np.inf)
        clock = np.maximum.accumulate(np.concatenate([[self.clock], t]))[1:]
        if len(clock):
            self.clock = float(clock[-1])
        out["file_idx"] = np.int32(file_idx)
        out["clock"] = clock
        for kind in self.kinds:
            keys = _keys(out, kind)
            codes, uniques = pd.factorize(keys)
            before = self.counts[kind].reindex(uniques, fill_value=0).to_numpy(dtype=np.int64)
            rank = before[codes] + pd.Series(codes).groupby(codes).cumcount().to_numpy()
            sizes = np.bincount(codes, minlength=len(uniques))
            self.counts[kind] = self.counts[kind].add(
                pd.Series(sizes, index=uniques), fill_value=0).astype("int64")
            out[f"k_{kind}"] = pd.Series(keys, dtype="str")
            out[f"r_{kind}"] = rank.astype(np.int64)
        return out

def _annotate_frames(batches: Iterator[pd.DataFrame], kinds: list[str]
                     ) -> Iterator[pd.DataFrame]:
    """Executor side of :func:`score_dataframe`: rows sorted by (file_idx, source_line)."""
    ann = _Annotator(kinds)
    current = None
    for batch in batches:
        fidx = batch["file_idx"].to_numpy(dtype=np.int64)
        cuts = np.nonzero(np.diff(fidx))[0] + 1
        for part in np.split(np.arange(len(batch)), cuts):
            if not len(part):
                continue
            idx = int(fidx[part[0]])
            if idx != current:
                ann.start()
                current = idx
            yield _sendable(ann.annotate(batch.iloc[part].reset_index(drop=True), idx))
