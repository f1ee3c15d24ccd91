"""per_distinct: a string test evaluated once per distinct value gives the per-row answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zeekml.records.addresses import PRIVATE_PREFIXES, is_private
from zeekml.records.distinct import per_distinct


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_same_answer_as_the_per_row_test(dtype: str) -> None:
    rng = np.random.default_rng(0)
    pool = ["10.0.0.1", "192.168.1.9", "FE80::1", "8.8.8.8", "172.16.5.5", "172.32.0.1",
            "", "fd00::7", "::1", "1.2.3.4", "ff02::fb"]
    values = [pool[i] for i in rng.integers(0, len(pool), 5000)]
    col = pd.Series(values, dtype=dtype)
    col[rng.random(5000) < 0.1] = None
    want = col.fillna("").astype(str).str.lower().str.startswith(PRIVATE_PREFIXES).to_numpy(dtype=bool)
    np.testing.assert_array_equal(is_private(col), want)
    lengths = per_distinct(col, lambda s: s.str.len().to_numpy(), -1)
    np.testing.assert_array_equal(lengths, np.where(col.isna(), -1, col.fillna("").str.len()))


def test_empty_and_all_missing_columns() -> None:
    assert per_distinct(pd.Series([], dtype="str"), lambda s: s.str.len().to_numpy(), 0).shape == (0,)
    out = per_distinct(pd.Series([None, None], dtype="str"), lambda s: s.str.len().to_numpy(), 7)
    assert out.tolist() == [7, 7]


def test_a_function_that_drops_values_is_refused() -> None:
    with pytest.raises(ValueError, match="one value per distinct value"):
        per_distinct(pd.Series(["a", "b"]), lambda s: np.zeros(1), 0)
