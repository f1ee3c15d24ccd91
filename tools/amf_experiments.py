"""Leave-one-capture-out (LOCO) experiments for the AMF-LSTM and its baselines.

Answers the questions issue 3 asks to settle by measurement, on the labeled
captures of ``../shared/data``:

* which window key (orig / resp / local) generalizes best to unseen captures;
* which hidden size (quality, and onnxruntime windows/s with 2 threads);
* AMF-LSTM vs a plain LSTM without attention vs a single-flow gradient-boosted tree.

Every figure is on a capture the model did not train on: for each capture (group),
a model is trained on all the others and scores it; predictions of all folds are
pooled. With ``--calibrate``, each held-out capture is decided with thresholds
calibrated on the *other* captures' out-of-fold scores (as ``zeekml train amf``
does); without it every fold uses the argmax-equivalent 0.5. Usage::

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

from zeekml.records.labels import CLASSES
from zeekml.train import amf_lstm
from zeekml.train.amf_cli import fold_thresholds, loco, split_metrics
from zeekml.train.datasets import build_windows, load_captures

log = logging.getLogger("amf_experiments")


def windows_per_second(sess, x: np.ndarray, m: np.ndarray, seconds: float) -> float:
    """Windows/s of ``sess`` on one batch, run repeatedly for ``seconds`` after a warm-up."""
    sess.run(None, {"x": x, "mask": m})
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"x": x, "mask": m})
        k += 1
    return k * len(x) / (time.perf_counter() - t0)


def bench_model(path: str, threads: int, batches: tuple[int, ...] = (1024, 4096), seconds: float = 3.0) -> dict:
    """onnxruntime windows/s of an exported model file (e.g. the shipped ensemble) per batch size."""
    from zeekml.models.card import load_card
    from zeekml.train.export import session

    card = load_card(path)
    n, nf = int(card.data["window"]), len(card.data["features"])
    sess = session(path, threads)
    rng = np.random.default_rng(0)
    out = {}
    for batch in batches:
        x = rng.normal(size=(batch, n, nf)).astype(np.float32)
        m = np.ones((batch, n), dtype=np.float32)
        out[batch] = windows_per_second(sess, x, m, seconds)
        print(f"{path}: batch {batch:5d}: {out[batch]:10.0f} windows/s  (onnxruntime, {threads} threads)",
              flush=True)
    return {str(b): round(v) for b, v in out.items()}


def bench(hiddens: list[int], window: int, threads: int, batch: int = 1024, seconds: float = 3.0) -> dict:
    """onnxruntime windows/s of the exported graph per hidden size, and the ratio to the first.

    Speed does not depend on the weights, so untrained models of each size are
    exported; inputs are real-shaped windows (all positions valid). The first hidden
    size listed is the in-run baseline the others are compared with.
    """
    import tempfile

    from zeekml.train.export import export_onnx, session
    from zeekml.windows.host_window import WINDOW_FEATURES

    nf = len(WINDOW_FEATURES)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, window, nf)).astype(np.float32)
    m = np.ones((batch, window), dtype=np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for h in hiddens:
            model = amf_lstm.AmfLstm(nf, len(CLASSES), h)
            path = export_onnx(model, {"x": x[:8], "mask": m[:8]}, ["probs", "attention"], f"{tmp}/h{h}.onnx")
            out[h] = windows_per_second(session(path, threads), x, m, seconds)
    base = out[hiddens[0]]
    for h in hiddens:
        print(f"hidden {h:4d}: {out[h]:10.0f} windows/s  ratio vs hidden {hiddens[0]}: {out[h] / base:.2f}"
              f"  (onnxruntime, {threads} threads, batch {batch})", flush=True)
    return {str(h): {"windows_per_s": round(v), "ratio": round(v / base, 3)} for h, v in out.items()}


def recalibrate(npz: str, costs: list[float], kind: str = "amf") -> dict:
    """Per-fold calibration at each false-positive cost, on saved out-of-fold probabilities.

    ``npz`` is a ``--save-probs`` file; each capture is decided with thresholds calibrated on
    the *other* captures' out-of-fold scores, exactly as ``zeekml train amf --fp-cost C``
    evaluates, without training again."""
    from zeekml.train.datasets import WindowSet

    d = np.load(npz, allow_pickle=False)
    n = len(d["y"])
    ws = WindowSet(np.zeros((n, 1, 1), np.float32), np.zeros((n, 1), bool), d["y"], d["binary"],
                   d["group"].astype(object))
    probs = d[f"probs_{kind}"]
    out = {}
    for cost in costs:
        r = split_metrics(ws, probs, fold_thresholds(ws, probs, cost))
        b = r["binary"]
        print(f"fp_cost {cost:g}: macroF1(multi)={r['macro_f1_multi_capture']:.3f} binF1={b['f1']:.3f} "
              f"FPR={b['fpr']:.4f}", flush=True)
        for g, v in r["per_capture"].items():
            f1 = "n/a" if v["f1"] is None else f"{v['f1']:.3f}"
            fpr = "n/a" if v["fpr"] is None else f"{v['fpr']:.4f}"
            print(f"    {g}: F1 {f1} FPR {fpr}", flush=True)
        out[str(cost)] = r
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+")
    ap.add_argument("--bench", action="store_true", help="only measure onnxruntime speed per --hidden")
    ap.add_argument("--bench-model", metavar="ONNX", help="only measure onnxruntime speed of this model file")
    ap.add_argument("--models", nargs="+", default=["amf", "lstm", "hgb"], choices=["amf", "lstm", "hgb"])
    ap.add_argument("--keys", nargs="+", default=["orig"], choices=["orig", "resp", "local"])
    ap.add_argument("--hidden", nargs="+", type=int, default=[64])
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--normal-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=int, default=1, help="members per model (seeds SEED..)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibrate", action="store_true",
                    help="decide each held-out capture with thresholds calibrated on the other "
                         "captures' out-of-fold scores (as the trainer does); default 0.5")
    ap.add_argument("--fp-cost", type=float, default=10.0, help="with --calibrate: cost of a false positive")
    ap.add_argument("--recalibrate", metavar="NPZ", help="only re-decide saved --save-probs "
                    "out-of-fold probabilities at each --fp-costs value")
    ap.add_argument("--fp-costs", nargs="+", type=float, default=[10, 30, 100, 300])
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--save-probs", metavar="PREFIX", help="save pooled LOCO probabilities as PREFIX.KEY.HIDDEN.npz")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.recalibrate:
        res = recalibrate(args.recalibrate, args.fp_costs)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    if args.bench_model:
        res = {"bench_model": bench_model(args.bench_model, args.threads)}
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    if args.bench:
        res = bench(args.hidden, args.window, args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps({"bench": res}, indent=1))
        return 0
    if not args.data:
        ap.error("--data is required (except with --bench)")
    caps = load_captures(args.data)
    log.info("captures: %s", [(c.path, c.group, c.rows) for c in caps])
    results = {}
    for key in args.keys:
        ws = build_windows(caps, args.window, key)
        for hidden in args.hidden:
            cfg = amf_lstm.TrainConfig(hidden=hidden, epochs=args.epochs, lr=args.lr, seed=args.seed,
                                       threads=args.threads, normal_share=args.normal_share,
                                       ensemble=args.ensemble)
            t0 = time.perf_counter()
            probs = loco(ws, cfg, args.seed, tuple(args.models))
            for kind in args.models:
                thr = fold_thresholds(ws, probs[kind], args.fp_cost) if args.calibrate else None
                summ = split_metrics(ws, probs[kind], thr)
                summ["thresholds_per_fold"] = thr
                name = f"{kind}/key={key}/hidden={hidden if kind != 'hgb' else 0}"
                results[name] = summ
                f1m = summ["macro_f1_multi_capture"] or float("nan")
                f1b = summ["binary"]["f1"] or float("nan")
                print(f"{name} macroF1(multi)={f1m:.4f} acc={summ['accuracy']:.4f} "
                      f"binF1={f1b:.4f}", flush=True)
            log.info("key=%s hidden=%d: %.0f s", key, hidden, time.perf_counter() - t0)
            if args.save_probs:
                np.savez_compressed(
                    f"{args.save_probs}.{key}.{hidden}.npz", y=ws.y, binary=ws.binary,
                    group=ws.group.astype(str), **{f"probs_{k}": v for k, v in probs.items()},
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
