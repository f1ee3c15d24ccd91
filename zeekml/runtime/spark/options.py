"""Options and run counts of the Spark engine."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zeekml import defaults
from zeekml.errors import ConfigError
from zeekml.sources.options import DEFAULT_PAIR_HOLD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparkOptions:
    """Knobs of the Spark engine (validated here)."""

    #: most flows of one key scored in one call; heavier keys are cut into chunks
    chunk_rows: int = defaults.BATCH_ROWS
    #: target flows per applyInPandas group (bounds an executor's memory per task)
    group_rows: int = defaults.BATCH_ROWS
    #: groups per model (default: from the row count and the cluster's parallelism)
    buckets: int | None = None
    #: onnxruntime threads per Python worker (a task is one core)
    threads: int = 1
    batch_size: int = defaults.MODEL_BATCH
    batch_rows: int = defaults.BATCH_ROWS
    max_hosts: int = defaults.MAX_HOSTS
    idle_timeout: float = defaults.IDLE_TIMEOUT
    #: most verdict rows per output file (there is at least one file per core once the
    #: output has 10,000 rows per core; ``None``: the final stage's partitions as they are)
    rows_per_file: int | None = 1_000_000
    strict: bool = False
    #: zone of timestamps written without one (``--tz``; Argus binetflow); None = UTC
    tz: str | None = None
    #: join unidirectional NetFlow records with their reverse (as the local engine does)
    pair: bool = True
    pair_hold: float = DEFAULT_PAIR_HOLD

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "group_rows", "threads", "batch_size", "batch_rows",
                     "max_hosts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.buckets is not None and self.buckets < 1:
            raise ConfigError(f"buckets must be >= 1, got {self.buckets}")
        if self.rows_per_file is not None and self.rows_per_file < 1:
            raise ConfigError(f"rows_per_file must be >= 1, got {self.rows_per_file}")
        if not self.idle_timeout > 0:
            raise ConfigError(f"idle_timeout must be > 0 s, got {self.idle_timeout}")
        from zeekml.sources.options import ReadOptions

        ReadOptions(tz=self.tz)  # validates the zone (ConfigError)
        if self.pair:
            self.pair_options()  # validates pair_hold

    def pair_options(self) -> Any:
        """The pairing options (a :class:`~zeekml.sources.biflow.PairOptions`), or None."""
        if not self.pair:
            return None
        from zeekml.sources.biflow import PairOptions

        return PairOptions(hold=float(self.pair_hold))


@dataclass
class SparkCounts:
    """What a Spark run did (every figure from a Spark action, not an estimate)."""

    files: int = 0
    flows_read: int = 0
    records: int = 0  # NetFlow records before pairing (0: nothing to pair)
    pairs: int = 0
    skipped: int = 0
    flows_scored: int = 0
    rows_written: int = 0
    heavy_keys: int = 0
    models: list[str] = field(default_factory=list)
    notices: Counter[str] = field(default_factory=Counter)
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: incident records by state (open / update / closed), with --incidents
    incidents: Counter[str] = field(default_factory=Counter)
    incident_outputs: list[str] = field(default_factory=list)
    #: the stream's last log time (maximum ts over every input)
    end_clock: float = -math.inf

    def summary(self) -> str:
        nots = sum(self.notices.values())
        per = ", ".join(f"{c} {n}" for c, n in sorted(self.notices.items()))
        rate = self.flows_scored / self.seconds if self.seconds > 0 else 0.0
        return "\n".join([
            f"files: {self.files}",
            f"flows read: {self.flows_read}",
            *([f"paired: {self.pairs} flows from {2 * self.pairs} of {self.records} records"]
              if self.records else []),
            f"skipped: {self.skipped}",
            f"scored: {self.flows_scored}"
            + (f" by {', '.join(self.models)}" if self.models else ""),
            f"rows written: {self.rows_written} in {len(self.outputs)} files",
            f"notices: {nots}" + (f" ({per})" if per else ""),
            *([f"incident records: {sum(self.incidents.values())} ("
               + ", ".join(f"{n} {s}" for s, n in sorted(self.incidents.items()))
               + f") in {len(self.incident_outputs)} files"] if self.incident_outputs else []),
            f"speed: {rate:,.0f} flows/s ({self.seconds:.2f} s, engine spark)",
        ])
