"""Per-flow numeric features: one named, ordered list, computed vectorized.

The same function feeds the trainers and the runtime, and every model card records
:data:`FEATURES` so a model trained on one order is never scored with another.

What is deliberately absent: any encoding of an IP address. Attackers and servers
in one capture reappear in others, so an address identity would not generalize;
relations inside a host's window (same peer as the current flow or not) are added by
:mod:`zeekml.windows.host_window` instead.

Missing values get an explicit indicator feature and a neutral 0 value, so "unset"
never looks like "zero bytes". Counters are ``log1p``-compressed because their range
spans nine orders of magnitude; normalization to zero mean / unit variance happens
inside each exported ONNX graph, not here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.records.distinct import factorized

#: Feature names, in the order of the columns of :func:`flow_features`.
FEATURES: tuple[str, ...] = (
    "log_duration",
    "duration_missing",
    "log_orig_bytes",
    "log_resp_bytes",
    "bytes_missing",
    "log_orig_pkts",
    "log_resp_pkts",
    "log_orig_ip_bytes",
    "log_resp_ip_bytes",
    "resp_counters_missing",
    "log_orig_bytes_per_pkt",
    "log_resp_bytes_per_pkt",
    "proto_tcp",
    "proto_udp",
    "proto_icmp",
    "resp_port_wellknown",
    "resp_port_registered",
    "orig_port_wellknown",
    "state_established",
    "state_attempt",
    "state_rejected",
    "state_other",
    "hist_orig_data",
    "hist_resp_data",
    "hist_reset",
    "hist_fin",
    "hist_resp_synack",
    "no_reply",
)

N_FEATURES = len(FEATURES)
_BYTES_MISSING = FEATURES.index("bytes_missing")

_ESTABLISHED = ("SF", "S1", "S2", "S3", "RSTO", "RSTR")
_ATTEMPT = ("S0",)
_REJECTED = ("REJ", "RSTOS0", "RSTRH", "SH", "SHR")


def _log1p(s: pd.Series) -> np.ndarray:
    v = s.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    v = np.where(np.isfinite(v) & (v > 0), v, 0.0)
    return np.log1p(v)


def _num(s: pd.Series) -> np.ndarray:
    return s.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _has_each(hist: pd.Series, char_sets: tuple[str, ...]) -> list[np.ndarray]:
    """For each set of characters, whether a row's history holds any of them (missing:
    no); the history is factorized once and each distinct history tested once."""
    codes, text = factorized(hist)
    out = []
    for chars in char_sets:
        table = np.append(text.str.contains("[" + chars + "]", regex=True)
                          .to_numpy(dtype=bool, na_value=False), False)
        out.append(table[codes])  # code -1 (missing) reads the appended False
    return out


def payload_unknown(features: np.ndarray) -> np.ndarray:
    """Per row of :func:`flow_features` (or of a window position, whose features begin
    with these): are the flow's payload bytes unknown? NetFlow and Argus never give them,
    Zeek sometimes not; the AMF-LSTM holds such flows to thresholds of their own, and the
    runtime, the evaluation and the trainer all ask this one test."""
    return np.asarray(features[..., _BYTES_MISSING] > 0.5, dtype=bool)


def flow_features(flows: pd.DataFrame) -> np.ndarray:
    """Return a ``[len(flows), N_FEATURES]`` float32 array in :data:`FEATURES` order.

    ``flows`` is a canonical flow table (see :mod:`zeekml.records.schema`).
    Total: any row, however many fields are missing, gets a finite vector.
    """
    n = len(flows)
    if n == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    # filled one feature (one contiguous row) at a time, then transposed in one copy:
    # writing feature columns of a row-major array strides a whole row per value, and
    # inside the pipeline (two models' threads on two cores) that cost 0.3 s per 1M
    # flows more and slowed the whole run by about 5% (docs/benchmarks.md, stop 25)
    out = np.empty((N_FEATURES, n), dtype=np.float32)
    dur = _num(flows["duration"])
    ob = _num(flows["orig_bytes"])
    rb = _num(flows["resp_bytes"])
    op = _num(flows["orig_pkts"])
    rp = _num(flows["resp_pkts"])
    col = 0

    def put(values: np.ndarray) -> None:
        nonlocal col
        out[col] = values
        col += 1

    put(np.log1p(np.where(np.isfinite(dur) & (dur > 0), dur, 0.0)))
    put(~np.isfinite(dur))
    put(_log1p(flows["orig_bytes"]))
    put(_log1p(flows["resp_bytes"]))
    put(~(np.isfinite(ob) & np.isfinite(rb)))
    put(_log1p(flows["orig_pkts"]))
    put(_log1p(flows["resp_pkts"]))
    put(_log1p(flows["orig_ip_bytes"]))
    put(_log1p(flows["resp_ip_bytes"]))
    put(~np.isfinite(rp))
    oib = _num(flows["orig_ip_bytes"])
    rib = _num(flows["resp_ip_bytes"])
    with np.errstate(divide="ignore", invalid="ignore"):
        opp = np.where(op > 0, oib / op, 0.0)
        rpp = np.where(rp > 0, rib / rp, 0.0)
    put(np.log1p(np.where(np.isfinite(opp) & (opp > 0), opp, 0.0)))
    put(np.log1p(np.where(np.isfinite(rpp) & (rpp > 0), rpp, 0.0)))

    # a handful of protocols per batch: each test once per distinct value
    codes, uniques = factorized(flows["proto"])
    low = uniques.str.lower()
    for test in (low == "tcp", low == "udp", low.str.startswith("icmp")):
        put(np.append(test.to_numpy(dtype=bool, na_value=False), False)[codes])

    rport = _num(flows["resp_p"])
    oport = _num(flows["orig_p"])
    put(np.isfinite(rport) & (rport < 1024))
    put(np.isfinite(rport) & (rport >= 1024) & (rport < 49152))
    put(np.isfinite(oport) & (oport < 1024))

    state = flows["conn_state"]
    est = state.isin(_ESTABLISHED).to_numpy(dtype=bool)
    att = state.isin(_ATTEMPT).to_numpy(dtype=bool)
    rej = state.isin(_REJECTED).to_numpy(dtype=bool)
    put(est)
    put(att)
    put(rej)
    put(~(est | att | rej))

    for has in _has_each(flows["history"], ("D", "d", "Rr", "Ff", "h")):
        put(has)
    put(~(np.isfinite(rp) & (rp > 0)))
    assert col == N_FEATURES
    return np.ascontiguousarray(out.T)
