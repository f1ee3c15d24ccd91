"""``zeekml``: the command-line root. Parses, dispatches, maps errors to exit codes.

Exit codes: 0 success; 1 an error in the data or the run (bad input file, model,
state, sink); 2 a usage error (bad option, missing argument). A user-caused error is
printed as one line naming the file (and line), never as a traceback.

Each subcommand lives in its own module ``zeekml.cli.<name>`` exposing
``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed namespace, returning an exit code). Modules are imported lazily by name so a
broken optional extra (torch, pyspark) never breaks the other commands.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import select
import sys
from collections.abc import Sequence

from zeekml import __version__
from zeekml.errors import ZeekmlError
from zeekml.runtime.memory import tune_for_batches

#: subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "score",
    "tail",
    "calibrate",
    "convert",
    "summary",
    "eval",
    "train",
    "plugins",
)

EPILOG = """exit codes:
  0  success
  1  error in the input data, a model, the state file or an output
  2  usage error (bad option or argument)

Run 'zeekml COMMAND --help' for a command's options."""


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message (its default, kept explicit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="zeekml",
        description=(
            "Score Zeek conn.log and nfdump NetFlow with small neural detectors "
            "(AMF-LSTM classifier, flow language model) and write the verdicts back "
            "as Zeek-readable logs."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zeekml {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeatable)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"zeekml.cli.{name}").register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose == 1 else logging.WARNING)
    logging.basicConfig(level=level, format="zeekml: %(levelname)s: %(message)s", stream=sys.stderr)


def _stdout_reader_gone() -> bool:
    """True when standard output is a pipe whose reading end was closed (``| head -1``)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _reader_gone(exc: BaseException) -> bool:
    """A broken pipe on standard output: the reader has all it wanted, like ``cat | head``.

    Exit 0 quietly then, as convert always did and other Unix tools do (never on a broken
    pipe to a collector's socket: that is a delivery failure). Standard output is pointed
    at /dev/null so the interpreter's final flush does not complain either.
    """
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.EPIPE:
            break
        e = e.__cause__ or e.__context__
    if e is None or not _stdout_reader_gone():
        return False
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command line as given (recorded in model cards), also when called with argv
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    tune_for_batches()
    try:
        return int(args.func(args) or 0)
    except ZeekmlError as exc:
        if _reader_gone(exc):
            return 0
        print(f"zeekml: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if _reader_gone(exc):
            return 0
        # missing files, permissions, full disks: one line naming the file
        name = f"{exc.filename}: " if exc.filename else ""
        print(f"zeekml: error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
