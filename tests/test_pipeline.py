"""The scoring pipeline on real captures with a real (tiny) ONNX model in onnxruntime.

:class:`TinyScorer` is a genuine onnxruntime component: a logistic layer over the
runtime's flow features, built with the ``onnx`` helper API, written with a model card
and loaded through the registry like any plugin model kind. It keeps per-host windows
(``HostWindows``) for its ``context`` so scorer state matters across batches.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from tests.conftest import DATA, need
from zeekml.features.flow_stats import FEATURES, N_FEATURES, flow_features
from zeekml.models import registry
from zeekml.models.base import ScoreBatch
from zeekml.models.card import ModelCard, load_card, write_card
from zeekml.policy.notice import NoticePolicy, PolicyConfig
from zeekml.runtime.pipeline import Counters, Pipeline, assemble, score_frame
from zeekml.sources import SkipLog, read_flows, read_table
from zeekml.sources.options import ReadOptions
from zeekml.sources.stream import read_pieces
from zeekml.windows.host_window import HostWindows

KIND = "tiny_linear"
CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
SMALL = DATA / "zeek" / "zat-sample" / "conn.log"


def build_tiny_model(path: Path, name: str = "tiny", weight: float = 4.0) -> Path:
    """Logistic layer: P(c2) = sigmoid(weight * state_attempt + 0.5 * proto_udp - 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((N_FEATURES, 2), dtype=np.float32)
    w[FEATURES.index("state_attempt"), 1] = weight
    w[FEATURES.index("proto_udp"), 1] = 0.5
    b = np.array([0.0, -2.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    write_card(path, {"name": name, "kind": KIND, "classes": ["normal", "c2"],
                      "features": list(FEATURES),
                      "thresholds": {"c2": 0.5, "default": 0.5}})
    return path


class TinyScorer:
    """Scorer protocol over the tiny ONNX model (real onnxruntime session)."""

    def __init__(self, card: ModelCard, options: registry.ScorerOptions | None = None) -> None:
        options = options or registry.ScorerOptions()
        self.card = card
        self.name = card.name
        if card.require("features", list) != list(FEATURES):
            raise ValueError("feature mismatch")
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(card.onnx_path), so,
                                            providers=["CPUExecutionProvider"])
        self.windows = HostWindows(4, "orig", max_hosts=options.max_hosts)

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        x = flow_features(flows)
        w = self.windows.push(flows, x)
        probs = self.session.run(["probs"], {"x": x})[0].astype(np.float64)
        b = len(flows)
        names = np.char.decode(w.uids[:, :-1], "utf-8")
        ctx = np.empty(b, dtype=object)
        ctx[:] = [[u for u, ok in zip(row, m, strict=True) if ok and u]
                  for row, m in zip(names.tolist(), w.mask[:, :-1].tolist(), strict=True)]
        return ScoreBatch(
            model=self.name,
            score=1.0 - probs[:, 0],
            cls=np.full(b, "c2", dtype=object),
            threshold=np.full(b, self.card.threshold_for("c2")),
            extra={"alt": np.full(b, "normal", dtype=object), "alt_score": probs[:, 0],
                   "context": ctx},
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.windows.load_state_dict(state)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny models (different weights) registered as the plugin kind ``tiny_linear``."""
    registry.BUILTIN_KINDS.setdefault(KIND, "tests.test_pipeline:TinyScorer")
    d = tmp_path_factory.mktemp("models")
    return [build_tiny_model(d / "tiny.onnx", "tiny", 4.0),
            build_tiny_model(d / "tiny2.onnx", "tiny2", 3.0)]


def _scorers(paths: list[Path]) -> list[TinyScorer]:
    return [TinyScorer(load_card(p)) for p in paths]


@pytest.fixture(scope="module")
def capture() -> pd.DataFrame:
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    return read_table(CAPTURE)


def test_score_frame_is_flow_major_and_thresholded(capture, tiny_models) -> None:
    flows = capture.iloc[:3000].reset_index(drop=True)
    policy = NoticePolicy(PolicyConfig(all_flows=True, suppress=0))
    out = score_frame(flows, _scorers(tiny_models), policy)
    assert len(out) == 2 * len(flows)
    assert out["model"].tolist()[:4] == ["tiny", "tiny2", "tiny", "tiny2"]
    assert (out["uid"].to_numpy()[::2] == flows["uid"].to_numpy()).all()
    crossing = out["score"] >= out["threshold"]
    assert (out["verdict"][crossing] == "c2").all() and (out["verdict"][~crossing] == "normal").all()
    # the tiny model flags unanswered connection attempts: the capture's scanners
    s0 = np.repeat((flows["conn_state"] == "S0").to_numpy(), 2)
    assert (crossing.to_numpy() == s0).all()
    assert out["notice"].equals(pd.Series(crossing.to_numpy(), dtype="boolean").rename("notice"))


def test_batches_do_not_change_results(capture, tiny_models) -> None:
    """Windows, suppression and outputs are independent of where batches are cut."""
    outs = []
    for cuts in ([len(capture)], [1, 700, 701, 2500, 5000, len(capture)]):
        pipe = Pipeline(_scorers(tiny_models), NoticePolicy(PolicyConfig(suppress=300)), [])
        parts, prev = [], 0
        for c in cuts:
            parts.append(pipe.process(capture.iloc[prev:c].reset_index(drop=True)))
            prev = c
        parts.append(pipe.finish())
        outs.append(pd.concat(parts, ignore_index=True))
    assert len(outs[0]) > 10
    pd.testing.assert_frame_equal(outs[0], outs[1])
    # suppression: one notice per (host, verdict, model) per 300 s, n counts the flows
    crossing = capture["conn_state"] == "S0"
    assert int(outs[0]["n"].sum()) == 2 * int(crossing.sum())
    assert set(outs[0]["uid"]) <= set(capture["uid"])


def test_counters_count_notices(capture, tiny_models) -> None:
    pipe = Pipeline(_scorers(tiny_models[:1]), NoticePolicy(PolicyConfig(suppress=0)), [],
                    counters=Counters())
    pipe.process(capture)
    assert pipe.counters.flows_scored == len(capture)
    assert pipe.counters.notices["c2"] == int((capture["conn_state"] == "S0").sum())


def test_assemble_checks_lengths(capture, tiny_models) -> None:
    flows = capture.iloc[:10]
    bad = ScoreBatch("x", np.zeros(3), np.full(3, "c2", dtype=object), np.zeros(3))
    with pytest.raises(ValueError, match="3 scores for 10 flows"):
        assemble(flows, [bad])


def _rows(pieces) -> list[pd.DataFrame]:
    return [f for p in pieces for f in p.frames]


def test_read_pieces_resumes_at_offset(tmp_path) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    whole = pd.concat(list(read_flows(SMALL)), ignore_index=True)
    pieces = list(read_pieces(str(SMALL), None, SkipLog(), ReadOptions(batch_rows=100), hold_partial=False,
                                 chunk=4096))
    assert sum(len(f) for f in _rows(pieces)) == len(whole)
    # resume from the cursor after the first piece that produced rows
    first = next(p for p in pieces if p.frames)
    got = sum(len(f) for f in first.frames)
    rest = _rows(read_pieces(str(SMALL), first.cursor, SkipLog(), ReadOptions(batch_rows=100), hold_partial=False,
                            chunk=4096))
    again = pd.concat([*first.frames, *rest], ignore_index=True)
    assert len(again) == len(whole) and got < len(whole)
    assert again["uid"].tolist() == whole["uid"].tolist()


def test_read_pieces_gzip_resumes_in_decompressed_stream(tmp_path) -> None:
    """A log rotated into a gzip archive keeps its identity and offset."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    data = SMALL.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1
    live = tmp_path / "conn.log"
    live.write_bytes(data[:cut])
    pieces = list(read_pieces(str(live), None, SkipLog(), ReadOptions(batch_rows=50), hold_partial=True, chunk=4096))
    first = sum(len(f) for f in _rows(pieces))
    cursor = pieces[-1].cursor
    arch = tmp_path / "conn.12:00:00-13:00:00.log.gz"
    with gzip.open(arch, "wb") as fh:
        fh.write(data)
    live.unlink()
    from zeekml.sources.generation import identify
    from zeekml.sources.generation import match_cursor as find_cursor

    key, found = find_cursor({cursor["key"]: cursor}, identify(arch))
    assert found is cursor
    rest = _rows(read_pieces(str(arch), found, SkipLog(), ReadOptions(batch_rows=50), hold_partial=True))
    total = len(pd.concat(list(read_flows(SMALL)), ignore_index=True))
    assert first + sum(len(f) for f in rest) == total


def test_unfinished_last_line_is_held_in_cron_mode(tmp_path) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    data = SMALL.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 20  # mid-line
    live = tmp_path / "conn.log"
    live.write_bytes(data[:cut])
    held = list(read_pieces(str(live), None, SkipLog(), ReadOptions(batch_rows=50), hold_partial=True))
    assert held[-1].cursor["offset"] == data.rindex(b"\n", 0, cut) + 1
    shutil.copy(SMALL, live)
    rest = _rows(read_pieces(str(live), held[-1].cursor, SkipLog(), ReadOptions(batch_rows=50), hold_partial=True))
    total = sum(len(f) for f in _rows(held)) + sum(len(f) for f in rest)
    assert total == len(pd.concat(list(read_flows(SMALL)), ignore_index=True))
