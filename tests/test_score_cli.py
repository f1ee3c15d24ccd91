"""``zeekml score`` end to end on real captures: outputs read back by zat and zeekml,
exactly-once cron runs with ``--state``, hostile input strings, the state lock.

Models: the bundled ones when they exist, else the tiny real ONNX model of
``tests/test_pipeline.py`` (loaded through the registry as a plugin kind).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, need, zat_sample
from tests.test_pipeline import tiny_models  # noqa: F401 - fixture
from zeekml.cli.main import main
from zeekml.errors import FormatError
from zeekml.records.verdicts import zeek_fields, zeek_types
from zeekml.runtime.state import StateStore
from zeekml.sinks.notice_log import NOTICE_FIELDS
from zeekml.sources import read_flows, read_table
from zeekml.sources.zeek_tsv import unescape

CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
CAPTURE2 = DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled"
SMALL = DATA / "zeek" / "zat-sample" / "conn.log"


@pytest.fixture()
def models(tiny_models) -> list[str]:  # noqa: F811
    args: list[str] = []
    for m in tiny_models:
        args += ["--model", str(m)]
    return args


def score(*argv: str) -> int:
    return main(["score", *argv])


def data_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]


def zat_frame(path: Path) -> pd.DataFrame:
    from zat.log_to_dataframe import LogToDataFrame

    return LogToDataFrame().create_dataframe(str(path))


def test_all_flows_log_reads_back_with_zat_and_zeekml(tmp_path, models, capsys) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out = tmp_path / "zeekml.log"
    assert score("--all", "--out", str(out), *models, str(CAPTURE)) == 0
    flows = read_table(CAPTURE)
    text = out.read_text()
    header = text.splitlines()[:8]
    assert header[0] == "#separator \\x09" and header[4] == "#path\tzeekml"
    assert header[6] == "#fields\t" + "\t".join(zeek_fields())
    assert header[7] == "#types\t" + "\t".join(zeek_types())
    assert text.splitlines()[-1].startswith("#close\t")
    df = zat_frame(out)
    assert len(df) == 2 * len(flows)
    assert list(df.columns) == [f for f in zeek_fields() if f != "ts"]  # zat indexes by ts
    assert str(df.index.dtype).startswith("datetime64")
    assert df["score"].dtype == np.float64 and df["id.resp_p"].dtype.kind in "iu"
    assert set(df["notice"].astype(str)) == {"T", "F"}  # zat reads bool as a T/F category
    np.testing.assert_allclose(df.index.astype("int64") / 1e9, np.repeat(flows["ts"], 2), atol=1e-6)
    assert df["uid"].tolist() == np.repeat(flows["uid"].to_numpy(), 2).tolist()
    with pytest.raises(FormatError, match="zeekml's own verdict log"):  # not flows (issue 11)
        list(read_flows(out))
    summary = capsys.readouterr().err
    assert f"flows read: {len(flows)}" in summary and "notices:" in summary


def test_notices_name_input_flows(tmp_path, models) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out = tmp_path / "zeekml.log"
    assert score("--out", str(out), *models, str(CAPTURE)) == 0
    df = zat_frame(out)
    flows = read_table(CAPTURE)
    assert len(df) > 0 and set(df["uid"]) <= set(flows["uid"])
    assert (df["notice"].astype(str) == "T").all() and (df["verdict"] == "c2").all()
    # n counts every crossing flow once per model (suppression folds, never loses)
    assert int(df["n"].sum()) == 2 * int((flows["conn_state"] == "S0").sum())


def test_notice_log_schema(tmp_path, models) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out = tmp_path / "notice.log"
    assert score("--notice", "--out", str(out), "--suppress", "3600", *models, str(CAPTURE)) == 0
    lines = out.read_text().splitlines()
    assert lines[4] == "#path\tnotice"
    assert lines[6] == "#fields\t" + "\t".join(f for f, _ in NOTICE_FIELDS)
    assert lines[7] == "#types\t" + "\t".join(t for _, t in NOTICE_FIELDS)
    df = zat_frame(out)
    assert len(df) > 0
    assert set(df["note"]) == {"ZeekML::C2"}
    assert (df["src"] == df["id.orig_h"]).all() and (df["suppress_for"].dt.total_seconds() == 3600).all()
    assert set(df["uid"]) <= set(read_table(CAPTURE)["uid"])


def test_json_output(tmp_path, models) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    out = tmp_path / "zeekml.json"
    assert score("--all", "--out-format", "json", "--out", str(out), *models, str(SMALL)) == 0
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    flows = read_table(SMALL)
    assert len(recs) == 2 * len(flows)
    assert {"ts", "uid", "id.orig_h", "id.resp_p", "model", "verdict", "score"} <= set(recs[0])
    assert isinstance(recs[0]["ts"], float) and isinstance(recs[0]["id.resp_p"], int)
    assert recs[0]["ts"] == pytest.approx(float(flows["ts"].iloc[0]))


def test_state_scores_each_flow_once(tmp_path, models) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    argv = ["--all", "--out", str(out), "--state", str(state), *models, str(CAPTURE)]
    assert score(*argv) == 0
    first = out.read_bytes()
    assert not first.rstrip().endswith(b"\n#close")  # the log stays open for the next run
    assert score(*argv) == 0
    assert out.read_bytes() == first
    assert len(data_lines(out)) == 2 * len(read_table(CAPTURE))


def test_two_cron_runs_equal_one_run(tmp_path, models) -> None:
    need(CAPTURE.is_file() and CAPTURE2.is_file(), "the captures 008 and 010")
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    common = [*models, "--suppress", "600"]
    assert score("--out", str(one), "--state", str(tmp_path / "s1"), *common,
                 str(CAPTURE), str(CAPTURE2)) == 0
    assert score("--out", str(two), "--state", str(tmp_path / "s2"), *common, str(CAPTURE)) == 0
    assert score("--out", str(two), "--state", str(tmp_path / "s2"), *common, str(CAPTURE2)) == 0
    a, b = data_lines(one), data_lines(two)
    assert len(a) > 0 and a == b


def test_growing_log_in_cron_runs(tmp_path, models) -> None:
    """current/conn.log grows between runs; the rows are those of one run over the whole."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    data = SMALL.read_bytes()
    live = tmp_path / "current" / "conn.log"
    live.parent.mkdir()
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    argv = ["--all", "--out", str(out), "--state", str(state), *models, str(live)]
    cuts = [data.index(b"\n", len(data) * k // 4) + 1 for k in (1, 2, 3)] + [len(data)]
    for c in cuts:
        live.write_bytes(data[:c])
        assert score(*argv) == 0
    ref = tmp_path / "ref.log"
    assert score("--all", "--out", str(ref), *models, str(SMALL)) == 0
    assert data_lines(out) == data_lines(ref)


def test_crash_after_write_repeats_nothing(tmp_path, models) -> None:
    """Bytes written after the last checkpoint (a crash) are dropped and re-produced once."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    data = SMALL.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    live = tmp_path / "conn.log"
    live.write_bytes(data[:half])
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    argv = ["--all", "--out", str(out), "--state", str(state), *models, str(live)]
    assert score(*argv) == 0
    with open(out, "ab") as fh:  # what a crashed run could have left after its checkpoint
        fh.write(b"1.0\tCpartial\t10.0.0.1\t1\t10.0.0.2\t2\ttcp\ttiny\tnormal")
    live.write_bytes(data)
    assert score(*argv) == 0
    ref = tmp_path / "ref.log"
    assert score("--all", "--out", str(ref), *models, str(SMALL)) == 0
    assert data_lines(out) == data_lines(ref)


HOSTILE = [
    "a\tb",  # the separator
    "line\nbreak",
    "nul\x00byte",
    "-",
    "(empty)",
    "back\\slash,comma",
    "x" * 70_000,
    "caf\u00e9\u2028\x85",
]


def _hostile_log(tmp_path: Path) -> tuple[Path, list[str]]:
    """A real conn.log whose uid/proto/service/history carry hostile strings.

    Zeek writes such bytes escaped (``\\x09``), so that is how they are put in; one
    line also carries raw non-UTF-8 bytes (which Zeek would never write, a hostile
    file could).
    """
    lines = SMALL.read_bytes().split(b"\n")
    hdr = [ln for ln in lines if ln.startswith(b"#")]
    fields = next(ln for ln in hdr if ln.startswith(b"#fields")).split(b"\t")[1:]
    rows = [ln for ln in lines if ln and not ln.startswith(b"#")]
    ui, hi = fields.index(b"uid"), fields.index(b"history")
    out, uids = [], []
    for i, row in enumerate(rows):
        cols = row.split(b"\t")
        if i < len(HOSTILE):
            raw = HOSTILE[i].encode("utf-8")
            esc = b"".join(b"\\x%02x" % c if c < 0x20 or c == 0x5C or c == 0x7F or c >= 0x80
                           else bytes([c]) for c in raw)
            if HOSTILE[i] in ("-", "(empty)"):  # Zeek escapes a reserved word's first byte
                esc = b"\\x%02x" % raw[0] + raw[1:]
            cols[ui] = esc
            cols[hi] = esc
            uids.append(HOSTILE[i])
        elif i == len(HOSTILE):
            cols[ui] = b"raw\xff\xfebytes"  # not UTF-8: the reader skips the line
        elif i == len(HOSTILE) + 1:
            cols[ui] = b"esc\\xff\\xfe"  # escaped bytes that are not UTF-8
            uids.append("esc\\xff\\xfe")
        else:
            uids.append(cols[ui].decode())
        out.append(b"\t".join(cols))
    p = tmp_path / "hostile.log"
    p.write_bytes(b"\n".join(hdr[:8] + out) + b"\n")
    return p, uids


def test_hostile_strings_are_escaped(tmp_path, models, capsys) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    src, uids = _hostile_log(tmp_path)
    flows = read_table(src)
    assert flows["uid"].tolist() == uids
    out = tmp_path / "zeekml.log"
    assert score("--all", "--out", str(out), *models, str(src)) == 0
    err = capsys.readouterr().err
    assert "skipped: 1 skipped (1 not UTF-8)" in err and "hostile.log:17: not UTF-8" in err
    raw = out.read_bytes()
    raw.decode("utf-8")  # always valid UTF-8
    rows = [ln for ln in raw.split(b"\n") if ln and not ln.startswith(b"#")]
    assert len(rows) == 2 * len(flows)
    assert all(r.count(b"\t") == len(zeek_fields()) - 1 for r in rows)
    assert b"\x00" not in raw and b"\r" not in raw
    df = zat_frame(out)
    assert len(df) == 2 * len(flows)
    col = zeek_fields().index("uid")  # zeekml's own log is not read as flows: unescape here
    back = [unescape(r.decode("utf-8").split("\t")[col]) for r in rows]
    expect = np.repeat(flows["uid"].to_numpy(dtype=object), 2)
    assert back == expect.tolist()  # Zeek's unescaping gives the input back
    for s in HOSTILE:
        assert s in back
    js = tmp_path / "zeekml.json"
    assert score("--all", "--out-format", "json", "--out", str(js), *models, str(src)) == 0
    raw = js.read_bytes()
    assert raw.isascii() and raw.count(b"\n") == 2 * len(flows)
    recs = [json.loads(ln) for ln in raw.splitlines()]
    assert [r["uid"] for r in recs] == expect.tolist()


def test_second_overlapping_run_is_refused(tmp_path, models, capsys) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    state = tmp_path / "state.npz"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from zeekml.runtime.state import StateStore; "
         "s = StateStore(sys.argv[1]); s.acquire(); print('locked', flush=True); time.sleep(60)",
         str(state)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = score("--out", str(tmp_path / "z.log"), "--state", str(state), *models, str(SMALL))
        err = capsys.readouterr().err
        assert rc == 1
        assert "another zeekml run is using this state file" in err and str(holder.pid) in err
        assert not (tmp_path / "z.log").exists()
    finally:
        holder.kill()
        holder.wait()
    assert score("--out", str(tmp_path / "z.log"), "--state", str(state), *models, str(SMALL)) == 0
    assert StateStore(state).load() is not None


def test_usage_errors(tmp_path, models, capsys) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    assert score("--threshold", "c2", *models, str(SMALL)) == 2
    assert score("--allow", "not-an-ip", *models, str(SMALL)) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"thresholds": {"c2": "high"}}')
    assert score("--config", str(bad), *models, str(SMALL)) == 2
    err = capsys.readouterr().err
    assert "threshold" in err and "not-an-ip" in err


def test_threshold_and_allow_list(tmp_path, models) -> None:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    flows = read_table(CAPTURE)
    out = tmp_path / "z.log"
    assert score("--out", str(out), "--suppress", "0", "--threshold", "tiny:c2=0.99",
                 "--threshold", "c2=0.99", *models, str(CAPTURE)) == 0
    assert data_lines(out) == []
    cfg = tmp_path / "policy.json"
    top = flows.loc[flows["conn_state"] == "S0", "orig_h"].value_counts().index[0]
    cfg.write_text(json.dumps({"allow": [top], "suppress": 0}))
    assert score("--out", str(out), "--config", str(cfg), *models, str(CAPTURE)) == 0
    df = zat_frame(out)
    assert top not in set(df["id.orig_h"]) and top not in set(df["id.resp_h"])
    assert len(df) == 2 * int(((flows["conn_state"] == "S0")
                               & (flows["orig_h"] != top) & (flows["resp_h"] != top)).sum())


def test_stdout_output(tmp_path, models, capfd) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    os.chdir(tmp_path)
    assert score("--all", "--out", "-", *models, str(SMALL)) == 0
    out = capfd.readouterr().out
    assert out.startswith("#separator \\x09\n")
    assert len([ln for ln in out.splitlines() if not ln.startswith("#")]) == 2 * len(read_table(SMALL))
    assert not (tmp_path / "zeekml.log").exists()


def test_lost_state_never_truncates_the_log(tmp_path, models) -> None:
    """A stateful run without a checkpoint appends a header block instead of truncating."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    argv = ["--all", "--out", str(out), "--state", str(state), *models, str(SMALL)]
    assert score(*argv) == 0
    first = out.read_bytes()
    state.unlink()
    assert score(*argv) == 0
    both = out.read_bytes()
    assert both.startswith(first) and both.count(b"#fields\t") == 2
    assert len(zat_frame(out)) == len(data_lines(out))  # zat reads across header blocks
    assert len(data_lines(out)) == 2 * 2 * len(read_table(SMALL))


def test_readme_command_with_the_bundled_models(tmp_path, capsys) -> None:
    """The README's main command: the bundled sample, every bundled model, --all; its one
    notice, as the README says, is the scan detector's on 192.168.33.10."""
    from zeekml.models.registry import bundled_models, model_name

    models = bundled_models()
    need(bool(models), "the bundled models in onnx_models/")
    sample = zat_sample()
    os.chdir(tmp_path)
    assert score("--all", "--out", "zeekml.log", str(sample)) == 0
    flows = read_table(sample)
    df = zat_frame(tmp_path / "zeekml.log")
    assert len(df) == len(models) * len(flows)
    assert set(df["model"]) == {model_name(m) for m in models}
    assert set(df["uid"]) == set(flows["uid"])
    err = capsys.readouterr().err
    assert f"scored: {len(flows)} by " in err
    noticed = df[df["notice"].astype(str) == "T"]
    assert noticed[["model", "id.orig_h", "verdict"]].values.tolist() == [
        ["scan", "192.168.33.10", "address_scan"]]
    assert f"rows written: {len(df)}" in err and "notices: 1 (address_scan 1)" in err
    notices = tmp_path / "notices.log"
    assert score("--notice", "--out", str(notices), str(sample)) == 0
    assert {ln.split("\t")[1] for ln in data_lines(notices)} <= set(flows["uid"])


def test_out_to_a_character_device_is_not_an_error(models, tmp_path) -> None:
    """``--out /dev/null`` or an ECS sink to it: fsync cannot apply there and must not fail."""
    need(Path("/dev/null").exists(), "/dev/null")
    sample = zat_sample()
    assert score("--all", *models, "--out", "/dev/null", str(sample)) == 0
    out = tmp_path / "z.log"
    assert score("--all", *models, "--sink", "ecs:/dev/null", "--out", str(out), str(sample)) == 0
    assert len(data_lines(out)) > 0


def test_side_models_get_a_share_of_the_threads() -> None:
    """The first model (run in the calling thread) gets --threads; each model beside it
    THREADS / models, at least 1: that many graph calls at once, each on a real
    onnxruntime session of one thread (asked what it was given)."""
    from zeekml.models.registry import ScorerOptions, load_scorers, side_threads

    def threads(n: int, specs: list[str]) -> list[int]:
        got = []
        for s in load_scorers(specs, ScorerOptions(threads=n)):
            if hasattr(s, "session"):  # the count detectors run no graph: no share
                assert s.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
                got.append(s.chunks.threads)  # type: ignore[attr-defined]
        return got

    assert threads(2, []) == [2, 1]  # the bundled models, the default run
    assert threads(4, []) == [4, 2]
    assert threads(1, []) == [1, 1]
    assert threads(2, ["flow_lm"]) == [2]  # alone, a model keeps every thread
    assert threads(2, ["flow_lm", "amf_lstm"]) == [2, 1]  # order as given: the first is first
    assert side_threads(3, 3) == 1 and side_threads(8, 3) == 2


def test_verdicts_do_not_depend_on_the_batch_size(tmp_path, capsys) -> None:
    """Every verdict of the bundled models on a real capture is the same whatever the
    batch size (so the local engine's larger default batch changes speed, not output):
    windows carry over batch cuts, and a window's scores do not depend on its batch."""
    import argparse

    from zeekml import defaults
    from zeekml.cli.score import batch_rows
    from zeekml.models.registry import bundled_models

    need(bool(bundled_models()), "the bundled models in onnx_models/")
    capture = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
    need(capture.exists(), f"shared capture {capture}")
    outs = {}
    for size in ("default", "512", "3000"):
        out = tmp_path / f"{size}.log"
        extra = () if size == "default" else ("--batch-size", size)
        assert score("--all", *extra, "--out", str(out), str(capture)) == 0
        outs[size] = data_lines(out)
    assert len(outs["default"]) == len(bundled_models()) * len(read_table(capture))
    assert outs["512"] == outs["default"] == outs["3000"]
    # the default depends on the engine: the Spark engine keeps the reading batch
    assert batch_rows(argparse.Namespace(batch_size=None, engine="local")) == defaults.SCORE_BATCH_ROWS
    assert batch_rows(argparse.Namespace(batch_size=None, engine="spark")) == defaults.BATCH_ROWS
    assert batch_rows(argparse.Namespace(batch_size=77, engine="local")) == 77


def test_a_ddos_on_one_server_is_one_notice_per_model(tmp_path) -> None:
    """A real reflected DDoS (StopDDoS ISAKMP, nfcapd through the real nfdump): 3,978
    reflectors hit one victim. The notice is about the victim, the local side of the
    inbound flows: one per model and class, whose ``n`` covers every flagged flow;
    ``--suppress-by orig`` gives one per reflector, the same flows in all."""
    from tests.conftest import need_binary
    from zeekml.models.registry import bundled_models

    need_binary("nfdump")
    need(bool(bundled_models()), "the bundled models in onnx_models/")
    capture = DATA / "nfdump" / "pcap-stopddos-amp-udp-isakmp" / "nfcapd"
    need(capture.is_dir(), f"the capture {capture}")
    got = {}
    for by in ("host", "orig"):
        out = tmp_path / f"{by}.log"
        assert score("--suppress-by", by, "--model", "amf_lstm", "--out", str(out),
                     str(capture)) == 0
        got[by] = zat_frame(out)
    host, orig = got["host"], got["orig"]
    assert len(host) == 1 and set(host["id.resp_h"]) == {"10.10.10.10"}
    assert host["verdict"].tolist() == ["ddos"]
    assert len(orig) > 1000 and orig["id.orig_h"].nunique() == len(orig)
    assert int(host["n"].sum()) == int(orig["n"].sum()) > 3000
