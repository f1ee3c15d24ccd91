"""The single-flow tree the AMF-LSTM is judged against (zeekml.train.baselines) stays a
fair baseline: trained as leave-one-capture-out trains it, on the shared corpus, its
scores of a capture it never saw are finite, bounded log-odds that a threshold can rank.

Without L2 regularization of its leaf values (scikit-learn's default is none) the fold
that holds out the benign CICIDS2017 Monday had raw predictions up to 3.2e6 with
scikit-learn 1.9.1: 589 of that day's 597 benign flows at P(normal) = 0 exactly, and
over every fold the tree's recall at a 0.5% false-positive rate was 0 (stop 38)."""

from __future__ import annotations

import numpy as np
from conftest import DATA, REPO, need, need_module

from zeekml.records.labels import CLASSES

HELD_OUT = "cicids2017:2017-07-03"


def test_the_single_flow_tree_stays_bounded_on_a_capture_it_never_saw() -> None:
    need_module("sklearn")  # the training extra fits the baseline
    need_module("torch")  # its class weights come from the AMF-LSTM trainer
    need(DATA.is_dir(), f"the shared captures at {DATA}")
    from zeekml.eval.corpus import load_corpus
    from zeekml.train import amf_lstm, baselines
    from zeekml.train.datasets import corpus_windows

    caps = load_corpus(REPO / "tools" / "shared-corpus.json", labeled_only=True)
    ws = corpus_windows(caps, 10, "local")
    train = ws.group != HELD_OUT
    assert (~train).sum() >= 500 and (ws.binary[~train] == 0).all()  # a benign day
    w = amf_lstm.sample_weights(ws.y[train], ws.group[train], len(CLASSES), 0.5)
    clf = baselines.fit_single_flow(ws.x[train], ws.y[train], w, len(CLASSES), seed=0)
    raw = clf.clf.decision_function(baselines.current_flow(ws.x[~train]))  # log-odds
    assert np.isfinite(raw).all() and np.abs(raw).max() < 100
    p = clf.predict_proba(ws.x[~train])
    assert (p[:, CLASSES.index("normal")] > 0).all()
    # and it learned something: most of the benign day is called normal
    assert (p.argmax(axis=1) == CLASSES.index("normal")).mean() >= 0.5
