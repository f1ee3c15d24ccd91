"""The code base stays ``ruff`` clean (the project's lint settings in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import REPO, need


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff")
    need(ruff is not None, "ruff (pip install .[test])")
    r = subprocess.run([ruff, "check", "zeekml", "tests", "tools"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

