"""Misuse is refused clearly (issue 11, items 5, 8, 9, 10): each reproduction as a test.

Real files (captures from ../shared/data, copied into tmp_path when a test must be able
to destroy them), real ``zeekml`` processes where the process matters (pipes, signals,
a redirected stdout), the bundled ONNX models where thresholds are checked against a
model's classes, the tiny ONNX test models elsewhere. Every refusal is checked for its
exit code, for one ``zeekml: error:`` line naming the file or option, and for the input
being left exactly as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, need, need_binary
from tests.test_pipeline import tiny_models  # noqa: F401 - fixture
from zeekml.cli.main import main
from zeekml.errors import FormatError
from zeekml.models.registry import bundled_models
from zeekml.sinks.zeek_ascii import format_header, format_rows

SMALL = DATA / "zeek" / "zat-sample" / "conn.log"
BIG = DATA / "zeek" / "iot23-34-1-mirai" / "conn.log.labeled"

RUNNER = (
    "import sys\n"
    "from zeekml.models import registry\n"
    "registry.BUILTIN_KINDS.setdefault('tiny_linear', 'tests.test_pipeline:TinyScorer')\n"
    "from zeekml.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture()
def models(tiny_models) -> list[str]:  # noqa: F811
    out: list[str] = []
    for m in tiny_models:
        out += ["--model", str(m)]
    return out


@pytest.fixture()
def capture(tmp_path: Path) -> Path:
    """A real conn.log the test may (try to) destroy."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    dst = tmp_path / "conn.log"
    shutil.copyfile(SMALL, dst)
    return dst


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    """A real ``zeekml`` process (tiny test models registered as a plugin kind)."""
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=str(REPO), env=env(),
                          stderr=subprocess.PIPE, timeout=kw.pop("timeout", 300), **kw)


def error_line(err: str) -> str:
    """The one error line; fails when there are several, or a traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("zeekml: error:")]
    assert len(lines) == 1, err
    return lines[0]


def refused(capsys, argv: list[str], code: int, *expect: str) -> str:
    """Run ``main(argv)`` in process: exit ``code``, one error line containing ``expect``."""
    assert main(argv) == code
    line = error_line(capsys.readouterr().err)
    for text in expect:
        assert text in line, line
    return line


def dns_log(path: Path, rows: int = 30) -> Path:
    """A Zeek dns.log as Zeek's ASCII writer writes it, with real flows' ts/uid/endpoints."""
    import pandas as pd

    from zeekml.sources import read_table

    flows = read_table(SMALL).iloc[:rows].reset_index(drop=True)
    fields = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
              "trans_id", "query", "qtype_name", "rcode_name", "AA", "answers"]
    types = ["time", "string", "addr", "port", "addr", "port", "enum", "count", "string",
             "string", "string", "bool", "vector[string]"]
    df = pd.DataFrame({
        "ts": flows["ts"], "uid": flows["uid"], "id.orig_h": flows["orig_h"],
        "id.orig_p": flows["orig_p"], "id.resp_h": flows["resp_h"], "id.resp_p": 53,
        "proto": "udp", "trans_id": range(rows), "query": "example.com", "qtype_name": "A",
        "rcode_name": "NOERROR", "AA": False, "answers": [["93.184.216.34"]] * rows})
    path.write_bytes(format_header("dns", fields, types) + format_rows(df, fields, types))
    return path


# ---------------------------------------------------------------- 5: output onto input


def test_score_refuses_to_write_over_its_input(tmp_path, capture, models, capsys) -> None:
    before = capture.read_bytes()
    refused(capsys, ["score", "--all", *models, "--out", str(capture), str(capture)], 2,
            f"--out {capture}", "is an input")
    refused(capsys, ["score", "--all", *models, "--state", str(tmp_path / "st.npz"),
                     "--out", str(capture), str(capture)], 2, "is an input")
    link = tmp_path / "link.log"
    link.symlink_to(capture)
    hard = tmp_path / "hard.log"
    os.link(capture, hard)
    for out in (link, hard):  # another name, the same file
        refused(capsys, ["score", "--all", *models, "--out", str(out), str(capture)], 2,
                f"the same file as input {capture}")
    refused(capsys, ["score", *models, "--state", str(capture), "--out",
                     str(tmp_path / "z.log"), str(capture)], 2, f"--state {capture}")
    refused(capsys, ["score", *models, "--out", str(tmp_path / "z.log"), "--sink",
                     f"ecs:{capture}", str(capture)], 2, "--sink ecs")
    refused(capsys, ["score", *models, "--state", str(tmp_path / "x"), "--out",
                     str(tmp_path / "x"), str(capture)], 2, "are the same file")
    assert capture.read_bytes() == before
    assert not (tmp_path / "z.log").exists() and not (tmp_path / "x").exists()


def test_a_directory_input_holding_the_output_is_refused(tmp_path, capture, models,
                                                         capsys) -> None:
    out = tmp_path / "conn.zeekml.log"  # matches conn.* once it exists
    shutil.copyfile(capture, out)
    before = out.read_bytes()
    refused(capsys, ["score", *models, "--out", str(out), str(tmp_path)], 2, str(out))
    assert out.read_bytes() == before


def test_stdout_redirected_onto_the_input_is_refused(capture, models) -> None:
    before = capture.read_bytes()
    with open(capture, "ab") as out:  # zeekml score --all --out - conn.log >> conn.log
        proc = run("score", "--all", *models, "--out", "-", str(capture), stdout=out)
    assert proc.returncode == 2
    assert "--out standard output is an input" in error_line(proc.stderr.decode())
    with open(capture, "rb") as inp:  # zeekml score --out conn.log - < conn.log
        proc = run("score", "--all", *models, "--out", str(capture), "-", stdin=inp)
    assert proc.returncode == 2 and "input standard input" in error_line(proc.stderr.decode())
    assert capture.read_bytes() == before


def test_convert_refuses_to_replace_its_input(tmp_path, capture, capsys) -> None:
    before = capture.read_bytes()
    refused(capsys, ["convert", str(capture), "--out", str(capture)], 2, str(capture),
            "is an input")
    refused(capsys, ["convert", str(tmp_path), "--to", "csv", "--out", str(capture)], 2,
            "is an input")
    assert capture.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zeekml-convert-")]
    assert main(["convert", str(capture), "--out", str(tmp_path / "copy.log")]) == 0


def test_tail_refuses_output_onto_the_followed_file(tmp_path, capture, capsys) -> None:
    before = capture.read_bytes()
    refused(capsys, ["tail", "--out", str(capture), str(capture)], 2, "is an input")
    future = tmp_path / "later.log"  # not there yet: compared by path
    refused(capsys, ["tail", "--out", str(future), str(future)], 2, "is an input")
    assert capture.read_bytes() == before and not future.exists()


def test_spark_out_directory_holding_an_input_is_refused(tmp_path, capture, capsys) -> None:
    """Spark replaces --out as a whole: refused before any session starts (no pyspark)."""
    before = capture.read_bytes()
    refused(capsys, ["score", "--engine", "spark", "--out", str(tmp_path), str(capture)], 2,
            f"--out {tmp_path} holds the input")
    assert capture.read_bytes() == before


# ---------------------------------------------------------------- 8: silent acceptance


def _bundled() -> list[str]:
    need(len(bundled_models()) >= 2, "the bundled models amf_lstm and flow_lm")
    return []


@pytest.mark.parametrize(("spec", "expect"), [
    ("port-scan=0.5", "no loaded model reports a class 'port-scan'"),
    ("scan:port_scan=40", "outside the score range of scan [0, 32]"),
    ("scan:portscan=5", "model scan has no class 'portscan'"),
    ("amf:portscan=0.5", "no model named 'amf'"),
    ("nosuchmodel:c2=0.5", "no model named 'nosuchmodel'"),
    ("amf_lstm:anomaly=0.5", "model amf_lstm has no class 'anomaly'"),
    ("normal=0.5", "no loaded model reports a class 'normal'"),
    ("c2=1.5", "outside the score range of amf_lstm [0, 1]"),
    ("anomaly=-5", "outside the score range of flow_lm [0, inf)"),
    ("flow_lm:anomaly=-0.1", "outside the score range of flow_lm"),
])
def test_bad_thresholds_are_usage_errors(tmp_path, capture, capsys, spec, expect) -> None:
    _bundled()
    out = tmp_path / "z.log"
    line = refused(capsys, ["score", "--threshold", spec, "--out", str(out), str(capture)],
                   2, "--threshold " + spec, expect)
    if "class" in expect and spec.startswith("scan:"):  # the model's own classes
        assert "address_scan, port_scan" in line
    elif "class" in expect:  # the message lists what is valid
        assert "portscan" in line and "anomaly" in line
    assert not out.exists()


def test_bad_config_thresholds_name_the_config_file(tmp_path, capture, capsys) -> None:
    _bundled()
    cfg = tmp_path / "policy.json"
    cfg.write_text('{"thresholds": {"port-scan": 0.5}}')
    refused(capsys, ["score", "--config", str(cfg), "--out", str(tmp_path / "z.log"),
                     str(capture)], 2, f"{cfg}: threshold port-scan", "portscan")
    cfg.write_text('{"thresholds": {"amf_lstm:c2": 2}}')
    refused(capsys, ["score", "--config", str(cfg), "--out", str(tmp_path / "z.log"),
                     str(capture)], 2, "outside the score range of amf_lstm")


def _verdict_counts(path: Path) -> dict[str, int]:
    lines = [ln.split("\t") for ln in path.read_text().splitlines()]
    fields = next(ln for ln in lines if ln[0] == "#fields")[1:]
    col = fields.index("verdict")
    counts: dict[str, int] = {}
    for ln in lines:
        if not ln[0].startswith("#"):
            counts[ln[col]] = counts.get(ln[col], 0) + 1
    return counts


def test_threshold_names_match_case_insensitively_and_take_effect(tmp_path, capsys) -> None:
    """``PortScan`` is ``portscan`` (documented), and the override really changes notices."""
    _bundled()
    need(BIG.is_file(), f"the capture {BIG}")
    runs = {}
    for name, extra in (("default", []), ("exact", ["--threshold", "portscan=0.05"]),
                        ("cased", ["--threshold", "PortScan=0.05"]),
                        ("model", ["--threshold", "AMF_LSTM:PORTSCAN=0.05"])):
        out = tmp_path / f"{name}.log"
        assert main(["-q", "score", "--suppress", "0", *extra, "--out", str(out),
                     str(BIG)]) == 0
        runs[name] = _verdict_counts(out)
    assert runs["exact"] == runs["cased"] == runs["model"]
    assert runs["exact"].get("portscan", 0) > runs["default"].get("portscan", 0)
    assert main(["-q", "score", "--threshold", "c2=inf", "--out", str(tmp_path / "inf.log"),
                 str(SMALL)]) == 0  # inf: never a notice for this class
    capsys.readouterr()


def test_plugin_scorers_without_declarations_are_not_checked(tmp_path, capture, models) -> None:
    """The tiny test scorer declares no notice_classes/score_range: its keys pass as given."""
    out = tmp_path / "z.log"
    assert main(["-q", "score", *models, "--threshold", "anything=123", "--threshold",
                 "tiny:c2=-4", "--out", str(out), str(capture)]) == 0
    assert main(["-q", "score", *models, "--threshold", "nosuchmodel:c2=1", "--out", str(out),
                 str(capture)]) == 2  # model names are always known


def test_a_dns_log_is_refused_by_every_command(tmp_path, models, capsys) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    dns = dns_log(tmp_path / "dns.log")
    out = tmp_path / "z.log"
    for argv in (["score", *models, "--out", str(out)], ["summary"],
                 ["convert", "--out", str(tmp_path / "c.log")],
                 ["eval", "--model", "amf_lstm", "--data"]):
        refused(capsys, [*argv, str(dns)], 1, str(dns), "a Zeek dns log (#path dns)",
                "not a conn log")
    js = tmp_path / "dns.json"
    js.write_text('{"_path":"dns","ts":1379288667.7,"uid":"CoyZrY2g74UvMMgp4a",'
                  '"id.orig_h":"192.168.33.10","id.orig_p":1032,"id.resp_h":"8.8.8.8",'
                  '"id.resp_p":53,"proto":"udp","query":"example.com"}\n')
    refused(capsys, ["summary", str(js)], 1, str(js), "#path dns")


def test_a_damaged_path_in_one_record_does_not_refuse_a_conn_log(tmp_path) -> None:
    src = DATA / "zeek" / "rita-json-all-fields" / "conn.log"
    need(src.is_file(), f"the capture {src}")
    from zeekml.sources import SkipLog, read_table

    lines = src.read_bytes().split(b"\n")
    assert all(b'"_path": "conn"' in ln for ln in lines if ln.strip())
    lines[2] = lines[2].replace(b'"_path": "conn"', b'"_path": "cxnn"')
    damaged = tmp_path / "conn.log"
    damaged.write_bytes(b"\n".join(lines))
    assert len(read_table(damaged, skips=SkipLog(strict=True))) == len(read_table(src))
    other = tmp_path / "other.log"  # the same records, all of another log: refused
    other.write_bytes(src.read_bytes().replace(b'"_path": "conn"', b'"_path": "weird"'))
    with pytest.raises(FormatError, match=r"a Zeek weird log \(#path weird\)"):
        read_table(other)


def test_zeekmls_own_outputs_are_refused_as_input(tmp_path, capture, models, capsys) -> None:
    outs = {"zeekml.log": [], "zeekml.json": ["--out-format", "json"],
            "notice.log": ["--notice"], "notice.json": ["--notice", "--out-format", "json"]}
    for name, extra in outs.items():
        assert main(["-q", "score", "--all", *models, *extra, "--out", str(tmp_path / name),
                     str(capture)]) == 0
    ecs = tmp_path / "alerts.json"
    assert main(["-q", "score", "--all", "--suppress", "0", *models, "--out", "/dev/null",
                 "--sink", f"ecs:{ecs}?only=all", str(capture)]) == 0
    for name in [*outs, "alerts.json"]:
        path = tmp_path / name
        assert path.stat().st_size > 0
        line = refused(capsys, ["score", *models, "--out", str(tmp_path / "again.log"),
                                str(path)], 1, "not a conn log")
        assert re.search(r"zeekml's own|notice", line), line
        if name != "alerts.json":  # (score's sniffing of an unknown JSON: integrator's part)
            assert str(path) in line
        for cmd in (["summary"], ["convert", "--out", str(tmp_path / "c.log")]):
            refused(capsys, [*cmd, str(path)], 1, str(path), "not a conn log")
    assert not (tmp_path / "again.log").exists() and not (tmp_path / "c.log").exists()


def test_a_directory_without_logs_is_an_error(tmp_path, models, capsys) -> None:
    empty = tmp_path / "nologs"
    empty.mkdir()
    (empty / "README").write_text("nothing here")
    refused(capsys, ["score", *models, "--out", str(tmp_path / "z.log"), str(empty)], 1,
            str(empty), "no conn logs or nfcapd files")
    refused(capsys, ["summary", str(empty)], 1, str(empty))


def test_tail_in_a_missing_directory_is_an_error(tmp_path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "conn.log"
    t0 = time.monotonic()
    proc = run("tail", str(missing), timeout=120)
    assert proc.returncode == 1 and time.monotonic() - t0 < 60
    assert str(missing.parent) in error_line(proc.stderr.decode())


def test_tail_says_it_waits_for_a_missing_file(tmp_path, models) -> None:
    """At the default log level, then follows the file once it appears."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    path = tmp_path / "conn.log"
    out = tmp_path / "z.log"
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, "tail", "--all", *models,
                                 "--poll-interval", "0.05", "--max-latency", "0.05",
                                 "--out", str(out), str(path)],
                                cwd=str(REPO), env=env(), stderr=fh)
        try:
            deadline = time.monotonic() + 60
            while "waiting for it" not in err.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
            assert f"{path}: does not exist yet" in err.read_text()
            shutil.copyfile(SMALL, path)
            deadline = time.monotonic() + 60
            while not out.exists() or not [ln for ln in out.read_text().splitlines()
                                            if ln and not ln.startswith("#")]:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
    assert rc == 0


def test_tail_refuses_score_only_options(tmp_path, capsys) -> None:
    log = tmp_path / "conn.log"
    refused(capsys, ["tail", "--engine", "spark", str(log)], 2, "--engine",
            "zeekml score --engine spark")
    refused(capsys, ["tail", "--spark-master", "local[2]", str(log)], 2, "--spark-master")


def test_tail_of_a_dns_log_stops_naming_it(tmp_path, models) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    dns = dns_log(tmp_path / "dns.log")
    proc = run("tail", *models, "--poll-interval", "0.05", "--out", str(tmp_path / "z.log"),
               str(dns), timeout=120)
    assert proc.returncode == 1
    assert f"{dns}: a Zeek dns log" in error_line(proc.stderr.decode())


# ---------------------------------------------------------------- 9: name every file


def test_convert_into_an_unwritable_folder_names_the_target(tmp_path, capture, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "out.log"
    if os.geteuid() == 0:  # root writes through permission bits; an immutable folder stops it
        chattr = need_binary("chattr")
        locked = subprocess.run([chattr, "+i", str(folder)], capture_output=True)
        need(locked.returncode == 0, "chattr +i (a file system with the immutable flag)")
    else:
        folder.chmod(0o555)
    try:
        line = refused(capsys, ["convert", str(capture), "--out", str(target)], 1,
                       f"{target}: cannot create")
        assert ".zeekml-convert-" not in line
    finally:
        if os.geteuid() == 0:
            subprocess.run([chattr, "-i", str(folder)], check=True)
        folder.chmod(0o755)
    file_parent = tmp_path / "plain"
    file_parent.write_text("")
    refused(capsys, ["convert", str(capture), "--out", str(file_parent / "out.log")], 1,
            f"{file_parent / 'out.log'}: cannot create")


def test_out_dev_full_names_the_file(capture, models, capsys) -> None:
    need(Path("/dev/full").exists(), "/dev/full")
    refused(capsys, ["convert", str(capture), "--out", "/dev/full"], 1,
            "/dev/full: write failed: No space left on device")
    refused(capsys, ["score", "--all", *models, "--out", "/dev/full", str(capture)], 1,
            "/dev/full")
    with open("/dev/full", "wb") as full:
        proc = run("convert", str(capture), stdout=full)
    assert proc.returncode == 1
    assert "<stdout>: write failed" in error_line(proc.stderr.decode())


def test_spark_engine_on_a_bad_file_prints_one_line(tmp_path) -> None:
    """A new Spark JVM: its warnings, log4j lines and worker tracebacks stay off stderr."""
    from tests.conftest import need_module

    need_module("pyspark")
    need(len(bundled_models()) >= 1, "a bundled model")
    bad = tmp_path / "random.bin"
    bad.write_bytes(bytes(range(256)) * 20)
    proc = run("score", "--engine", "spark", "--spark-master", "local[1]", "--out",
               str(tmp_path / "out"), str(bad), timeout=600)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    line = error_line(err)
    assert str(bad) in line and "unrecognised input format" in line
    rest = [ln for ln in err.splitlines()
            if ln.strip() and ln != line and not ln.startswith("zeekml: WARNING: source plugin")]
    assert rest == [], err  # (a broken plugin someone installed may warn: not Spark's noise)
    assert not list(tmp_path.glob("out/part-*"))


# ---------------------------------------------------------------- 10: small ones


def _convert_mode(src: Path, target: Path, umask: int) -> int:
    proc = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "convert", str(src),
                           "--out", str(target)], cwd=str(REPO), env=env(),
                          preexec_fn=lambda: os.umask(umask), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return stat.S_IMODE(target.stat().st_mode)


def test_convert_output_mode_follows_the_umask(tmp_path, capture) -> None:
    assert _convert_mode(capture, tmp_path / "a.log", 0o022) == 0o644
    assert _convert_mode(capture, tmp_path / "b.log", 0o027) == 0o640
    kept = tmp_path / "c.log"
    kept.write_text("old")
    kept.chmod(0o600)  # replacing a file keeps its mode, as open() truncating it would
    assert _convert_mode(capture, kept, 0o022) == 0o600
    assert kept.read_text().startswith("#separator")


def _hostile_log(tmp_path: Path) -> Path:
    """A real capture with a history and a uid holding bytes that are not UTF-8."""
    lines = SMALL.read_text().splitlines()
    fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    first = next(i for i, ln in enumerate(lines) if not ln.startswith("#"))
    row = lines[first].split("\t")
    row[fields.index("history")] = "Sh\\xffAD"
    row[fields.index("uid")] = "Cab\\xfe\\x09cd"
    row[fields.index("service")] = "\\x5cxff"  # the four characters \xff
    lines[first] = "\t".join(row)
    path = tmp_path / "hostile.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_escapes_round_trip_through_convert_and_score(tmp_path, models) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    src = _hostile_log(tmp_path)
    conv = tmp_path / "conv.log"
    assert main(["convert", str(src), "--out", str(conv)]) == 0
    text = conv.read_text()
    assert "\tSh\\xffAD\t" in text and "Sh\\x5cxffAD" not in text
    assert "\tCab\\xfe\\x09cd\t" in text and "\t\\x5cxff\t" in text
    again = tmp_path / "again.log"  # and once more: a fixed point
    assert main(["convert", str(conv), "--out", str(again)]) == 0
    strip = re.compile(r"^#(open|close).*\n", re.M)
    assert strip.sub("", again.read_text()) == strip.sub("", text)
    out = tmp_path / "z.log"
    assert main(["-q", "score", "--all", *models, "--out", str(out), str(src)]) == 0
    rows = [ln.split("\t") for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert rows[0][1] == "Cab\\xfe\\x09cd" and "\\x5c" not in out.read_text()


def test_broken_pipe_exits_0_like_convert(tmp_path, models) -> None:
    """``zeekml score --all --out - big | head -1``: a real pipe whose reader leaves."""
    need(BIG.is_file(), f"the capture {BIG}")
    for argv in (["score", "--all", *models, "--out", "-", str(BIG)],
                 ["score", "--all", *models, "--out-format", "json", "--out", "-", str(BIG)],
                 ["convert", str(BIG)]):
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, *argv], cwd=str(REPO),
                                env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline()  # head -1
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(120) == 0, err
        assert "Broken pipe" not in err and "Traceback" not in err and "error" not in err


def test_readme_state_paths_match_the_help() -> None:
    """The docs' cron and tail examples name state files as ``--help`` does (``.npz``)."""
    readme = "".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    from zeekml.cli import score, tail

    paths = re.findall(r"--state ([\w~./-]*[/.][\w./-]+)", readme + score.EXAMPLES + tail.EXAMPLES)
    assert len(paths) >= 5
    assert all(p.endswith(".npz") for p in paths), paths
