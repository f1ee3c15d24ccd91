"""Shared fixtures: where the real captures are, and how to need a real component.

A test that needs a real component (the nfdump binary, rsyslogd, Spark, torch) calls
:func:`need`. Locally a missing component skips with a clear reason; under CI
(``CI=true``) it fails, because ``.ci/run`` installs every component.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
DATA = SHARED / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests draw the same examples on every CI run (a red CI is then reproducible);
# locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")


def need(ok: bool, what: str) -> None:
    """Skip (locally) or fail (under CI) when a real component is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required component missing under CI: {what}")
    pytest.skip(f"needs {what}")


def need_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    need(path is not None, f"the {name!r} binary (apt-get install {name})")
    return str(path)


def need_zeek_cut() -> str:
    """Zeek's ``zeek-cut`` (or ``bro-cut``, its name in Debian's bro-aux package)."""
    path = shutil.which("zeek-cut") or shutil.which("bro-cut")
    need(path is not None, "zeek-cut (apt-get install bro-aux provides it as bro-cut)")
    return str(path)


def need_module(name: str) -> None:
    import importlib.util

    need(importlib.util.find_spec(name) is not None, f"the Python package {name!r}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    need(DATA.is_dir(), f"the shared captures at {DATA}")
    return DATA


def changed_card(tmp_path: Path, card: Path, changes: dict, filename: str | None = None) -> Path:
    """A copy of ``card`` in ``tmp_path`` with ``changes`` applied (a key whose value is
    None is removed): hostile and broken cards for the tests that must refuse them."""
    data = json.loads(card.read_text(encoding="utf-8"))
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path = tmp_path / (filename or card.name)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
