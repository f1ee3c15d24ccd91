"""The whole pipeline pinned: verdicts on a few shared captures equal tests/golden/*.

A reader, feature, window, model or policy change that moves any verdict fails here; when
the change is intended, ``python tools/make_golden.py`` rewrites the files and the diff of
tests/golden/ shows what moved. Scores are compared to 4 decimals with a tolerance of
2e-4 (onnxruntime's kernels differ in the last bits between CPUs); a decision may differ
only where the score is within that tolerance of its threshold.
"""

from __future__ import annotations

import sys

import pytest
from conftest import REPO, need, need_binary

sys.path.insert(0, str(REPO / "tools"))
import make_golden

TOL = 2e-4
S, T = make_golden.FIELDS.index("score"), make_golden.FIELDS.index("threshold")
DECIDED = [make_golden.FIELDS.index(f) for f in ("candidate", "verdict", "decision", "alt", "n")]


def _near_threshold(row: list[str]) -> bool:
    if "-" in (row[S], row[T]):
        return False
    return abs(float(row[S]) - float(row[T])) <= TOL


@pytest.mark.parametrize("name", sorted(make_golden.CAPTURES))
def test_verdicts_equal_golden(name: str) -> None:
    src = make_golden.CAPTURES[name]
    need(src.exists(), f"the capture {src}")
    if src.is_dir():
        need_binary("nfdump")
    golden_path = make_golden.GOLDEN / f"{name}.tsv"
    assert golden_path.exists(), f"{golden_path} missing: run python tools/make_golden.py {name}"
    want = make_golden.read(golden_path)
    got = make_golden.verdict_table(src)
    assert len(got) == len(want), f"{name}: {len(got)} rows, golden {len(want)}"
    bad = []
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g[:2] != w[:2]:
            bad.append(f"row {i}: flow/model {g[:2]} != golden {w[:2]}")
            continue
        for j in (S, T):
            if (g[j] == "-") != (w[j] == "-") or (g[j] != "-" and abs(float(g[j]) - float(w[j])) > TOL):
                bad.append(f"row {i} {g[:2]}: {make_golden.FIELDS[j]} {g[j]} != golden {w[j]}")
        if any(g[j] != w[j] for j in DECIDED) and not (_near_threshold(g) or _near_threshold(w)):
            bad.append(f"row {i} {g[:2]}: {g} != golden {w}")
    assert not bad, (f"{name}: {len(bad)} differences (intended? python tools/make_golden.py "
                     f"{name}):\n" + "\n".join(bad[:20]))
