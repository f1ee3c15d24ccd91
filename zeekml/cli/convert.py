"""``zeekml convert``: any supported flow input -> a Zeek conn log, CSV or Zeek JSON.

NetFlow users get a Zeek-style ``conn.log`` every Zeek tool reads (zeek-cut, zat,
RITA-style tooling); Zeek users get CSV or JSON for spreadsheets and SIEMs. The
output is the canonical flow table (see :mod:`zeekml.records.schema`), written batch
by batch as it is read, so memory stays bounded by the batch size:

``zeek``  Zeek's ASCII writer exactly (:mod:`zeekml.sinks.zeek_ascii`): ``#separator
          \\x09`` ... ``#fields``/``#types`` of the standard conn log plus ``paired``
          (``bool``: T for two NetFlow records joined, F for a one-way record, ``-``
          where the source had both directions; see :mod:`zeekml.sources.biflow`) and
          ``label``, ``detailed-label`` when the input is labeled; ``-`` unset,
          ``(empty)``, ``\\xNN`` escapes, ``#close``.
``json``  one Zeek JSON object per line (``LogAscii::use_json``; unset fields omitted).
``csv``   a header of Zeek field names, unset as an empty field
          (:func:`zeekml.sinks.csv_rows.format_csv_rows`).

Whether label columns are written is decided by the first batch. Provenance columns
(``source_file``, ``source_line``) are not written: reading the output back gives the
same flows with the output as their source. A file given with ``--out`` appears only
when the conversion succeeded (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import pandas as pd

from zeekml import defaults
from zeekml.errors import SinkError
from zeekml.sources.options import ReadOptions

log = logging.getLogger(__name__)

DESCRIPTION = """Convert flows to another format, batch by batch.

Inputs are Zeek conn logs (TSV, JSON, .gz), nfdump CSV/JSON, nfcapd files or
directories (read through the nfdump binary), Argus binetflow, Zeek-field CSV or
CICFlowMeter CSV; the format of each is detected from its content. '-' reads stdin.

  zeekml convert /var/cache/nfdump/nfcapd.202401011200 --out conn.log
  zeekml convert capture20110810.binetflow --tz Europe/Prague --out conn.log.labeled
  zeekml convert conn.log.gz --to csv --out flows.csv
  zeekml convert capture.json --to json | head"""

#: the standard Zeek conn.log fields written by ``--to zeek`` (before any label fields)
CONN_EXTRA = [("tunnel_parents", "set[string]")]
LABEL_FIELDS = [("label", "string"), ("detailed-label", "string")]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="rewrite flows as a Zeek conn log, CSV or Zeek JSON",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, directories, globs, or - for stdin")  # fmt: skip
    p.add_argument("--to", choices=("zeek", "json", "csv"), default="zeek",
                   help="output format (default: zeek)")  # fmt: skip
    p.add_argument("--out", default="-", metavar="PATH", help="output file (default: stdout)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad input line (exit 1 naming file:line)")  # fmt: skip
    p.add_argument("--batch-rows", type=_positive, default=defaults.BATCH_ROWS, metavar="N",
                   help="rows per batch (memory bound; default %(default)s)")  # fmt: skip
    from zeekml.cli.read_args import add_read_arguments

    add_read_arguments(p)
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


class Writer:
    """Formats canonical batches as one output stream (header, rows, trailer)."""

    def __init__(self, to: str) -> None:
        self.to = to
        self.labels: bool | None = None
        self.rows = 0
        self._fields: list[str] = []
        self._types: list[str] = []

    def _start(self, labels: bool) -> bytes:
        from zeekml.records import schema

        self.labels = labels
        cols = [c for c in schema.COLUMNS if c != "paired"]
        self._fields = [schema.ZEEK_NAMES.get(c, c) for c in cols]
        self._types = [schema.ZEEK_TYPES[c] for c in cols]
        if self.to == "zeek":
            self._fields += [f for f, _ in CONN_EXTRA]
            self._types += [t for _, t in CONN_EXTRA]
        self._fields.append("paired")  # after Zeek's own fields: an extension field
        self._types.append(schema.ZEEK_TYPES["paired"])
        if labels:
            self._fields += [f for f, _ in LABEL_FIELDS]
            self._types += [t for _, t in LABEL_FIELDS]
        if self.to == "zeek":
            from zeekml.sinks.zeek_ascii import format_header

            return format_header("conn", self._fields, self._types)
        if self.to == "csv":
            from zeekml.sinks.csv_rows import format_csv_header

            return format_csv_header(labels)
        return b""

    def batch(self, df: pd.DataFrame) -> bytes:
        from zeekml.records import schema

        head = b""
        if self.labels is None:
            head = self._start(schema.has_labels(df))
        elif schema.has_labels(df) and not self.labels and len(df):
            log.warning("labels of later inputs are not written: the first input had none")
        if not len(df):
            return head
        self.rows += len(df)
        view = df.rename(columns={"detailed_label": "detailed-label"})
        if self.to == "zeek":
            from zeekml.sinks.zeek_ascii import format_rows

            return head + format_rows(view, self._fields, self._types)
        if self.to == "json":
            from zeekml.sinks.json_log import format_json_rows

            return head + format_json_rows(view, self._fields, self._types)
        from zeekml.sinks.csv_rows import format_csv_rows

        return head + format_csv_rows(df, bool(self.labels))

    def end(self) -> bytes:
        head = self._start(False) if self.labels is None else b""
        if self.to == "zeek":
            from zeekml.sinks.zeek_ascii import format_close

            return head + format_close()
        return head


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no thread runs yet in a convert: the swap is not observed
    os.umask(mask)
    return mask


class _Named:
    """A binary stream whose write errors name the output (``--out /dev/full``)."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f, self.name = f, name

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except BrokenPipeError:
            raise  # a closed reader (| head): not an error of ours, see cli.main
        except OSError as exc:
            raise SinkError(f"{self.name}: write failed: {exc.strerror or exc}") from exc

    def flush(self) -> None:
        try:
            self._f.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise SinkError(f"{self.name}: write failed: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _output(path: str) -> Iterator[BinaryIO]:
    """stdout, a special file as is, or a regular file written beside it and renamed.

    The renamed file gets the mode a plain ``open()`` would give it: the existing
    target's mode, else 0666 minus the umask (not mkstemp's 0600). Every error names
    ``path``, never the temporary file.
    """
    if path == "-":
        out = _Named(sys.stdout.buffer, "<stdout>")
        yield out  # type: ignore[misc]
        out.flush()
        return
    if os.path.exists(path) and not os.path.isfile(path):
        try:
            f = open(path, "wb")  # closed below, errors named
        except OSError as exc:
            raise SinkError(f"{path}: cannot open for writing: {exc.strerror or exc}") from exc
        try:
            out = _Named(f, path)
            yield out  # type: ignore[misc]
            out.flush()
        finally:
            with contextlib.suppress(OSError):
                f.close()
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~current_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".zeekml-convert-", dir=folder)
    except OSError as exc:
        raise SinkError(f"{path}: cannot create: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            out = _Named(f, path)
            yield out  # type: ignore[misc]
            out.flush()
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise SinkError(f"{path}: cannot create: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def convert(inputs: list[str], to: str, out: BinaryIO, *, strict: bool = False,
            batch_rows: int = defaults.BATCH_ROWS, options: ReadOptions | None = None
            ) -> tuple[int, object]:  # fmt: skip
    """Stream every input into ``out``; returns (rows written, the SkipLog).

    ``options`` are the reading options (``--tz``, NetFlow pairing ...). The inputs are
    one stream: unidirectional NetFlow records are paired across files unless
    ``options.pair`` is False.
    """
    from zeekml.sources import SkipLog, expand_inputs, read_flows
    from zeekml.sources.open import pair_batches

    skips = SkipLog(strict=strict)
    writer = Writer(to)
    paths = expand_inputs(inputs)
    batches = (b for path in paths for b in read_flows(path, skips=skips, batch_rows=batch_rows,
                                                       options=options))
    for batch in pair_batches(batches, options):
        out.write(writer.batch(batch))
    out.write(writer.end())
    return writer.rows, skips


def run(args: argparse.Namespace) -> int:
    from zeekml.cli.guards import refuse_output_on_input
    from zeekml.cli.read_args import read_options_from
    from zeekml.sources import expand_inputs

    read = read_options_from(args, args.batch_rows)  # a bad --tz fails before any output
    inputs = expand_inputs(list(args.inputs))
    refuse_output_on_input([("--out", args.out)], inputs)
    with _output(args.out) as out:
        rows, skips = convert(inputs, args.to, out, strict=args.strict,
                              batch_rows=args.batch_rows, options=read)  # fmt: skip
    where = "stdout" if args.out == "-" else args.out
    log.info("%d flows written to %s as %s; %s", rows, where, args.to, skips.summary())  # type: ignore[attr-defined]
    if skips.total:  # type: ignore[attr-defined]
        log.warning("%s", skips.summary())  # type: ignore[attr-defined]
    return 0
