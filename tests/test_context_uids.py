"""zeekml.models.context.uid_lists: the context cells every scorer's notices carry, packed
from a fixed-width uid array and a count per row (only the real uids decoded)."""

from __future__ import annotations

import numpy as np
import pytest

from zeekml.models.context import uid_lists


def _reference(names: np.ndarray, have: np.ndarray) -> list[list[str]]:
    out = []
    for row, h in zip(names, have, strict=True):
        cells = row[: max(int(h), 0)]
        out.append([c.decode("utf-8", errors="replace") if isinstance(c, bytes) else str(c)
                    for c in cells])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_a_row_by_row_decoding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 2000, 5
    names = rng.integers(48, 122, (n, k, 18), dtype=np.uint8).view("S18").reshape(n, k)
    have = np.where(rng.random(n) < 0.8, 0, rng.integers(0, k + 1, n))  # mostly empty
    got = uid_lists(names, have)
    assert got.dtype == object and len(got) == n
    assert [list(c) for c in got] == _reference(names, have)
    assert all(type(c) is list for c in got)
    assert len({id(c) for c in got}) == n  # no list shared between rows


def test_edge_cases() -> None:
    names = np.array([[b"Ca", b"Cb"], [b"\xff\xfe", b"Cc"], [b"Cd", b"Ce"]], dtype="S4")
    assert uid_lists(names[:0], np.zeros(0, int)).tolist() == []
    assert uid_lists(names, np.zeros(3, int)).tolist() == [[], [], []]
    assert uid_lists(names, np.array([2, 1, -1])).tolist() == [["Ca", "Cb"], ["\ufffd\ufffd"], []]
    text = np.array([["a", "b"], ["c", "d"]])
    assert uid_lists(text, np.array([1, 2])).tolist() == [["a"], ["c", "d"]]
