"""The verdict table: one row per scored flow (or notice), as sinks receive it.

Column names here are Python names; :data:`ZEEK_FIELDS` gives the Zeek log field name
and ``#types`` entry each is written with. ``context`` holds a list of uids per row
(the previous flows the AMF-LSTM's attention weighted most), written as
``vector[string]``. ``n`` is the number of flows a notice stands for after
suppression (1 when nothing was suppressed).
"""

from __future__ import annotations

#: (python column, zeek field name, zeek type), in output order.
ZEEK_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ts", "ts", "time"),
    ("uid", "uid", "string"),
    ("orig_h", "id.orig_h", "addr"),
    ("orig_p", "id.orig_p", "port"),
    ("resp_h", "id.resp_h", "addr"),
    ("resp_p", "id.resp_p", "port"),
    ("proto", "proto", "enum"),
    ("model", "model", "string"),
    ("verdict", "verdict", "string"),
    ("score", "score", "double"),
    ("threshold", "threshold", "double"),
    ("notice", "notice", "bool"),
    ("alt", "alt", "string"),
    ("alt_score", "alt_score", "double"),
    ("n", "n", "count"),
    ("context", "context", "vector[string]"),
)

VERDICT_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in ZEEK_FIELDS)

#: The verdict a flow gets when it is not a notice.
NORMAL = "normal"
