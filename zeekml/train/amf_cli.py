"""``zeekml train amf``: train, calibrate, export and document an AMF-LSTM model.

Steps (all seeded, all split by whole capture):

1. read the labeled captures with the runtime's readers and build windows with the
   runtime's feature and window code (:mod:`zeekml.train.datasets`);
2. leave-one-capture-out (LOCO): for every capture, a model trained on all the
   others scores it. These out-of-fold scores are the validation data: the
   per-class thresholds of the shipped model are calibrated on them (no capture's
   threshold comes from a model that trained on it), and the card's LOCO metrics
   decide each held-out capture with thresholds calibrated on the *other* captures'
   out-of-fold scores, so no capture's labels choose its own threshold;
3. train the shipped model on every capture and export it to ONNX, checking
   onnxruntime against torch on real windows;
4. with ``--baselines``, the single-flow tree goes through the same LOCO and is
   recorded beside the AMF-LSTM.
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

from zeekml.eval.amf_eval import decide, metrics_from_decisions
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


def calibrate_thresholds(
    probs: np.ndarray, binary: np.ndarray, known: np.ndarray | None = None,
    grid: tuple[float, ...] = THRESHOLD_GRID, fp_cost: float = FP_COST,
    min_malicious: int = MIN_MALICIOUS,
) -> dict[str, float]:
    """Per-class thresholds on out-of-fold scores: argmax of TP - fp_cost * FP.

    For each class ``c``, among validation flows whose most probable attack class is
    ``c``: TP counts malicious flows flagged, FP benign flows flagged. A false
    positive costs ``fp_cost`` missed attack flows (benign traffic dominates real
    networks, and an alert nobody can trust is worse than none). ``default`` is the
    same rule over all validation flows.

    ``known[i, c]`` says whether the model that scored row ``i`` was trained on class
    ``c``; rows scored by a model that never saw ``c`` do not calibrate ``c`` (with
    out-of-fold scores, a class found in one capture only is unknown to that
    capture's fold model). A rule with fewer than ``min_malicious`` malicious flows
    to weigh is not calibrated (it would only learn "flag nothing" from benign flows)
    and keeps the argmax-equivalent 0.5. Ties go to the lower threshold.
    """
    normal = CLASSES.index("normal")
    score = 1.0 - probs[:, normal]
    nn = probs.copy()
    nn[:, normal] = -1
    cls = nn.argmax(axis=1)
    if known is None:
        known = np.ones(probs.shape, dtype=bool)

    def best(sel: np.ndarray) -> float:
        s, b = score[sel], binary[sel]
        if int((b == 1).sum()) < min_malicious:
            return grid[0]
        utility = [((s > t) & (b == 1)).sum() - fp_cost * ((s > t) & (b == 0)).sum() for t in grid]
        return float(grid[int(np.argmax(utility))])

    out: dict[str, float] = {"default": best(np.ones(len(score), dtype=bool))}
    for i, c in enumerate(CLASSES):
        if i != normal and (cls == i).any():
            out[c] = best((cls == i) & known[:, i])
    return out


def known_classes(ws: WindowSet) -> np.ndarray:
    """``[N, C]``: was class c in the training captures of row i's out-of-fold model?"""
    groups = np.asarray(ws.group)
    out = np.zeros((len(ws), len(CLASSES)), dtype=bool)
    for c in range(len(CLASSES)):
        with_c = set(groups[ws.y == c].tolist())
        if len(with_c) >= 2:
            out[:, c] = True
        elif len(with_c) == 1:
            out[:, c] = groups != next(iter(with_c))
    return out


def _config(args: argparse.Namespace) -> amf_lstm.TrainConfig:
    return amf_lstm.TrainConfig(
        hidden=args.hidden, epochs=args.epochs, seed=args.seed,
        lr=float(getattr(args, "lr", None) or 1e-3),
        threads=int(getattr(args, "threads", None) or 2),
        ensemble=int(getattr(args, "ensemble", None) or 1),
    )


def _fit(ws: WindowSet, cfg: amf_lstm.TrainConfig) -> tuple[amf_lstm.AmfEnsemble, float, list]:
    return amf_lstm.train_ensemble(ws.x, ws.mask, ws.y, ws.group, len(CLASSES), cfg)


def fit_kind(kind: str, ws: WindowSet, cfg: amf_lstm.TrainConfig, seed: int):
    """Train one model kind ("amf", "lstm" or "hgb"); return ``predict(x, mask) -> probs``."""
    if kind == "hgb":
        w = amf_lstm.sample_weights(ws.y, ws.group, len(CLASSES), cfg.normal_share)
        tree = baselines.fit_single_flow(ws.x, ws.y, w, len(CLASSES), seed, threads=1)
        return lambda x, mask: tree.predict_proba(x)
    c = amf_lstm.TrainConfig(**{**cfg.__dict__, "attention": kind == "amf"})
    model = _fit(ws, c)[0]
    return lambda x, mask: amf_lstm.predict(model, x, mask)[0]


def loco(ws: WindowSet, cfg: amf_lstm.TrainConfig, seed: int,
         kinds: tuple[str, ...] = ("amf",)) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of each model kind: each capture scored by a model
    trained on all the other captures."""
    groups = list(dict.fromkeys(ws.group.tolist()))
    probs = {k: np.zeros((len(ws), len(CLASSES))) for k in kinds}
    for g in groups:
        te = ws.group == g
        tr = ws.take(~te)
        for k in kinds:
            t0 = time.perf_counter()
            probs[k][te] = fit_kind(k, tr, cfg, seed)(ws.x[te], ws.mask[te])
            log.info("LOCO %s fold %s: %.0f s", k, g, time.perf_counter() - t0)
    return probs


def fold_thresholds(ws: WindowSet, oof: np.ndarray,
                    fp_cost: float = FP_COST) -> dict[str, dict[str, float]]:
    """For each capture, thresholds calibrated on every *other* capture's OOF scores."""
    known = known_classes(ws)
    out = {}
    for g in dict.fromkeys(ws.group.tolist()):
        o = ws.group != g
        out[g] = calibrate_thresholds(oof[o], ws.binary[o], known[o], fp_cost=fp_cost)
    return out


def split_metrics(ws: WindowSet, probs: np.ndarray, fold_thr: dict[str, dict[str, float]] | None,
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
    emitted = [v["precision"] for c, v in res["classes"].items()
               if res["predicted"][c] > 0 and v["precision"] is not None]
    res["min_precision_of_emitted_classes"] = min(emitted) if emitted else None
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
    from zeekml.cli.pairing import read_options
    from zeekml.sources.open import read_table

    options = read_options(args)
    caps = load_captures(args.data, reader=lambda p: read_table([p], options=options))
    ws = build_windows(caps, args.window, key)
    log.info("%d labeled windows from %d files in %d captures", len(ws), len(caps),
             len(set(ws.group.tolist())))
    trained_classes = sorted(set(ws.y[ws.y >= 0].tolist()))

    load_seconds = time.perf_counter() - t0
    kinds = ("amf", "hgb") if getattr(args, "baselines", False) else ("amf",)
    oof = loco(ws, cfg, args.seed, kinds)
    fp_cost = getattr(args, "fp_cost", None)
    fp_cost = FP_COST if fp_cost is None else float(fp_cost)  # an explicit 0 stays 0
    thresholds = calibrate_thresholds(oof["amf"], ws.binary, known_classes(ws), fp_cost=fp_cost)
    t_fit = time.perf_counter()
    final, _, final_losses = _fit(ws, cfg)
    # the shipped model's training: reading + windowing + the final fit (LOCO is evaluation)
    train_seconds = load_seconds + time.perf_counter() - t_fit

    lo: dict[str, Any] = {}
    names = {"amf": "amf_lstm", "hgb": "single_flow_tree"}
    per_fold: dict[str, Any] = {}
    for k in kinds:
        per_fold[names[k]] = fold_thresholds(ws, oof[k], fp_cost)
        lo[names[k]] = split_metrics(ws, oof[k], per_fold[names[k]])
    lo["thresholds_per_fold"] = per_fold
    metrics: dict[str, Any] = {"leave_one_capture_out": lo}
    findings: list[str] = []
    extra_path = getattr(args, "metrics_json", None)
    if extra_path:
        # measured elsewhere (tools/amf_experiments.py): comparisons and what they showed
        extra = json.loads(Path(extra_path).read_text(encoding="utf-8"))
        findings = [str(x) for x in extra.pop("findings", [])]
        plain = extra.pop("plain_lstm", None)
        if plain is not None and "leave_one_capture_out" in metrics:
            metrics["leave_one_capture_out"]["plain_lstm"] = plain
        metrics["experiments"] = extra

    sample = np.random.default_rng(args.seed).choice(len(ws), size=min(4096, len(ws)), replace=False)
    inputs = {"x": ws.x[np.sort(sample)], "mask": ws.mask[np.sort(sample)].astype(np.float32)}
    export_onnx(final, inputs, ["probs", "attention"], out)
    parity = check_parity(final, out, inputs, threads=cfg.threads)

    seconds = time.perf_counter() - t0  # everything, LOCO included
    mean = final.mean.numpy().astype(float).tolist()
    inv = final.inv_std.numpy().astype(float).tolist()
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
        "threshold_rule": (f"per class, argmax over {list(THRESHOLD_GRID)} of TP - {fp_cost:g} x FP "
                           "on the out-of-fold flows whose top attack class it is"),
        "training": {
            "files": [file_entry(c.path, c.rows) | {"capture": c.group} for c in caps],
            "captures": sorted(set(ws.group.tolist())),
            "validation": "out-of-fold (leave-one-capture-out) scores of every capture",
            "labeled_windows": int(len(ws)),
            "class_rows": {c: int((ws.y == i).sum()) for i, c in enumerate(CLASSES)},
            "command": "zeekml " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "seconds": round(train_seconds, 1),
            "seconds_total_with_evaluation": round(seconds, 1),
            "seed": args.seed,
            "hidden": args.hidden,
            "epochs": args.epochs,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "threads": cfg.threads,
            "ensemble": cfg.ensemble,
            "fp_cost": fp_cost,
            "final_losses": [[round(v, 4) for v in member] for member in final_losses],
            "parity_max_abs_diff": parity,
        },
        "metrics": metrics,
        "findings": findings,
        "limitations": LIMITATIONS,
    }
    write_card(out, card)
    md = out.with_name(out.name.removesuffix(".onnx") + ".md")
    md.write_text(markdown(card), encoding="utf-8")
    log.info("wrote %s, its card and %s (%.0f s)", out, md.name, seconds)
    return 0


def _members(t: dict[str, Any]) -> str:
    k, seed = int(t.get("ensemble", 1)), int(t["seed"])
    if k == 1:
        return f"one model, seed {seed}"
    return f"the graph averages {k} such models trained with seeds {seed}..{seed + k - 1}"


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(card: dict[str, Any]) -> str:
    """The short human-readable card (``NAME.md``), generated from the JSON card."""
    t = card["training"]
    m = card["metrics"]
    lines = [
        f"# {card['name']}: AMF-LSTM multi-class flow classifier",
        "",
        "Attention-based multi-flow LSTM (after the AMF-LSTM paper): each flow is classified "
        f"from its own features and those of the previous flows of the same host, window "
        f"n = {card['window']}, keyed by the **{card['window_key']}** side, LSTM with "
        f"{t['hidden']} hidden units, attention over the window, softmax over "
        f"{len(card['classes'])} classes; " + _members(t) + f". Inputs: raw `x [batch, {card['window']}, "
        f"{len(card['features'])}]` and `mask`; normalization is inside the graph; outputs "
        "`probs` and `attention`.",
        "",
        f"Classes: {', '.join(card['classes'])}. Untrained (no training data, never "
        f"expected to be emitted): {', '.join(card['untrained_classes']) or 'none'}.",
        "",
        "## Training",
        "",
        f"Reproduce: `{t['command']}` ({t['seconds']:.0f} s to read the data and train the "
        f"shipped model, {t.get('seconds_total_with_evaluation', 0):.0f} s with the leave-one-capture-out "
        f"evaluation, on this 2-core machine; seed {t['seed']}, {t['epochs']} epochs, lr {t['lr']}, {t['threads']} torch threads). "
        f"{t['labeled_windows']} labeled windows; export parity max |torch - onnxruntime| = "
        f"{t['parity_max_abs_diff']:.2g}.",
        "",
        "| file | capture | rows | sha256 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {f['path']} | {f['capture'] if f['capture'] != f['path'] else '(itself)'} | "
              f"{f['rows']} | {f['sha256'][:12]}... |" for f in t["files"]]
    lines += ["", "Rows per class: " + ", ".join(f"{c} {n}" for c, n in t["class_rows"].items()), ""]
    lines += ["## Thresholds", "", f"{card['threshold_rule']}; validation: {t['validation']}.", "",
              ", ".join(f"{c}: {v}" for c, v in card["thresholds"].items()), ""]
    lo = m.get("leave_one_capture_out")
    if lo:
        lines += ["## Leave-one-capture-out (each capture scored by a model not trained on it)", "",
                  "| model | macro-F1 (classes in >= 2 captures) | macro-F1 (all) | accuracy | "
                  "binary F1 | binary AUC | binary FPR | min precision of emitted classes |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in ("amf_lstm", "single_flow_tree", "plain_lstm"):
            r = lo.get(name)
            if r:
                b = r["binary"]
                lines.append(f"| {name} | {_f(r['macro_f1_multi_capture'])} | {_f(r['macro_f1'])} | "
                             f"{_f(r['accuracy'])} | {_f(b['f1'])} | {_f(b['auc'])} | {_f(b['fpr'])} | "
                             f"{_f(r['min_precision_of_emitted_classes'])} |")
        amf = lo["amf_lstm"]
        lines += ["", "AMF-LSTM per class (pooled over folds):", "",
                  "| class | precision | recall | F1 | flows |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {_f(v['precision'])} | {_f(v['recall'])} | {_f(v['f1'])} | {v['support']} |"
                  for c, v in amf["classes"].items()]
        lines += ["", "AMF-LSTM per held-out capture (binary):", "",
                  "| capture | F1 | AUC | FPR | tp | fp | fn | tn |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {g} | {_f(v['f1'])} | {_f(v['auc'])} | {_f(v['fpr'])} | {v['tp']} | {v['fp']} | "
                  f"{v['fn']} | {v['tn']} |" for g, v in amf["per_capture"].items()]
        lines.append("")
    for note in card.get("findings", []):
        lines.append(f"- {note}")
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)


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
