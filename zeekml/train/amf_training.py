"""The AMF-LSTM training run behind ``zeekml train amf``: train, evaluate, calibrate, export.

A library (tools and notebooks call it): :class:`AmfTrainRequest` says what to do and
:func:`train` does it; only ``zeekml/cli/train.py`` knows the command line.

Steps (all seeded, every split by whole capture):

1. read the captures — a corpus file (``--corpus``, :mod:`zeekml.eval.corpus`: files
   grouped into captures honestly, with their label rules) or labeled files
   (``--data``) — and build every row's window with the runtime's feature and window
   code (:mod:`zeekml.train.datasets`);
2. leave-one-capture-out (:mod:`zeekml.train.amf_loco`): every labeled capture is
   scored by an AMF-LSTM and a single-flow tree trained on all the *other* captures;
3. thresholds (:mod:`zeekml.train.amf_thresholds`): the shipped per-class thresholds
   hold a false-alarm budget on every benign out-of-fold flow; each held-out capture
   of the LOCO tables is decided with thresholds calibrated the same way on the
   *other* captures only;
4. the shipped model is trained on every labeled capture and exported to ONNX (checked
   against torch on real windows); unlabeled captures of the corpus (presumed benign)
   are scored by it for their false-alarm counts;
5. the card (JSON), its summary (``NAME.md``) and the out-of-fold results file
   (Parquet, one row per flow: ``--loco-out``, default ``NAME.loco.parquet`` beside
   the model) are written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml import defaults
from zeekml.errors import ConfigError, ModelError
from zeekml.models.card import sha256_file, write_card
from zeekml.records.labels import CLASSES, label_mapping, targets
from zeekml.sources.options import ReadOptions
from zeekml.train import amf_loco, amf_lstm, baselines
from zeekml.train.amf_thresholds import (
    DEFAULT_ALPHA,
    MIN_CAPTURES,
    NOT_EMITTED,
    EmitRule,
    attack_view,
    calibrate,
)
from zeekml.train.datasets import (
    WindowSet,
    captures_from_files,
    contradicted_benign,
    corpus_windows,
    netflow_view_captures,
)
from zeekml.train.export import PARITY_ATOL, check_parity, export_onnx, session
from zeekml.windows.host_window import Normalization, time_major, window_features

log = logging.getLogger(__name__)

#: Window key chosen by leave-one-capture-out results (see onnx_models/amf_lstm.md).
DEFAULT_KEY = "local_dir"


@dataclass(frozen=True)
class AmfTrainRequest:
    """What one training run does (``zeekml train amf`` builds it from its options; tools
    and notebooks build it directly). Defaults are the documented ones."""

    out: Path
    corpus: str | None = None
    data: tuple[str, ...] = ()
    window: int = 10
    hidden: int = 32
    epochs: int = 8
    samples_per_epoch: int = 0
    batch_size: int = 256
    seed: int = 0
    key: str = DEFAULT_KEY
    threads: int = defaults.THREADS
    lr: float = 1e-3
    ensemble: int = 1
    #: share of the training weight given to benign windows (the attack classes share
    #: the rest equally; see :func:`~zeekml.train.amf_lstm.sample_weights`)
    normal_share: float = 0.5
    #: share of training windows shown with payload bytes unknown, as NetFlow gives them
    #: (:func:`~zeekml.train.amf_lstm.hide_payload_bytes`)
    hide_bytes: float = 0.0
    #: every fold (and the final fit) also trains on the NetFlow view of its Zeek captures
    #: (zeekml.train.datasets.netflow_view_captures); the view is measured either way
    netflow_view: bool = False
    #: windows also carry each flow's fan-out (zeekml.windows.fanout)
    fanout: bool = False
    #: benign labels a capture contradicts are neither trained on nor counted
    #: (zeekml.train.datasets.contradicted_benign)
    drop_contradicted: bool = False
    baselines: bool = True
    alpha: float = DEFAULT_ALPHA
    #: a class is emitted only when this many training captures hold it (None: 3 with a
    #: corpus, 1 with --data files; see zeekml.train.amf_thresholds)
    min_class_captures: int | None = None
    #: attack classes trained on but never emitted: left to another detector (zeekml's
    #: count detectors own portscan and bruteforce; see zeekml.train.amf_thresholds)
    deferred_classes: tuple[str, ...] = ()
    #: leave-one-capture-out on these captures only (None: every capture)
    folds: tuple[str, ...] | None = None
    loco_out: Path | None = None
    metrics_json: Path | None = None
    read: ReadOptions = field(default_factory=ReadOptions)
    #: the command line recorded in the card
    command: str = ""

    def __post_init__(self) -> None:
        if bool(self.corpus) == bool(self.data):
            raise ConfigError("train amf needs either a corpus or data files, not both")
        for name in ("window", "hidden", "epochs", "batch_size", "threads", "ensemble"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_epoch < 0:
            raise ConfigError(f"samples_per_epoch must be >= 0, got {self.samples_per_epoch}")
        if not (0.0 < self.alpha < 1.0):
            raise ConfigError(f"alpha must be a rate in (0, 1), got {self.alpha}")
        if not (0.0 < self.normal_share < 1.0):
            raise ConfigError(f"normal_share must be in (0, 1), got {self.normal_share}")
        if not (0.0 <= self.hide_bytes <= 1.0):
            raise ConfigError(f"hide_bytes must be in [0, 1], got {self.hide_bytes}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.min_class_captures is not None and self.min_class_captures < 1:
            raise ConfigError(f"min_class_captures must be >= 1, got {self.min_class_captures}")
        wrong = [c for c in self.deferred_classes if c not in CLASSES or c == "normal"]
        if wrong:
            raise ConfigError(f"deferred classes must be attack classes ({', '.join(CLASSES[1:])}), "
                              f"got {', '.join(wrong)}")

    @property
    def class_captures(self) -> int:
        """Training captures a class needs to be emitted (see ``min_class_captures``)."""
        if self.min_class_captures is not None:
            return self.min_class_captures
        return MIN_CAPTURES if self.corpus else 1


def _config(req: AmfTrainRequest) -> amf_lstm.TrainConfig:
    return amf_lstm.TrainConfig(
        hidden=req.hidden, epochs=req.epochs, seed=req.seed, lr=req.lr, threads=req.threads,
        ensemble=req.ensemble, samples_per_epoch=req.samples_per_epoch,
        batch_size=req.batch_size, normal_share=req.normal_share, hide_bytes=req.hide_bytes,
    )


def _fit(ws: WindowSet, cfg: amf_lstm.TrainConfig) -> tuple[amf_lstm.AmfEnsemble, float, list]:
    return amf_lstm.train_ensemble(ws.x, ws.mask, ws.y, ws.group, len(CLASSES), cfg)


def fitters(cfg: amf_lstm.TrainConfig, baseline: bool) -> dict[str, amf_loco.Fitter]:
    """Model kinds of the LOCO run: the AMF-LSTM, and the single-flow tree."""

    def amf(train: WindowSet):
        model = _fit(train, cfg)[0]
        return lambda x, mask: amf_lstm.predict(model, x, mask)[0]

    def tree(train: WindowSet):
        w = amf_lstm.sample_weights(train.y, train.group, len(CLASSES), cfg.normal_share)
        clf = baselines.fit_single_flow(train.x, train.y, w, len(CLASSES), cfg.seed, threads=1)
        return lambda x, mask: clf.predict_proba(x)

    out: dict[str, amf_loco.Fitter] = {"amf": amf}
    if baseline:
        out["hgb"] = tree
    return out


def _files(caps: list[Any]) -> list[dict[str, Any]]:
    """Every input file of the captures with its digest and rows (for the card)."""
    out = []
    for c in caps:
        rows = c.flows["source_file"].value_counts() if "source_file" in c.flows.columns else {}
        for f in c.files:
            out.append({"path": _shown(f), "sha256": sha256_file(Path(f)), "rows": int(rows.get(f, 0)),
                        "capture": c.name})
    return out


def _shown(path: str) -> str:
    """A path relative to the working directory when it is below it or a sibling of it."""
    p = Path(path).resolve()
    cwd = Path.cwd().resolve()
    for base, prefix in ((cwd, ""), (cwd.parent, "../")):
        try:
            return prefix + str(p.relative_to(base))
        except ValueError:
            continue
    return str(p)


def _contradicted_rows(ws: WindowSet, flows_of: dict[str, pd.DataFrame]) -> np.ndarray:
    """Per window of ``ws``: a benign label its capture contradicts (left out of training
    and of the figures, :func:`~zeekml.train.datasets.contradicted_benign`)."""
    out = np.zeros(len(ws), dtype=bool)
    if ws.row is None:
        return out
    for g, flows in flows_of.items():
        at = np.nonzero(ws.group == g)[0]
        if len(at):
            drop = contradicted_benign(flows, targets(flows, CLASSES)[0])
            out[at] = drop[ws.row[at]]
    return out


def _contradicted_report(report: dict[str, Any], dec: dict[str, np.ndarray],
                         contra: np.ndarray) -> dict[str, Any]:
    """What the contradicted benign labels would add to the pooled false-positive rate if
    they were counted as benign (the thresholds stay those the figures use)."""
    b = report["binary"]
    flagged = int((dec["flagged"] & contra).sum())
    negatives = int(b["fp"]) + int(b["tn"]) + int(contra.sum())
    return {"flows": int(contra.sum()), "flagged": flagged,
            "fpr_if_benign": (int(b["fp"]) + flagged) / negatives if negatives else None}


def train(req: AmfTrainRequest) -> int:
    """Train, evaluate leave-one-capture-out beside the single-flow tree, calibrate, export
    the model with its card and ``.md``; returns 0 (errors raise)."""
    t0 = time.perf_counter()
    key = req.key
    cfg = _config(req)
    out = Path(req.out)
    alpha = req.alpha
    corpus = req.corpus
    if corpus:
        from zeekml.eval.corpus import load_corpus

        caps = load_corpus(corpus)
    else:
        from zeekml.sources.open import read_table

        caps = captures_from_files(list(req.data),
                                   reader=lambda path: read_table([path], options=req.read))
    labeled = [c for c in caps if c.labeled]
    unlabeled = [c for c in caps if not c.labeled]
    ws = corpus_windows(labeled, req.window, key, req.fanout, req.drop_contradicted)
    flows_of = {c.name: c.flows for c in labeled}
    views = netflow_view_captures(labeled)
    vw = corpus_windows(views, req.window, key, req.fanout, req.drop_contradicted) if views else None
    view_flows = {c.name: c.flows for c in views}
    trainable = ws.y >= 0
    log.info("%d windows (%d labeled) in %d labeled captures, %d unlabeled captures",
             len(ws), int(trainable.sum()), len(labeled), len(unlabeled))
    trained_classes = sorted(set(ws.y[trainable].tolist()))
    load_seconds = time.perf_counter() - t0

    baseline = req.baselines
    kinds = fitters(cfg, baseline)
    folds = _folds(list(req.folds) if req.folds else None, ws)
    t_loco = time.perf_counter()
    oof, v_oof = amf_loco.out_of_fold_views(ws, kinds, folds, vw, req.netflow_view)
    loco_seconds = time.perf_counter() - t_loco
    full = ws
    v_full = vw
    if folds is not None:
        # only the held-out captures have out-of-fold scores: every table, threshold and
        # results-file row below comes from them alone
        held = np.isin(ws.group, folds)
        ws = ws.take(held)
        oof = {k: p[held] for k, p in oof.items()}
        flows_of = {g: f for g, f in flows_of.items() if g in set(folds)}
        if vw is not None:
            v_held = np.isin(vw.group, folds)
            vw = vw.take(v_held)
            v_oof = {k: p[v_held] for k, p in v_oof.items()}
    contra = _contradicted_rows(ws, flows_of) if req.drop_contradicted else None
    lo: dict[str, Any] = {}
    decisions: dict[str, dict[str, np.ndarray]] = {}
    v_dec: dict[str, dict[str, np.ndarray]] = {}
    per_fold: dict[str, Any] = {}
    per_fold_unknown: dict[str, Any] = {}
    unk = amf_loco.payload_unknown(ws)
    v_unk = amf_loco.payload_unknown(vw) if vw is not None else None
    split = amf_loco.splits_by_payload(ws, unk, vw, v_unk)
    rule = EmitRule(req.class_captures, tuple(req.deferred_classes))
    for kind, probs in oof.items():
        name = amf_loco.MODEL_NAMES[kind]
        if split:
            ft, fu = amf_loco.fold_thresholds_by_payload(ws, probs, unk, vw, v_oof.get(kind), v_unk,
                                                         alpha, rule, full)
            per_fold_unknown[name] = {g: r.thresholds for g, r in fu.items()}
        else:
            ft = amf_loco.fold_thresholds(ws, probs, alpha, rule, full)
        per_fold[name] = {g: r.thresholds for g, r in ft.items()}
        pu = per_fold_unknown.get(name)
        dec = amf_loco.decide(ws, probs, per_fold[name], unk, pu)
        notices = amf_loco.notices_per_capture(flows_of, ws, dec, name)
        lo[name] = amf_loco.report(ws, dec, notices)
        if contra is not None:
            lo[name]["contradicted_benign"] = _contradicted_report(lo[name], dec, contra)
        decisions[kind] = dec
        if vw is not None and len(vw):
            v_dec[kind] = amf_loco.decide(vw, v_oof[kind], per_fold[name], v_unk, pu)
            lo[name]["netflow_view"] = amf_loco.view_report(vw, v_dec[kind], view_flows, name)
    if "hgb" in oof:
        lo["amf_lstm_beats_single_flow_tree"] = amf_loco.beats(lo["amf_lstm"], lo["single_flow_tree"])
    lo["thresholds_per_fold"] = per_fold
    if split:
        lo["thresholds_payload_unknown_per_fold"] = per_fold_unknown
    lo["folds"] = folds if folds is not None else "all"
    lo["captures_held_out"] = amf_loco.captures_of(ws)
    lo["seconds"] = round(loco_seconds, 1)

    # the shipped thresholds: every benign out-of-fold flow (of each kind, when split)
    support = amf_loco.class_support(full)

    def ship(kind: str) -> tuple[Any, Any]:
        if split:
            return amf_loco.shipped_by_payload(ws, oof[kind], unk, vw, v_oof.get(kind), v_unk,
                                               alpha, support, rule)
        score, cls = attack_view(oof[kind], CLASSES)
        return calibrate(score, cls, ws.binary == 0, CLASSES, alpha, support=support,
                         rule=rule), None

    shipped, shipped_unknown = ship("amf")
    thresholds = shipped.thresholds
    thresholds_unknown = shipped_unknown.thresholds if shipped_unknown is not None else None

    t_fit = time.perf_counter()
    fit_on = full.take(trainable)
    if req.netflow_view and v_full is not None:
        fit_on = fit_on.concat(v_full.take(v_full.y >= 0))
    final, _, final_losses = _fit(fit_on, cfg)
    train_seconds = load_seconds + time.perf_counter() - t_fit

    sample = np.random.default_rng(req.seed).choice(len(ws), size=min(4096, len(ws)), replace=False)
    sample.sort()
    parity = export_amf(final, ws.x[sample], ws.mask[sample], out, threads=cfg.threads)

    presumed: dict[str, Any] = {}
    frames = []
    base_name = amf_loco.MODEL_NAMES["hgb"] if baseline else ""
    if "hgb" in oof:
        b_known, b_unknown = ship("hgb")
        base_thr = b_known.thresholds
        base_thr_unknown = b_unknown.thresholds if b_unknown is not None else None
    frames.append(amf_loco.oof_frame(ws, flows_of, "amf_lstm", decisions["amf"], base_name,
                                     decisions.get("hgb", _empty_decisions(len(ws)))))
    if unlabeled:
        uw = corpus_windows(unlabeled, req.window, key, req.fanout)
        u_probs = amf_lstm.predict(final, uw.x, uw.mask)[0]
        u_unk = amf_loco.payload_unknown(uw)
        u_dec = amf_loco.decide(uw, u_probs, {c.name: thresholds for c in unlabeled}, u_unk,
                                {c.name: thresholds_unknown for c in unlabeled}
                                if thresholds_unknown else None)
        u_flows = {c.name: c.flows for c in unlabeled}
        u_base = _empty_decisions(len(uw))
        if "hgb" in oof:
            tree = kinds["hgb"](fit_on)
            u_base = amf_loco.decide(uw, tree(uw.x, uw.mask), {c.name: base_thr for c in unlabeled},
                                     u_unk, {c.name: base_thr_unknown for c in unlabeled}
                                     if base_thr_unknown else None)
        frames.append(amf_loco.oof_frame(uw, u_flows, "amf_lstm", u_dec, base_name, u_base))
        pairs: list[tuple[str, dict[str, np.ndarray]]] = [("amf_lstm", u_dec)]
        if "hgb" in oof:
            pairs.append(("single_flow_tree", u_base))
        for name, dec in pairs:
            notices = amf_loco.notices_per_capture(u_flows, uw, _as_benign(uw, dec), name)
            for g in u_flows:
                s = uw.group == g
                presumed.setdefault(g, {"rows": int(s.sum())})[name] = {
                    "flagged": int(dec["flagged"][s].sum()),
                    "flagged_share": float(dec["flagged"][s].mean()) if s.any() else None,
                    "notices": notices.get(g, 0),
                    "notices_per_10k_flows": 1e4 * notices.get(g, 0) / max(int(s.sum()), 1),
                    "classes": {CLASSES[i]: int(((dec["pred"][s]) == i).sum())
                                for i in range(1, len(CLASSES)) if ((dec["pred"][s]) == i).any()},
                }
    results = pd.concat(frames, ignore_index=True)
    loco_out = Path(req.loco_out or out.with_name(out.name.removesuffix(".onnx") + ".loco.parquet"))
    loco_out.parent.mkdir(parents=True, exist_ok=True)
    results.to_parquet(loco_out, index=False)
    view_out = None
    if vw is not None and "amf" in v_dec:
        # the NetFlow view's out-of-fold rows, in the same format (rows index the view)
        view_out = loco_out.with_name(loco_out.name.removesuffix(".parquet") + ".netflow.parquet")
        amf_loco.oof_frame(vw, view_flows, "amf_lstm", v_dec["amf"], base_name,
                           v_dec.get("hgb", _empty_decisions(len(vw)))).to_parquet(view_out, index=False)

    metrics: dict[str, Any] = {"leave_one_capture_out": lo, "presumed_benign_unlabeled": presumed}
    findings: list[str] = []
    extra_path = req.metrics_json
    if extra_path:
        # measured elsewhere (tools/amf_experiments.py): comparisons and what they showed
        extra = json.loads(Path(extra_path).read_text(encoding="utf-8"))
        findings = [str(x) for x in extra.pop("findings", [])]
        metrics["experiments"] = extra

    seconds = time.perf_counter() - t0
    command = req.command
    card = {
        "name": out.name.removesuffix(".onnx"),
        "kind": "amf_lstm",
        "inputs": {"xs": "[window, batch, features] float32, time-major, (x - mean) * inv_std "
                         "with the card's normalization, 0 at masked positions",
                   "mask": "[batch, window] float32 (1 = valid position)"},
        "outputs": {"probs": "[batch, classes]", "attention": "[batch, window]"},
        "features": list(window_features(req.fanout)),
        "window": int(req.window),
        "window_key": key,
        "classes": list(CLASSES),
        "untrained_classes": [c for i, c in enumerate(CLASSES) if i not in trained_classes],
        "deferred_classes": list(req.deferred_classes),
        "label_mapping": label_mapping(),
        "normalization": {"where": "before the ONNX graph, by the runtime: (x - mean) * inv_std "
                                   "in float32, masked positions zeroed",
                          "mean": final.mean.numpy().astype(float).tolist(),
                          "inv_std": final.inv_std.numpy().astype(float).tolist()},
        "thresholds": thresholds,
        "threshold_rule": (
            f"per class: the lowest threshold (>= 0.5) at which at most alpha/{len(CLASSES) - 1} of the "
            f"benign out-of-fold flows raise that class (alpha = {alpha:g} over all attack classes); "
            f"calibrated on {shipped.benign_flows} benign flows, each scored by a model that never "
            f"trained on its capture; a class held by fewer than {req.class_captures} training "
            f"captures is not emitted (threshold {NOT_EMITTED:.6f}, above every score)"
            + (f", nor is a class left to another detector ({', '.join(req.deferred_classes)}: "
               f"deferred_classes)" if req.deferred_classes else "")
            + (f". Flows whose payload bytes are unknown (NetFlow, Argus, some Zeek flows) are "
               f"held to thresholds_payload_unknown: the same rule on the "
               f"{shipped_unknown.benign_flows} benign out-of-fold flows of that kind (those "
               f"above and the Zeek captures' NetFlow view), never below thresholds"
               if shipped_unknown is not None else "")),
        "threshold_support": shipped.as_dict(),
        **({"thresholds_payload_unknown": thresholds_unknown,
            "threshold_support_payload_unknown": shipped_unknown.as_dict()}
           if shipped_unknown is not None else {}),
        "training": {
            "corpus": ({"path": _shown(corpus), "sha256": sha256_file(Path(corpus))} if corpus else None),
            "files": _files(caps),
            "captures": {c.name: {"rows": c.rows, "labeled": c.labeled,
                                  "sampled_rows": int(np.asarray(c.sampled).sum()),
                                  "notes": c.notes} for c in caps},
            "validation": "leave-one-capture-out over the labeled captures",
            "labeled_windows": int(len(fit_on)),
            "class_rows": {c: int((full.y == i).sum()) for i, c in enumerate(CLASSES)},
            "command": command,
            "seconds": round(train_seconds, 1),
            "seconds_total_with_evaluation": round(seconds, 1),
            "seed": req.seed,
            "hidden": req.hidden,
            "epochs": req.epochs,
            "samples_per_epoch": cfg.samples_per_epoch,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "threads": cfg.threads,
            "ensemble": cfg.ensemble,
            "normal_share": cfg.normal_share,
            "hide_bytes": cfg.hide_bytes,
            "netflow_view": req.netflow_view,
            "netflow_view_rows": int(len(v_full)) if v_full is not None else 0,
            "final_losses": [[round(v, 4) for v in member] for member in final_losses],
            "parity_max_abs_diff": parity,
            "libraries": baselines.library_versions(),
        },
        "results_file": {"path": _shown(str(loco_out)), "rows": int(len(results)),
                         "netflow_view_path": _shown(str(view_out)) if view_out else None,
                         "regenerate": command,
                         "columns": list(results.columns)},
        "metrics": metrics,
        "findings": findings,
        "limitations": LIMITATIONS,
    }
    write_card(out, card)
    md = out.with_name(out.name.removesuffix(".onnx") + ".md")
    md.write_text(markdown(card), encoding="utf-8")
    log.info("wrote %s, its card, %s and %s (%.0f s)", out, md.name, loco_out, seconds)
    return 0


def _folds(names: list[str] | None, ws: WindowSet) -> list[str] | None:
    """The captures to hold out (``--folds``), checked against the labeled captures."""
    if not names:
        return None
    from zeekml.errors import UsageError

    labeled = set(ws.group[ws.y >= 0].tolist())
    unknown = [n for n in names if n not in labeled]
    if unknown:
        raise UsageError(f"--folds: no labeled capture named {', '.join(map(repr, unknown))} "
                         f"(captures: {', '.join(sorted(labeled))})")
    return list(dict.fromkeys(names))


def export_amf(model: amf_lstm.AmfLstm | amf_lstm.AmfEnsemble, x: np.ndarray, mask: np.ndarray,
               out: Path, threads: int = 1) -> float:
    """Export ``model`` as its time-major graph (:class:`~zeekml.train.amf_lstm.TimeMajorAmf`)
    and check it on the real windows ``x``, ``mask``: onnxruntime fed what the runtime
    feeds it (:func:`~zeekml.windows.host_window.time_major`) against the torch model fed
    the raw windows. Returns the largest difference (a ModelError above the tolerance)."""
    deploy = amf_lstm.TimeMajorAmf(model).eval()
    state = deploy.state_dict()
    norm = Normalization(mean=state["mean"].numpy(), inv_std=state["inv_std"].numpy())
    inputs = {"xs": time_major(x, mask, norm), "mask": mask.astype(np.float32)}
    batch = {"xs": {1: "batch"}, "mask": {0: "batch"}, "probs": {0: "batch"},
             "attention": {0: "batch"}}
    export_onnx(deploy, inputs, ["probs", "attention"], out, dynamic=batch)
    worst = check_parity(deploy, out, inputs, threads=threads, batch_axes={"xs": 1})
    # the deployed graph against the model as trained (raw windows, normalized inside)
    sess = session(out, threads)
    got = sess.run(["probs", "attention"], inputs)
    ref = amf_lstm.predict(model, x, mask)
    diff = max(float(np.max(np.abs(g - r))) if g.size else 0.0 for g, r in zip(got, ref, strict=True))
    if not diff <= PARITY_ATOL:
        raise ModelError(f"{out}: the time-major graph differs from the trained model by {diff:.3g}")
    return max(worst, diff)


def _empty_decisions(n: int) -> dict[str, np.ndarray]:
    return {"score": np.full(n, np.nan), "cls": np.zeros(n, dtype=np.int64), "threshold": np.full(n, np.nan),
            "flagged": np.zeros(n, dtype=bool), "pred": np.zeros(n, dtype=np.int64)}


def _as_benign(ws: WindowSet, dec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Unlabeled captures are presumed benign: count every notice (binary set to 0)."""
    ws.binary = np.zeros(len(ws), dtype=np.int8)
    return dec


# --------------------------------------------------------------------------- the summary


def _members(t: dict[str, Any]) -> str:
    k, seed = int(t.get("ensemble", 1)), int(t["seed"])
    if k == 1:
        return f"one model, seed {seed}"
    return f"the graph averages {k} such models trained with seeds {seed}..{seed + k - 1}"


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "met" if v else "**NOT met**"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


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
        f"{len(card['classes'])} classes; " + _members(t) + f". Inputs: `xs [{card['window']}, "
        f"batch, {len(card['features'])}]` (time-major, normalized with the card's mean and "
        "inv_std, 0 at masked positions) and `mask`; outputs `probs` and `attention`.",
        "",
        f"Features per window position: {', '.join(card['features'])}.",
        "",
        f"Classes: {', '.join(card['classes'])}. Untrained (no training data, never "
        f"expected to be emitted): {', '.join(card['untrained_classes']) or 'none'}.",
        "",
        "## Training",
        "",
        f"Reproduce: `{t['command']}` ({t['seconds']:.0f} s to read the data and train the "
        f"shipped model, {t.get('seconds_total_with_evaluation', 0):.0f} s with the leave-one-capture-out "
        f"evaluation, on this 2-core machine shared with other jobs; seed {t['seed']}, {t['epochs']} epochs"
        + (f" of {t['samples_per_epoch']} windows drawn by weight" if t.get("samples_per_epoch") else "")
        + f", lr {t['lr']}, {t['threads']} torch threads). "
        f"{t['labeled_windows']} labeled windows; export parity max |torch - onnxruntime| = "
        f"{t['parity_max_abs_diff']:.2g}.",
        "",
    ]
    if t.get("corpus"):
        lines += [f"Captures: the corpus file `{t['corpus']['path']}` (sha256 {t['corpus']['sha256'][:12]}...; "
                  f"{len(t['files'])} files, each listed with its SHA-256 in the JSON card).", ""]
    lines += ["| capture | rows | labeled | sampled rows |", "|---|---|---|---|"]
    lines += [f"| {g} | {v['rows']} | {'yes' if v['labeled'] else 'no (presumed benign)'} | {v['sampled_rows']} |"
              for g, v in t["captures"].items()]
    lines += ["", "Rows per class: " + ", ".join(f"{c} {n}" for c, n in t["class_rows"].items()), ""]
    lines += ["## Thresholds", "", f"{card['threshold_rule']}.", ""]
    for title, key, tkey in (("`thresholds`: every flow as read", "threshold_support", "thresholds"),
                             ("`thresholds_payload_unknown`: flows with payload bytes unknown, "
                              "never below the first set", "threshold_support_payload_unknown",
                              "thresholds_payload_unknown")):
        if key not in card:
            continue
        sup = card[key]
        if "thresholds_payload_unknown" in card:
            lines += [f"{title} ({sup.get('benign_flows')} benign out-of-fold flows):", ""]
        lines += ["| class | training captures | threshold | benign flows allowed | benign alarms | rate | 95% upper bound |",
                  "|---|---|---|---|---|---|---|"]
        for c, v in sup.get("per_class", {}).items():
            why = "left to another detector" if v.get("deferred") else "not emitted"
            thr = f"{v['threshold']:.6g}" if v.get("emitted", True) else f"{v['threshold']:.6f} ({why})"
            lines.append(f"| {c} | {v.get('training_captures', '-')} | {thr} | {v['allowed']} | "
                         f"{v['benign_alarms']} | {_pct(v['benign_rate'])} | {_pct(v['upper_95'])} |")
        lines += ["", f"default (classes not listed): {card[tkey].get('default')}", ""]
    lo = m.get("leave_one_capture_out")
    if lo:
        lines += _loco_md(lo)
    pb = m.get("presumed_benign_unlabeled")
    if pb:
        lines += ["## Unlabeled captures (presumed benign; scored by the shipped model)", "",
                  "| capture | rows | AMF-LSTM flagged | notices / 10k flows | classes | tree flagged | tree notices / 10k |",
                  "|---|---|---|---|---|---|---|"]
        for g, v in pb.items():
            a = v.get("amf_lstm", {})
            tr = v.get("single_flow_tree", {})
            lines.append(f"| {g} | {v['rows']} | {a.get('flagged')} ({_pct(a.get('flagged_share'))}) | "
                         f"{_f(a.get('notices_per_10k_flows'), 1)} | "
                         f"{', '.join(f'{k} {n}' for k, n in a.get('classes', {}).items()) or '-'} | "
                         f"{tr.get('flagged', 'n/a')} | {_f(tr.get('notices_per_10k_flows'), 1)} |")
        lines.append("")
    rf = card.get("results_file")
    if rf:
        lines += [f"Out-of-fold results (one row per flow, {rf['rows']} rows): `{rf['path']}`, not in git; "
                  f"regenerate with `{rf['regenerate']}`.", ""]
    if card.get("findings"):
        lines += ["## Findings", ""] + [f"- {note}" for note in card["findings"]] + [""]
    lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)


def _loco_md(lo: dict[str, Any]) -> list[str]:
    names = [n for n in ("amf_lstm", "single_flow_tree") if n in lo]
    a = lo["amf_lstm"]
    lines = ["## Leave-one-capture-out (each capture scored by a model that never saw it)", "",
             "Each held-out capture is decided with thresholds calibrated on the other captures' "
             f"out-of-fold benign flows. Classes judged (in >= {amf_loco.MIN_CAPTURES} held-out captures): "
             f"{', '.join(a['judged_classes'])}.", ""]
    if lo.get("folds", "all") != "all":
        lines += [f"**Partial run: {len(lo['folds'])} folds only** (held out: {', '.join(lo['folds'])}). "
                  "Every figure below, and the shipped thresholds, come from these folds' out-of-fold "
                  "flows alone; the other labeled captures were only ever training data. The full "
                  "leave-one-capture-out run is the training command without `--folds`.", ""]
    lines += ["| | " + " | ".join(names) + " | target |", "|---|" + "---|" * len(names) + "---|"]

    def row(label: str, get, target: str = "") -> None:
        lines.append(f"| {label} | " + " | ".join(get(lo[n]) for n in names) + f" | {target} |")

    row("macro-F1, judged classes", lambda r: _f(r["macro_f1_judged"]), f">= {amf_loco.TARGET_MACRO_F1}")
    row("lowest precision of an emitted class", lambda r: _f(r["min_precision_of_emitted_classes"]),
        f">= {amf_loco.TARGET_MIN_PRECISION}")
    row("pooled binary recall / FPR at the thresholds",
        lambda r: f"{_f(r['binary']['recall'])} / {_pct(r['binary']['fpr'])}",
        f">= {amf_loco.TARGET_RECALL} at <= {amf_loco.TARGET_FPR:.1%}")
    if all("contradicted_benign" in lo[n] for n in names):
        k = lo[names[0]]["contradicted_benign"]["flows"]
        row(f"pooled FPR counting the {k} contradicted benign labels as benign",
            lambda r: f"{_pct(r['contradicted_benign']['fpr_if_benign'])} "
                      f"({r['contradicted_benign']['flagged']} of them flagged)", "")
    row("pooled recall at pooled FPR 0.5% (ROC)", lambda r: _f(r["recall_at_pooled_fpr_0.5pct"]), "")
    row("binary precision / F1 / ROC AUC",
        lambda r: f"{_f(r['binary']['precision'])} / {_f(r['binary']['f1'])} / {_f(r['binary']['auc'])}", "")
    row("accuracy (all classes)", lambda r: _f(r["accuracy"]), "")
    lines.append("")
    for n in names:
        lines.append(f"Targets, {n}: " + "; ".join(f"{k}: {_f(v)}" for k, v in lo[n]["targets"].items()) + ".")
    if "amf_lstm_beats_single_flow_tree" in lo:
        b = lo["amf_lstm_beats_single_flow_tree"]
        lines.append("AMF-LSTM above the single-flow tree: " + "; ".join(
            f"{k} {'yes' if v else '**no**'}" for k, v in b.items()) + ".")
    lines += ["", "Per class (pooled over folds; precision / recall / F1, flows):", "",
              "| class | captures | " + " | ".join(names) + " | flows |", "|---|---|" + "---|" * len(names) + "---|"]
    for c in CLASSES:
        cells = []
        for n in names:
            v = lo[n]["classes"][c]
            cells.append(f"{_f(v['precision'], 2)} / {_f(v['recall'], 2)} / {_f(v['f1'], 2)}")
        lines.append(f"| {c} | {a['captures_per_class'][c]} | " + " | ".join(cells) + f" | {a['classes'][c]['support']} |")
    lines += ["", "Per held-out capture (binary; recall / FPR / notices per 10,000 benign flows after the "
              "runtime's 600 s suppression):", "",
              "| capture | classes | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for g, v in a["per_capture"].items():
        cls = ", ".join(f"{k} {n}" for k, n in v["classes"].items())
        cells = []
        for n in names:
            r = lo[n]["per_capture"][g]
            cells.append(f"{_f(r['recall'], 3)} / {_pct(r['fpr'])} / {_f(r.get('notices_per_10k_benign'), 1)}")
        lines.append(f"| {g} | {cls} | " + " | ".join(cells) + " |")
    lines.append("")
    if all("netflow_view" in lo[n] for n in names):
        lines += _view_md(lo, names)
    return lines


def _view_md(lo: dict[str, Any], names: Sequence[str]) -> list[str]:
    """The NetFlow-view table: the same held-out models on their captures read as NetFlow."""
    lines = ["### The same captures read as NetFlow", "",
             "Each Zeek capture projected to what zeekml reads from a unidirectional NetFlow "
             "exporter (`zeekml.sources.netflow_view`: payload bytes unknown, TCP history from "
             "flags, one-way records paired), scored by the model that never saw the capture, "
             "with that capture's thresholds. The corpus has no benign NetFlow of its own: this "
             "is how the model treats benign traffic it reads as NetFlow.", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines.append("| pooled binary recall / FPR at the thresholds | " + " | ".join(
        f"{_f(lo[n]['netflow_view']['binary']['recall'])} / {_pct(lo[n]['netflow_view']['binary']['fpr'])}"
        for n in names) + " |")
    lines += ["", "| capture (NetFlow view) | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for g in lo[names[0]]["netflow_view"]["per_capture"]:
        cells = []
        for n in names:
            r = lo[n]["netflow_view"]["per_capture"][g]
            cells.append(f"{_f(r['recall'], 3)} / {_pct(r['fpr'])} / {_f(r.get('notices_per_10k_benign'), 1)}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


LIMITATIONS = [
    "Trained on public captures (IoT-23, Stratosphere CTU-Normal/-Malware/-SME, a CICIDS2017 "
    "sample, StopDDoS and Zeek test traces as NetFlow); networks unlike these shift the benign "
    "feature distribution and raise false positives.",
    "CICIDS2017 and iot23-subsample rows are random samples: they are windowed alone (only the "
    "flow itself), so what the model learned from them rests on single-flow evidence.",
    "Classes held by fewer than three captures (dos, webattack, infiltration: one CICIDS2017 day "
    "each) cannot be judged on an unseen capture: they are kept as classes (their probability "
    "counts in the score) but raise no notice by default (threshold above every score; "
    "--threshold MODEL:CLASS=T turns one on), and are reported apart.",
    "Every NetFlow (nfcapd) capture in the training corpus is malicious; no benign NetFlow was "
    "available. False alarms on benign NetFlow are measured on the Zeek captures projected to "
    "NetFlow (zeekml.sources.netflow_view), an approximation: it reproduces the reader's fields "
    "and the pairing, not an exporter's timeouts or sampling.",
    "Features carry no IP address identity; a host's window is its last flows in log order, "
    "so a very busy host's window spans only seconds.",
]
