"""The runtime AMF scorer: the shipped model, its card, ScoreBatch semantics, state.

Everything here runs without torch except the one-feature-path test, which trains a
tiny model in-process and checks that the runtime scorer (reader -> features ->
windows -> onnxruntime) reproduces the torch model on the trainer's windows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, REPO, need, need_module, zat_sample
from zeekml.errors import ModelError, StateError
from zeekml.models.amf_scorer import AmfScorer, context_uids
from zeekml.models.base import Deferred
from zeekml.models.card import load_card, sha256_file, write_card
from zeekml.models.registry import ScorerOptions, load_scorer, resolve_model
from zeekml.records.labels import CLASSES
from zeekml.windows.host_window import WINDOW_FEATURES, WINDOW_KEYS

SHIPPED = REPO / "onnx_models" / "amf_lstm.onnx"
CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


@pytest.fixture(scope="module")
def flows():
    need(CAPTURE.is_file(), str(CAPTURE))
    from zeekml.sources.open import read_table

    return read_table([str(CAPTURE)])


@pytest.fixture(scope="module")
def shipped():
    need(SHIPPED.is_file(), f"the shipped model {SHIPPED}")
    return load_card(SHIPPED)


def test_bundled_name_resolves(shipped, tmp_path, monkeypatch):
    assert resolve_model("amf_lstm").resolve() == SHIPPED.resolve()
    # a directory of that name where zeekml runs does not hide the bundled model; a file
    # of that name is a path (and not a model: refused when loaded)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "amf_lstm").mkdir()
    assert resolve_model("amf_lstm").resolve() == SHIPPED.resolve()
    (tmp_path / "flood").write_text("not a model")
    assert resolve_model("flood") == Path("flood")


def test_card_matches_runtime(shipped):
    d = shipped.data
    assert d["kind"] == "amf_lstm"
    assert d["features"] == list(WINDOW_FEATURES)  # the card's order is the runtime's
    assert d["window_key"] in WINDOW_KEYS
    assert d["classes"] == list(CLASSES)
    assert "default" in d["thresholds"]
    assert set(d["untrained_classes"]) <= set(CLASSES)
    assert d["training"]["seconds"] <= 30 * 60
    assert "leave_one_capture_out" in d["metrics"]
    # every training file still has the digest the card recorded
    for f in d["training"]["files"]:
        p = (REPO / f["path"]) if not Path(f["path"]).is_absolute() else Path(f["path"])
        if p.is_file():
            assert sha256_file(p) == f["sha256"], p


def test_runtime_scores_without_torch(shipped):
    """Import and score with torch made unimportable, and check it was never loaded."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from zeekml.models.registry import load_scorer\n"
        "from zeekml.sources.open import read_table\n"
        f"s = load_scorer('amf_lstm')\n"
        f"b = s.score(read_table([{str(CAPTURE)!r}]).head(500))\n"
        "assert len(b) == 500\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_scorebatch_semantics(shipped, flows):
    scorer = AmfScorer(shipped, ScorerOptions(threads=1, batch_size=1000))
    b = scorer.score(flows)
    n = len(flows)
    assert len(b) == n and b.model == "amf_lstm"
    assert np.all((b.score >= 0) & (b.score <= 1))
    assert "normal" not in set(b.cls.tolist())
    assert set(b.cls.tolist()) <= set(CLASSES)
    from zeekml.features.flow_stats import flow_features, payload_unknown
    from zeekml.models.amf_scorer import UNKNOWN_KEY

    unknown = shipped.data.get(UNKNOWN_KEY, shipped.thresholds)
    expect = np.where(payload_unknown(flow_features(flows)),
                      [unknown.get(c, unknown["default"]) for c in b.cls],
                      [shipped.threshold_for(c) for c in b.cls])
    np.testing.assert_array_equal(b.threshold, expect)
    assert np.all(b.extra["alt"] != b.cls)
    assert np.all(b.extra["alt_score"] <= 1.0)
    # alt is the runner-up attack class: never normal (P(normal) is 1 - score), and no more
    # probable than the candidate's share of the attack probability
    assert not np.any(b.extra["alt"] == "normal")
    assert np.all(b.extra["alt_score"] <= b.score + 1e-6)
    # context: up to 3 uids of *earlier* flows of the same window host, never the flow itself;
    # deferred (built only for the rows the pipeline writes), the same for any row subset
    deferred = b.extra["context"]
    assert isinstance(deferred, Deferred) and len(deferred) == n
    ctx = deferred.take(np.arange(n))
    some = np.arange(0, n, 7)
    assert deferred.take(some).tolist() == ctx[some].tolist()
    assert ctx.dtype == object and len(ctx) == n
    key = shipped.data["window_key"]
    from zeekml.windows.host_window import key_sides

    host = key_sides(flows, key)[0].fillna("").astype(str).tolist()
    uids = flows["uid"].astype(str).tolist()
    row_of = {u: i for i, u in enumerate(uids)}
    nonempty = 0
    for i in range(n):
        assert isinstance(ctx[i], list) and len(ctx[i]) <= 3
        for u in ctx[i]:
            j = row_of[u]
            assert j < i and host[j] == host[i] and u != uids[i]
        nonempty += bool(ctx[i])
    assert nonempty > n // 2


def test_batch_boundaries_and_state_round_trip(shipped, flows, tmp_path):
    whole = AmfScorer(shipped, ScorerOptions(threads=1)).score(flows)
    cut = len(flows) // 3
    a = AmfScorer(shipped, ScorerOptions(threads=1))
    first = a.score(flows.iloc[:cut])
    state = a.state_dict()
    np.savez(tmp_path / "s.npz", **state)
    loaded = dict(np.load(tmp_path / "s.npz", allow_pickle=False))
    b = AmfScorer(shipped, ScorerOptions(threads=1))
    b.load_state_dict(loaded)
    second = b.score(flows.iloc[cut:])
    np.testing.assert_allclose(np.r_[first.score, second.score], whole.score, atol=1e-6)
    assert np.r_[first.cls, second.cls].tolist() == whole.cls.tolist()
    # a state from another window key is refused
    loaded["window_key"] = np.array("resp" if shipped.data["window_key"] != "resp" else "orig")
    with pytest.raises(StateError):
        AmfScorer(shipped, ScorerOptions(threads=1)).load_state_dict(loaded)


def _copy_with(card, tmp_path: Path, **changes) -> Path:
    onnx = tmp_path / "m.onnx"
    shutil.copy(card.onnx_path, onnx)
    data = {k: v for k, v in json.loads(card.path.read_text()).items() if k not in ("format", "onnx_sha256")}
    data.update(changes)
    write_card(onnx, data)
    return onnx


def test_refuses_card_with_other_feature_order(shipped, tmp_path):
    onnx = _copy_with(shipped, tmp_path, features=list(reversed(WINDOW_FEATURES)))
    with pytest.raises(ModelError, match="different feature list"):
        load_scorer(str(onnx))


def test_refuses_card_with_wrong_window(shipped, tmp_path):
    onnx = _copy_with(shipped, tmp_path, window=shipped.data["window"] + 1)
    with pytest.raises(ModelError):
        load_scorer(str(onnx))


def test_context_uids_hand_case():
    att = np.array([[0.1, 0.5, 0.05, 0.3, 0.05], [0.0, 0.0, 0.0, 0.2, 0.8], [0, 0, 0, 0, 1.0]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]], dtype=bool)
    uids = np.array([[b"a", b"b", b"c", b"d", b"e"], [b"", b"", b"", b"x", b"y"], [b"", b"", b"", b"", b"z"]])
    ctx = context_uids(att, mask, uids)
    assert ctx.tolist() == [["b", "d", "a"], ["x"], []]


def test_one_feature_path_torch_equals_runtime(tmp_path, flows):
    """Trainer windows + torch == runtime reader/features/windows + onnxruntime, on a real capture."""
    need_module("torch")
    from zeekml.train import amf_lstm
    from zeekml.train.datasets import Capture, capture_windows
    from zeekml.train.export import check_parity, export_onnx

    ws = capture_windows(Capture(path=str(CAPTURE), group="x", flows=flows), 10, "orig")
    cfg = amf_lstm.TrainConfig(hidden=16, epochs=1, threads=1, seed=3)
    model = amf_lstm.train(ws.x, ws.mask, ws.y, ws.group, len(CLASSES), cfg).model
    onnx = tmp_path / "p.onnx"
    inputs = {"x": ws.x[:2048], "mask": ws.mask[:2048].astype(np.float32)}
    export_onnx(model, inputs, ["probs", "attention"], onnx)
    assert check_parity(model, onnx, inputs) <= 1e-4
    write_card(onnx, {"name": "p", "kind": "amf_lstm", "features": list(WINDOW_FEATURES), "window": 10,
                      "window_key": "orig", "classes": list(CLASSES), "thresholds": {"default": 0.5}})
    scorer = AmfScorer(load_card(onnx), ScorerOptions(threads=1, batch_size=777))
    got = np.concatenate([scorer.score(flows.iloc[s : s + 2000]).score for s in range(0, len(flows), 2000)])
    # the trainer keeps only labeled rows; compare those
    from zeekml.records.labels import binary_target

    keep = binary_target(flows) >= 0
    ref, _ = amf_lstm.predict(model, ws.x, ws.mask)
    np.testing.assert_allclose(got[keep], 1.0 - ref[:, 0], atol=1e-4)


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory, flows):
    """One tiny model trained on the capture, exported twice: the old way (raw windows,
    normalized inside the graph) and as ``zeekml train amf`` exports it (time-major)."""
    need_module("torch")
    from zeekml.train import amf_lstm
    from zeekml.train.amf_training import export_amf
    from zeekml.train.datasets import Capture, capture_windows
    from zeekml.train.export import export_onnx

    tmp = tmp_path_factory.mktemp("two_exports")
    ws = capture_windows(Capture(path=str(CAPTURE), group="x", flows=flows), 10, "local_dir")
    cfg = amf_lstm.TrainConfig(hidden=16, epochs=1, threads=1, seed=5)
    model = amf_lstm.train(ws.x, ws.mask, ws.y, ws.group, len(CLASSES), cfg).model
    card = {"kind": "amf_lstm", "features": list(WINDOW_FEATURES), "window": 10,
            "window_key": "local_dir", "classes": list(CLASSES), "thresholds": {"default": 0.5},
            "normalization": {"mean": model.mean.numpy().astype(float).tolist(),
                              "inv_std": model.inv_std.numpy().astype(float).tolist()}}
    old, new = tmp / "old.onnx", tmp / "new.onnx"
    export_onnx(model, {"x": ws.x[:64], "mask": ws.mask[:64].astype(np.float32)},
                ["probs", "attention"], old)
    assert export_amf(model, ws.x[:512], ws.mask[:512], new) <= 1e-4
    for path in (old, new):
        write_card(path, {**card, "name": path.stem})
    return old, new, ws


def test_time_major_graph_scores_bit_for_bit_as_the_self_contained_one(two_exports, flows):
    """The exported graph takes normalized, time-major windows (the runtime normalizes each
    flow once); the graph exported from the same model the old way must give the same
    probabilities and attention, bit for bit, through the runtime's whole path (windows
    across batch cuts, chunks of the model batch) on a real capture, and through the
    raw-window path (``infer``) too."""
    old, new, ws = two_exports
    a = AmfScorer(load_card(old), ScorerOptions(threads=1, batch_size=333))
    b = AmfScorer(load_card(new), ScorerOptions(threads=1, batch_size=333))
    assert a.norm is None and b.norm is not None
    assert [i.name for i in b.session.get_inputs()] == ["xs", "mask"]
    for s in range(0, len(flows), 1500):
        part = flows.iloc[s : s + 1500]
        fa, fb = a.score(part), b.score(part)
        assert np.array_equal(fa.score, fb.score)
        assert np.array_equal(fa.extra["alt_score"], fb.extra["alt_score"], equal_nan=True)
        assert list(fa.cls) == list(fb.cls)
        rows = np.arange(len(part))
        assert list(fa.extra["context"].take(rows)) == list(fb.extra["context"].take(rows))
    pa, aa = a.infer(ws.x[:700], ws.mask[:700])
    pb, ab = b.infer(ws.x[:700], ws.mask[:700])
    assert np.array_equal(pa, pb) and np.array_equal(aa, ab)


@pytest.mark.parametrize("bad", [
    None, {"mean": [0.0] * 3, "inv_std": [1.0] * 3}, "inv_std_zero", "mean_nan", "mean_str"])
def test_a_time_major_graph_needs_a_sound_normalization_in_its_card(bad, two_exports,
                                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The graph no longer normalizes: a card without the normalization (or with one of
    the wrong length, a zero inverse deviation, a NaN, a string) is refused by name."""
    src = two_exports[1]
    path = tmp_path / "m.onnx"
    shutil.copy(src, path)
    data = json.loads(load_card(src).path.read_text())
    nf = len(data["features"])
    norm = data["normalization"]
    if bad is None:
        del data["normalization"]
    elif bad == "inv_std_zero":
        data["normalization"] = {**norm, "inv_std": [0.0] * nf}
    elif bad == "mean_nan":
        data["normalization"] = {**norm, "mean": [float("nan")] * nf}
    elif bad == "mean_str":
        data["normalization"] = {**norm, "mean": ["1"] * nf}
    else:
        data["normalization"] = bad
    write_card(path, data)
    AmfScorer(load_card(src), ScorerOptions(threads=1))  # the sound card loads
    with pytest.raises(ModelError, match="normalization"):
        AmfScorer(load_card(path), ScorerOptions(threads=1))


def test_a_class_the_card_does_not_emit_can_be_turned_back_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The shipped card silences classes held by too few training captures (threshold
    above every score): no row of such a class is a notice, and `--threshold` brings the
    class back with the given threshold."""
    from zeekml.cli.main import main
    from zeekml.models.card import load_card
    from zeekml.models.registry import resolve_model

    card = load_card(resolve_model("amf_lstm"))
    silent = [c for c in card.data["classes"] if c != "normal" and card.threshold_for(c) > 1.0]
    assert "dos" in silent
    sample = zat_sample()

    def rows(*extra: str) -> list[dict[str, str]]:
        out = tmp_path / "v.log"
        assert main(["-q", "score", "--all", "--model", "amf_lstm", "--suppress", "0",
                     "--out", str(out), *extra, str(sample)]) == 0
        lines = out.read_text().splitlines()
        fields = next(x for x in lines if x.startswith("#fields")).split("\t")[1:]
        return [dict(zip(fields, x.split("\t"), strict=True)) for x in lines if not x.startswith("#")]

    plain = [r for r in rows() if r["candidate"] == "dos"]
    assert plain and all(r["decision"] == "below" and float(r["threshold"]) > 1.0 for r in plain)
    on = [r for r in rows("--threshold", "amf_lstm:dos=0.5") if r["candidate"] == "dos"]
    assert all(float(r["threshold"]) == 0.5 for r in on)
    assert any(r["notice"] == "T" for r in on if float(r["score"]) >= 0.5)



@pytest.mark.parametrize(("threads", "size"), [(1, 1), (1, 97), (1, 1000), (2, 97), (3, 1000)])
def test_chunks_run_side_by_side_equal_chunks_run_in_turn(shipped, flows, threads, size) -> None:
    """With one thread the next chunk's windows are assembled in a helper thread while the
    graph runs the current one; with several, that many chunks are assembled and run at
    once. Either way: the same scores, classes and context, bit for bit, as assembling and
    running each chunk in turn (real flows, the shipped graph, several chunk sizes)."""
    side = AmfScorer(shipped, ScorerOptions(threads=threads, batch_size=size))
    in_turn = AmfScorer(shipped, ScorerOptions(threads=1, batch_size=size))
    in_turn.chunks.helper = lambda: None  # type: ignore[method-assign]
    n = len(flows)
    for half in (flows.iloc[: n // 2], flows.iloc[n // 2 :]):  # state carried across batches
        got, ref = side.score(half), in_turn.score(half)
        np.testing.assert_array_equal(got.score, ref.score)
        assert got.cls.tolist() == ref.cls.tolist()
        rows = np.arange(len(half))
        assert got.extra["context"].take(rows).tolist() == ref.extra["context"].take(rows).tolist()
    assert side.chunks._pool is not None and in_turn.chunks._pool is None
    assert side.chunks._pool._max_workers == threads


def test_flows_with_payload_bytes_unknown_get_their_own_thresholds(shipped, tmp_path) -> None:
    """A card's ``thresholds_payload_unknown`` hold flows whose payload bytes are unknown
    (here real NetFlow, an nfcapd capture read through nfdump, and the Zeek flows Zeek
    left without byte counts); every other flow keeps ``thresholds``."""
    from tests.conftest import need_binary
    from zeekml.features.flow_stats import flow_features, payload_unknown
    from zeekml.sources.open import read_table

    need_binary("nfdump")
    nfcapd = DATA / "nfdump" / "pcap-zeek-ssh-guess" / "nfcapd"
    need(nfcapd.is_dir() and CAPTURE.is_file(), "the shared captures")
    known = {c: 0.25 for c in shipped.data["thresholds"]}
    unknown = {c: 0.75 for c in shipped.data["thresholds"]}
    onnx = _copy_with(shipped, tmp_path, thresholds=known, thresholds_payload_unknown=unknown)
    scorer = load_scorer(str(onnx), ScorerOptions(threads=1))
    for path, expect_unknown in ((nfcapd, True), (CAPTURE, None)):
        table = read_table([str(path)])
        got = scorer.score(table).threshold
        unk = payload_unknown(flow_features(table))
        if expect_unknown:
            assert unk.all()
        else:
            assert 0 < unk.sum() < len(unk)  # a Zeek log: mostly known, a few without bytes
        assert (got == np.where(unk, 0.75, 0.25)).all()
    for bad in ({"ddos": 0.5}, {**unknown, "default": "high"}, {**unknown, "ddos": float("nan")}):
        with pytest.raises(ModelError, match="thresholds_payload_unknown"):
            load_scorer(str(_copy_with(shipped, tmp_path, thresholds=known,
                                       thresholds_payload_unknown=bad)))


def test_eval_decides_as_the_runtime_does(shipped, flows, capsys) -> None:
    """``zeekml eval`` holds each flow to the threshold the runtime gives it (payload bytes
    known or not), so its counts are the runtime's crossings on the labeled rows."""
    from zeekml.cli.main import main
    from zeekml.records.labels import targets

    b = AmfScorer(shipped, ScorerOptions(threads=1)).score(flows)
    binary, _ = targets(flows)
    flagged = (b.score >= b.threshold) & (np.asarray(binary) >= 0)
    assert main(["eval", "--model", "amf_lstm", "--data", str(CAPTURE), "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["binary_counts"]["tp"] + out["binary_counts"]["fp"] == int(flagged.sum())
