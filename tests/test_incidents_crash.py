"""Incidents across ``kill -9`` of cron runs (issue 15, item 1): exactly once with --state.

A real ``zeekml score --state --incidents`` subprocess over the RITA archive is killed
with SIGKILL at a random moment, then run again to completion. The incident log must
equal the one of an uninterrupted ``--state`` run, record for record and in order (it
is cut back to the last commit and the tracker's state is committed with it); the
incident records sent to a real rsyslogd (``?unit=incident``) must all arrive, each at
most twice (the syslog sink's guarantee with the collector up: only the batch in flight
at the kill may be sent again). ``tests/test_tail_crash.py`` does the same for ``tail``.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA, need, need_binary
from test_exactly_once import data_rows, zeekml_proc
from test_syslog import Rsyslog, parse_sd

from zeekml.cli.main import main

ARCHIVE = DATA / "zeek" / "rita-rotated-archive"
INCIDENT_ARGS = ["--incident-gap", "600", "--incident-update", "1800"]


@pytest.mark.parametrize("seed", [3, 11])
def test_cron_kill9_incidents_once(tmp_path: Path, seed: int) -> None:
    need(ARCHIVE.is_dir(), f"the archive {ARCHIVE}")
    collector = Rsyslog(need_binary("rsyslogd"), tmp_path)
    collector.start()
    try:
        rng = random.Random(seed)
        inputs = [str(p) for p in sorted(ARCHIVE.glob("2024-04-19/*.gz"))[:10]]
        out, state, inc = tmp_path / "zeekml.log", tmp_path / "state.npz", tmp_path / "inc.log"
        sink = f"syslog:tcp://127.0.0.1:{collector.tcp}?timeout=20&retry=0.05&unit=incident"
        args = ["-q", "score", "--state", str(state), "--out", str(out), "--threads", "1",
                "--batch-size", "1500", "--incidents", str(inc), *INCIDENT_ARGS,
                "--sink", sink, *inputs]
        proc = zeekml_proc(args, tmp_path)
        time.sleep(rng.uniform(1.0, 5.0))
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        final = zeekml_proc(args, tmp_path)
        _, err = final.communicate(timeout=600)
        assert final.returncode == 0, err.decode()
        ref = tmp_path / "ref_inc.log"
        assert main(["-q", "score", "--state", str(tmp_path / "ref.npz"), "--out",
                     str(tmp_path / "ref.log"), "--threads", "1", "--incidents", str(ref),
                     *INCIDENT_ARGS, *inputs]) == 0
        want = data_rows(ref)
        assert len(want) > 3
        assert data_rows(inc) == want, f"killed mid-run: {killed}"
        collector.wait_for(len(want), timeout=30)
        time.sleep(0.5)
        sent = Counter((p["incident"], p["state"], p["ts"]) for p in
                       (parse_sd(r["sd"])[1] for r in collector.records()))
    finally:
        collector.stop()
    keys = [(ln.split("\t")[1], ln.split("\t")[2]) for ln in want]
    assert Counter((i, s) for i, s, _ in sent.elements()) >= Counter(keys)  # nothing lost
    assert set((i, s) for i, s, _ in sent) == set(keys)
    assert max(sent.values()) <= 2  # only the batch in flight at the kill again
