"""The reporting tools whose figures the cards and docs/models.md quote.

``tools/scan_report.py`` and ``tools/detection_report.py`` say their count-detector rows
are scored "as ``zeekml score`` scores it": checked here against ``zeekml score`` itself on
real captures (the Zeek FTP brute-force trace as nfcapd, read through the real ``nfdump``,
and the bundled sample). ``detection_report``'s per-capture rates are checked against a
count made here from the same out-of-fold file, and ``tools/netflow_view_report.py``
against the scorer's own flags.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, REPO, ZAT_SAMPLE, need, need_binary, zat_sample

from zeekml.cli.main import main as zeekml

sys.path.insert(0, str(REPO / "tools"))

SAMPLE = ZAT_SAMPLE
FTP = DATA / "nfdump" / "pcap-zeek-ftp-bruteforce" / "nfcapd"
CARDS = {"scan": REPO / "onnx_models" / "scan.card.json",
         "bruteforce": REPO / "onnx_models" / "bruteforce.card.json"}


def _run(tool, argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert tool.main(argv) == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    zat_sample()
    need_binary("nfdump")
    need(FTP.is_dir(), f"the capture {FTP}")
    path = tmp_path_factory.mktemp("corpus") / "corpus.json"
    path.write_text(json.dumps({"format": "zeekml-corpus/1", "root": str(DATA), "captures": [
        {"name": "ftp", "labels": {"class": "bruteforce"}, "paths": [str(FTP.relative_to(DATA))]},
        {"name": "sample", "labels": "none", "paths": [str(SAMPLE)]},
    ]}))
    return path


def _cli_counts(path: Path, card: Path, tmp: Path) -> tuple[int, int]:
    """(flows at or above their threshold, notices) of ``zeekml score --all`` on ``path``."""
    out = tmp / f"{card.stem}-{path.name}.log"
    assert zeekml(["-q", "score", "--all", "--threads", "1", "--model", str(card),
                   "--out", str(out), str(path)]) == 0
    lines = [x for x in out.read_text().splitlines() if not x.startswith("#")]
    fields = next(x for x in out.read_text().splitlines() if x.startswith("#fields")).split("\t")[1:]
    rows = pd.DataFrame([x.split("\t") for x in lines], columns=fields)
    return int(rows["decision"].isin(["notice", "suppressed"]).sum()), int((rows["notice"] == "T").sum())


@pytest.mark.parametrize("name", ["scan", "bruteforce"])
def test_scan_report_counts_what_zeekml_score_counts(corpus: Path, tmp_path: Path, name: str) -> None:
    zat_sample()
    import scan_report

    got = json.loads(_run(scan_report, ["--corpus", str(corpus), "--card", str(CARDS[name]), "--json"]))
    by = {e["capture"]: e for e in got["captures"]}
    for capture, path in (("ftp", FTP), ("sample", SAMPLE)):
        flagged, notices = _cli_counts(path, CARDS[name], tmp_path)
        assert (by[capture]["flagged"], by[capture]["notices"]) == (flagged, notices), capture
    # what the docs quote: the sample's one scan notice, the FTP trace's one login_guessing
    assert by["sample" if name == "scan" else "ftp"]["notices"] == 1
    assert by["ftp"]["labeled"] and by["ftp"]["malicious"] == by["ftp"]["flows"] == 30
    assert got["pooled"]["flows"] == 30  # only the labeled capture is pooled


def test_detection_report_rates_and_count_rows(corpus: Path, tmp_path: Path) -> None:
    """Model rows: recall, precision and FPR of an out-of-fold file at ``score >=
    threshold``, counted here independently; count rows: the notices zeekml score gives."""
    zat_sample()
    import detection_report

    from zeekml.sources import read_table

    flows = read_table([str(SAMPLE)])
    rng = np.random.default_rng(7)
    n = len(flows)
    binary = (rng.random(n) < 0.3).astype(np.int8)
    score = rng.random(n)
    oof = pd.DataFrame({
        "capture": "sample", "row": np.arange(n, dtype=np.int64), "uid": flows["uid"].astype(str),
        "ts": flows["ts"].astype(float), "orig_h": flows["orig_h"].astype(str),
        "orig_p": flows["orig_p"], "resp_h": flows["resp_h"].astype(str), "resp_p": flows["resp_p"],
        "proto": flows["proto"].astype(str), "binary": binary, "y": binary.astype(np.int64),
        "model": "amf_lstm", "score": score, "cls": "ddos", "threshold": 0.6,
        "baseline": "single_flow_tree", "baseline_score": rng.random(n), "baseline_cls": "ddos",
        "baseline_threshold": 0.9})
    path = tmp_path / "oof.parquet"
    oof.to_parquet(path, index=False)
    got = json.loads(_run(detection_report, ["--loco", str(path), "--count", str(CARDS["scan"]),
                                             "--corpus", str(corpus), "--json"]))
    row = next(e for e in got if e["model"] == "amf_lstm")
    flagged, mal = score >= 0.6, binary == 1
    m = row["model_figures"]
    assert m["recall"] == pytest.approx((flagged & mal).sum() / mal.sum())
    assert m["precision"] == pytest.approx((flagged & mal).sum() / flagged.sum())
    assert m["fpr"] == pytest.approx((flagged & ~mal).sum() / (~mal).sum())
    assert row["baseline"] == "single_flow_tree" and row["baseline_figures"]["recall"] is not None
    scan = {e["capture"]: e for e in got if e["model"] == "scan"}
    for capture, p in (("ftp", FTP), ("sample", SAMPLE)):
        f = scan[capture]["model_figures"]
        notices = round(f["notices_per_10k_benign"] * f["benign"] / 1e4) if f["benign"] else None
        if capture == "sample":  # unlabeled: every flow counts as benign
            assert notices == _cli_counts(p, CARDS["scan"], tmp_path)[1] == 1
        else:  # labeled, all malicious: recall is the share zeekml score flags
            assert f["recall"] == pytest.approx(_cli_counts(p, CARDS["scan"], tmp_path)[0] / 30)


def test_netflow_view_report_reads_both_ways(corpus: Path, capsys) -> None:
    """The sample as read and as a unidirectional exporter would give it; the share printed
    is the scorer's own flags (the scan detector's 128 crossing flows of 360 as read)."""
    import netflow_view_report

    old = sys.argv
    sys.argv = ["netflow_view_report.py", "--model", str(CARDS["scan"]), "--corpus", str(corpus), "sample"]
    try:
        assert netflow_view_report.main() == 0
    finally:
        sys.argv = old
    rows = {}
    for line in capsys.readouterr().out.splitlines()[1:]:
        flows, one_way, _mal, _recall, benign, flagged = line[40:].split()
        rows[(line[:30].strip(), line[31:39].strip())] = (int(flows), one_way, int(benign), flagged)
    assert set(rows) == {("sample", "as read"), ("sample", "netflow")}
    assert rows[("sample", "as read")] == (360, "0.0%", 360, f"{128 / 360:.2%}")
    assert float(rows[("sample", "netflow")][1].rstrip("%")) > 0  # unanswered flows are one-way
    # the NetFlow reading is scored afresh: no window carried over from the Zeek reading
    from zeekml.eval.corpus import load_corpus
    from zeekml.models.registry import load_scorer
    from zeekml.sources.netflow_view import netflow_view

    sample = next(c for c in load_corpus(corpus) if c.name == "sample")
    view = netflow_view(sample.flows.reset_index(drop=True)).reset_index(drop=True)
    b = load_scorer(str(CARDS["scan"])).score(view)
    assert rows[("sample", "netflow")][3] == f"{(b.score >= b.threshold).mean():.2%}"


def test_detection_report_together_rows(corpus: Path) -> None:
    """``--together``: per capture a flow is flagged if any model flags it and every
    model's notices count; the pooled rows cover the labeled captures (here the FTP trace:
    all its rows are stream rows). An out-of-fold file made here over the corpus's own
    rows, beside the real count detectors."""
    import detection_report
    from scan_report import score_capture

    from zeekml.eval.corpus import load_corpus
    from zeekml.records.labels import targets

    rng = np.random.default_rng(3)
    frames, scan_flags = [], {}
    for c in load_corpus(corpus):
        flows = c.flows.reset_index(drop=True)
        n = len(flows)
        frames.append(pd.DataFrame({
            "capture": c.name, "row": np.arange(n, dtype=np.int64),
            "uid": flows["uid"].astype(str), "ts": flows["ts"].astype(float),
            "orig_h": flows["orig_h"].astype(str), "orig_p": flows["orig_p"],
            "resp_h": flows["resp_h"].astype(str), "resp_p": flows["resp_p"],
            "proto": flows["proto"].astype(str), "binary": targets(flows)[0],
            "y": 0, "model": "amf_lstm", "score": rng.random(n), "cls": "ddos", "threshold": 0.8}))
        for name, card in CARDS.items():
            score, thr, _ = score_capture(card, flows, np.asarray(c.sampled, dtype=bool))
            scan_flags[c.name, name] = score >= thr
    oof = pd.concat(frames, ignore_index=True)
    path = Path(str(corpus)).with_name("oof-together.parquet")
    oof.to_parquet(path, index=False)
    got = json.loads(_run(detection_report, [
        "--loco", str(path), "--count", str(CARDS["scan"]), str(CARDS["bruteforce"]),
        "--corpus", str(corpus), "--together", "--json"]))
    rows = {(e["capture"], e["model"]): e["model_figures"] for e in got}
    ftp = oof[oof["capture"] == "ftp"]
    amf = ftp["score"].to_numpy() >= 0.8
    union = amf | scan_flags["ftp", "scan"] | scan_flags["ftp", "bruteforce"]
    assert 0 < scan_flags["ftp", "bruteforce"].sum() and (union != amf).any()  # not one model's
    all3 = "amf_lstm+scan+bruteforce"
    assert rows[("ftp", all3)]["recall"] == pytest.approx(union.mean())
    sample = {m: rows[("sample", m)]["notices_per_10k_benign"]
              for m in ("amf_lstm", "scan", "bruteforce", all3)}
    assert sample["scan"] > 0  # the sample's fan-out: notices of every model add up
    assert sample[all3] == pytest.approx(sample["amf_lstm"] + sample["scan"] + sample["bruteforce"])
    for model in ("amf_lstm", "scan", "bruteforce", "together"):  # only the FTP trace is labeled
        pooled = rows[("pooled (labeled captures)", model)]
        assert pooled == rows[("pooled (labeled, stream rows)", model)]
        assert pooled["recall"] == pytest.approx(
            rows[("ftp", all3 if model == "together" else model)]["recall"])


def test_scan_report_keys_suppression_by_zeeks_local_marks(tmp_path: Path) -> None:
    """An internet-facing server's day (RITA's archive: Zeek marked the server local, its
    address is public): the report's notices are the ones zeekml score writes, which key an
    inbound flow by its local responder from Zeek's marks, not from the address (keyed by
    address every guessing source opened notices of its own)."""
    import scan_report

    day = DATA / "zeek" / "rita-rotated-archive" / "2024-04-19"
    need(day.is_dir(), f"{day} (shared data)")
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps({"format": "zeekml-corpus/1", "root": str(DATA), "captures": [
        {"name": "rita-day", "labels": "none", "paths": [str(day.relative_to(DATA))]}]}))
    got = json.loads(_run(scan_report, ["--corpus", str(corpus), "--card",
                                        str(CARDS["bruteforce"]), "--json"]))
    entry = got["captures"][0]
    flagged, notices = _cli_counts(day, CARDS["bruteforce"], tmp_path)
    assert (entry["flagged"], entry["notices"]) == (flagged, notices)
    assert 0 < notices < flagged / 10  # the guessers at one server fold into few notices
