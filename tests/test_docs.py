"""The documentation runs: docs/api.md's examples are doctests, links resolve.

The Spark half of docs/api.md runs in tests/test_spark.py (it needs the session).
"""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api.md"
SPARK_HEADING = "## Scoring on Spark"


def run_doctests(text: str, name: str, globs: dict[str, object]) -> doctest.TestResults:
    """Run the ``>>>`` examples of a Markdown text from the repository root."""
    test = doctest.DocTestParser().get_doctest(text, globs, name, str(API), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    here = os.getcwd()
    os.chdir(REPO)
    try:
        runner.run(test)
    finally:
        os.chdir(here)
    return runner.summarize(verbose=False)


def api_sections() -> tuple[str, str]:
    local, spark = API.read_text().split(SPARK_HEADING)
    return local, spark


def test_api_page_local_examples_run() -> None:
    local, _ = api_sections()
    result = run_doctests(local, "docs/api.md (local)", {})
    assert result.attempted >= 20
    assert result.failed == 0, "docs/api.md examples failed (see the report above)"


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "docs").glob("*.md")) + ["README"])
def test_relative_links_resolve(page: str) -> None:
    path = REPO / "README.md" if page == "README" else REPO / "docs" / page
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_readme_is_short_and_links_every_doc_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    for page in (REPO / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_the_bundled_sample_is_zats_conn_log_byte_for_byte() -> None:
    """The README's first command scores ``zeekml/data/sample_conn.log``, the one data file
    zeekml ships: zat's MIT-licensed sample (its notice beside it), copied by
    ``tools/make_sample.py``. The tests read it from the shared data; this keeps the
    shipped copy exactly that file."""
    from conftest import zat_sample

    shipped = REPO / "zeekml" / "data" / "sample_conn.log"
    assert shipped.read_bytes() == zat_sample().read_bytes()
    assert "MIT License" in (shipped.parent / "sample_conn.log.LICENSE").read_text()
