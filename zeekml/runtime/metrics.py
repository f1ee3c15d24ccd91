"""Prometheus metrics of a running ``zeekml tail`` (``--metrics HOST:PORT``).

A daemon that runs for months needs to be watched: this module owns a
``prometheus_client`` :class:`CollectorRegistry` of its own (never the library's global
default registry) and serves it over HTTP (``GET /metrics``) from a daemon thread.
The tail loop calls a few cheap hooks (per batch or per loop turn, never per flow);
the HTTP thread only reads what they recorded, so a scrape never touches the
pipeline, the sinks or the input.

==========================================  ===================================================
metric                                      meaning
==========================================  ===================================================
``zeekml_flows_read_total``                 flows parsed from the input
``zeekml_flows_scored_total``               flows scored by the models
``zeekml_skipped_lines_total{reason}``      input lines skipped, by reason (digits in the
                                            reason become ``N``, details in parentheses are
                                            cut; at most 32 reasons, then ``other``)
``zeekml_notices_total{model,class}``       notice rows written, by model and verdict class
``zeekml_incidents_total{model,class}``     incidents opened (0 until incidents exist:
                                            :meth:`TailMetrics.count_incidents` is the hook)
``zeekml_batch_latency_seconds``            histogram: from a batch's first flow read from
                                            the input to its verdicts flushed to every sink
                                            (what ``--max-latency`` bounds, plus scoring)
``zeekml_batch_processing_seconds``         histogram: scoring and writing one batch
``zeekml_input_lag_bytes``                  bytes of the followed file not yet turned into
                                            rows (rest of the open file, plus a newer file
                                            at the path after rotation); NaN for a pipe or
                                            an nfcapd directory
``zeekml_input_lag_seconds``                log-time lag: now minus the largest ``ts``
                                            scored so far (NaN before the first flow).
                                            ``ts`` is a flow's start and Zeek logs a
                                            connection when it ends, so this is never less
                                            than the connections' durations; ``ts`` more
                                            than 60 s in the future is ignored
``zeekml_checkpoint_age_seconds``           with ``--state``: seconds since the last
                                            checkpoint while verdicts written since then are
                                            not in the state (0 when everything written is
                                            checkpointed: a quiet input has nothing to
                                            save); NaN without ``--state``
``zeekml_checkpoints_total``                checkpoints saved
``zeekml_sink_queue_depth{sink}``           records a sink holds, not yet delivered
``zeekml_sink_dropped_total{sink}``         records a sink gave up (buffer bound passed while
                                            its collector was down, refused datagrams)
``zeekml_sink_delivered_total{sink}``       records a sink delivered
``zeekml_info{version}``                    1, with zeekml's version as a label
==========================================  ===================================================

The sink families cover sinks with delivery accounting (``delivery()``, see
:mod:`zeekml.sinks.base`): network sinks; files either write or fail the run.
Input lag, skips and sink figures are sampled at most every ``sample_seconds``
(0.5 s) by :meth:`TailMetrics.tick`.

The endpoint has no authentication or TLS: bind it to loopback (the default in the
docs and the systemd unit) and let Prometheus scrape through a local agent or a
firewall rule; any address is accepted because remote scraping is legitimate.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from zeekml import __version__
from zeekml.errors import ConfigError, SinkError
from zeekml.sinks.base import Delivery, sink_delivery
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

#: at most this many distinct skip reasons become label values; the rest are "other"
MAX_REASONS = 32
#: batch latency buckets, seconds (micro-batches are 0.1 s + scoring; backlogs longer)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: a flow's ts further than this in the future is not trusted for the log-time lag
FUTURE_SLACK = 60.0


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:9108``) -> (host, port); ConfigError when malformed."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d{1,5})|([^\s:\[\]/]+):(\d{1,5})", spec)
    if m is None:
        raise ConfigError(f"--metrics {spec!r}: use HOST:PORT, e.g. 127.0.0.1:9108 or [::1]:9108")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        raise ConfigError(f"--metrics {spec!r}: port must be 1-65535")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--metrics {spec!r}: cannot resolve {host!r}: {exc}") from None
    return host, port


def reason_label(reason: str) -> str:
    """A skip reason as a bounded label value: no numbers, no quoted or bracketed details."""
    text = re.split(r"\s*[(:;]", reason, maxsplit=1)[0]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+", "N", text).strip()
    return text[:60] or "unknown"


class NullMetrics:
    """The hooks the tail loop calls, doing nothing (no ``--metrics``)."""

    def read(self, rows: int) -> None:
        """``rows`` flows were parsed from the input."""

    def scored(self, flows: pd.DataFrame, verdicts: pd.DataFrame) -> None:
        """One :meth:`Pipeline.process` call scored ``flows`` and wrote ``verdicts``."""

    def batch_done(self, started: float, waiting_since: float) -> None:
        """A batch was flushed to every sink (``time.monotonic`` stamps)."""

    def checkpointed(self) -> None:
        """A checkpoint was saved."""

    def tick(self, source: Any, sinks: Sequence[Any]) -> None:
        """Once per loop turn: sample input lag, skips and sink queues (throttled)."""

    def count_incidents(self, model: str, cls: str, n: int = 1) -> None:
        """``n`` incidents of ``cls`` that ``model`` took part in were closed."""

    def incidents_written(self, records: Any) -> None:
        """Incident records written (``zeekml.policy.incidents``): count the closed ones
        per model and class (an incident is counted once, when it closes)."""
        if records is None or not len(records) or "state" not in records.columns:
            return
        closed = records[records["state"].astype(str) == "closed"]
        for models, cls in zip(closed["models"].tolist(), closed["verdict"].astype(str).tolist(),
                               strict=True):
            for model in (models or ["-"]):
                self.count_incidents(str(model), cls)

    def close(self) -> None:
        """Stop serving."""


class TailMetrics(NullMetrics):
    """The metrics of one tail process, in their own registry, with an HTTP server."""

    def __init__(self, skips: SkipLog | None = None, *, stateful: bool = False,
                 sample_seconds: float = 0.5) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise ConfigError("--metrics needs the prometheus_client package "
                             "(pip install prometheus_client)") from exc

        self.registry = CollectorRegistry(auto_describe=True)
        self._skips = skips
        self._stateful = stateful
        self._sample_seconds = sample_seconds
        self._last_sample = -math.inf
        self._skips_seen = -1
        self._reason_totals: dict[str, int] = {}
        self._max_ts = math.nan
        self._last_checkpoint = time.time()
        self._unsaved = False
        self._sinks: dict[str, Delivery] = {}
        self._server: Any = None
        r = self.registry
        self.flows_read = Counter("zeekml_flows_read", "Flows parsed from the input.",
                                  registry=r)
        self.flows_scored = Counter("zeekml_flows_scored", "Flows scored by the models.",
                                    registry=r)
        self.skipped = Counter("zeekml_skipped_lines", "Input lines skipped, by reason.",
                               ["reason"], registry=r)
        self.notices = Counter("zeekml_notices", "Notice rows written, by model and class.",
                               ["model", "class"], registry=r)
        self.incidents = Counter("zeekml_incidents", "Incidents opened, by model and class.",
                                 ["model", "class"], registry=r)
        self.latency = Histogram(
            "zeekml_batch_latency_seconds",
            "From a batch's first flow read from the input to its verdicts flushed to "
            "every sink.", buckets=LATENCY_BUCKETS, registry=r)
        self.processing = Histogram(
            "zeekml_batch_processing_seconds", "Scoring and writing one batch.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.lag_bytes = Gauge("zeekml_input_lag_bytes",
                               "Bytes of the followed input not yet turned into rows.",
                               registry=r)
        self.lag_bytes.set(math.nan)
        lag_seconds = Gauge("zeekml_input_lag_seconds",
                            "Now minus the largest flow ts scored (log-time lag).", registry=r)
        lag_seconds.set_function(self._lag_seconds)
        age = Gauge("zeekml_checkpoint_age_seconds",
                    "Seconds since the last checkpoint while written verdicts are not "
                    "checkpointed (0: all saved; NaN: no --state).", registry=r)
        age.set_function(self._checkpoint_age)
        self.checkpoints = Counter("zeekml_checkpoints", "Checkpoints saved.", registry=r)
        info = Gauge("zeekml_info", "zeekml version.", ["version"], registry=r)
        info.labels(version=__version__).set(1)
        r.register(_SinkCollector(self))

    # ------------------------------------------------------------------ hooks
    def read(self, rows: int) -> None:
        if rows:
            self.flows_read.inc(rows)

    def scored(self, flows: pd.DataFrame, verdicts: pd.DataFrame) -> None:
        n = len(flows)
        if not n:
            return
        self.flows_scored.inc(n)
        self._unsaved = True
        if "ts" in flows.columns:
            ts = flows["ts"].to_numpy(dtype="float64", na_value=np.nan)
            ts = ts[ts <= time.time() + FUTURE_SLACK]  # NaN compares False: dropped too
            if len(ts):
                top = float(ts.max())
                if not top <= self._max_ts:  # also replaces the initial NaN
                    self._max_ts = top
        if len(verdicts) and "notice" in verdicts.columns:
            mask = verdicts["notice"].astype("boolean").fillna(False).to_numpy(dtype=bool)
            if mask.any():
                counts = verdicts.loc[mask, ["model", "verdict"]].astype(str).value_counts()
                for (model, cls), k in counts.items():
                    self.notices.labels(model=model, **{"class": cls}).inc(int(k))

    def batch_done(self, started: float, waiting_since: float) -> None:
        now = time.monotonic()
        self.processing.observe(max(0.0, now - started))
        self.latency.observe(max(0.0, now - waiting_since))

    def checkpointed(self) -> None:
        self._last_checkpoint = time.time()
        self._unsaved = False
        self.checkpoints.inc()

    def count_incidents(self, model: str, cls: str, n: int = 1) -> None:
        if n:
            self.incidents.labels(model=model, **{"class": cls}).inc(n)

    def tick(self, source: Any, sinks: Sequence[Any]) -> None:
        now = time.monotonic()
        if now - self._last_sample < self._sample_seconds:
            return
        self._last_sample = now
        behind = getattr(source, "bytes_behind", None)
        value = behind() if callable(behind) else None
        self.lag_bytes.set(math.nan if value is None else float(value))
        self._sample_skips()
        self._sinks = {s.name: d for s in sinks if (d := sink_delivery(s)) is not None}

    def _sample_skips(self) -> None:
        skips = self._skips
        if skips is None or skips.total == self._skips_seen:
            return
        self._skips_seen = skips.total
        totals: dict[str, int] = {}
        for reason, n in list(skips.by_reason.items()):
            label = reason_label(reason)
            if label not in totals and label not in self._reason_totals \
                    and len(totals.keys() | self._reason_totals.keys()) >= MAX_REASONS:
                label = "other"
            totals[label] = totals.get(label, 0) + n
        for label, n in totals.items():
            grew = n - self._reason_totals.get(label, 0)
            if grew > 0:
                self.skipped.labels(reason=label).inc(grew)
                self._reason_totals[label] = n

    # ------------------------------------------------------------------ scrape-time values
    def _lag_seconds(self) -> float:
        return time.time() - self._max_ts  # NaN until a flow was scored

    def _checkpoint_age(self) -> float:
        if not self._stateful:
            return math.nan
        return time.time() - self._last_checkpoint if self._unsaved else 0.0

    def sink_samples(self) -> dict[str, Delivery]:
        return self._sinks

    # ------------------------------------------------------------------ server
    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (``GET /metrics``); returns the bound address."""
        from prometheus_client import disable_created_metrics, start_http_server

        disable_created_metrics()  # no *_created series: they only double the output
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SinkError(f"--metrics {host}:{port}: cannot listen: "
                            f"{exc.strerror or exc}") from exc
        self._server = server
        bound = server.server_address
        log.info("metrics on http://%s:%d/metrics", *bound[:2])
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _SinkCollector:
    """Per-sink queue depth, drops and deliveries from the last :meth:`TailMetrics.tick`."""

    def __init__(self, metrics: TailMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        yield from self._families(self._metrics.sink_samples())

    @staticmethod
    def _families(samples: dict[str, Delivery]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        depth = GaugeMetricFamily("zeekml_sink_queue_depth",
                                  "Records a sink holds, not yet delivered.", labels=["sink"])
        dropped = CounterMetricFamily("zeekml_sink_dropped",
                                      "Records a sink gave up (buffer bound, refused sends).",
                                      labels=["sink"])
        delivered = CounterMetricFamily("zeekml_sink_delivered",
                                        "Records a sink delivered.", labels=["sink"])
        for name, d in samples.items():
            depth.add_metric([name], d.queued)
            dropped.add_metric([name], d.dropped)
            delivered.add_metric([name], d.delivered)
        yield from (depth, dropped, delivered)
