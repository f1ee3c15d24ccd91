"""What a count detector (scan, dns_burst) flags on every capture of the shared corpus.

The scan detector (``onnx_models/scan.card.json``) is not trained, so there is no fold to
hold out: every capture is one it never saw, scored as ``zeekml score`` scores it (the
real :class:`~zeekml.models.scan_scorer.ScanScorer`, rows in stream order, the flows of
random samples each alone: their neighbours in the file are not their host's flows). Per
capture, as in ``tools/detection_report.py``: recall, precision and false-positive rate
of malicious flows at the card's thresholds, recall of the flows labeled port scan, and
notices per 10,000 benign flows through the runtime's notice policy with the default
suppression (unlabeled captures count every flow as benign). A pooled line sums the
labeled captures.

    python tools/scan_report.py                      # the shared corpus, the bundled card
    python tools/scan_report.py --card my_scan.card.json --json
    python tools/scan_report.py --card onnx_models/optional/dns_burst.card.json \
        --extra ../shared/data/zeek/stratosphere-005-simda      # + files outside the corpus

Any card-only count detector works (its scorer is built from the card's kind, as
``zeekml score`` builds it); ``--extra`` adds unlabeled files or directories, each scored
as one stream (every flow counted as benign: read their rows as "flows flagged").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from detection_report import NOTICE_GOAL, notices_opened  # noqa: E402

from zeekml.eval.corpus import load_corpus  # noqa: E402
from zeekml.models.card import load_card  # noqa: E402
from zeekml.models.registry import ScorerOptions, load_scorer  # noqa: E402
from zeekml.policy.notice import crosses  # noqa: E402
from zeekml.records.labels import CLASSES as LABEL_CLASSES  # noqa: E402
from zeekml.records.labels import targets  # noqa: E402
from zeekml.sources.open import expand_inputs, read_table  # noqa: E402

PORTSCAN = LABEL_CLASSES.index("portscan")


def score_capture(card_path: Path, flows: pd.DataFrame, sampled: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, threshold, class) per row: the stream rows through one scorer in order,
    each sampled row alone (its own failure, one target at most)."""
    scorer = load_scorer(str(card_path), ScorerOptions())
    n = len(flows)
    score = np.zeros(n)
    cls = np.full(n, scorer.notice_classes[0], dtype=object)
    thr = np.full(n, np.inf)
    stream = np.flatnonzero(~sampled)
    if len(stream):
        b = scorer.score(flows.iloc[stream].reset_index(drop=True))
        score[stream], cls[stream], thr[stream] = b.score, b.cls, b.threshold
    alone = np.flatnonzero(sampled)
    if len(alone):
        b = scorer.score_alone(flows.iloc[alone].reset_index(drop=True))
        score[alone], cls[alone], thr[alone] = b.score, b.cls, b.threshold
    return score, thr, cls


def notice_subject(card_path: Path) -> int:
    """Whom the card's notices are about: 1 the responder (the flood detector's victim),
    -1 the originator (the scan detector's scanner), 0 as each flow's direction says."""
    scorer = load_scorer(str(card_path), ScorerOptions())
    if getattr(scorer, "about_responder", False):
        return 1
    return -1 if getattr(scorer, "about_originator", False) else 0


def figures(flows: pd.DataFrame, score: np.ndarray, thr: np.ndarray, cls: np.ndarray,
            labeled: bool, model: str = "scan", subject: int = 0) -> dict[str, Any]:
    binary, klass = targets(flows)
    flagged = crosses(score, thr)
    mal = binary == 1
    ben = binary == 0 if labeled else np.ones(len(flows), dtype=bool)
    scans = klass == PORTSCAN
    opened = notices_opened(flows, score, thr, pd.Series(cls, dtype="str"), model, 600.0,
                            subject=subject)
    tp, fp = int((flagged & mal).sum()), int((flagged & ben).sum())
    return {
        "flows": len(flows), "malicious": int(mal.sum()), "benign": int(ben.sum()),
        "portscan": int(scans.sum()), "flagged": int(flagged.sum()), "tp": tp, "fp": fp,
        "flagged_portscan": int((flagged & scans).sum()),
        "notices_benign": int((opened & ben).sum()), "notices": int(opened.sum()),
    }


def rates(f: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    per10k = ratio(10_000 * f["notices_benign"], f["benign"])
    return {"recall": ratio(f["tp"], f["malicious"]),
            "portscan_recall": ratio(f["flagged_portscan"], f["portscan"]),
            "precision": ratio(f["tp"], f["tp"] + f["fp"]) if f["malicious"] else None,
            "fpr": ratio(f["fp"], f["benign"]), "notices_per_10k_benign": per10k}


def _f(v: float | None, pct: bool = False) -> str:
    return "-" if v is None else f"{100 * v:.2f}%" if pct else f"{v:.3f}"


#: what a card's metrics keep of a capture's entry (rates follow from the counts)
CARD_KEYS = ("capture", "labeled", "flows", "malicious", "benign", "flagged", "tp", "fp",
             "notices", "notices_benign", "notices_per_10k_benign")


def write_metrics(card: Path, entries: list[dict[str, Any]], pooled: dict[str, Any],
                  argv: list[str]) -> None:
    """Replace the card's ``metrics`` with these figures and the command that made them
    (the card is rewritten whole: no other field changes)."""
    data = json.loads(card.read_text(encoding="utf-8"))
    args = [a if not Path(a).is_absolute() else os.path.relpath(a, REPO) for a in argv
            if a != "--write-metrics"]
    data["metrics"] = {
        "how": "every capture of tools/shared-corpus.json and the inputs outside it "
               "(unlabeled: every flow counted as benign, so for the malicious ones read "
               "'flagged') scored as zeekml score scores them (nothing is trained; "
               "random-sample rows scored alone); notices through the runtime's policy "
               "with the default 600 s suppression",
        "command": shlex.join(["python", "tools/scan_report.py", *args]),
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        "pooled_labeled": {k: pooled[k] for k in CARD_KEYS if k in pooled},
        "captures": [{k: e[k] for k in CARD_KEYS} for e in entries],
    }
    card.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(REPO / "tools" / "shared-corpus.json"))
    ap.add_argument("--card", default=str(REPO / "onnx_models" / "scan.card.json"))
    ap.add_argument("--extra", action="append", default=[], metavar="PATH",
                    help="an unlabeled file or directory outside the corpus (repeatable)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--write-metrics", action="store_true",
                    help="also write the figures, with this command, into the card's metrics")
    args = ap.parse_args(argv)
    card = Path(args.card)
    model = load_card(card).name
    subject = notice_subject(card)
    captures = [(c.name, c.flows, c.sampled, c.labeled) for c in load_corpus(args.corpus)]
    for path in args.extra:
        flows = read_table(expand_inputs([path]))  # as zeekml score reads a path
        label = Path(path).name if Path(path).name != "nfcapd" else Path(path).parent.name
        captures.append((label, flows, np.zeros(len(flows), dtype=bool), False))
    entries = []
    for name, flows, sampled, labeled in captures:
        flows = flows.reset_index(drop=True)
        score, thr, cls = score_capture(card, flows, np.asarray(sampled, dtype=bool))
        f = figures(flows, score, thr, cls, labeled, model, subject)
        entries.append({"capture": name, "labeled": labeled,
                        "sampled_rows": int(np.sum(sampled)), **f, **rates(f)})
    labeled = [e for e in entries if e["labeled"]]
    pooled = {k: sum(e[k] for e in labeled) for k in
              ("flows", "malicious", "benign", "portscan", "flagged", "tp", "fp",
               "flagged_portscan", "notices_benign", "notices")}
    pooled = {"capture": "pooled (labeled)", **pooled, **rates(pooled)}
    if args.write_metrics:
        write_metrics(card, entries, pooled, argv if argv is not None else sys.argv[1:])
    if args.json:
        print(json.dumps({"captures": entries, "pooled": pooled}, indent=1))
        return 0
    print(f"{'capture':34}{'flows':>7}{'mal':>7}{'benign':>7}{'recall':>8}{'scans':>7}"
          f"{'scan rec':>9}{'prec':>7}{'FPR':>8}{'notices':>8}{'/10k benign':>12}")
    for e in [*entries, pooled]:
        n10k = e["notices_per_10k_benign"]
        mostly = e["benign"] >= 0.9 * e["flows"]
        flag = " !" if mostly and n10k is not None and n10k > NOTICE_GOAL else ""
        print(f"{e['capture'][:33]:34}{e['flows']:>7}{e['malicious']:>7}{e['benign']:>7}"
              f"{_f(e['recall']):>8}{e['portscan']:>7}{_f(e['portscan_recall']):>9}"
              f"{_f(e['precision']):>7}{_f(e['fpr'], True):>8}{e['notices']:>8}"
              f"{'-' if n10k is None else f'{n10k:.1f}':>12}{flag}")
    print(f"(! = a benign or mostly-benign capture above {NOTICE_GOAL:g} notices per 10,000 "
          "benign flows; unlabeled captures count every flow as benign; 'scans' = flows "
          "labeled port scan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
