"""Conversations for the flow language model: each pair of hosts' last flows, in log order.

Key: the *unordered* pair of addresses ``{orig_h, resp_h}``. Neither ports nor
direction are part of the key: a client's DNS, TLS and HTTP flows to one server, and
the server's connections back, are one sentence, because the order in which those
services follow each other is exactly the "grammar" the model should learn. Direction
is kept inside each word instead (the ``dir`` token component), so nothing is lost.
(Stratosphere's letters key by (src, dst, dst port, proto) instead, which splits a
host pair into one sentence per service and hides the order across services.)

For every flow, :meth:`ConversationWindows.push` returns the pair's previous
``context + 1`` flows plus the flow itself, oldest first, as arrays
``[B, context + 2]``: the per-flow token key (from
:meth:`zeekml.features.tokens.Tokenizer.flow_codes`), ``ts``, the uid and a validity
mask. One extra old position is kept so the oldest context word still knows the
time gap to its predecessor. Windows follow the order rows were written (Zeek
writes conn.log in connection-end order), so they do not depend on where a stream
was cut into batches; gaps and idle expiry use ``ts`` (log time, never the wall
clock). A flow whose ``ts`` is missing has no context and is never context itself
(the flow after it skips it; its gap reads "first", the time since its predecessor
being unknown).

Built on :class:`~zeekml.windows.history.KeyedHistory`: bounded (``max_keys``
conversations, least recently used evicted), state as plain numpy arrays.
Storage per conversation at ``context = 16``: 17 x (8 ts + 8 key + 20 uid) = 612
bytes plus slot bookkeeping and the key string.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zeekml.windows.history import FieldSpec, KeyedHistory, KeySequences
from zeekml.windows.host_window import UID_BYTES, arrow_text, uid_bytes

KEY_NAME = "pair"


@dataclass
class ConversationWindow:
    """``code``, ``ts``, ``uids`` and ``valid``, each ``[B, context + 2]``, oldest first.

    The uids only name context flows: they are gathered from the batch's key sequences
    when asked for, and :meth:`uid_rows` gathers them for the rows a run writes only.
    """

    code: np.ndarray
    ts: np.ndarray
    valid: np.ndarray
    keys: np.ndarray
    seq: KeySequences
    _uids: np.ndarray | None = None

    @property
    def uids(self) -> np.ndarray:
        if self._uids is None:
            self._uids = self.uid_rows(None)
        return self._uids

    def uid_rows(self, rows: np.ndarray | None) -> np.ndarray:
        """``uids`` of the given rows (all with ``None``), empty where not valid."""
        if self._uids is not None:
            return self._uids if rows is None else self._uids[rows]
        return self.seq.gather_valid("uid", rows)  # valid is the sequences' valid


def conversation_keys(flows: pd.DataFrame) -> np.ndarray:
    """The unordered host pair of each flow as one string (``a|b`` with ``a <= b``)."""
    return np.asarray(_key_array(flows).to_numpy(zero_copy_only=False), dtype=object)


def conversation_key_codes(flows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """:func:`conversation_keys` factorized: (code per row, the distinct keys in order of
    first appearance, as ``pd.factorize`` gives them), hashed in Arrow: Python strings
    are made for the distinct keys only."""
    enc = _key_array(flows).dictionary_encode()
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes, np.asarray(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object)


def _key_array(flows: pd.DataFrame) -> pa.Array:
    a = _text(flows["orig_h"])
    b = _text(flows["resp_h"])
    swap = pc.greater(a, b)  # UTF-8 byte order = code point order: as Python compares
    lo, hi = pc.if_else(swap, b, a), pc.if_else(swap, a, b)
    return pc.binary_join_element_wise(lo, hi, pa.scalar("|", a.type))


def _text(column: pd.Series) -> pa.Array:
    """A text column as an Arrow large string array, missing -> empty (computed in C++)."""
    arr = arrow_text(column)
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    return arr.fill_null("")


class ConversationWindows:
    """Bounded store of each host pair's last flows; :meth:`push` returns their windows."""

    def __init__(
        self,
        context: int = 16,
        *,
        max_keys: int = 1_000_000,
        idle_timeout: float = 3600.0,
    ) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1 word, got {context}")
        self.context = context
        self.history = KeyedHistory(
            context + 1,
            {
                "code": FieldSpec(np.dtype(np.int64)),
                "uid": FieldSpec(np.dtype(f"S{UID_BYTES}")),
            },
            max_keys=max_keys,
            idle_timeout=idle_timeout,
        )

    def push(
        self, flows: pd.DataFrame, codes: np.ndarray, keys: np.ndarray | None = None
    ) -> ConversationWindow:
        """Append a canonical batch (rows in stream order) with its per-flow token keys.

        ``keys`` overrides the host-pair key of each row (evaluation of random samples
        gives every sampled row a key of its own, so it is scored without history).
        """
        factorized = None
        if keys is None:
            factorized = conversation_key_codes(flows)
            keys = factorized[1][factorized[0]]
        ts = flows["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
        uid_arr = uid_bytes(flows["uid"])
        codes = np.asarray(codes, dtype=np.int64)
        seq = self.history.extend_seq(keys, {"ts": ts, "code": codes, "uid": uid_arr},
                                      factorized=factorized)
        valid = seq.valid
        code_w = seq.gather_valid("code")
        ts_w = seq.ts  # gathered already
        ts_w[~valid] = 0.0
        # the flow itself is always present, even when its own ts is missing (the last
        # position of every window is the row's own item: its uid is there)
        valid[:, -1] = True
        code_w[:, -1] = codes
        ts_w[:, -1] = ts
        return ConversationWindow(code_w, ts_w, valid, keys, seq)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.history.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.history.load_state_dict(state)
