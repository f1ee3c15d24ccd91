"""One table of detection quality: per capture (leave-one-capture-out) and per model, with
the simple baselines on the same rows.

Reads the out-of-fold results files the trainers write (``zeekml train amf`` and
``zeekml train lm`` with the corpus: ``onnx_models/NAME.loco.parquet``, one row per flow,
each capture scored by a model that never saw it, thresholds calibrated without it) and
prints, for each capture and each model and its baseline (the single-flow tree for the
AMF-LSTM, unigram word rarity for the flow LM):

* recall and precision of malicious flows, and the false-positive rate, with the runtime's
  decision rule (``score >= threshold``: :func:`zeekml.policy.notice.crosses`);
* notices per 10,000 benign flows: the flagged rows go through the runtime's own
  :class:`~zeekml.policy.notice.NoticePolicy` in stream order with the default
  suppression (one notice per host, class and model per 600 s of log time; the host is the
  local responder of an inbound flow, else the originator; local by Zeek's ``local_*``
  marks where the rows have them, as ``zeekml score`` decides, else by address: the
  out-of-fold files keep no marks; ``--suppress-by orig`` keys by originator), and
  the notices opened by benign flows are counted. For unlabeled captures (traffic presumed
  benign), every flow counts as benign.

Goals printed beside the figures (issue 12): notices per 10,000 benign flows <= 5 on every
benign or mostly-benign capture; each model above its baseline.

The count detectors (scan, bruteforce, flood; ``--count CARD ...``) are added with their own rows:
they are not trained, so every capture of the corpus (``--corpus``) is one they never saw,
scored as ``zeekml score`` scores it; they have no baseline.

``--together`` adds what an analyst running every model given would see: per capture, a
flow flagged by any of them and the notices of all; then pooled rows over the labeled
captures per model and together, over all their rows and over their stream rows only
(the corpus's random samples of IoT-23 and CICIDS2017 rows are scored one row at a time,
with no history: no window and no count can work on them).

Usage: ``python tools/detection_report.py [--loco onnx_models/amf_lstm.loco.parquet
onnx_models/flow_lm.loco.parquet] [--count CARD ...] [--suppress 600] [--suppress-by host]
[--together] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from zeekml.policy.notice import NoticePolicy, PolicyConfig  # noqa: E402
from zeekml.records.addresses import inbound_flows  # noqa: E402
from zeekml.records.verdicts import conform_verdicts  # noqa: E402

DEFAULT_FILES = ("onnx_models/amf_lstm.loco.parquet", "onnx_models/flow_lm.loco.parquet")
#: the bundled default count detectors (not trained: scored on the corpus directly)
COUNT_CARDS = ("onnx_models/scan.card.json", "onnx_models/bruteforce.card.json",
               "onnx_models/flood.card.json")
NOTICE_GOAL = 5.0  # notices per 10,000 benign flows
MOSTLY_BENIGN = 0.9  # share of benign rows that makes a capture "mostly benign"


def notices_opened(rows: pd.DataFrame, score: np.ndarray, threshold: np.ndarray,
                   cls: pd.Series, model: str, suppress: float, by: str = "host",
                   subject: int = 0) -> np.ndarray:
    """Rows (in stream order) that open a notice under the runtime's policy (``subject``:
    1 the model's notices are about the responder, as the flood detector's are; -1 about
    the originator, as the scan detector's are; 0 as the flow's direction says)."""
    n = len(rows)
    scored = conform_verdicts(pd.DataFrame({
        "ts": rows["ts"].to_numpy(dtype=np.float64), "uid": rows["uid"],
        "orig_h": rows["orig_h"], "orig_p": rows["orig_p"], "resp_h": rows["resp_h"],
        "resp_p": rows["resp_p"], "proto": rows["proto"],
        "model": pd.Series([model] * n, dtype="str"), "score": score, "threshold": threshold,
    }))
    scored["cls"] = pd.Series(np.asarray(cls, dtype=object), dtype="str")
    if subject:
        scored["inbound"] = np.full(n, subject > 0, dtype=bool)
    elif {"local_orig", "local_resp"} & set(rows.columns):  # Zeek's marks, as zeekml score reads them
        scored["inbound"] = inbound_flows(rows)
    out = NoticePolicy(PolicyConfig(suppress=suppress, suppress_by=by, all_flows=True)
                       ).decide(scored)
    return out["notice"].fillna(False).to_numpy(dtype=bool)


def flags(rows: pd.DataFrame, score: np.ndarray, threshold: np.ndarray, cls: pd.Series,
          model: str, suppress: float, by: str = "host", subject: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    """(rows flagged by the decision rule, rows that open a notice) of one model."""
    from zeekml.policy.notice import crosses

    return crosses(score, threshold), notices_opened(rows, score, threshold, cls, model,
                                                     suppress, by, subject)


def rates(binary: np.ndarray, labeled: bool, flagged: np.ndarray, opened: np.ndarray
          ) -> dict[str, Any]:
    """Recall, precision, FPR and notices per 10,000 benign flows of flagged rows (and of
    the rows that opened notices; ``opened`` counts notices: several per row when rows
    of several models are summed)."""
    mal, ben = binary == 1, binary == 0 if labeled else np.ones(len(binary), dtype=bool)
    tp, fp = int((flagged & mal).sum()), int((flagged & ben).sum())
    return {
        "malicious": int(mal.sum()), "benign": int(ben.sum()),
        "recall": tp / int(mal.sum()) if mal.any() else None,
        "precision": tp / (tp + fp) if tp + fp and mal.any() else None,
        "fpr": fp / int(ben.sum()) if ben.any() else None,
        "notices_per_10k_benign": 1e4 * int(opened[ben].sum()) / int(ben.sum())
        if ben.any() else None,
    }


def figures(rows: pd.DataFrame, score: np.ndarray, threshold: np.ndarray, cls: pd.Series,
            model: str, suppress: float, labeled: bool, by: str = "host",
            keep: dict[str, Any] | None = None, subject: int = 0) -> dict[str, Any]:
    """:func:`rates` of one model on one capture's rows; ``keep`` (if given) receives the
    per-row arrays (for :func:`combined`)."""
    flagged, opened = flags(rows, score, threshold, cls, model, suppress, by, subject)
    binary = rows["binary"].to_numpy()
    if keep is not None:
        keep.update(binary=binary, flagged=flagged, opened=opened,
                    uid=rows["uid"].astype(str).to_numpy())
    return rates(binary, labeled, flagged, opened)


def report(files: list[Path], suppress: float, by: str = "host") -> list[dict[str, Any]]:
    out = []
    for f in files:
        df = pd.read_parquet(f)
        for (capture, model), rows in df.groupby(["capture", "model"], sort=False):
            rows = rows.sort_values("row", kind="stable").reset_index(drop=True)
            labeled = bool((rows["binary"] >= 0).any())
            entry: dict[str, Any] = {"capture": capture, "model": model, "labeled": labeled,
                                     "flows": len(rows)}
            entry["model_figures"] = figures(
                rows, rows["score"].to_numpy(np.float64), rows["threshold"].to_numpy(np.float64),
                rows["cls"], str(model), suppress, labeled, by, keep=entry.setdefault("_rows", {}))
            base = str(rows["baseline"].iloc[0]) if "baseline" in rows else ""
            if base and rows["baseline_score"].notna().any():
                entry["baseline"] = base
                entry["baseline_figures"] = figures(
                    rows, rows["baseline_score"].to_numpy(np.float64),
                    rows["baseline_threshold"].to_numpy(np.float64), rows["baseline_cls"],
                    base, suppress, labeled, by)
            out.append(entry)
    return out


def count_report(cards: list[Path], corpus: Path, suppress: float, by: str = "host"
                 ) -> list[dict[str, Any]]:
    """The count detectors' rows (no baseline): they are not trained, so every capture of
    the corpus is one they never saw; each is scored as ``zeekml score`` scores it
    (``tools/scan_report.py``: stream rows in order, random-sample rows alone)."""
    from scan_report import notice_subject, score_capture

    from zeekml.eval.corpus import load_corpus
    from zeekml.models.card import load_card
    from zeekml.records.labels import targets

    models = [(card, load_card(card).name, notice_subject(card)) for card in cards]
    out = []
    for c in load_corpus(corpus):
        flows = c.flows.reset_index(drop=True)
        rows = flows[["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto",
                      *[col for col in ("local_orig", "local_resp") if col in flows.columns]]
                     ].copy()
        rows["binary"] = targets(flows)[0]
        labeled = bool((rows["binary"] >= 0).any())
        sampled = np.asarray(c.sampled, dtype=bool)
        for card, name, about in models:
            score, thr, cls = score_capture(card, flows, sampled)
            keep: dict[str, Any] = {"sampled": np.broadcast_to(sampled, (len(rows),))}
            out.append({"capture": c.name, "model": name, "labeled": labeled,
                        "flows": len(rows), "model_figures": figures(
                            rows, score, thr, pd.Series(cls, dtype="str"), name, suppress,
                            labeled, by, keep=keep, subject=about),
                        "_rows": keep})
    return out


def combined(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per capture for every model above together, as an analyst running them all
    would see it: a flow is flagged if any model flags it, every model's notices count;
    then pooled rows over the labeled captures, for each model and for all together: all
    their rows, and (when the count detectors' rows say which rows the corpus randomly
    sampled) their stream rows only, the rows a window or a count can work on. The rows
    of one capture line up by position: the out-of-fold files keep each capture's flows
    in the corpus's order (checked: the same uids and labels in the same order)."""
    by_cap: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_cap.setdefault(e["capture"], []).append(e)
    out = []
    #: per model (and "together"): per labeled capture (binary, flagged, opened, stream)
    pooled: dict[str, list[tuple[np.ndarray, ...]]] = {}
    stream_known = True
    for capture, es in by_cap.items():
        first = es[0]["_rows"]
        if any(not np.array_equal(e["_rows"]["uid"], first["uid"])
               or not np.array_equal(e["_rows"]["binary"], first["binary"]) for e in es):
            raise SystemExit(f"{capture}: the models' rows do not line up (uids or labels differ)")
        flagged = np.logical_or.reduce([e["_rows"]["flagged"] for e in es])
        opened = np.sum([e["_rows"]["opened"].astype(np.int64) for e in es], axis=0)
        labeled = bool(es[0]["labeled"])
        name = "+".join(str(e["model"]) for e in es)
        out.append({"capture": capture, "model": name, "labeled": labeled,
                    "flows": len(flagged),
                    "model_figures": rates(first["binary"], labeled, flagged, opened)})
        if not labeled:
            continue
        sampled = next((e["_rows"]["sampled"] for e in es if "sampled" in e["_rows"]), None)
        stream_known &= sampled is not None
        stream = ~sampled if sampled is not None else np.ones(len(flagged), dtype=bool)
        for e in es:
            pooled.setdefault(str(e["model"]), []).append(
                (first["binary"], e["_rows"]["flagged"], e["_rows"]["opened"], stream))
        pooled.setdefault("together", []).append((first["binary"], flagged, opened, stream))
    for model, parts in pooled.items():
        b, f, o, st = (np.concatenate([p[i] for p in parts]) for i in range(4))
        out.append({"capture": "pooled (labeled captures)", "model": model, "labeled": True,
                    "flows": len(b), "model_figures": rates(b, True, f, o)})
        if stream_known:
            out.append({"capture": "pooled (labeled, stream rows)", "model": model,
                        "labeled": True, "flows": int(st.sum()),
                        "model_figures": rates(b[st], True, f[st], o[st])})
    return out


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.3f}" if isinstance(v, float) else str(v)


def table(entries: list[dict[str, Any]]) -> str:
    head = ("capture", "model", "flows", "mal", "recall", "prec", "FPR", "notices/10k",
            "| base", "recall", "prec", "FPR", "notices/10k")
    lines = ["  ".join(head)]
    for e in entries:
        m, b = e["model_figures"], e.get("baseline_figures")
        n10k = m["notices_per_10k_benign"]
        mostly_benign = m["benign"] >= MOSTLY_BENIGN * e["flows"]
        flag = " !" if mostly_benign and n10k is not None and n10k > NOTICE_GOAL else ""
        row = [e["capture"], e["model"], str(e["flows"]), str(m["malicious"]),
               _f(m["recall"]), _f(m["precision"]), _f(m["fpr"], True), _f(n10k) + flag]
        if b is not None:
            row += ["| " + e["baseline"], _f(b["recall"]), _f(b["precision"]), _f(b["fpr"], True),
                    _f(b["notices_per_10k_benign"])]
        lines.append("  ".join(row))
    lines.append(f"(! = a benign or mostly-benign capture above the goal of {NOTICE_GOAL:g} "
                 "notices per 10,000 benign flows; unlabeled captures count every flow as benign)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loco", nargs="+", default=[str(REPO / f) for f in DEFAULT_FILES],
                    metavar="PARQUET", help="out-of-fold results files (default: the bundled models')")
    ap.add_argument("--suppress", type=float, default=600.0, help="suppression interval (s)")
    ap.add_argument("--suppress-by", choices=("host", "orig"), default="host",
                    help="the suppression key's host, as zeekml score's option")
    ap.add_argument("--count", nargs="*", default=[str(REPO / f) for f in COUNT_CARDS],
                    metavar="CARD", help="count detectors' cards to add, scored on the corpus "
                    "(default: the bundled default ones; --count alone: none)")
    ap.add_argument("--corpus", default=str(REPO / "tools" / "shared-corpus.json"),
                    help="the corpus the count detectors are scored on")
    ap.add_argument("--together", action="store_true",
                    help="add one row per capture for all the models together (a flow flagged "
                    "by any; every model's notices counted) and a pooled row")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    files = [Path(f) for f in args.loco]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"missing out-of-fold results: {', '.join(missing)} (regenerate them with the "
              "command in each model card)", file=sys.stderr)
        return 1
    entries = report(files, args.suppress, args.suppress_by)
    if args.count:
        entries += count_report([Path(c) for c in args.count], Path(args.corpus),
                                args.suppress, args.suppress_by)
    if args.together:
        entries += combined(entries)
    for e in entries:
        e.pop("_rows", None)
    print(json.dumps(entries, indent=1) if args.json else table(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
