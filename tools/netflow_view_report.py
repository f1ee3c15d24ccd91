"""What a model does with the same traffic read from Zeek and read as NetFlow.

For every capture of the corpus: the flows as ``zeekml score`` reads them, and, for a
capture read from Zeek logs, its NetFlow view (:func:`zeekml.sources.netflow_view.
netflow_view`: what zeekml reads from a unidirectional exporter for the same traffic,
one-way records paired by the real pairing stage). Printed per row: flows, share of
one-way records (``paired`` False), recall on the malicious flows and the share of
benign flows at or above the model's threshold (an unlabeled capture counts every flow
as benign). Scored by the shipped model as it is (``--model``, default ``flow_lm``), a
fresh scorer for each reading:
these are not leave-one-capture-out figures, the model may have trained on the Zeek
form of a benign capture; compare the two readings of one capture, not models.

Usage: ``python tools/netflow_view_report.py [--model flow_lm] [--corpus C] [CAPTURE ...]``
(capture entries of the corpus file; default: all of them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeekml.eval.corpus import load_corpus
from zeekml.models.registry import load_scorer, resolve_model
from zeekml.records.labels import targets
from zeekml.records.schema import one_way_records
from zeekml.sources.netflow_view import netflow_view, projectable

CORPUS = Path(__file__).resolve().parent / "shared-corpus.json"


def row(name: str, kind: str, flows: pd.DataFrame, flagged: np.ndarray, binary: np.ndarray) -> str:
    one_way = one_way_records(flows)
    mal, ben = binary == 1, binary == 0
    recall = f"{flagged[mal].mean():.3f}" if mal.any() else "-"
    benign = f"{flagged[ben].mean():.2%}" if ben.any() else "-"
    return (f"{name[:30]:30} {kind:8} {len(flows):7} {one_way.mean() if len(flows) else 0:8.1%} "
            f"{int(mal.sum()):7} {recall:>7} {int(ben.sum()):7} {benign:>8}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", nargs="*", help="capture entries (default: every one)")
    ap.add_argument("--model", default="flow_lm")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    a = ap.parse_args()
    model = str(resolve_model(a.model))
    print(f"{'capture':30} {'read':8} {'flows':>7} {'one-way':>8} {'mal':>7} {'recall':>7} "
          f"{'benign':>7} {'flagged':>8}")
    for cap in load_corpus(a.corpus, names=a.captures or None):
        flows = cap.flows.reset_index(drop=True)
        readings = [("as read", flows)]
        from_zeek = "paired" not in flows or flows["paired"].isna().all()
        if from_zeek and projectable(flows).any():
            readings.append(("netflow", netflow_view(flows).reset_index(drop=True)))
        for kind, g in readings:
            # a fresh scorer per reading, as zeekml score scores one input: the two readings
            # of a capture share times and hosts, and windows must not carry between them
            verdicts = load_scorer(model).score(g)
            flagged = np.asarray(verdicts.score >= verdicts.threshold, dtype=bool)
            binary = np.asarray(targets(g)[0]) if cap.labeled else np.zeros(len(g), dtype=int)
            print(row(cap.name, kind, g, flagged, binary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
