"""``zeekml score``: score flow logs in batch (by hand or from cron) and write verdicts.

Thin layer over :mod:`zeekml.runtime.pipeline`: parse options, build the scorers, the
notice policy and the sinks, run :func:`~zeekml.runtime.batch_run.score_inputs`, print
the summary on stderr. A progress line is shown only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zeekml import defaults
from zeekml.cli.guards import refuse_output_on_input
from zeekml.errors import UsageError
from zeekml.policy.notice import (
    SUPPRESS_BY,
    NoticePolicy,
    PolicyConfig,
    parse_network,
    parse_threshold,
)

if TYPE_CHECKING:  # imported where used, so `zeekml --help` stays light
    from zeekml.policy.incidents import IncidentTracker
    from zeekml.runtime.batch_run import RunOptions
    from zeekml.runtime.pipeline import Counters
    from zeekml.sinks.base import Sink
    from zeekml.sources.biflow import Pairer

EXAMPLES = """examples:
  zeekml score conn.log                        verdicts of notices -> ./zeekml.log
  zeekml score --all --out - conn.log.gz       every scored flow, to stdout
  zeekml score --notice --out notice-ml.log /zeek/logs/2024-04-19/
  zeekml score --incidents zeekml_incident.log --sink 'ecs:alerts.json?unit=incident' conn.log
  */5 * * * *  zeekml score --state /var/lib/zeekml/state.npz \\
                 --out /zeek/logs/current/zeekml.log /zeek/logs/current/conn.log
"""


def build_policy(args: argparse.Namespace) -> PolicyConfig:
    """The notice policy from --config, --threshold, --allow, --suppress and --all (shared with tail)."""
    from dataclasses import replace

    base = PolicyConfig.from_json(args.config) if args.config else PolicyConfig()
    thresholds = dict(base.thresholds)
    for spec in args.threshold:
        key, value = parse_threshold(spec)
        thresholds[key] = value
    return replace(
        base, thresholds=thresholds,
        allow=base.allow + tuple(parse_network(a) for a in args.allow),
        suppress=base.suppress if args.suppress is None else args.suppress,
        suppress_by=(base.suppress_by if getattr(args, "suppress_by", None) is None
                     else args.suppress_by),
        sweep_hosts=(base.sweep_hosts if getattr(args, "sweep_hosts", None) is None
                      else args.sweep_hosts),
        all_flows=base.all_flows or bool(args.all))


def check_policy(args: argparse.Namespace, config: PolicyConfig, scorers: list) -> PolicyConfig:
    """``config`` with its thresholds checked against the loaded models (shared with tail).

    Unknown models or classes and values outside a model's score range are usage errors
    naming the key and where it came from (see :mod:`zeekml.policy.thresholds`).
    """
    from dataclasses import replace

    from zeekml.policy.thresholds import check_thresholds

    origins = ({key: f"{args.config}: threshold" for key in config.thresholds}
               if args.config else {})
    for spec in args.threshold:
        origins[parse_threshold(spec)[0]] = "--threshold"
    checked = check_thresholds(config.thresholds, scorers, origins)
    return replace(config, thresholds=checked)


def outputs_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every file this run writes: --out, --state and file --sink targets (shared with tail)."""
    from zeekml.cli.guards import file_sink_targets

    out = [("--out", args.out)]
    if args.state:
        out.append(("--state", args.state))
    return out + file_sink_targets(args.sink)


def build_sinks(args: argparse.Namespace, policy: PolicyConfig) -> list:
    """The main output (--out/--notice/--out-format) plus every --sink (shared with tail)."""
    from zeekml.sinks.json_log import JsonLogSink
    from zeekml.sinks.notice_log import notice_sink
    from zeekml.sinks.zeek_log import ZeekLogSink

    # how each file is written (replace / append with --state / live for tail) is the
    # run's to say: Pipeline.begin tells every sink
    out = args.out
    if args.notice:
        main = notice_sink(out, out_format=args.out_format, suppress_for=policy.suppress)
    elif args.out_format == "json":
        main = JsonLogSink(out)
    else:
        main = ZeekLogSink(out)
    sinks: list[Sink] = [main]
    if getattr(args, "incidents", None):
        inc = JsonLogSink(args.incidents) if args.out_format == "json" else \
            ZeekLogSink(args.incidents)
        inc.use_incidents()
        sinks.append(inc)
    if args.sink:
        from zeekml.sinks.registry import make_sink

        sinks.extend(make_sink(spec) for spec in args.sink)
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise UsageError(f"two outputs write to the same place: {', '.join(names)}")
    return sinks


def build_incidents(args: argparse.Namespace, sinks: list[Sink]) -> IncidentTracker | None:
    """The incident tracker, when an output takes incidents (--incidents, ?unit=incident)."""
    from zeekml.policy.incidents import IncidentConfig, IncidentTracker
    from zeekml.runtime.pipeline import sink_unit

    if not any(sink_unit(s) == "incident" for s in sinks):
        return None
    return IncidentTracker(IncidentConfig(gap=args.incident_gap, update=args.incident_update))


def build_scorers(args: argparse.Namespace) -> list:
    """The --model scorers, or the bundled defaults."""
    from zeekml.models.registry import ScorerOptions, load_scorers

    return load_scorers(args.model or [], ScorerOptions(threads=args.threads))


def run_options(args: argparse.Namespace) -> RunOptions:
    """Reading, checkpoint and catch-up options of a batch run."""
    from zeekml.cli.read_args import read_options_from
    from zeekml.runtime.batch_run import RunOptions

    if args.archive is not None and not Path(args.archive).is_dir():
        raise UsageError(f"--archive {args.archive}: not a directory")
    return RunOptions(read=read_options_from(args, args.batch_size), archive=args.archive,
                      lookback=args.lookback)


def add_catch_up_options(p: argparse.ArgumentParser) -> None:
    """``--archive`` and ``--lookback``: where and how far back rotated generations are
    looked for (shared by score with --state and tail)."""
    from zeekml.sources.rotation import DEFAULT_LOOKBACK, parse_duration

    p.add_argument("--archive", metavar="DIR",
                   help="zeekctl's log directory (dated YYYY-MM-DD folders of gzipped logs): "
                        "rotated generations of a live log not yet finished are also looked "
                        "for there")
    p.add_argument("--lookback", type=parse_duration, default=DEFAULT_LOOKBACK,
                   metavar="DURATION",
                   help="rotated generations modified longer ago than this are not looked "
                        "for (seconds, or 30m, 12h, 7d; default 7d)")


def build_pairer(args: argparse.Namespace) -> Pairer | None:
    """The NetFlow pairing stage from --no-pair/--pair-hold (shared with tail)."""
    from zeekml.cli.read_args import read_options_from

    opts = read_options_from(args).pair_options()
    if opts is None:
        return None
    from zeekml.sources.biflow import Pairer

    return Pairer(opts)


def _seconds(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return v


def _progress(counters: Counters, i: int, n: int) -> None:
    sys.stderr.write(f"\r\x1b[Kfile {i + 1}/{n}  {counters.flows_read:,} flows  "
                     f"{counters.flows_per_second:,.0f} flows/s")
    sys.stderr.flush()


def batch_rows(args: argparse.Namespace) -> int:
    """``--batch-size``, or the engine's default: the local engine scores larger batches
    (``defaults.SCORE_BATCH_ROWS``, faster); the Spark engine reads ``defaults.BATCH_ROWS``
    (an executor's memory per task)."""
    if args.batch_size is not None:
        return int(args.batch_size)
    if getattr(args, "engine", "local") == "spark":
        return defaults.BATCH_ROWS
    return defaults.SCORE_BATCH_ROWS


def run(args: argparse.Namespace) -> int:
    from zeekml.runtime.batch_run import score_inputs
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.runtime.state import StateStore
    from zeekml.sources import SkipLog, expand_inputs

    args.batch_size = batch_rows(args)
    if args.batch_size < 1 or args.threads < 1:
        raise UsageError("--batch-size and --threads must be >= 1")
    run_opts = run_options(args)  # validates --tz and --archive for both engines
    config = build_policy(args)
    if getattr(args, "engine", "local") == "spark":  # Spark engine: zeekml.runtime.spark
        from zeekml.cli import spark

        config = check_policy(args, config, build_scorers(args))
        return spark.run(args, config)
    paths = expand_inputs(args.inputs)
    if args.state and "-" in paths:
        raise UsageError("--state cannot resume stdin ('-'); name files instead")
    refuse_output_on_input(outputs_of(args), paths)
    store = StateStore(args.state) if args.state else None
    if store is not None:
        store.acquire()  # before anything is opened for writing
    try:
        scorers = build_scorers(args)
        config = check_policy(args, config, scorers)
        policy = NoticePolicy(config)
        sinks = build_sinks(args, config)
        skips = SkipLog(strict=args.strict)
        pipeline = Pipeline(scorers, policy, sinks, pairer=build_pairer(args),
                            incidents=build_incidents(args, sinks),
                            write_behind=config.all_flows, lanes=True)
        tty = sys.stderr.isatty() and not args.quiet
        counters = score_inputs(
            paths, pipeline, skips=skips, store=store,
            options=run_opts,
            progress=_progress if tty else None,
        )
    finally:
        if store is not None:
            store.release()
    if tty:
        sys.stderr.write("\r\x1b[K")
    if not args.quiet:
        text = counters.summary(skips, [s.name for s in scorers], policy.pending,
                                pipeline.pairing_summary(),
                                pipeline.incidents.pending if pipeline.incidents else 0)
        print("zeekml score: " + text.replace("\n", "\n  "), file=sys.stderr)
    lost = counters.lost_records()
    if lost is not None:
        raise lost  # undelivered notices are a failed run (exit 1), named per collector
    unreadable = counters.unreadable_error()
    if unreadable is not None:
        raise unreadable  # an input that is no flow log: named, exit 1, the rest scored
    return 0


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    """The model, policy, output, catch-up and reading options ``score`` and ``tail`` share.

    One definition, so the two commands never drift apart; each adds its own input,
    ``--state`` and ``--batch-size`` (their meaning and defaults differ).
    """
    from zeekml.cli.read_args import add_read_arguments

    p.add_argument("--out", default="zeekml.log", metavar="PATH",
                   help="output file (default ./zeekml.log; - for stdout)")
    p.add_argument("--out-format", choices=("zeek", "json"), default="zeek",
                   help="Zeek ASCII log (default) or Zeek JSON lines")
    p.add_argument("--notice", action="store_true",
                   help="write records in the schema of Zeek's notice.log")
    p.add_argument("--all", action="store_true",
                   help="write every scored flow with its verdict, not only notices")
    p.add_argument("--incidents", metavar="PATH",
                   help="also write incidents (a host's notices of one class over an episode) "
                        "to PATH as a Zeek log, #path zeekml_incident (Zeek JSON with "
                        "--out-format json; - for stdout); off by default")
    p.add_argument("--incident-gap", type=_seconds, default=defaults.INCIDENT_GAP, metavar="SECONDS",
                   help="an incident closes after this much log time without a new flagged "
                        "flow of its host and class (default %(default)g)")
    p.add_argument("--incident-update", type=_seconds, default=defaults.INCIDENT_UPDATE, metavar="SECONDS",
                   help="an incident still going on is written again every SECONDS of log "
                        "time since it began (default %(default)g)")
    p.add_argument("--model", action="append", default=[], metavar="NAME_OR_PATH",
                   help="model to score with (repeatable; default: every bundled model but the "
                        "optional ones, which run only when named: dns_burst)")
    p.add_argument("--threshold", action="append", default=[], metavar="CLASS=VALUE",
                   help="override a class threshold (CLASS=V or MODEL:CLASS=V; repeatable)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="JSON file with thresholds, allow, suppress, suppress_by, "
                        "sweep_hosts, all")
    p.add_argument("--allow", action="append", default=[], metavar="CIDR_OR_HOST",
                   help="never raise notices for flows with this host/subnet (repeatable)")
    p.add_argument("--suppress", type=float, default=None, metavar="SECONDS",
                   help="one notice per (host, verdict, model) per interval of log time "
                        f"(default {defaults.SUPPRESS_SECONDS:g}; 0 = a notice per flow, "
                        "written at once)")
    p.add_argument("--suppress-by", choices=SUPPRESS_BY, default=None,
                   help="the host of that key: 'host' = the local responder of an inbound "
                        "flow, else the originator (a flood on one server is one notice), "
                        f"'orig' = always the originator (default {defaults.SUPPRESS_BY})")
    p.add_argument("--sweep-hosts", type=int, default=None, metavar="N",
                   help="with --suppress-by host: an outside host a model flags against N "
                        "local hosts (one verdict) is the key's host itself from then on (a "
                        "sweep: one notice about it, not one per local host; 0 = never; "
                        f"default {defaults.SWEEP_HOSTS})")
    p.add_argument("--threads", type=int, default=defaults.THREADS,
                   help="graph calls of the first model run at once (each on one onnxruntime "
                        "thread); the models of a batch run "
                        "side by side and each other one gets THREADS / models, at least 1 "
                        "(default %(default)s)")
    add_catch_up_options(p)
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad input line instead of skipping it")
    add_read_arguments(p)
    p.add_argument("--sink", action="append", default=[], metavar="SPEC",
                   help="extra output NAME:TARGET?k=v (syslog over udp/tcp/tls, ecs, json, "
                        "notice, plugins)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score flow logs with the ONNX models and write Zeek-readable verdicts",
        description=(
            "Score Zeek conn logs (TSV/JSON, gzip), nfdump flows and Argus binetflow with the bundled (or "
            "given) models; write notices, or every verdict with --all, as a Zeek log. "
            "With --state, a cron job scores each flow exactly once across runs."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, directories (zeekctl archives), globs, or - for stdin")
    add_scoring_options(p)
    p.add_argument("--batch-size", type=int, default=None, metavar="ROWS",
                   help=f"flows per batch (default {defaults.SCORE_BATCH_ROWS}; "
                        f"{defaults.BATCH_ROWS} with --engine spark)")
    p.add_argument("--state", metavar="PATH",
                   help="state file: continue where the last run stopped (cron mode); a "
                        "live log (conn.log) rotated between runs is finished first")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local (default) or spark: score on Apache Spark; --out is then a "
                        "directory (default ./zeekml-spark)")
    p.add_argument("--spark-master", metavar="URL",
                   help="Spark master for --engine spark (default: spark-submit's or local[*])")
    p.set_defaults(func=run)
