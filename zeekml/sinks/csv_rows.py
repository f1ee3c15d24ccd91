"""The canonical flow table as Zeek-field CSV (``zeekml convert --to csv``).

One header line of Zeek conn.log field names (``id.orig_h`` ...; ``label`` and
``detailed-label`` after them when the table is labeled), then one line per flow with
Zeek's value formatting and escaping (:func:`zeekml.sinks.zeek_ascii.format_rows`):
``(empty)``, ``\\xNN``, 6-decimal times; an unset value is an empty field, and a value
with a comma or quote is quoted as RFC 4180 says. The reader of this format is
:class:`zeekml.sources.zeek_csv.ZeekCsvParser`; a written table reads back unchanged.
"""

from __future__ import annotations

import csv
import io

import pandas as pd

from zeekml.records import schema
from zeekml.sinks.zeek_ascii import format_rows

#: canonical label column -> its CSV header name (IoT-23's spelling)
CSV_LABEL_NAMES = {"label": "label", "detailed_label": "detailed-label"}


def csv_fields(with_labels: bool) -> tuple[list[str], list[str]]:
    """(header names, Zeek types) of the Zeek-field CSV that :func:`format_csv_rows` writes."""
    names = [schema.ZEEK_NAMES.get(c, c) for c in schema.COLUMNS]
    types = [schema.ZEEK_TYPES[c] for c in schema.COLUMNS]
    if with_labels:
        names += [CSV_LABEL_NAMES[c] for c in schema.LABEL_COLUMNS]
        types += [schema.ZEEK_TYPES[c] for c in schema.LABEL_COLUMNS]
    return names, types


def format_csv_header(with_labels: bool) -> bytes:
    """The header line (written once, before the rows of every batch)."""
    return (",".join(csv_fields(with_labels)[0]) + "\n").encode()


def format_csv_rows(df: pd.DataFrame, with_labels: bool) -> bytes:
    """Canonical rows as Zeek-field CSV lines: Zeek's value formatting and escaping
    (``(empty)``, ``\\xNN``, 6-decimal times), unset as an empty field, RFC 4180 quoting
    for values with a comma or quote. Reads back through
    :class:`~zeekml.sources.zeek_csv.ZeekCsvParser` unchanged.
    """
    names, types = csv_fields(with_labels)
    view = df.rename(columns={"detailed_label": "detailed-label"})
    tsv = format_rows(view, names, types)
    if not tsv:
        return b""
    if b"," in tsv or b'"' in tsv:
        return _quoted(tsv.split(b"\n")[:-1])
    body = b"\t" + tsv.replace(b"\n", b"\t\n\t")  # every field now has a tab on both sides
    body = body.replace(b"\t-\t", b"\t\t").replace(b"\t-\t", b"\t\t")
    body = body.replace(b"\t\n\t", b"\n")[1:]
    return body.removesuffix(b"\t").replace(b"\t", b",")


def _quoted(lines: list[bytes]) -> bytes:
    """Slow path for rows with a comma or quote in a value: the csv module quotes them."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for line in lines:
        w.writerow(["" if v == "-" else v for v in line.decode("utf-8").split("\t")])
    return buf.getvalue().encode("utf-8")
