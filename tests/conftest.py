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
#: zat's sample conn.log (360 real flows, MIT): zeekml ships a byte-for-byte copy as the
#: README's bundled sample (zeekml/data/sample_conn.log, made by tools/make_sample.py);
#: tests read it here, where the shared data keeps it (:func:`zat_sample`)
ZAT_SAMPLE = DATA / "zeek" / "zat-sample" / "conn.log"

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


def zat_sample() -> Path:
    """:data:`ZAT_SAMPLE`, skipping (locally) or failing (under CI) when it is missing."""
    need(ZAT_SAMPLE.is_file(), f"zat's sample conn.log at {ZAT_SAMPLE} (shared data)")
    return ZAT_SAMPLE


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


#: the header of a labeled Zeek TSV conn log (Stratosphere's layout: ``label`` and
#: ``detailedlabel`` after the counters), for ``zeekml eval`` tests that write their rows
LABELED_CONN_HEAD = [
    "#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
    "#path\tconn", "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto"
    "\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\thistory\torig_pkts"
    "\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\tlabel\tdetailedlabel",
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount"
    "\tcount\tstring\tstring\tcount\tcount\tcount\tcount\tstring\tstring"]


def score_json(tmp_path: Path, model: str, data: Path, *extra: str):  # -> pd.DataFrame
    """Every verdict of ``zeekml score --model MODEL --all`` on ``data``, read back from
    its JSON output."""
    import pandas as pd

    from zeekml.cli.main import main

    out = tmp_path / "v.json"
    assert main(["score", "--model", model, "--all", "--out-format", "json",
                 "--out", str(out), *extra, str(data)]) == 0
    return pd.read_json(out, lines=True)


def eval_rows(tmp_path: Path, capsys, model: str, rows: list[str]) -> dict:
    """``zeekml eval --model MODEL --json`` on a labeled conn log of ``rows`` (lines in the
    :data:`LABELED_CONN_HEAD` layout): its JSON report."""
    from zeekml.cli.main import main

    path = tmp_path / "conn.log.labeled"
    path.write_text("\n".join(LABELED_CONN_HEAD + rows) + "\n", encoding="utf-8")
    assert main(["eval", "--model", model, "--data", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def scores_in_cuts(scorer, flows, cuts: int | None = None):  # -> np.ndarray
    """A scorer's scores of ``flows`` in one call, or in consecutive calls of ``cuts`` rows."""
    import numpy as np

    if cuts is None:
        return scorer.score(flows).score
    return np.concatenate([scorer.score(flows.iloc[lo:lo + cuts].reset_index(drop=True)).score
                           for lo in range(0, len(flows), cuts)])


def assert_cuts_and_state_keep_scores(make_scorer, flows, whole) -> None:
    """Scoring ``flows`` in calls of 1, 97 and 1,000 rows, or in two runs with the first
    one's state saved and loaded into a fresh scorer, gives the scores ``whole``."""
    import numpy as np

    for cut in (1, 97, 1000):
        np.testing.assert_array_equal(scores_in_cuts(make_scorer(), flows, cut), whole)
    first = make_scorer()
    head = first.score(flows.iloc[:1700].reset_index(drop=True)).score
    state = {k: np.array(v) for k, v in first.state_dict().items()}
    second = make_scorer()
    second.load_state_dict(state)
    tail = second.score(flows.iloc[1700:].reset_index(drop=True)).score
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
