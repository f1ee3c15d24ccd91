"""Text arrays for state files: UTF-8 bytes plus offsets, not numpy's fixed-width UTF-32.

A numpy ``str`` array stores every value in 4 bytes per character of the longest value:
the flow LM's conversation keys (``a|b``, up to 79 characters for two IPv6 addresses) took
256 bytes each, half of a cron run's state file. Here the values are one ``uint8`` array of
their UTF-8 bytes and an ``int64`` array of ``n + 1`` offsets, converted by pyarrow in C++
both ways. Decoding validates everything (offsets, UTF-8): a crafted state file gives a
:class:`~zeekml.errors.StateError`, never a crash.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from zeekml.errors import StateError


def encode_texts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8, offsets int64 [n + 1])`` of a 1-D array of ``str`` values."""
    values = np.asarray(values, dtype=object)
    try:
        arr = pa.array(values, type=pa.large_string())
    except (UnicodeEncodeError, pa.ArrowException):
        # a value that is not encodable text (a lone surrogate): stored with the offending
        # code points replaced, so at worst that one key starts afresh after a reload
        arr = pa.array([str(v).encode("utf-8", "replace").decode("utf-8") for v in values],
                       type=pa.large_string())
    n = len(arr)
    if n == 0 or arr.buffers()[2] is None:
        return np.zeros(0, dtype=np.uint8), np.zeros(n + 1, dtype=np.int64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.copy(), (offsets - offsets[0]).astype(np.int64)


def decode_texts(data: np.ndarray, offsets: np.ndarray, what: str) -> np.ndarray:
    """The object array of ``str`` that :func:`encode_texts` encoded; ``what`` names the
    array in the error a malformed pair raises."""
    data = np.asarray(data)
    offsets = np.asarray(offsets)
    if (data.ndim != 1 or data.dtype != np.uint8 or offsets.ndim != 1
            or offsets.dtype.kind not in "iu" or len(offsets) < 1):
        raise StateError(f"{what}: text array has a wrong shape or type")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 0).any():
        raise StateError(f"{what}: text offsets are out of range")
    arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                           pa.py_buffer(np.ascontiguousarray(data)))
    try:
        arr.validate(full=True)  # UTF-8 of every value
    except pa.ArrowInvalid as exc:
        raise StateError(f"{what}: text is not valid UTF-8") from exc
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
