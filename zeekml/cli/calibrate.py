"""``zeekml calibrate``: per-class thresholds for an alert budget on the user's own traffic.

Thin layer over :mod:`zeekml.policy.budget`: score ``--data`` with the runtime scorers
(the bundled models or ``--model``) through the same pipeline as ``zeekml score``,
find the thresholds for at most ``--budget`` notices (or incidents) a day per model,
print what the budget costs, and write the policy file ``score``/``tail --config`` read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from zeekml import defaults
from zeekml.errors import UsageError
from zeekml.policy.notice import SUPPRESS_BY

EXAMPLES = """examples:
  zeekml calibrate --data /nsm/zeek/logs/2024-04-1[5-9] --budget 20 --out policy.json
  zeekml score --config policy.json /nsm/zeek/logs/current/conn.log
  zeekml calibrate --data logs/ --budget 5 --unit incident --out incidents-policy.json
"""


def run(args: argparse.Namespace) -> int:
    from zeekml.cli import score
    from zeekml.policy.budget import CandidatePolicy, CandidateRecorder, all_classes, calibrate
    from zeekml.policy.incidents import IncidentConfig
    from zeekml.runtime.batch_run import RunOptions, score_inputs
    from zeekml.runtime.pipeline import Pipeline
    from zeekml.sources import SkipLog, expand_inputs
    from zeekml.sources.options import ReadOptions

    if args.budget < 0:
        raise UsageError("--budget must be a whole number of alerts a day, >= 0")
    if args.batch_size < 1 or args.threads < 1:
        raise UsageError("--batch-size and --threads must be >= 1")
    base = score.build_policy(argparse.Namespace(config=args.config, threshold=args.threshold,
                                                 allow=args.allow, suppress=args.suppress,
                                                 suppress_by=args.suppress_by,
                                                 sweep_hosts=args.sweep_hosts, all=False))
    icfg = IncidentConfig(gap=args.incident_gap, update=args.incident_update)
    scorers = score.build_scorers(args)
    policy = CandidatePolicy(base, args.allow_lower)
    recorder = CandidateRecorder()
    pipeline = Pipeline(scorers, policy, [], incidents=recorder)  # type: ignore[arg-type]
    skips = SkipLog(strict=args.strict)
    counters = score_inputs(expand_inputs(args.data), pipeline, skips=skips,
                            options=RunOptions(read=ReadOptions(batch_rows=args.batch_size)))
    floors = dict(policy.floors)
    all_classes(floors, [getattr(s, "card", None) for s in scorers if getattr(s, "card", None)],
                base)
    result = calibrate(policy.with_in_force(recorder.table()), floors, base, args.budget,
                       unit=args.unit,
                       incidents=icfg, end=policy._max_ts,  # stream clock
                       span=(policy.first_ts, policy.last_ts), allow_lower=args.allow_lower,
                       mixed=policy.mixed,
                       ranges={s.name: getattr(s, "score_range", None) for s in scorers})
    doc = result.policy_json(base)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(out)) from exc
    if args.json:
        print(json.dumps({
            "budget": result.budget, "unit": result.unit, "days": result.days,
            "policy": str(out), "flows": counters.flows_scored,
            "models": {m: {"before": b, "after": a} for m, (b, a) in result.totals.items()},
            "classes": [{**vars(c), "key": c.key} for c in result.classes],
        }, indent=2, default=lambda v: None))
    else:
        print(result.report())
        print(f"policy written to {out} (use: zeekml score --config {out} ...)")
    if not args.quiet:
        print(f"zeekml calibrate: {counters.flows_scored} flows scored, "
              f"{skips.summary()}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from zeekml.cli.score import _seconds

    p = sub.add_parser(
        "calibrate",
        help="per-class thresholds so your own traffic gives at most N alerts a day",
        description=(
            "Score some days of your own logs with the runtime models and write a policy "
            "file (per-class thresholds for --config) with which this traffic would have "
            "produced at most --budget notices (or incidents) on any day, per model; print "
            "what the budget costs (the scores it cuts). Thresholds are never lowered below "
            "the ones in force unless --allow-lower."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="logs of your traffic: files, directories (zeekctl archives), globs")
    p.add_argument("--budget", type=int, required=True, metavar="N",
                   help="alerts a day per model (UTC days of log time; the busiest day counts)")
    p.add_argument("--unit", choices=("notice", "incident"), default="notice",
                   help="what the budget counts: notices (default) or incidents")
    p.add_argument("--out", default="zeekml-policy.json", metavar="FILE",
                   help="policy file to write (default ./zeekml-policy.json)")
    p.add_argument("--allow-lower", action="store_true",
                   help="thresholds may go below the ones in force (fills the budget)")
    p.add_argument("--model", action="append", default=[], metavar="NAME_OR_PATH",
                   help="model to calibrate (repeatable; default: every bundled model but the "
                        "optional ones, which run only when named: dns_burst)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="the policy in force (thresholds, allow, suppress, suppress_by) to start from")
    p.add_argument("--threshold", action="append", default=[], metavar="CLASS=VALUE",
                   help="a threshold in force (CLASS=V or MODEL:CLASS=V; repeatable)")
    p.add_argument("--allow", action="append", default=[], metavar="CIDR_OR_HOST",
                   help="hosts/subnets that never raise notices (repeatable)")
    p.add_argument("--suppress", type=float, default=None, metavar="SECONDS",
                   help=f"suppression interval in force (default {defaults.SUPPRESS_SECONDS:g})")
    p.add_argument("--suppress-by", choices=SUPPRESS_BY, default=None,
                   help=f"suppression key's host in force, as for score (default {defaults.SUPPRESS_BY})")
    p.add_argument("--sweep-hosts", type=int, default=None, metavar="N",
                   help=f"sweeper keys in force, as for score (default {defaults.SWEEP_HOSTS})")
    p.add_argument("--incident-gap", type=_seconds, default=defaults.INCIDENT_GAP, metavar="SECONDS",
                   help="incident idle gap, as for score (default %(default)g)")
    p.add_argument("--incident-update", type=_seconds, default=defaults.INCIDENT_UPDATE, metavar="SECONDS",
                   help="incident update interval, as for score (default %(default)g)")
    p.add_argument("--threads", type=int, default=defaults.THREADS,
                   help="graph calls run at once, each on one onnxruntime thread (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.SCORE_BATCH_ROWS, metavar="ROWS",
                   help="flows per batch (default %(default)s)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad input line instead of skipping it")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
