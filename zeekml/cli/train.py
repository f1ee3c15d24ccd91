"""``zeekml train amf|lm``: train a detector and export it to ONNX with its model card.

Thin layer: the work is in :mod:`zeekml.train`, the only package that imports torch.
Without the ``train`` extra installed this prints the install hint, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from typing import Any

from zeekml import defaults
from zeekml.errors import ZeekmlError

INSTALL_HINT = (
    "training needs the 'train' extra: pip install torch==2.13.0 (or any torch>=2.2 "
    "build for your machine), then pip install 'zeekml[train]'"
)


class TrainExtraMissing(ZeekmlError):
    """torch/onnx are not installed."""


def _training(module: str) -> Any:
    """The training library ``module`` (torch is imported only now, with a clear hint)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "onnx"):
            raise TrainExtraMissing(INSTALL_HINT) from exc
        raise


def _command(args: argparse.Namespace) -> str:
    """The command line as typed, recorded in the card."""
    return "zeekml " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))


def run_amf(args: argparse.Namespace) -> int:
    from zeekml.cli.read_args import read_options_from

    t = _training("zeekml.train.amf_training")
    req = t.AmfTrainRequest(
        out=Path(args.out), corpus=args.corpus, data=tuple(args.data or ()),
        window=args.window, hidden=args.hidden, epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch, batch_size=args.batch_size, seed=args.seed,
        key=args.key or t.DEFAULT_KEY, threads=args.threads, lr=args.lr,
        ensemble=args.ensemble, normal_share=args.normal_share, hide_bytes=args.hide_bytes,
        netflow_view=args.netflow_view, fanout=args.fanout,
        drop_contradicted=args.drop_contradicted,
        baselines=args.baselines,
        alpha=t.DEFAULT_ALPHA if args.alpha is None else args.alpha,
        min_class_captures=args.min_class_captures,
        deferred_classes=tuple(dict.fromkeys(args.defer_classes or ())),
        folds=tuple(args.folds) if args.folds else None,
        loco_out=Path(args.loco_out) if args.loco_out else None,
        metrics_json=Path(args.metrics_json) if args.metrics_json else None,
        read=read_options_from(args), command=_command(args))
    return int(t.train(req) or 0)


def run_lm(args: argparse.Namespace) -> int:
    from zeekml.cli.read_args import read_options_from

    t = _training("zeekml.train.lm_training")
    req = t.LmTrainRequest(
        out=Path(args.out), data=tuple(args.data or ()), corpus=args.corpus,
        train_exclude=tuple(args.train_exclude or ()),
        loco=Path(args.loco) if args.loco else None,
        loco_folds=tuple(args.loco_folds) if args.loco_folds else None,
        context=args.context, epochs=args.epochs, patience=args.patience, seed=args.seed,
        hidden=args.hidden, fpr=args.fpr if args.fpr is not None else t.F.LmConfig.fpr,
        min_above=args.min_above, score_weights=args.score_weights, threads=args.threads,
        drop_malicious=args.drop_malicious, eval=tuple(args.eval or ()),
        rescore=Path(args.rescore) if args.rescore else None,
        read=read_options_from(args), command=_command(args))
    result = t.train(req)
    card = result.card
    if req.rescore is not None:
        p = card["metrics"]["loco"]["pooled"]
        sys.stdout.write(
            f"rescored {req.out}: score = {card['score']['combine']} of {card['score']['weights']}, threshold "
            f"{card['thresholds']['anomaly']:.3f}; leave-one-capture-out pooled ROC AUC "
            f"{p['lm_auc']:.4f} (unigram {p['unigram_auc']:.4f}), recall at the thresholds "
            f"{p['lm_recall']:.3f} (unigram {p['unigram_recall']:.3f})\n")
        return 0
    v = card["metrics"]["validation"]
    sys.stdout.write(
        f"wrote {req.out} and its card: {card['training']['train_windows']} training flows, "
        f"vocabulary {card['model']['vocab_size']}, threshold {card['thresholds']['anomaly']:.3f}, "
        f"validation NLL {v['lm_mean_nll']:.3f} (unigram {v['unigram_mean_nll']:.3f}), "
        f"best epoch {card['training']['best_epoch']} of {card['training']['epochs_run']}, "
        f"{card['training']['seconds']:.0f} s\n"
    )
    if result.evaluation is not None:
        from zeekml.eval.lm_eval import format_text

        sys.stdout.write(format_text(result.evaluation))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from zeekml.cli.read_args import add_read_arguments

    p = sub.add_parser(
        "train",
        help="train a model (AMF-LSTM or flow language model) and export it to ONNX",
        description="Train a detector on captures and export it to ONNX with a model card.",
    )
    tsub = p.add_subparsers(dest="train_kind", metavar="KIND", required=True)

    amf = tsub.add_parser(
        "amf",
        help="supervised AMF-LSTM multi-class classifier (needs labeled captures)",
        description=(
            "Train the attention multi-flow LSTM on labeled Zeek/nfdump/binetflow/CSV captures "
            "(split by whole capture), export ONNX + model card."
        ),
    )
    src = amf.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", metavar="CORPUS.json",
                     help="a corpus file: input files grouped into captures with their label "
                          "rules (e.g. tools/shared-corpus.json); leave-one-capture-out runs over "
                          "its captures, unlabeled captures are scored for false-alarm counts")
    src.add_argument("--data", nargs="+", metavar="PATH",
                     help="labeled captures (each file one capture; CICFlowMeter samples by day)")
    amf.add_argument("--out", required=True, metavar="NAME.onnx", help="output model path")
    amf.add_argument("--window", type=int, default=10, help="flows per window n (default 10)")
    amf.add_argument("--hidden", type=int, default=32, help="LSTM hidden units (default 32)")
    amf.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    amf.add_argument("--samples-per-epoch", type=int, default=0, metavar="N",
                     help="windows drawn per epoch in proportion to their weights "
                          "(default 0: every window once per epoch, loss weighted)")
    amf.add_argument("--batch-size", type=int, default=256, help="training batch size (default 256)")
    amf.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    amf.add_argument("--key", choices=("orig", "resp", "local", "local_dir"), default=None,
                     help="window key (default: the one chosen by evaluation)")
    amf.add_argument("--fanout", action=argparse.BooleanOptionalAction, default=False,
                     help="windows also carry the fan-out of each flow the window's host "
                          "started: flows, distinct peers and unanswered share on its service "
                          "among the key's last 32 flows within 10 minutes (default: off; "
                          "measured in docs/models.md)")
    amf.add_argument("--drop-contradicted-labels", dest="drop_contradicted",
                     action=argparse.BooleanOptionalAction, default=False,
                     help="leave out of training and of every figure a benign label whose host "
                          "pair's other labeled flows in the capture are >= 90%% malicious "
                          "(at least 10); the card also reports the FPR with them counted "
                          "(default: off)")
    amf.add_argument("--threads", type=int, default=defaults.THREADS,
                     help="torch threads (default %(default)s)")
    amf.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    amf.add_argument("--ensemble", type=int, default=1,
                     help="members averaged in the exported graph, seeds SEED.. (default 1)")
    amf.add_argument("--normal-share", type=float, default=0.5, metavar="SHARE",
                     help="share of the training weight given to benign windows; the attack "
                          "classes share the rest equally, each class's captures by the square "
                          "root of their size (default %(default)g)")
    amf.add_argument("--hide-bytes", type=float, default=0.0, metavar="SHARE",
                     help="share of training windows shown with payload bytes unknown, as "
                          "NetFlow and Argus give them, so that their absence is no sign of "
                          "attack (default %(default)g)")
    amf.add_argument("--netflow-view", action="store_true",
                     help="also train on each Zeek capture as zeekml would read it from "
                          "NetFlow (one-way records paired, payload bytes unknown, TCP "
                          "history from flags), so the format is no sign of attack; the "
                          "card measures that view either way (default: off)")
    amf.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                     help="also run the single-flow tree through the same leave-one-capture-out "
                          "evaluation, recorded beside the AMF-LSTM (default on)")
    amf.add_argument("--alpha", type=float, default=None, metavar="RATE",
                     help="false-alarm budget of the calibrated thresholds: share of benign "
                          "out-of-fold flows allowed to raise any attack class (default 0.0025)")
    amf.add_argument("--min-class-captures", type=int, default=None, metavar="N",
                     help="emit a class only when its labeled flows come from at least N "
                          "training captures; thinner classes still count in the score but "
                          "raise no notice (default 3 with --corpus, 1 with --data)")
    amf.add_argument("--defer-classes", nargs="+", metavar="CLASS",
                     help="train on these attack classes but never emit them: they are left to "
                          "another detector (the shipped model leaves portscan and bruteforce to "
                          "the scan and bruteforce count detectors); their thresholds are "
                          "1.000001, above every score (default: none)")
    amf.add_argument("--folds", nargs="+", metavar="CAPTURE",
                     help="leave-one-capture-out holds out only these captures (each still scored "
                          "by a model trained on every other capture; thresholds and tables from "
                          "these folds only); default: every labeled capture")
    amf.add_argument("--loco-out", metavar="FILE.parquet",
                     help="out-of-fold results file, one row per flow (default NAME.loco.parquet "
                          "beside the model)")
    amf.add_argument("--metrics-json", metavar="FILE",
                     help="attach a tools/amf_experiments.py result file to the card")
    add_read_arguments(amf)
    amf.set_defaults(func=run_amf)

    lm = tsub.add_parser(
        "lm",
        help="unsupervised flow language model (labels, if any, only leave attacks out)",
        description=(
            "Train the LSTM flow language model on a network's own traffic (--data) or on "
            "the benign traffic of a labeled corpus (--corpus, optionally with its "
            "leave-one-capture-out evaluation), export ONNX + model card with a threshold "
            "calibrated to a false-alarm rate. Training stops when the validation "
            "likelihood stops improving."
        ),
    )
    src = lm.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+", metavar="PATH", help="captures (one stream each)")
    src.add_argument("--corpus", metavar="FILE",
                     help="a corpus file (e.g. tools/shared-corpus.json): train on its benign "
                          "flows and its unlabeled captures")
    src.add_argument("--rescore", metavar="TERMS.parquet",
                     help="train nothing: apply --score-weights to the leave-one-capture-out "
                          "terms file an earlier --loco run of --out wrote (OUT.terms.parquet); "
                          "rewrites the card's score rule, threshold and figures and the --loco "
                          "file")
    lm.add_argument("--out", required=True, metavar="NAME.onnx", help="output model path")
    lm.add_argument("--train-exclude", nargs="+", metavar="CAPTURE",
                    help="corpus captures (or entries) never trained on, only scored")
    lm.add_argument("--loco", metavar="OUT.parquet",
                    help="with --corpus: score every capture with a model that never saw it, "
                         "write the out-of-fold scores here, calibrate the threshold on them "
                         "and record the results in the card")
    lm.add_argument("--loco-folds", nargs="+", metavar="FOLD",
                    help="with --loco: train only these folds (capture names, or small-N for "
                         "the groups of small captures); captures of the other folds are left "
                         "out of the out-of-fold file and the card says which (default: all)")
    lm.add_argument("--context", type=int, default=4, help="words of context T (default 4)")
    lm.add_argument("--epochs", type=int, default=None,
                    help="maximum epochs of 20-100 optimizer steps (default 60; training stops "
                         "earlier when the validation NLL has not improved for --patience epochs)")
    lm.add_argument("--patience", type=int, default=None,
                    help="epochs without validation improvement before stopping (default 5)")
    lm.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    lm.add_argument("--hidden", type=int, default=64, help="LSTM hidden units (default 64)")
    lm.add_argument("--fpr", type=float, default=None,
                    help="threshold = this false-alarm rate on benign flows (default 0.001)")
    lm.add_argument("--min-above", type=int, default=None,
                    help="benign flows that must support the threshold; fewer above the target "
                         "rate and the tail is modelled from this many (default 50)")
    lm.add_argument("--score-weights", metavar="[max:]TERM=W,...",
                    help="score = sum of weight x term over nll (given context), nll0 (given no "
                         "context), unigram; with the prefix 'max:' the largest weighted term "
                         "(default: the shipped design)")
    lm.add_argument("--threads", type=int, default=defaults.THREADS,
                    help="torch threads (default %(default)s)")
    lm.add_argument("--drop-malicious", action="store_true",
                    help="with --data: use labels only to leave flows labeled malicious out")
    lm.add_argument("--eval", nargs="+", default=None, metavar="PATH",
                    help="held-out labeled captures to evaluate and record in the card")
    add_read_arguments(lm)
    lm.set_defaults(func=run_lm)
