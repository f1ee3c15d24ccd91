"""The NetFlow pairing options every command that reads flows takes.

``--no-pair`` keeps unidirectional NetFlow records one-way (one flow per record, as
nfdump prints them); ``--pair-hold SECONDS`` is how long, in log time, a record waits
for its reverse (default 120: on the shared nfcapd captures a reply waited 33 s at the
99th percentile, 62 s in the SSH trace). See :mod:`zeekml.sources.biflow`.
"""

from __future__ import annotations

import argparse

from zeekml.sources.options import DEFAULT_PAIR_HOLD, ReadOptions


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--no-pair`` and ``--pair-hold`` to a command."""
    p.add_argument("--no-pair", dest="pair", action="store_false",
                   help="do not join unidirectional NetFlow records (nfdump input) with "
                        "their reverse records into bidirectional flows")
    p.add_argument("--pair-hold", type=float, default=DEFAULT_PAIR_HOLD, metavar="SECONDS",
                   help="NetFlow pairing: seconds of log time a record waits for its reverse "
                        f"before it stays one-way (default {DEFAULT_PAIR_HOLD:.0f})")


def read_options(args: argparse.Namespace, **kw: object) -> ReadOptions:
    """The command's reading options (UsageError on a bad value)."""
    return ReadOptions(pair=getattr(args, "pair", True),
                       pair_hold=getattr(args, "pair_hold", DEFAULT_PAIR_HOLD), **kw)  # type: ignore[arg-type]
