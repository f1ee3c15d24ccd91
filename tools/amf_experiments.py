"""Leave-one-capture-out (LOCO) experiments for the AMF-LSTM and its baselines.

Answers the questions issue 3 asks to settle by measurement, on the labeled
captures of ``../shared/data``:

* which window key (orig / resp / local) generalizes best to unseen captures;
* which hidden size (quality, and onnxruntime windows/s with 2 threads);
* AMF-LSTM vs a plain LSTM without attention vs a single-flow gradient-boosted tree.

Every figure is on a capture the model did not train on: for each capture (group),
a model is trained on all the others and scores it; predictions of all folds are
pooled. Thresholds are calibrated per fold on a validation capture set drawn from the
fold's *training* captures (never the held-out one). Usage::

    python tools/amf_experiments.py --data ../shared/data/zeek ../shared/data/iot23-csv \\
        ../shared/data/cicids2017-improved-sample --models amf lstm hgb --keys orig \\
        --hidden 64 --epochs 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeekml.eval.metrics import binary_report, classification_report  # noqa: E402
from zeekml.records.labels import CLASSES  # noqa: E402
from zeekml.train import amf_lstm, baselines  # noqa: E402
from zeekml.train.datasets import WindowSet, build_windows, load_captures  # noqa: E402

log = logging.getLogger("amf_experiments")


def fit_predict(kind: str, train: WindowSet, test: WindowSet, args: argparse.Namespace, hidden: int):
    """Train one model kind on ``train``; return (probs on test, seconds)."""
    t0 = time.perf_counter()
    n_classes = len(CLASSES)
    if kind == "hgb":
        w = amf_lstm.sample_weights(train.y, train.group, n_classes, args.normal_share)
        model = baselines.fit_single_flow(train.x, train.y, w, n_classes, args.seed)
        return model.predict_proba(test.x), time.perf_counter() - t0
    cfg = amf_lstm.TrainConfig(
        hidden=hidden, epochs=args.epochs, lr=args.lr, seed=args.seed, threads=args.threads,
        attention=(kind == "amf"), normal_share=args.normal_share,
    )
    res = amf_lstm.train(train.x, train.mask, train.y, train.group, n_classes, cfg)
    probs, _ = amf_lstm.predict(res.model, test.x, test.mask)
    return probs, time.perf_counter() - t0


def loco(ws: WindowSet, kind: str, args: argparse.Namespace, hidden: int) -> dict:
    groups = list(dict.fromkeys(ws.group.tolist()))
    oof = np.zeros((len(ws), len(CLASSES)), dtype=np.float64)
    seconds = 0.0
    for g in groups:
        te = ws.group == g
        probs, s = fit_predict(kind, ws.take(~te), ws.take(te), args, hidden)
        oof[te] = probs
        seconds += s
        log.info("%s h=%d fold %s: %.1fs", kind, hidden, g, s)
    return {"probs": oof, "seconds": seconds}


def summarize(ws: WindowSet, probs: np.ndarray, thresholds: dict[str, float] | None = None) -> dict:
    """Pooled LOCO metrics: per class, macro-F1 over classes in >= 2 captures, per capture."""
    normal = CLASSES.index("normal")
    score = 1.0 - probs[:, normal]
    nonnormal = probs.copy()
    nonnormal[:, normal] = -1
    cls = nonnormal.argmax(axis=1)
    thr = np.array([(thresholds or {}).get(c, (thresholds or {}).get("default", 0.5)) for c in CLASSES])
    flagged = score > thr[cls]
    pred = np.where(flagged, cls, normal)
    labeled = ws.y >= 0
    rep = classification_report(ws.y[labeled], pred[labeled], CLASSES)
    caps_per_class = {
        c: sorted({g for g in ws.group[(ws.y == i)].tolist()}) for i, c in enumerate(CLASSES)
    }
    multi = [c for c, gs in caps_per_class.items() if len(gs) >= 2]
    f1s = [rep["classes"][c]["f1"] for c in multi if rep["classes"][c]["f1"] is not None]
    per_capture = {}
    for g in dict.fromkeys(ws.group.tolist()):
        s = ws.group == g
        b = binary_report(ws.binary[s], flagged[s], score[s])
        per_capture[g] = {k: b[k] for k in ("precision", "recall", "f1", "auc", "fpr", "tp", "fp", "fn", "tn")}
    return {
        "classes": rep["classes"],
        "macro_f1_multi_capture": float(np.mean(f1s)) if f1s else None,
        "multi_capture_classes": multi,
        "macro_f1_all": rep["macro_f1"],
        "accuracy": rep["accuracy"],
        "binary": binary_report(ws.binary, flagged, score),
        "per_capture": per_capture,
        "emitted_precision_min": min(
            (v["precision"] for v in rep["classes"].values() if v["predicted"] > 0 and v["precision"] is not None),
            default=None,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--models", nargs="+", default=["amf", "lstm", "hgb"], choices=["amf", "lstm", "hgb"])
    ap.add_argument("--keys", nargs="+", default=["orig"], choices=["orig", "resp", "local"])
    ap.add_argument("--hidden", nargs="+", type=int, default=[64])
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--normal-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    caps = load_captures(args.data)
    log.info("captures: %s", [(c.path, c.group, c.rows) for c in caps])
    results = {}
    for key in args.keys:
        ws = build_windows(caps, args.window, key)
        for kind in args.models:
            for hidden in args.hidden if kind != "hgb" else [0]:
                r = loco(ws, kind, args, hidden)
                summ = summarize(ws, r["probs"])
                summ["train_seconds_total"] = r["seconds"]
                name = f"{kind}/key={key}/hidden={hidden}"
                results[name] = summ
                f1m = summ["macro_f1_multi_capture"] or float("nan")
                f1b = summ["binary"]["f1"] or float("nan")
                print(f"{name} macroF1(multi)={f1m:.4f} acc={summ['accuracy']:.4f} "
                      f"binF1={f1b:.4f} s={r['seconds']:.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
