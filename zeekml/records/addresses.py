"""Address facts the detectors share: which addresses are private (local) ones.

Below ``features/``, ``windows/`` and ``policy/`` (which all ask it): an address test holds
no window and no feature, so it lives with the records it reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml.records.distinct import per_distinct

#: RFC 1918, loopback, link-local (v4 and v6), unique-local IPv6 (fc00::/7)
PRIVATE_PREFIXES: tuple[str, ...] = (
    "10.", "192.168.", "127.", "169.254.", "fc", "fd", "fe80:", "::1",
    *(f"172.{i}." for i in range(16, 32)),
)


def is_private(addr: pd.Series) -> np.ndarray:
    """Vectorized RFC 1918 / ULA / link-local / loopback test on address strings (each
    distinct address tested once); a missing address is not private."""
    return per_distinct(addr, private_values, False).astype(bool)


def private_values(s: pd.Series) -> np.ndarray:
    """The private-address test on each value of a text Series (no missing values)."""
    out: np.ndarray = s.str.lower().str.startswith(PRIVATE_PREFIXES).to_numpy(dtype=bool)
    return out
