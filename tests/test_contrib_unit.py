"""contrib/zeekml-tail.service: systemd accepts it and zeekml accepts its command line."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, need_binary

from zeekml.cli.main import build_parser
from zeekml.runtime.metrics import parse_listen

UNIT = REPO / "contrib" / "zeekml-tail.service"


def unit_settings(text: str) -> dict[str, dict[str, str]]:
    """``[Section] Key=Value`` with backslash continuations joined (systemd's syntax)."""
    text = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section][key.strip()] = value.strip()
    return out


def test_unit_restarts_on_failure_and_handles_signals() -> None:
    unit = unit_settings(UNIT.read_text())
    svc = unit["Service"]
    assert svc["Type"] == "simple"
    assert svc["Restart"] == "on-failure"
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "StartLimitBurst" in unit["Unit"]  # a [Unit] key, or systemd ignores it


def test_unit_command_line_is_valid_for_zeekml() -> None:
    svc = unit_settings(UNIT.read_text())["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert Path(argv[0]).name == "zeekml"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "tail"
    assert parse_listen(args.metrics)[0] == "127.0.0.1"  # loopback: no auth on /metrics
    writable = svc["ReadWritePaths"].split()
    # ProtectSystem=strict: the output's and the state's directories must be writable
    assert str(Path(args.out).parent) in writable
    assert str(Path(args.state).parent) in writable
    assert svc["StateDirectory"] == Path(args.state).parent.name


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = need_binary("systemd-analyze")
    zeekml = shutil.which("zeekml") or sys.executable  # any executable for ExecStart
    unit = tmp_path / "zeekml-tail.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/zeekml", zeekml))
    run = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Unknown key" not in run.stderr, run.stderr
