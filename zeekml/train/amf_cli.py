"""``zeekml train amf``: train, calibrate, export and document an AMF-LSTM model.

Steps (all seeded, all split by whole capture):

1. read the labeled captures with the runtime's readers and build windows with the
   runtime's feature and window code (:mod:`zeekml.train.datasets`);
2. hold out validation captures (about a quarter, chosen so every class seen in two
   or more captures keeps one for training), train on the rest, and calibrate the
   per-class thresholds on the validation captures' scores;
3. retrain on every capture with the same settings (``--no-refit`` keeps the first
   model) and export it to ONNX, checking onnxruntime against torch on real windows;
4. optionally (``--loco``) measure leave-one-capture-out quality of the AMF-LSTM and
   of the single-flow baseline, and write everything to the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from zeekml.eval.amf_eval import decide, metrics_from, metrics_from_decisions
from zeekml.eval.metrics import binary_report
from zeekml.models.card import write_card
from zeekml.records.labels import CLASSES, label_mapping
from zeekml.train import amf_lstm, baselines
from zeekml.train.datasets import WindowSet, build_windows, load_captures
from zeekml.train.export import check_parity, export_onnx, file_entry
from zeekml.windows.host_window import WINDOW_FEATURES

log = logging.getLogger(__name__)

#: Window key chosen by leave-one-capture-out results (see onnx_models/amf_lstm.md).
DEFAULT_KEY = "orig"
#: Threshold grid and the cost of one false positive relative to one missed attack flow.
THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
FP_COST = 10.0
MIN_MALICIOUS = 20


def choose_validation(ws: WindowSet, seed: int, fraction: float = 0.25) -> list[str]:
    """Seeded choice of validation captures.

    A capture may go to validation only if every class it holds stays in at least
    one training capture, so the model never loses a class to validation.
    """
    groups = list(dict.fromkeys(ws.group.tolist()))
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    classes_of = {g: set(np.unique(ws.y[(ws.group == g) & (ws.y >= 0)]).tolist()) for g in groups}
    remaining = {c: sum(c in classes_of[g] for g in groups) for c in range(len(CLASSES))}
    want = max(1, round(fraction * len(groups)))
    val: list[str] = []
    for g in order:
        if len(val) >= want:
            break
        if all(remaining[c] >= 2 for c in classes_of[g]):
            val.append(g)
            for c in classes_of[g]:
                remaining[c] -= 1
    return val


def calibrate_thresholds(
    probs: np.ndarray, binary: np.ndarray, grid: tuple[float, ...] = THRESHOLD_GRID,
    fp_cost: float = FP_COST, min_malicious: int = MIN_MALICIOUS,
) -> dict[str, float]:
    """Per-class thresholds on validation scores: argmax of TP - fp_cost * FP.

    For each class ``c``, among validation flows whose most probable attack class is
    ``c``: TP counts malicious flows flagged, FP benign flows flagged. A false
    positive costs ``fp_cost`` missed attack flows (benign traffic dominates real
    networks, and an alert nobody can trust is worse than none). ``default`` is the
    same rule over all validation flows. A rule with fewer than ``min_malicious``
    malicious flows to weigh is not calibrated (it would only learn "flag nothing"
    from benign flows) and keeps the argmax-equivalent 0.5. Ties go to the lower
    threshold.
    """
    normal = CLASSES.index("normal")
    score = 1.0 - probs[:, normal]
    nn = probs.copy()
    nn[:, normal] = -1
    cls = nn.argmax(axis=1)

    def best(sel: np.ndarray) -> float:
        s, b = score[sel], binary[sel]
        if int((b == 1).sum()) < min_malicious:
            return grid[0]
        utility = [((s > t) & (b == 1)).sum() - fp_cost * ((s > t) & (b == 0)).sum() for t in grid]
        return float(grid[int(np.argmax(utility))])

    out: dict[str, float] = {"default": best(np.ones(len(score), dtype=bool))}
    for i, c in enumerate(CLASSES):
        if i != normal and (cls == i).any():
            out[c] = best(cls == i)
    return out


def _config(args: argparse.Namespace) -> amf_lstm.TrainConfig:
    return amf_lstm.TrainConfig(
        hidden=args.hidden, epochs=args.epochs, seed=args.seed,
        lr=float(getattr(args, "lr", None) or 1e-3),
        threads=int(getattr(args, "threads", None) or 2),
    )


def _fit(ws: WindowSet, cfg: amf_lstm.TrainConfig) -> amf_lstm.TrainResult:
    return amf_lstm.train(ws.x, ws.mask, ws.y, ws.group, len(CLASSES), cfg)


def loco(ws: WindowSet, cfg: amf_lstm.TrainConfig, seed: int) -> dict[str, Any]:
    """Leave-one-capture-out for the AMF-LSTM and the single-flow tree (pooled folds).

    In each fold the thresholds are calibrated on validation captures drawn from
    that fold's training captures; the held-out capture is only scored.
    """
    groups = list(dict.fromkeys(ws.group.tolist()))
    amf_p = np.zeros((len(ws), len(CLASSES)))
    hgb_p = np.zeros((len(ws), len(CLASSES)))
    fold_thr: dict[str, dict[str, float]] = {}
    for g in groups:
        te = ws.group == g
        tr = ws.take(~te)
        val = choose_validation(tr, seed)
        inner = np.isin(tr.group, val)
        m1 = _fit(tr.take(~inner), cfg).model
        vp, _ = amf_lstm.predict(m1, tr.x[inner], tr.mask[inner])
        thr = calibrate_thresholds(vp, tr.binary[inner])
        fold_thr[g] = thr
        model = _fit(tr, cfg).model
        amf_p[te], _ = amf_lstm.predict(model, ws.x[te], ws.mask[te])
        w = amf_lstm.sample_weights(tr.y, tr.group, len(CLASSES))
        hgb_p[te] = baselines.fit_single_flow(tr.x, tr.y, w, len(CLASSES), seed).predict_proba(ws.x[te])
        log.info("LOCO fold %s done", g)
    return {"amf": amf_p, "hgb": hgb_p, "thresholds": fold_thr}


def _split_metrics(ws: WindowSet, probs: np.ndarray, fold_thr: dict[str, dict[str, float]] | None,
                   thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Pooled metrics with each row decided by its fold's thresholds, plus per capture."""
    flagged = np.zeros(len(ws), dtype=bool)
    pred = np.zeros(len(ws), dtype=np.int64)
    score = np.zeros(len(ws))
    for g in dict.fromkeys(ws.group.tolist()):
        s = ws.group == g
        t = thresholds if thresholds is not None else (fold_thr or {}).get(g, {"default": 0.5})
        score[s], flagged[s], pred[s] = decide(probs[s], CLASSES, t)
    res = metrics_from_decisions(score, flagged, pred, ws.y, ws.binary, CLASSES)
    caps_of = {c: sorted(set(ws.group[ws.y == i].tolist())) for i, c in enumerate(CLASSES)}
    multi = [c for c, gs in caps_of.items() if len(gs) >= 2]
    f1 = [res["classes"][c]["f1"] for c in multi if res["classes"][c]["f1"] is not None]
    res["macro_f1_multi_capture"] = float(np.mean(f1)) if f1 else None
    res["multi_capture_classes"] = multi
    res["per_capture"] = {}
    for g in dict.fromkeys(ws.group.tolist()):
        s = ws.group == g
        bb = binary_report(ws.binary[s], flagged[s], score[s])
        res["per_capture"][g] = {k: bb[k] for k in ("precision", "recall", "f1", "auc", "fpr", "tp", "fp", "fn", "tn")}
    return res


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    key = args.key or DEFAULT_KEY
    cfg = _config(args)
    out = Path(args.out)
    caps = load_captures(args.data)
    ws = build_windows(caps, args.window, key)
    log.info("%d labeled windows from %d files in %d captures", len(ws), len(caps),
             len(set(ws.group.tolist())))
    trained_classes = sorted(set(ws.y[ws.y >= 0].tolist()))

    val = choose_validation(ws, args.seed, float(getattr(args, "val_fraction", None) or 0.25))
    inner = np.isin(ws.group, val)
    first = _fit(ws.take(~inner), cfg)
    vprobs, _ = amf_lstm.predict(first.model, ws.x[inner], ws.mask[inner])
    thresholds = calibrate_thresholds(vprobs, ws.binary[inner])
    held_out = metrics_from(vprobs, ws.y[inner], ws.binary[inner], CLASSES, thresholds)
    held_out["captures"] = val
    final = first if getattr(args, "no_refit", False) else _fit(ws, cfg)

    metrics: dict[str, Any] = {"validation_captures": held_out}
    if getattr(args, "loco", False):
        lo = loco(ws, cfg, args.seed)
        metrics["leave_one_capture_out"] = {
            "amf_lstm": _split_metrics(ws, lo["amf"], lo["thresholds"]),
            "single_flow_tree": _split_metrics(ws, lo["hgb"], lo["thresholds"]),
            "thresholds_per_fold": lo["thresholds"],
        }
    extra = getattr(args, "metrics_json", None)
    if extra:
        metrics["experiments"] = json.loads(Path(extra).read_text(encoding="utf-8"))

    sample = np.random.default_rng(args.seed).choice(len(ws), size=min(4096, len(ws)), replace=False)
    inputs = {"x": ws.x[np.sort(sample)], "mask": ws.mask[np.sort(sample)].astype(np.float32)}
    export_onnx(final.model, inputs, ["probs", "attention"], out)
    parity = check_parity(final.model, out, inputs, threads=cfg.threads)

    seconds = time.perf_counter() - t0
    mean = final.model.mean.numpy().astype(float).tolist()
    inv = final.model.inv_std.numpy().astype(float).tolist()
    card = {
        "name": out.name.removesuffix(".onnx"),
        "kind": "amf_lstm",
        "inputs": {"x": "[batch, window, features] float32, raw (normalized inside the graph)",
                   "mask": "[batch, window] float32 (1 = valid position)"},
        "outputs": {"probs": "[batch, classes]", "attention": "[batch, window]"},
        "features": list(WINDOW_FEATURES),
        "window": int(args.window),
        "window_key": key,
        "classes": list(CLASSES),
        "untrained_classes": [c for i, c in enumerate(CLASSES) if i not in trained_classes],
        "label_mapping": label_mapping(),
        "normalization": {"where": "inside the ONNX graph: (x - mean) * inv_std, masked positions zeroed",
                          "mean": mean, "inv_std": inv},
        "thresholds": thresholds,
        "threshold_rule": (f"per class, argmax over {list(THRESHOLD_GRID)} of TP - {FP_COST:g} x FP "
                           "on the validation captures' flows whose top attack class it is"),
        "training": {
            "files": [file_entry(c.path, c.rows) | {"capture": c.group} for c in caps],
            "captures": sorted(set(ws.group.tolist())),
            "validation_captures": val,
            "labeled_windows": int(len(ws)),
            "class_rows": {c: int((ws.y == i).sum()) for i, c in enumerate(CLASSES)},
            "command": "zeekml " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "seconds": round(seconds, 1),
            "seed": args.seed,
            "hidden": args.hidden,
            "epochs": args.epochs,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "threads": cfg.threads,
            "refit_on_all": not getattr(args, "no_refit", False),
            "final_losses": [round(v, 4) for v in final.losses],
            "parity_max_abs_diff": parity,
        },
        "metrics": metrics,
        "limitations": LIMITATIONS,
    }
    write_card(out, card)
    log.info("wrote %s (%.0f s)", out, seconds)
    return 0


LIMITATIONS = [
    "Trained on a few public captures (IoT-23, Stratosphere CTU-Normal/-Malware, a CICIDS2017 sample); "
    "networks unlike these shift the benign feature distribution and raise false positives.",
    "CICIDS2017 rows are random per-class samples: they were used as context-free windows (only the "
    "flow itself), so classes learned only from them (dos, bruteforce, webattack, infiltration) "
    "rest on single-flow evidence and on CICFlowMeter-to-Zeek field mapping.",
    "Classes with one training capture cannot be measured on an unseen capture; their "
    "leave-one-capture-out recall is not meaningful.",
    "Features carry no IP address identity; a host's window is its last flows in log order, "
    "so a very busy host's window spans only seconds.",
]
