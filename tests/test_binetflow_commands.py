"""Argus binetflow through every command: convert (read by zeek-cut and zat), summary,
score with cron state, tail, eval and the training loaders, each with ``--tz``.

Models: the tiny real ONNX models of ``tests/test_pipeline.py`` (fast), registered as a
plugin kind, and the bundled AMF-LSTM for ``eval``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, REPO, need, need_module, need_zeek_cut
from tests.test_convert import check_zat
from tests.test_pipeline import tiny_models  # noqa: F401 - fixture
from tests.test_tail import FAST, RUNNER, TailProc, data_lines, env
from zeekml.cli.main import main
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.options import ReadOptions

BNF = DATA / "binetflow"
TEST2 = BNF / "slips-test2-malicious.binetflow"  # comma, SrcPkts, ICMP, igmp
TEST4 = BNF / "slips-test4-malicious.binetflow"  # comma, no SrcPkts, arp
TEST5 = BNF / "slips-test5-mixed.binetflow"  # tab, labels, relative times, no final newline
CANON = [*schema.COLUMNS, *schema.LABEL_COLUMNS]
PRAGUE = "Europe/Prague"


@pytest.fixture()
def models(tiny_models) -> list[str]:  # noqa: F811
    return [a for m in tiny_models for a in ("--model", str(m))]


def read(path: Path, tz: str | None = None) -> pd.DataFrame:
    df = schema.concat(read_flows(path, skips=SkipLog(), options=ReadOptions(tz=tz)))
    return df[[c for c in CANON if c in df.columns]].reset_index(drop=True)


def need_data() -> None:
    need(BNF.is_dir(), f"the shared captures at {BNF}")


@pytest.mark.parametrize("src", [TEST2, TEST4, TEST5], ids=lambda p: p.name)
def test_convert_to_zeek_is_read_by_zeek_cut_zat_and_zeekml(tmp_path: Path, src: Path) -> None:
    need_data()
    out = tmp_path / "conn.log"
    assert main(["convert", str(src), "--to", "zeek", "--tz", PRAGUE, "--out", str(out)]) == 0
    ref = read(src, PRAGUE)
    back = read(out)
    pd.testing.assert_frame_equal(back, ref)
    check_zat(out, ref)
    cut = need_zeek_cut()
    fields = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
              "conn_state", "history", "orig_ip_bytes", "resp_ip_bytes"]
    text = subprocess.run([cut, *fields], input=out.read_bytes(), capture_output=True,
                          check=True).stdout.decode()
    rows = [ln.split("\t") for ln in text.splitlines()]
    assert len(rows) == len(ref)
    assert [r[1] for r in rows] == ref["uid"].tolist()
    assert np.allclose([float(r[0]) for r in rows], ref["ts"], atol=1e-6, rtol=0)
    for i, c in enumerate(["orig_h", "orig_p", "resp_h", "resp_p", "proto", "conn_state",
                           "history", "orig_ip_bytes", "resp_ip_bytes"], start=2):
        assert [r[i] for r in rows] == ref[c].astype(object).fillna("-").astype(str).tolist(), c
    if "label" in ref.columns:
        lab = subprocess.run([cut, "label", "detailed-label"], input=out.read_bytes(),
                             capture_output=True, check=True).stdout.decode().splitlines()
        assert lab == [f"{a}\t{b}" for a, b in zip(ref["label"].fillna("-"),
                                                    ref["detailed_label"].fillna("-"), strict=True)]


def test_summary_tz_and_bad_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_data()
    assert main(["summary", "--json", str(TEST2)]) == 0
    utc = json.loads(capsys.readouterr().out)
    assert main(["summary", "--json", "--tz", PRAGUE, str(TEST2)]) == 0
    prague = json.loads(capsys.readouterr().out)
    assert utc["files"][0]["format"] == "binetflow" and utc["rows"] == 6751
    assert prague["time_span"]["min"] == utc["time_span"]["min"] - 7200  # April: CEST
    assert main(["summary", "--json", str(BNF)]) == 0  # a directory: its *.binetflow files
    assert json.loads(capsys.readouterr().out)["rows"] == 6751 + 88 + 392 + 296
    for cmd in (["summary"], ["convert"], ["score"], ["eval", "--model", "amf_lstm", "--data"]):
        assert main([*cmd, str(TEST2), "--tz", "Mars/Olympus"]) == 2
        assert "Mars/Olympus" in capsys.readouterr().err


def test_score_cron_runs_with_tz_equal_one_run(tmp_path: Path, models: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A growing binetflow file scored by cron runs (state) = one run; a different --tz
    on the same input is refused (exit 1), not silently mixed."""
    need_data()
    data = TEST2.read_bytes()
    live = tmp_path / "argus" / TEST2.name  # uids are salted with the base name
    live.parent.mkdir()
    out, state = tmp_path / "zeekml.log", tmp_path / "state"
    argv = ["score", "--all", "--tz", PRAGUE, "--out", str(out), "--state", str(state), *models]
    for k in (1, 2, 3):
        live.write_bytes(data[: data.index(b"\n", len(data) * k // 4) + 1])
        assert main([*argv, str(live)]) == 0
    live.write_bytes(data)
    assert main([*argv, str(live)]) == 0
    ref = tmp_path / "ref.log"
    assert main(["score", "--all", "--tz", PRAGUE, "--out", str(ref), *models, str(TEST2)]) == 0
    got = [ln.split("\t") for ln in data_lines(out)]
    exp = [ln.split("\t") for ln in data_lines(ref)]
    assert len(got) == len(exp) == 6751 * (len(models) // 2)
    assert got == exp
    first = datetime(2019, 4, 4, 16, 23, 0, 325010, ZoneInfo(PRAGUE)).timestamp()
    assert float(got[0][0]) == pytest.approx(first, abs=1e-6)
    live.write_bytes(data + data.split(b"\n", 1)[1])  # more rows, now with another zone
    capsys.readouterr()
    assert main([*argv[:2], "--tz", "UTC", *argv[4:], str(live)]) == 1
    assert "started with --tz Europe/Prague" in capsys.readouterr().err


def test_tail_pipe_with_tz_equals_score(tmp_path: Path, models: list[str]) -> None:
    """``... | zeekml tail --tz ZONE -`` on the tab-separated file (no final newline)."""
    need_data()
    out = tmp_path / "zeekml.log"
    tail = TailProc(["--all", "--tz", PRAGUE, "--out", str(out), *models, *FAST, "-"], tmp_path,
                    stdin=subprocess.PIPE)
    assert tail.proc.stdin is not None
    data = TEST5.read_bytes()
    for part in (data[:5000], data[5000:17011], data[17011:]):  # cuts inside lines
        tail.proc.stdin.write(part)
        tail.proc.stdin.flush()
    tail.proc.stdin.close()
    rc = tail.proc.wait(120)
    tail.err.close()
    assert rc == 0, tail.stderr()
    ref = tmp_path / "ref.log"
    done = subprocess.run([sys.executable, "-c", RUNNER, "score", "--all", "--tz", PRAGUE,
                           "--out", str(ref), *models, "-"], input=data, cwd=str(REPO),
                          env=env(), capture_output=True)  # stdin too: uids are salted by name
    assert done.returncode == 0, done.stderr.decode()
    assert data_lines(out) == data_lines(ref)
    assert len(data_lines(out)) == 296 * (len(models) // 2)
    assert "4 skipped" in tail.stderr()  # man, llc and two ARP records, counted
    ts = sorted(float(ln.split("\t")[0]) for ln in data_lines(out))
    assert ts[0] == pytest.approx(8.140073, abs=1e-6)  # relative time, read in Prague


def test_eval_excludes_background_and_unlabeled(capsys: pytest.CaptureFixture[str]) -> None:
    """Stratosphere labels in ``zeekml eval``: Background/unknown rows excluded, none benign."""
    need_data()
    from zeekml.models.registry import bundled_models

    need(any(p.stem == "amf_lstm" for p in bundled_models()), "the bundled amf_lstm model")
    assert main(["eval", "--model", "amf_lstm", "--data", str(TEST5), "--tz", "UTC", "--json",
                 "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["excluded"] == 296 - 277
    b = result["binary_counts"]
    assert b["tp"] + b["fn"] == 277 and b["fp"] + b["tn"] == 0


def test_training_loaders_read_binetflow_with_tz() -> None:
    need_data()
    need_module("torch")
    from zeekml.sources.open import read_table
    from zeekml.train.datasets import load_captures
    from zeekml.train.lm_training import load_streams

    opts = ReadOptions(tz=PRAGUE)
    (stream,) = load_streams([str(TEST5)], drop_malicious=True, options=opts)
    assert stream.files[0]["rows"] == 296 and stream.files[0]["malicious_dropped"] == 277
    kept = stream.flows[stream.trainable]
    assert len(kept) == 19 and float(kept["ts"].min()) == pytest.approx(8.140073, abs=1e-6)
    caps = load_captures([str(TEST5), str(TEST2)], reader=lambda p: read_table([p], options=opts))
    assert len(caps) == 1  # test2's Label column is empty: not a training capture
