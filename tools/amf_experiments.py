"""Leave-one-capture-out (LOCO) experiments for the AMF-LSTM and its baselines.

Settles by measurement what the card's findings say, on the captures of a corpus file
(``tools/shared-corpus.json``): which window key (orig / resp / local), which window
features (``--drop`` leaves features out, for ablations), which hidden size, and the
AMF-LSTM against a plain LSTM without attention and the single-flow tree. Every figure
is on a capture the scoring model never saw, decided with thresholds calibrated on
the *other* captures' out-of-fold benign flows (exactly what ``zeekml train amf``
reports; :mod:`zeekml.train.amf_loco`). Usage::

    python tools/amf_experiments.py --corpus tools/shared-corpus.json --keys local resp orig \\
        --models amf hgb --hidden 32 --epochs 6 --samples-per-epoch 30000 --json out.json

    python tools/amf_experiments.py --bench-model onnx_models/amf_lstm.onnx   # windows/s
    python tools/amf_experiments.py --bench --hidden 32 64                     # per hidden size
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
from zeekml.train import amf_loco, amf_lstm, baselines
from zeekml.train.amf_thresholds import DEFAULT_ALPHA
from zeekml.train.datasets import WindowSet
from zeekml.windows.host_window import WINDOW_FEATURES

log = logging.getLogger("amf_experiments")


def windows_per_second(sess, x: np.ndarray, m: np.ndarray, seconds: float) -> float:
    """Windows/s of ``sess`` on one batch, run repeatedly for ``seconds`` after a warm-up.
    ``x [B, n, F]``; a time-major graph (input ``xs``) gets it as ``[n, B, F]`` (random
    windows: already "normalized")."""
    names = {i.name for i in sess.get_inputs()}
    feed = ({"xs": np.ascontiguousarray(x.transpose(1, 0, 2)), "mask": m} if "xs" in names
            else {"x": x, "mask": m})
    sess.run(None, feed)
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        sess.run(None, feed)
        k += 1
    return k * len(x) / (time.perf_counter() - t0)


def bench_model(paths: list[str], threads: int, batches: tuple[int, ...] = (1024, 4096),
                seconds: float = 3.0) -> dict:
    """onnxruntime windows/s of exported model files per batch size; the first file is the
    in-run baseline the others are compared with."""
    from zeekml.models.card import load_card
    from zeekml.train.export import session

    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {}
    for path in paths:
        card = load_card(path)
        n, nf = int(card.data["window"]), len(card.data["features"])
        sess = session(path, threads)
        out[path] = {}
        for batch in batches:
            x = rng.normal(size=(batch, n, nf)).astype(np.float32)
            m = np.ones((batch, n), dtype=np.float32)
            out[path][batch] = windows_per_second(sess, x, m, seconds)
    base = out[paths[0]]
    for path in paths:
        for batch in batches:
            print(f"{path}: batch {batch:5d}: {out[path][batch]:10.0f} windows/s, ratio vs {paths[0]}: "
                  f"{out[path][batch] / base[batch]:.2f}  (onnxruntime, {threads} threads)", flush=True)
    return {p: {str(b): round(v) for b, v in r.items()} for p, r in out.items()}


def bench(hiddens: list[int], window: int, threads: int, batch: int = 1024, seconds: float = 3.0) -> dict:
    """onnxruntime windows/s of the exported graph per hidden size (untrained weights: speed
    does not depend on them); the first size is the in-run baseline."""
    import tempfile

    from zeekml.train.amf_training import export_amf
    from zeekml.train.export import session

    nf = len(WINDOW_FEATURES)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, window, nf)).astype(np.float32)
    m = np.ones((batch, window), dtype=np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for h in hiddens:
            path = Path(tmp) / f"h{h}.onnx"  # exported as the trainer exports it
            export_amf(amf_lstm.AmfLstm(nf, len(CLASSES), h), x[:8], m[:8], path, threads)
            out[h] = windows_per_second(session(path, threads), x, m, seconds)
    base = out[hiddens[0]]
    for h in hiddens:
        print(f"hidden {h:4d}: {out[h]:10.0f} windows/s  ratio vs hidden {hiddens[0]}: {out[h] / base:.2f}"
              f"  (onnxruntime, {threads} threads, batch {batch})", flush=True)
    return {str(h): {"windows_per_s": round(v), "ratio": round(v / base, 3)} for h, v in out.items()}


def without(ws: WindowSet, drop: list[str]) -> WindowSet:
    """The window set with the named features left out (an ablation)."""
    unknown = set(drop) - set(WINDOW_FEATURES)
    if unknown:
        raise SystemExit(f"unknown features: {sorted(unknown)}")
    keep = [i for i, f in enumerate(WINDOW_FEATURES) if f not in drop]
    return WindowSet(ws.x[:, :, keep], ws.mask, ws.y, ws.binary, ws.group, ws.uids, ws.row)


def fitters(models: list[str], cfg: amf_lstm.TrainConfig, flow_cols: list[int]) -> dict:
    """Model kinds by name: amf (attention), lstm (no attention), hgb (single-flow tree on
    the current flow's per-flow features)."""
    out = {}
    for kind in models:
        if kind == "hgb":
            def tree(train: WindowSet):
                w = amf_lstm.sample_weights(train.y, train.group, len(CLASSES), cfg.normal_share)
                xs = train.x[:, :, flow_cols]
                clf = baselines.fit_single_flow(xs, train.y, w, len(CLASSES), cfg.seed, threads=1,
                                                n_flow_features=len(flow_cols))
                return lambda x, mask: clf.predict_proba(x[:, :, flow_cols])
            out[kind] = tree
        else:
            c = amf_lstm.TrainConfig(**{**cfg.__dict__, "attention": kind == "amf"})

            def nn(train: WindowSet, c: amf_lstm.TrainConfig = c):
                model = amf_lstm.train_ensemble(train.x, train.mask, train.y, train.group, len(CLASSES), c)[0]
                return lambda x, mask: amf_lstm.predict(model, x, mask)[0]
            out[kind] = nn
    return out


def summary_line(name: str, r: dict) -> str:
    b = r["binary"]
    per = " ".join(f"{c}:{'-' if v['f1'] is None else round(v['f1'], 2)}" for c, v in r["classes"].items())
    return (f"{name}: macroF1(judged)={r['macro_f1_judged']:.3f} minprec={r['min_precision_of_emitted_classes']} "
            f"recall={b['recall']:.3f} fpr={b['fpr']:.4f} auc={b['auc']:.3f} "
            f"recall@pooledFPR0.5%={r['recall_at_pooled_fpr_0.5pct']:.3f} | {per}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="corpus file (e.g. tools/shared-corpus.json)")
    ap.add_argument("--bench", action="store_true", help="only measure onnxruntime speed per --hidden")
    ap.add_argument("--bench-model", nargs="+", metavar="ONNX",
                    help="only measure onnxruntime speed of these model files (first = baseline)")
    ap.add_argument("--models", nargs="+", default=["amf", "hgb"], choices=["amf", "lstm", "hgb"])
    ap.add_argument("--keys", nargs="+", default=["local"], choices=["orig", "resp", "local"])
    ap.add_argument("--drop", nargs="*", default=[], metavar="FEATURE", help="leave these window features out")
    ap.add_argument("--hidden", nargs="+", type=int, default=[32])
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--samples-per-epoch", type=int, default=30000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--normal-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=int, default=1, help="members per model (seeds SEED..)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="false-alarm budget of the calibrated thresholds")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--save-probs", metavar="PREFIX", help="save out-of-fold probabilities as PREFIX.KEY.HIDDEN.npz")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
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
    if not args.corpus:
        ap.error("--corpus is required (except with --bench/--bench-model)")
    from zeekml.eval.corpus import load_corpus
    from zeekml.features.flow_stats import FEATURES
    from zeekml.train.datasets import corpus_windows

    caps = load_corpus(args.corpus, labeled_only=True)
    flows_of = {c.name: c.flows for c in caps}
    kept = [f for f in WINDOW_FEATURES if f not in args.drop]
    flow_cols = [i for i, f in enumerate(kept) if f in FEATURES]
    results: dict = {"args": vars(args)}
    for key in args.keys:
        ws = without(corpus_windows(caps, args.window, key), args.drop)
        for hidden in args.hidden:
            cfg = amf_lstm.TrainConfig(hidden=hidden, epochs=args.epochs, lr=args.lr, seed=args.seed,
                                       threads=args.threads, normal_share=args.normal_share,
                                       ensemble=args.ensemble, samples_per_epoch=args.samples_per_epoch,
                                       batch_size=args.batch_size)
            t0 = time.perf_counter()
            probs = amf_loco.out_of_fold(ws, fitters(args.models, cfg, flow_cols))
            for kind in args.models:
                ft = amf_loco.fold_thresholds(ws, probs[kind], args.alpha)
                dec = amf_loco.decide(ws, probs[kind], {g: r.thresholds for g, r in ft.items()})
                name = f"{kind}/key={key}/hidden={hidden if kind != 'hgb' else 0}"
                notices = amf_loco.notices_per_capture(flows_of, ws, dec, kind)
                results[name] = amf_loco.report(ws, dec, notices)
                print(summary_line(name, results[name]), flush=True)
            log.info("key=%s hidden=%d: %.0f s", key, hidden, time.perf_counter() - t0)
            if args.save_probs:
                np.savez_compressed(
                    f"{args.save_probs}.{key}.{hidden}.npz", y=ws.y, binary=ws.binary, row=ws.row,
                    group=ws.group.astype(str), **{f"probs_{k}": v for k, v in probs.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
