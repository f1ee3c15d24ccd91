"""The zkg package in zeek/: Zeek's own parser and formatter accept every script.

Zeek itself cannot be installed here, so the scripts are checked with zeekscript
(Zeek's tree-sitter parser and ``zeek-format``), and their tables are checked
against zeekml's own definitions so the package and zeekml.log cannot drift apart.
"""

from __future__ import annotations

import configparser
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, need, need_module

from zeekml.records.labels import CLASSES, NORMAL
from zeekml.records.verdicts import zeek_fields
from zeekml.sinks.notice_log import note_name

PACKAGE = REPO / "zeek"
SCRIPTS = sorted((PACKAGE / "scripts").glob("*.zeek"))


@pytest.fixture(scope="module")
def zeekscript():
    need_module("zeekscript")
    import zeekscript

    return zeekscript


def test_package_layout() -> None:
    meta = configparser.ConfigParser()
    meta.read(PACKAGE / "zkg.meta")
    assert meta.has_section("package")
    assert meta["package"]["script_dir"] == "scripts"
    assert meta["package"]["description"].strip()
    assert (PACKAGE / "scripts" / "__load__.zeek").is_file()
    assert (PACKAGE / "README.md").is_file()
    assert "@load ./main" in (PACKAGE / "scripts" / "__load__.zeek").read_text()


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_without_errors(zeekscript, path: Path) -> None:
    script = zeekscript.Script(path)
    assert script.parse(), script.get_error()
    assert not script.has_error(), script.get_error()


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_zeek_formatted(zeekscript, path: Path) -> None:
    script = zeekscript.Script(path)
    assert script.parse()
    out = io.BytesIO()
    script.format(out)
    assert out.getvalue().decode() == path.read_text(), f"run: zeek-format -i {path}"


def test_command_line_tools_agree() -> None:
    parse, fmt = shutil.which("zeek-script"), shutil.which("zeek-format")
    need(parse is not None and fmt is not None, "zeekscript's zeek-script and zeek-format")
    for path in SCRIPTS:
        res = subprocess.run([parse, "parse", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "ERROR" not in res.stdout
        res = subprocess.run([fmt, str(path)], capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout == path.read_text()


def test_broken_script_is_caught(zeekscript) -> None:
    broken = (PACKAGE / "scripts" / "main.zeek").read_text().replace("return Other;", "return ;;(")
    script = zeekscript.Script(io.BytesIO(broken.encode()))
    script.parse()
    assert script.has_error()


def _main() -> str:
    return (PACKAGE / "scripts" / "main.zeek").read_text()


def test_preset_columns_follow_zeekml_log() -> None:
    """The column order a mid-file follower assumes is zeekml.log's actual order."""
    block = re.search(r"global field_index: table\[string\] of count = \{(.*?)\};", _main(), re.S)
    assert block
    preset = {name: int(i) for name, i in re.findall(r'\["([^"]+)"\] = (\d+)', block.group(1))}
    assert preset == {name: i for i, name in enumerate(zeek_fields())}
    for name in ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
                 "model", "verdict", "score", "threshold", "notice", "n"):
        assert f'"{name}"' in _main()


def test_every_class_has_a_notice_type() -> None:
    text = _main()
    enum = re.search(r"redef enum Notice::Type \+= \{(.*?)\};", text, re.S)
    assert enum
    declared = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*),\s*$", enum.group(1), re.M))
    table = re.search(r"const class_notes: table\[string\] of Notice::Type = \{(.*?)\}", text, re.S)
    assert table
    mapping = dict(re.findall(r'\["([a-z0-9]+)"\] = ([A-Za-z0-9_]+)', table.group(1)))
    assert set(mapping.values()) <= declared and "Other" in declared
    for cls in [c for c in CLASSES if c != NORMAL] + ["anomaly"]:
        key = re.sub(r"[^a-z0-9]", "", cls.lower())  # the script's normalisation
        assert key in mapping, cls
        # the same notice name zeekml's own notice.log writes for this class
        assert f"ZeekML::{mapping[key]}" == note_name(cls), cls


def test_follows_with_the_raw_reader_in_stream_mode() -> None:
    text = _main()
    assert "Input::READER_RAW" in text and "Input::STREAM" in text
    assert "Input::add_event" in text and "NOTICE(" in text
    for field in ("$note=", "$msg=", "$id=", "$uid=", "$identifier="):
        assert field in text
