"""``zeekml tail``: follow a live sensor's log (or nfcapd directory, or a pipe) and score it.

Thin layer over :mod:`zeekml.runtime.tail`. The model, policy and output options are
``zeekml score``'s own (taken from its parser, so the two commands never drift
apart), and so are the builders of scorers, policy and sinks: one code path for tail
and batch. Tail adds ``--state``, ``--rotate``, ``--poll-interval``, ``--max-latency``,
``--checkpoint-interval`` and the memory bounds ``--max-hosts`` / ``--idle-timeout``
(unless ``zeekml score`` grows them, in which case its own are used).
"""

from __future__ import annotations

import argparse
import os
import sys

from zeekml.errors import UsageError

EXAMPLES = """examples:
  zeekml tail --state /var/lib/zeekml/tail.npz --out /zeek/logs/current/zeekml.log \\
              --rotate 3600 /zeek/logs/current/conn.log
  zeekml tail --all --out - conn.log                   every verdict, to stdout
  zeekml tail --state nf.npz --out nf-zeekml.log /var/cache/nfdump/   (closed nfcapd files)
  nfdump -r nfcapd.202401011200 -o csv | zeekml tail --all -

signals: TERM/INT flush, checkpoint and exit 0; HUP reopens the output (logrotate)."""

#: ``zeekml score`` options that tail defines itself (or that make no sense here)
_NOT_SHARED = frozenset({"help", "inputs", "state", "batch_size"})


def add_score_options(p: argparse.ArgumentParser) -> None:
    """Give ``p`` the model, policy and output options of ``zeekml score``.

    Uses ``zeekml.cli.score.add_scoring_options`` when it exists; otherwise takes the
    very option objects from ``zeekml score``'s parser (argparse shares actions between
    parsers the same way for ``parents=``), minus its positional inputs and the options
    tail defines itself.
    """
    from zeekml.cli import score

    shared = getattr(score, "add_scoring_options", None)
    if shared is not None:
        shared(p)
        return
    holder = argparse.ArgumentParser(add_help=False)
    sub = holder.add_subparsers()
    score.register(sub)
    score_parser = sub.choices["score"]
    for action in score_parser._actions:
        if action.dest not in _NOT_SHARED:
            p._add_action(action)


def _scorers(args: argparse.Namespace) -> list:
    """Scorers with the memory bounds of the state (max hosts, idle expiry by log time)."""
    from zeekml.models.registry import ScorerOptions, default_scorers, load_scorer

    try:
        opts = ScorerOptions(threads=args.threads, max_hosts=args.max_hosts,
                             idle_timeout=args.idle_timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.model:
        return [load_scorer(m, opts) for m in args.model]
    return default_scorers(opts)


def _add_unless_present(p: argparse.ArgumentParser, flag: str, **kw) -> None:  # noqa: ANN003
    """Add an option unless ``zeekml score`` already provides it (then it is shared)."""
    if flag not in p._option_string_actions:
        p.add_argument(flag, **kw)


def run(args: argparse.Namespace) -> int:
    from zeekml.cli import score
    from zeekml.policy.notice import NoticePolicy
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.runtime.state import StateStore
    from zeekml.runtime.tail import Tail, TailOptions
    from zeekml.runtime.tail_sources import open_tail_source
    from zeekml.sources.options import ReadOptions
    from zeekml.sources.skips import SkipLog

    if args.path == "-" and args.state:
        raise UsageError("--state cannot resume a pipe ('-'); follow a file or directory")
    if args.rotate is not None and args.out == "-":
        raise UsageError("--rotate needs a file output (--out PATH), not stdout")
    if args.threads < 1:
        raise UsageError("--threads must be >= 1")
    try:
        options = TailOptions(
            # a batch never holds more distinct hosts than the window store may keep
            batch_rows=max(1, min(args.batch_size, args.max_hosts)), max_latency=args.max_latency,
            poll_interval=args.poll_interval, checkpoint_seconds=args.checkpoint_interval,
            rotate=args.rotate,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    config = score.build_policy(args)
    store = StateStore(args.state) if args.state else None
    if store is not None:
        store.acquire()  # before anything is opened for writing
    try:
        scorers = _scorers(args)
        sinks = score.build_sinks(args, config)
        pipeline = Pipeline(scorers, NoticePolicy(config), sinks,
                            incidents=score.build_incidents(args, sinks))
        skips = SkipLog(strict=args.strict)
        main_only = argparse.Namespace(**{**vars(args), "sink": [], "incidents": None})

        def make_main_sink():  # noqa: ANN202 - a Sink
            return score.build_sinks(main_only, config)[0]

        read = score.run_options(args).read
        read = ReadOptions(batch_rows=options.batch_rows, tz=read.tz, pair=read.pair)

        def make_source(cursor):  # noqa: ANN001, ANN202 - cursor dict / TailSource
            return open_tail_source(args.path, skips=skips, options=read,
                                    poll_interval=options.poll_interval, resume=cursor,
                                    archive=args.archive, lookback=args.lookback)

        key = "tail:" + (args.path if args.path == "-" else os.path.abspath(args.path))
        tail = Tail(make_source, pipeline, input_key=key, store=store, options=options,
                    make_main_sink=make_main_sink)
        stats = tail.run()
        pipeline.close()
    finally:
        if store is not None:
            store.release()
    if not args.quiet:
        pipeline.counters.stop()
        text = pipeline.counters.summary(skips, [s.name for s in scorers],
                                         pipeline.policy.pending,
                                         pipeline.incidents.pending if pipeline.incidents
                                         else 0)
        text += (f"\nbatches: {stats.batches}, checkpoints: {stats.checkpoints}, "
                 f"output rotations: {stats.rotations}, reopens: {stats.reopens}")
        if stats.first_verdict is not None:
            text += f"\nfirst verdicts {stats.first_verdict:.2f} s after start"
        print("zeekml tail: " + text.replace("\n", "\n  "), file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tail",
        help="follow a live conn.log / nfcapd directory / pipe and score flows as they come",
        description=(
            "Follow a growing Zeek conn.log (TSV or JSON) through rotation, truncation and "
            "re-creation, an nfcapd directory (each closed file once), or a pipe ('-'); "
            "score flows in micro-batches with a latency bound. With --state, a restart "
            "after a crash (even kill -9) writes every verdict exactly once."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH",
                   help="growing log file, nfcapd directory, or - for stdin")
    add_score_options(p)
    p.add_argument("--state", metavar="PATH",
                   help="checkpoint file: input offsets, windows, policy and output "
                        "positions saved together (exactly-once across restarts)")
    p.add_argument("--rotate", type=float, default=None, metavar="SECONDS",
                   help="rotate the output like Zeek: close it with #close and rename it "
                        "NAME.YYYY-MM-DD-HH-MM-SS.log at every multiple of SECONDS")
    p.add_argument("--poll-interval", type=float, default=0.25, metavar="SECONDS",
                   help="look for new data at least this often (filesystem events wake "
                        "it sooner; default 0.25)")
    p.add_argument("--max-latency", type=float, default=0.1, metavar="SECONDS",
                   help="score a pending batch once its oldest flow waited this long "
                        "(default 0.1)")
    p.add_argument("--batch-size", type=int, default=16384, metavar="ROWS",
                   help="score a pending batch once it holds this many flows (default 16384)")
    p.add_argument("--checkpoint-interval", type=float, default=5.0, metavar="SECONDS",
                   help="with --state, save a checkpoint at least this often (default 5)")
    _add_unless_present(p, "--max-hosts", type=int, default=1_000_000, metavar="N",
                        help="per-host window state kept for at most N hosts per model, least "
                             "recently seen evicted first (default 1000000)")
    _add_unless_present(p, "--idle-timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="forget a host's window after this much log time without its "
                             "flows (default 3600)")
    p.set_defaults(func=run)
