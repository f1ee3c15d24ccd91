"""``zeekml tail``: follow a live sensor's log (or nfcapd directory, or a pipe) and score it.

Thin layer over :mod:`zeekml.runtime.tail`. The model, policy and output options are
``zeekml score``'s own (one definition, :func:`zeekml.cli.score.add_scoring_options`,
so the two commands never drift apart), and so are the builders of scorers, policy and
sinks: one code path for tail and batch. Tail adds ``--state``, ``--rotate``,
``--poll-interval``, ``--max-latency``, ``--checkpoint-interval``, ``--metrics`` and
the memory bounds ``--max-hosts`` / ``--idle-timeout``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from zeekml import defaults
from zeekml.cli.guards import refuse_output_on_input
from zeekml.errors import UsageError

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  zeekml tail --state /var/lib/zeekml/tail.npz --out /zeek/logs/current/zeekml.log \\
              --rotate 3600 /zeek/logs/current/conn.log
  zeekml tail --all --out - conn.log                   every verdict, to stdout
  zeekml tail --state nf.npz --out nf-zeekml.log /var/cache/nfdump/   (closed nfcapd files)
  nfdump -r nfcapd.202401011200 -o csv | zeekml tail --all -
  zeekml tail --metrics 127.0.0.1:9108 --state /var/lib/zeekml/tail.npz \\
              --sink 'syslog:tls://siem:6514?ca=/etc/zeekml/ca.pem' conn.log
                                                Prometheus metrics at :9108/metrics

signals: TERM/INT flush, checkpoint and exit 0 (1 if a --sink lost notices: the
summary names it); HUP reopens the output (logrotate)."""

#: ``zeekml score`` options tail does not have: accepted by the parser only to be
#: refused with a message saying why (rather than argparse's bare "unrecognized")
_SCORE_ONLY = {
    "--engine": "tail always scores with the local engine; the Spark engine is "
                "'zeekml score --engine spark' (batch only)",
    "--spark-master": "tail always scores with the local engine; --spark-master is for "
                      "'zeekml score --engine spark'",
}


def _scorers(args: argparse.Namespace) -> list:
    """Scorers with the memory bounds of the state (max hosts, idle expiry by log time)."""
    from zeekml.models.registry import ScorerOptions, load_scorers

    try:
        opts = ScorerOptions(threads=args.threads, max_hosts=args.max_hosts,
                             idle_timeout=args.idle_timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return load_scorers(args.model or [], opts)


def check_followed_path(path: str) -> None:
    """A PATH whose directory is missing is an error; a missing file is waited for, saying so.

    Without this, ``zeekml tail /nonexistent/dir/conn.log`` waited forever in silence.
    """
    if path == "-" or os.path.exists(path):
        return
    if path.endswith(("/", os.sep)):  # a directory (nfcapd) that is not there
        raise FileNotFoundError(errno.ENOENT, "no such directory", path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, "no such directory to follow a file in", parent)
    log.warning("%s: does not exist yet; waiting for it to be created", path)


def run(args: argparse.Namespace) -> int:
    from zeekml.cli import score
    from zeekml.policy.notice import NoticePolicy
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.runtime.state import StateStore
    from zeekml.runtime.tail import Tail, TailOptions
    from zeekml.runtime.tail_sources import open_tail_source
    from zeekml.sources.skips import SkipLog

    for flag, why in _SCORE_ONLY.items():
        if getattr(args, "score_only_" + flag[2:].replace("-", "_"), None) is not None:
            raise UsageError(f"{flag} is not an option of zeekml tail: {why}")
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
    from zeekml.cli.read_args import read_options_from

    read = read_options_from(args, options.batch_rows)  # --tz, validated before any I/O
    config = score.build_policy(args)
    check_followed_path(args.path)
    refuse_output_on_input(score.outputs_of(args), [args.path])
    listen = None
    if args.metrics:
        from zeekml.runtime.metrics import parse_listen

        listen = parse_listen(args.metrics)
    store = StateStore(args.state) if args.state else None
    if store is not None:
        store.acquire()  # before anything is opened for writing
    metrics = None
    try:
        skips = SkipLog(strict=args.strict)
        if listen is not None:  # first: a port in use fails before the models load
            from zeekml.runtime.metrics import TailMetrics

            metrics = TailMetrics(skips, stateful=store is not None)
            metrics.serve(*listen)
        scorers = _scorers(args)
        config = score.check_policy(args, config, scorers)
        sinks = score.build_sinks(args, config)
        pipeline = Pipeline(scorers, NoticePolicy(config), sinks,
                            pairer=score.build_pairer(args),
                            incidents=score.build_incidents(args, sinks))
        main_only = argparse.Namespace(**{**vars(args), "sink": [], "incidents": None})

        def make_main_sink():  # a Sink
            return score.build_sinks(main_only, config)[0]

        def make_source(cursor):  # cursor dict / TailSource
            return open_tail_source(args.path, skips=skips, options=read,
                                    poll_interval=options.poll_interval, resume=cursor,
                                    archive=args.archive, lookback=args.lookback)

        key = "tail:" + (args.path if args.path == "-" else os.path.abspath(args.path))
        tail = Tail(make_source, pipeline, input_key=key, store=store, options=options,
                    make_main_sink=make_main_sink, metrics=metrics)
        stats = tail.run()
        pipeline.close()
    finally:
        if metrics is not None:
            metrics.close()
        if store is not None:
            store.release()
    if not args.quiet:
        pipeline.counters.stop()
        text = pipeline.counters.summary(skips, [s.name for s in scorers],
                                         pipeline.policy.pending, pipeline.pairing_summary(),
                                         pipeline.incidents.pending if pipeline.incidents
                                         else 0)
        text += (f"\nbatches: {stats.batches}, checkpoints: {stats.checkpoints}, "
                 f"output rotations: {stats.rotations}, reopens: {stats.reopens}")
        if stats.first_verdict is not None:
            text += f"\nfirst verdicts {stats.first_verdict:.2f} s after start"
        print("zeekml tail: " + text.replace("\n", "\n  "), file=sys.stderr)
    lost = pipeline.counters.lost_records()
    if lost is not None:
        raise lost  # notices a sink dropped or could not deliver: exit 1, named
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
    from zeekml.cli.score import add_scoring_options

    add_scoring_options(p)
    for flag in _SCORE_ONLY:
        p.add_argument(flag, dest="score_only_" + flag[2:].replace("-", "_"),
                       help=argparse.SUPPRESS)
    p.add_argument("--state", metavar="PATH",
                   help="checkpoint file: input offsets, windows, policy and output "
                        "positions saved together (exactly-once across restarts)")
    p.add_argument("--rotate", type=float, default=None, metavar="SECONDS",
                   help="rotate the output like Zeek: close it with #close and rename it "
                        "NAME.YYYY-MM-DD-HH-MM-SS.log at every multiple of SECONDS")
    p.add_argument("--poll-interval", type=float, default=defaults.TAIL_POLL_INTERVAL,
                   metavar="SECONDS", help="look for new data at least this often (filesystem "
                   "events wake it sooner; default %(default)g)")
    p.add_argument("--max-latency", type=float, default=defaults.TAIL_MAX_LATENCY,
                   metavar="SECONDS", help="score a pending batch once its oldest flow waited "
                   "this long (default %(default)g)")
    p.add_argument("--batch-size", type=int, default=defaults.TAIL_BATCH_ROWS, metavar="ROWS",
                   help="score a pending batch once it holds this many flows "
                   "(default %(default)s)")
    p.add_argument("--checkpoint-interval", type=float, default=defaults.TAIL_CHECKPOINT_SECONDS,
                   metavar="SECONDS",
                   help="with --state, save a checkpoint at least this often (default %(default)g)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (flows, skips, "
                        "notices, input lag, batch latency, checkpoint age, sink queues and "
                        "drops); no authentication: bind to loopback, e.g. 127.0.0.1:9108")
    p.add_argument("--max-hosts", type=int, default=defaults.MAX_HOSTS, metavar="N",
                   help="per-host window state kept for at most N hosts per model, least "
                        "recently seen evicted first (default %(default)s)")
    p.add_argument("--idle-timeout", type=float, default=defaults.IDLE_TIMEOUT, metavar="SECONDS",
                   help="forget a host's window after this much log time without its "
                        "flows (default %(default)g)")
    p.set_defaults(func=run)
