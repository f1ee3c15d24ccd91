"""The reading options every command that reads flows shares, as command-line options.

Only ``cli/`` knows argparse: this module turns ``--tz``, ``--no-pair`` and ``--pair-hold``
into the library's validated :class:`~zeekml.sources.options.ReadOptions`.
"""

from __future__ import annotations

import argparse
from typing import Any

from zeekml.sources.options import DEFAULT_BATCH_ROWS, DEFAULT_PAIR_HOLD, TZ_HELP, ReadOptions


def add_read_arguments(p: argparse.ArgumentParser) -> None:
    """Add the reading options every command that reads flows has: ``--tz``, and NetFlow
    pairing's ``--no-pair`` / ``--pair-hold`` (on the shared nfcapd captures a reply
    waited 33 s at the 99th percentile, 62 s in the SSH trace: the default is 120 s)."""
    p.add_argument("--tz", metavar="ZONE", default=None, help=TZ_HELP)
    p.add_argument("--no-pair", dest="pair", action="store_false",
                   help="do not join unidirectional NetFlow records (nfdump input) with "
                        "their reverse records into bidirectional flows")
    p.add_argument("--pair-hold", type=float, default=DEFAULT_PAIR_HOLD, metavar="SECONDS",
                   help="NetFlow pairing: seconds of log time a record waits for its reverse "
                        f"before it stays one-way (default {DEFAULT_PAIR_HOLD:.0f})")


def read_options_from(args: Any, batch_rows: int | None = None) -> ReadOptions:
    """The validated :class:`ReadOptions` of a parsed command line (ConfigError if bad)."""
    return ReadOptions(batch_rows=batch_rows or DEFAULT_BATCH_ROWS, tz=getattr(args, "tz", None),
                       pair=getattr(args, "pair", True),
                       pair_hold=getattr(args, "pair_hold", DEFAULT_PAIR_HOLD))
