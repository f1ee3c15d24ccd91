"""CSV flow exports -> canonical flow batches: Zeek-field CSV and CICFlowMeter CSV.

Both are read by header *name*, never by position, with the same machinery. This
module is their public face (the ``zeek_csv`` and ``cicflowmeter_csv`` entry points
name it, and :func:`sniff` tells the two apart); each part lives in its own module:

* :mod:`zeekml.sources.zeek_csv` -- Zeek-field CSV (``ts,uid,id.orig_h,...``, the
  IoT-23 CSV copies, team exports): :class:`ZeekCsvParser`, values and labels;
* :mod:`zeekml.sources.cicflowmeter` -- CICFlowMeter CSV (CICIDS2017): the parser, the
  mapping to the canonical table, and the one CICFlowMeter detection;
* :mod:`zeekml.sources.csv_parser` -- :class:`CsvParser`, the incremental header-by-name
  parser they share with the nfdump CSV and Argus binetflow readers;
* :mod:`zeekml.sources.values` -- text columns -> typed values, vectorized;
* :mod:`zeekml.sources.uids` -- :func:`synth_uids`, uids for flows that have none.

The writer of Zeek-field CSV (``zeekml convert --to csv``) is a sink:
:mod:`zeekml.sinks.csv_rows`.
"""

from __future__ import annotations

from zeekml.sources.cicflowmeter import CicFlowMeterParser, is_cicflowmeter_header
from zeekml.sources.csv_parser import CsvParser
from zeekml.sources.uids import synth_uids
from zeekml.sources.zeek_csv import ZeekCsvParser, is_zeek_csv_header

__all__ = ["CicFlowMeterParser", "CsvParser", "ZeekCsvParser", "sniff", "synth_uids"]


def sniff(head: bytes) -> str | None:
    """``cicflowmeter_csv`` or ``zeek_csv`` from an input's first line, else None."""
    line = next((x for x in head.split(b"\n") if x.strip()), b"")
    if is_cicflowmeter_header(line):
        return "cicflowmeter_csv"
    if is_zeek_csv_header(line):
        return "zeek_csv"
    return None
