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


def test_factorization_is_shared_per_column_and_never_stale() -> None:
    """A column's factorization is reused while its data lives (the scorers' threads test
    the same columns), and a value written into the column is seen at once."""
    from zeekml.records.distinct import _factorized, factorized

    col = pd.Series(["10.0.0.1", "8.8.8.8", None, "10.0.0.1"], dtype="str")
    a_codes, a_values = factorized(col)
    b_codes, b_values = factorized(col)
    assert b_codes is a_codes and b_values is a_values  # one computation
    assert a_codes.tolist() == [0, 1, -1, 0] and a_values.tolist() == ["10.0.0.1", "8.8.8.8"]
    changed = col.copy()
    changed.iloc[1] = "192.168.0.1"
    assert is_private(changed).tolist() == [True, True, False, True]
    assert is_private(col).tolist() == [True, False, False, True]
    size = len(_factorized)
    del col, changed, a_codes, a_values, b_codes, b_values
    import gc

    gc.collect()
    assert len(_factorized) < size  # freed columns leave the cache
    obj = pd.Series(["a", None, "a"], dtype=object)  # not Arrow-backed: not cached
    assert per_distinct(obj, lambda s: s.str.len().to_numpy(), -1).tolist() == [1, -1, 1]
