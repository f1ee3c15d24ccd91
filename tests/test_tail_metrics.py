"""``zeekml tail --metrics``: Prometheus metrics scraped with a real HTTP client while a
real ``zeekml tail`` process follows a growing log (issue 15 item 4).

The scrapes go through :mod:`urllib.request` and are parsed with prometheus_client's
own text parser (what Prometheus reads). Models: the bundled ones (or the tiny test
models, as in ``tests/test_tail.py``).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_syslog import _free_port

from tests.conftest import REPO, ZAT_SAMPLE, need_module, zat_sample
from tests.test_pipeline import tiny_models  # noqa: F401 - fixture
from tests.test_tail import FAST, TailProc, append, data_lines, model_args, n_models
from zeekml.errors import ConfigError
from zeekml.runtime.metrics import TailMetrics, parse_listen, reason_label
from zeekml.runtime.tail_sources import FileTail
from zeekml.sources.options import ReadOptions
from zeekml.sources.skips import SkipLog

SAMPLE = ZAT_SAMPLE


def scrape(port: int) -> dict[str, float]:
    """GET /metrics; every sample as ``name{k="v",...}`` (labels sorted) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def total(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def wait_metrics(port: int, ok, proc: TailProc, timeout: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"zeekml tail exited:\n{proc.stderr()}")
        try:
            last = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
            continue
        if ok(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"metrics never satisfied the condition: {last}\n{proc.stderr()}")


def sample_parts() -> tuple[bytes, list[bytes]]:
    """The bundled sample as its header and its data lines."""
    zat_sample()
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    rows = [ln for ln in lines if not ln.startswith(b"#")]
    return b"".join(head), rows


def notice_rows(path: Path) -> int:
    lines = path.read_text().splitlines()
    fields = next(x for x in lines if x.startswith("#fields\t")).split("\t")[1:]
    col = fields.index("notice")
    return sum(1 for x in data_lines(path) if x.split("\t")[col] == "T")


@pytest.fixture()
def models(tiny_models) -> list[str]:  # noqa: F811
    return model_args(tiny_models)


def test_metrics_scraped_during_a_live_tail(tmp_path: Path, models: list[str],
                                            tiny_models) -> None:  # noqa: F811
    need_module("prometheus_client")
    head, rows = sample_parts()
    first, second = rows[:120], rows[120:]
    live, out, port = tmp_path / "conn.log", tmp_path / "zeekml.log", _free_port(socket.SOCK_STREAM)
    append(live, head + b"".join(first))
    proc = TailProc(["--all", "--out", str(out), "--state", str(tmp_path / "st"), *models, *FAST,
                     "--checkpoint-interval", "0.2", "--metrics", f"127.0.0.1:{port}",
                     str(live)], tmp_path)
    try:
        # a batch is counted as scored before its verdicts are flushed: wait for both
        m1 = wait_metrics(port, lambda m: m.get("zeekml_flows_scored_total") == len(first)
                          and m.get("zeekml_batch_latency_seconds_count", 0) >= 1, proc)
        assert m1["zeekml_flows_read_total"] == len(first)
        assert m1["zeekml_batch_latency_seconds_count"] >= 1
        # the input is from 2013: log-time lag is now minus its largest ts
        ts_max = max(float(r.split(b"\t")[0]) for r in first)
        assert m1["zeekml_input_lag_seconds"] == pytest.approx(time.time() - ts_max, abs=30)
        assert m1['zeekml_info{version="0.1.0"}'] == 1

        append(live, b"".join(second) + b"this line is not a flow\n")
        m2 = wait_metrics(port, lambda m: m.get("zeekml_flows_scored_total") == len(rows)
                          and total(m, "zeekml_skipped_lines_total") == 1
                          and m.get("zeekml_input_lag_bytes") == 0
                          and m.get("zeekml_checkpoint_age_seconds") == 0, proc)
        assert m2["zeekml_flows_read_total"] == len(rows)
        assert m2["zeekml_batch_latency_seconds_count"] > m1["zeekml_batch_latency_seconds_count"]
        assert m2["zeekml_batch_latency_seconds_sum"] > 0
        assert m2['zeekml_batch_latency_seconds_bucket{le="+Inf"}'] == \
            m2["zeekml_batch_latency_seconds_count"]
        assert m2["zeekml_batch_processing_seconds_count"] == \
            m2["zeekml_batch_latency_seconds_count"]
        assert m2["zeekml_checkpoints_total"] >= 1
        assert total(m2, "zeekml_incidents_total") == 0  # no incident stage yet
        assert not any(k.startswith("zeekml_sink_") for k in m2)  # no network sink
        k = n_models(tiny_models)
        assert len(data_lines(out)) == len(rows) * k
        assert total(m2, "zeekml_notices_total") == notice_rows(out)
        per_model = {key for key in m2 if key.startswith("zeekml_notices_total{")}
        assert all('class="' in key and 'model="' in key for key in per_model)
        assert proc.stop() == 0
    finally:
        if proc.alive():
            proc.kill9()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(port)  # the endpoint went away with the process


def test_metrics_and_summary_show_drops_of_a_down_collector(tmp_path: Path, models: list[str],
                                                            tiny_models) -> None:  # noqa: F811
    """No --state, the TCP collector is down, buffer 5: tail keeps scoring, drops counted."""
    need_module("prometheus_client")
    head, rows = sample_parts()
    live, out = tmp_path / "conn.log", tmp_path / "zeekml.log"
    port, down = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_STREAM)
    where = f"syslog:tcp://127.0.0.1:{down}"
    append(live, head + b"".join(rows[:100]))
    proc = TailProc(["--all", "--out", str(out), *models, *FAST, "--metrics",
                     f"127.0.0.1:{port}", "--sink",
                     f"{where}?buffer=5&timeout=1&retry=0.05&only=all", str(live)], tmp_path)
    try:
        sink = f'{{sink="{where}"}}'
        wait_metrics(port, lambda m: m.get("zeekml_flows_scored_total") == 100
                     and m.get("zeekml_sink_dropped_total" + sink, 0) > 0, proc)
        append(live, b"".join(rows[100:]))
        k = n_models(tiny_models)
        m = wait_metrics(port, lambda m: m.get("zeekml_flows_scored_total") == len(rows)
                         and m.get("zeekml_sink_dropped_total" + sink) == len(rows) * k - 5,
                         proc)
        assert m["zeekml_sink_queue_depth" + sink] == 5
        assert m["zeekml_sink_delivered_total" + sink] == 0
        assert math.isnan(m["zeekml_checkpoint_age_seconds"])  # no --state
        proc.signal(signal.SIGTERM)
        rc = proc.proc.wait(60)
        proc.err.close()
    finally:
        if proc.alive():
            proc.kill9()
    err = proc.stderr()
    assert rc == 1, err  # the notices the collector never got are lost: a failed run
    rows_out = len(data_lines(out))
    assert rows_out == len(rows) * k
    assert f"sink {where}: 0 records delivered, {rows_out - 5} dropped, 5 not delivered" in err
    assert err.strip().splitlines()[-1].startswith(f"zeekml: error: {where}: {rows_out} records "
                                                   "not delivered")


def test_metrics_port_in_use_and_bad_address(tmp_path: Path) -> None:
    zat_sample()
    need_module("prometheus_client")
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "tail", "--out",
                              str(tmp_path / "z.log"), "--metrics", f"127.0.0.1:{port}",
                              str(SAMPLE)], cwd=str(REPO), capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"zeekml: error: --metrics 127.0.0.1:{port}: cannot listen: Address already in use"]
    for bad in ("9108", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "no such host:1"):
        run = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "tail", "--out",
                              str(tmp_path / "z.log"), "--metrics", bad, str(SAMPLE)],
                             cwd=str(REPO), capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, (bad, run.stderr)
        assert run.stderr.startswith(f"zeekml: error: --metrics '{bad}'"), run.stderr


# ------------------------------------------------------------------ pieces, in process


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen("localhost:1") == ("localhost", 1)
    for bad in (":9108", "[::1]", "127.0.0.1:", "127.0.0.1:65536", "a b:1", "host:port"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_reason_labels_are_bounded() -> None:
    assert reason_label("line longer than 1048576 bytes") == "line longer than N bytes"
    assert reason_label("bad JSON (Expecting ',' delimiter: line 1 column 5)") == "bad JSON"
    assert reason_label("unsupported #separator 'x\\t'") == "unsupported #separator '…'"
    assert reason_label("") == "unknown"
    skips = SkipLog()
    metrics = TailMetrics(skips)
    for i in range(100):
        skips.add("f", i, f"reason number {i} ({i})")  # one label: "reason number N"
        skips.add("f", i, f"distinct-{chr(65 + i % 26)}{chr(65 + i // 26)}")
    metrics.tick(None, [])
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    lines = [x for x in text.splitlines() if x.startswith("zeekml_skipped_lines_total{")]
    assert len(lines) <= 32 + 1  # at most 32 reasons, then "other"
    assert any('reason="other"' in x for x in lines)
    assert sum(float(x.rsplit(" ", 1)[1]) for x in lines) == 200
    assert any(x.startswith('zeekml_skipped_lines_total{reason="reason number N"} 100.0')
               for x in lines)


def test_metrics_hooks_in_process() -> None:
    """Notices by model/class, incidents hook, checkpoint age, served on an ephemeral port."""
    need_module("prometheus_client")
    metrics = TailMetrics(SkipLog(), stateful=True, sample_seconds=0.0)
    flows = pd.DataFrame({"ts": [time.time() - 5.0, time.time() + 3600.0, float("nan")]})
    verdicts = pd.DataFrame({
        "model": ["amf_lstm", "amf_lstm", "flow_lm", "flow_lm"],
        "verdict": ["portscan", "portscan", "anomaly", "normal"],
        "notice": pd.array([True, True, True, False], dtype="boolean"),
    })
    metrics.scored(flows, verdicts)
    metrics.count_incidents("amf_lstm", "portscan", 2)
    host, port = metrics.serve("127.0.0.1", 0)
    try:
        m = scrape(port)
        assert m['zeekml_notices_total{class="portscan",model="amf_lstm"}'] == 2
        assert m['zeekml_notices_total{class="anomaly",model="flow_lm"}'] == 1
        assert total(m, "zeekml_notices_total") == 3
        assert m['zeekml_incidents_total{class="portscan",model="amf_lstm"}'] == 2
        assert m["zeekml_input_lag_seconds"] == pytest.approx(5.0, abs=2.0)  # future ts ignored
        assert m["zeekml_checkpoint_age_seconds"] > 0  # scored, not yet checkpointed
        metrics.checkpointed()
        m = scrape(port)
        assert m["zeekml_checkpoint_age_seconds"] == 0
        assert m["zeekml_checkpoints_total"] == 1
        assert math.isnan(m["zeekml_input_lag_bytes"])  # no source sampled yet
    finally:
        metrics.close()


def test_bytes_behind_a_followed_file(tmp_path: Path) -> None:
    """Bytes not yet turned into rows: the rest of the file, plus a new file after rotation."""
    head, rows = sample_parts()
    live = tmp_path / "conn.log"
    live.write_bytes(head + b"".join(rows))
    src = FileTail(str(live), skips=SkipLog(), options=ReadOptions(batch_rows=1000), watch=False)
    try:
        assert src.bytes_behind() is None  # nothing opened yet
        src.poll(max_bytes=len(head) + 4096)
        size = live.stat().st_size
        behind = src.bytes_behind()
        assert behind is not None and 0 < behind < size
        while src.bytes_behind():
            src.poll(max_bytes=1 << 20)
        os.rename(live, tmp_path / "conn.1.log")
        live.write_bytes(head)
        assert src.bytes_behind() == len(head)  # the new generation waits to be read
    finally:
        src.close()


def test_incidents_counted_per_model_and_class_when_they_close(tmp_path: Path) -> None:
    """Incident records written by the pipeline reach zeekml_incidents_total{model,class}:
    a real capture scored with the bundled models, every incident counted once."""
    need_module("prometheus_client")
    from tests.conftest import DATA, need
    from zeekml.models.registry import ScorerOptions, default_scorers
    from zeekml.policy.incidents import IncidentConfig, IncidentTracker
    from zeekml.policy.notice import NoticePolicy
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.sources import read_table

    capture = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
    need(capture.is_file(), f"the capture {capture}")
    metrics = TailMetrics()
    records: list[pd.DataFrame] = []
    pipeline = Pipeline(default_scorers(ScorerOptions(threads=1)), NoticePolicy(), [],
                        incidents=IncidentTracker(IncidentConfig()))
    pipeline.on_incidents = lambda r: (records.append(r), metrics.incidents_written(r))
    pipeline.process(read_table(capture))
    pipeline.finish()
    closed = pd.concat(records)
    closed = closed[closed["state"] == "closed"]
    assert len(closed)
    expected: dict[tuple[str, str], int] = {}
    for models, cls in zip(closed["models"], closed["verdict"], strict=True):
        for m in models:
            expected[(m, cls)] = expected.get((m, cls), 0) + 1
    for (model, cls), n in expected.items():
        got = metrics.registry.get_sample_value("zeekml_incidents_total",
                                                {"model": model, "class": cls})
        assert got == n, (model, cls, got, n)
