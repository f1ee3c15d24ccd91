"""ArcSight Common Event Format (CEF) records for verdicts, as carried over syslog.

One record per verdict row::

    CEF:0|zeekml|zeekml|0.1.0|<class>|<msg>|<severity>|rt=... src=... spt=... dst=... dpt=... proto=TCP ...

Escaping follows the CEF standard, so a hostile string from the input log (a uid,
a class name from a plugin model) can never add a header field or an extension:

* header fields: backslash -> ``\\\\``, pipe -> ``\\|``; CR and LF are not allowed in
  the header at all and become a space;
* extension values: backslash -> ``\\\\``, equals -> ``\\=``, CR -> ``\\r``, LF -> ``\\n``
  (the standard's only multi-line form); other text, pipes included, passes as is.

Addresses: CEF's ``src``/``dst`` are IPv4 fields, so IPv6 endpoints go to
``c6a2``/``c6a3`` with the labels "Source IPv6 Address"/"Destination IPv6 Address".
Severity is 0..10 (Low 0-3, Medium 4-6, High 7-8, Very-High 9-10), derived from the
record's syslog severity by :data:`CEF_SEVERITY`, so one ``severity`` option drives both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zeekml import __version__
from zeekml.sinks.textcols import as_text, concat, epoch_millis, joined_list, replace_all

#: syslog severity (0 emerg .. 7 debug) -> CEF severity (0..10).
CEF_SEVERITY: dict[int, int] = {0: 10, 1: 9, 2: 8, 3: 7, 4: 5, 5: 3, 6: 1, 7: 0}

_HEADER_ESCAPES = (("\\", "\\\\"), ("|", "\\|"), ("\r\n", " "), ("\r", " "), ("\n", " "))
_EXTENSION_ESCAPES = (("\\", "\\\\"), ("=", "\\="), ("\r\n", "\\n"), ("\r", "\\r"), ("\n", "\\n"))


def header_escape(values: pd.Series) -> pd.Series:
    """Escape a ``str`` column for a CEF header field (``|`` and ``\\``; no newlines)."""
    return replace_all(values, _HEADER_ESCAPES)


def extension_escape(values: pd.Series) -> pd.Series:
    """Escape a ``str`` column for a CEF extension value (``=``, ``\\``, newlines)."""
    return replace_all(values, _EXTENSION_ESCAPES)


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """``df[name]`` with a fresh index, or an all-missing column when absent."""
    if name in df.columns:
        return df[name].reset_index(drop=True)
    return pd.Series([np.nan] * len(df), dtype="float64")


def message(df: pd.DataFrame) -> pd.Series:
    """The one-line human description shared by syslog MSG, CEF Name and ECS message.

    ``C&C from 10.0.0.5:49152 to 1.2.3.4:443/tcp (amf_lstm score 0.97 >= 0.5)``;
    rows that are not notices (``?only=all``) say why, from their ``decision``:
    ``normal from ... (amf_lstm score 0.72 < 0.99)``, ``... >= 0.5; suppressed)``,
    ``... >= 0.5; allow-listed)``. IPv6 hosts are bracketed (``[fe80::1]:546``).
    Values are not escaped here: each format escapes the whole message for its own
    syntax.
    """
    t = {c: as_text(column(df, c)).fillna("-") for c in
         ("verdict", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "model", "score",
          "threshold")}
    decision = as_text(column(df, "decision"))
    # rows from before the decision field: verdict "normal" is what "below" was
    below = (decision.eq("below").fillna(False)
             | (decision.isna() & t["verdict"].eq("normal").fillna(False)))
    compare = pd.Series(np.where(below.to_numpy(dtype=bool), " < ", " >= "), dtype="str")
    why = decision.map({"suppressed": "; suppressed", "allowed": "; allow-listed"}).astype("str")
    for h in ("orig_h", "resp_h"):  # [v6]:port, as in URLs
        v6 = t[h].str.contains(":", regex=False)
        t[h] = t[h].where(~v6, "[" + t[h] + "]")
    return concat([t["verdict"], " from ", t["orig_h"], ":", t["orig_p"], " to ", t["resp_h"],
                   ":", t["resp_p"], "/", t["proto"], " (", t["model"], " score ", t["score"],
                   compare, t["threshold"], why, ")"])


def cef_records(
    df: pd.DataFrame,
    syslog_severity: np.ndarray,
    vendor: str = "zeekml",
    product: str = "zeekml",
    version: str = __version__,
) -> pd.Series:
    """One CEF record (``str``) per verdict row."""
    const = "|".join(header_escape(pd.Series([vendor, product, version], dtype="str")))
    sev = pd.Series(syslog_severity).map(CEF_SEVERITY).astype("int64")
    sig = header_escape(as_text(column(df, "verdict")).fillna("unknown"))
    name = header_escape(message(df).str.slice(0, 512))
    return concat(["CEF:0|" + const + "|", sig, "|", name, "|", as_text(sev), "|",
                   _extension(df)])


def _extension(df: pd.DataFrame) -> pd.Series:
    """``key=value`` pairs; a missing value drops its key (and its label key)."""
    n = len(df)
    orig_h = as_text(column(df, "orig_h"))
    resp_h = as_text(column(df, "resp_h"))
    v6_src = orig_h.str.contains(":", regex=False).fillna(False).astype(bool)
    v6_dst = resp_h.str.contains(":", regex=False).fillna(False).astype(bool)
    fields: list[tuple[str, pd.Series, str | None]] = [
        ("rt", epoch_millis(column(df, "ts")), None),
        ("src", orig_h.where(~v6_src), None),
        ("c6a2", orig_h.where(v6_src), "Source IPv6 Address"),
        ("spt", as_text(column(df, "orig_p")), None),
        ("dst", resp_h.where(~v6_dst), None),
        ("c6a3", resp_h.where(v6_dst), "Destination IPv6 Address"),
        ("dpt", as_text(column(df, "resp_p")), None),
        ("proto", as_text(column(df, "proto")).str.upper(), None),
        ("externalId", as_text(column(df, "uid")), None),
        ("cnt", as_text(column(df, "n")), None),
        ("cs1", as_text(column(df, "model")), "model"),
        ("cfp1", as_text(column(df, "score")), "score"),
        ("cfp2", as_text(column(df, "threshold")), "threshold"),
        ("cs2", as_text(column(df, "alt")), "alt"),
        ("cfp3", as_text(column(df, "alt_score")), "alt_score"),
        ("cs3", _context(df), "context"),
        ("cs4", as_text(column(df, "candidate")), "candidate"),
        ("cs5", as_text(column(df, "decision")), "decision"),
    ]
    parts: list[pd.Series | str] = [pd.Series([""] * n, dtype="str")]
    for key, value, label in fields:
        prefix = f" {key}Label={label} {key}=" if label is not None else f" {key}="
        parts.append(prefix + extension_escape(value))
    return concat(parts).str.slice(1)


def _context(df: pd.DataFrame) -> pd.Series:
    if "context" not in df.columns:
        return pd.Series([np.nan] * len(df), dtype="str")
    return as_text(joined_list(df["context"].reset_index(drop=True)))
