"""``zeekml eval``: measure a model on labeled captures (never on its training data).

Dispatches on the model card's kind to ``zeekml.eval.<kind>_eval``, which returns one
JSON-able dict (keys ``classes``, ``macro_f1``, ``accuracy``, ``binary``, ``excluded``
and kind-specific extras) and formats it as text. Metrics are numpy only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from zeekml import defaults
from zeekml.errors import ConfigError
from zeekml.models.card import load_card
from zeekml.models.registry import resolve_model

EVALUATORS = {"amf_lstm": "zeekml.eval.amf_eval", "flow_lm": "zeekml.eval.lm_eval",
              "scan": "zeekml.eval.scan_eval", "bruteforce": "zeekml.eval.scan_eval",
              "flood": "zeekml.eval.scan_eval"}
#: built-in kinds whose verdict no label class names (a DNS burst is DGA, tunnel or C&C)
NO_LABEL_CLASS = ("dns_burst",)


def run(args: argparse.Namespace) -> int:
    from zeekml.cli.read_args import read_options_from

    read = read_options_from(args)  # a bad --tz is a usage error before the model loads
    card = load_card(resolve_model(args.model))
    if card.kind in NO_LABEL_CLASS:
        raise ConfigError(f"{card.path}: a {card.kind!r} model has no class in the label "
                          "vocabulary to evaluate against; measure it with "
                          "tools/scan_report.py --card (docs/models.md)")
    module = importlib.import_module(EVALUATORS.get(card.kind, "zeekml.eval.amf_eval"))
    result = module.evaluate(card, args.data, threads=args.threads, read=read)
    if args.json:
        json.dump(result, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(module.format_text(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on labeled captures (per-class and binary metrics)",
        description=(
            "Evaluate a model on labeled captures: per-class precision/recall/F1/support, "
            "macro averages, accuracy, and a binary malicious-vs-benign view with ROC AUC "
            "and false-positive rate. Background/unknown rows are excluded and counted."
        ),
    )
    p.add_argument("--model", required=True, help="path to NAME.onnx or a bundled model name")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH", help="labeled captures")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--threads", type=int, default=defaults.THREADS,
                   help="graph calls run at once, each on one onnxruntime thread (default %(default)s)")
    from zeekml.cli.read_args import add_read_arguments

    add_read_arguments(p)
    p.set_defaults(func=run)
