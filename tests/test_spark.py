"""The Spark engine against the local engine, on real captures, with real PySpark (local[2]).

Both engines score the same files with the same real ONNX models (onnxruntime). The
Spark engine must give exactly the same multiset of (uid, model, verdict, notice, n)
and the same attention/window context, with scores equal within 1e-5, including when
there are more partitions than hosts and when one host has all the flows (cut into
chunks). Models: the bundled AMF-LSTM and flow LM when they exist, plus two tiny real
ONNX models (one keyed by host like the AMF-LSTM, one by host pair like the flow LM)
whose scores depend on their windows, so a wrong partitioning shows.

One SparkSession (about 15 s to start) serves every test; workers run this
interpreter (PYSPARK_PYTHON) with the repository on PYTHONPATH, so they can import the
tiny scorers from the tests.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from tests.conftest import DATA, REPO, need, need_module, zat_sample
from tests.test_pipeline import KIND, build_tiny_model
from zeekml.errors import ParseError
from zeekml.features.flow_stats import flow_features
from zeekml.models import registry
from zeekml.models.base import ScoreBatch
from zeekml.models.card import ModelCard, load_card, write_card
from zeekml.policy.notice import NoticePolicy, PolicyConfig
from zeekml.runtime.batch_run import RunOptions, score_inputs
from zeekml.runtime.pipeline import Pipeline
from zeekml.sources import SkipLog, expand_inputs, read_table
from zeekml.sources.biflow import Pairer
from zeekml.sources.options import ReadOptions
from zeekml.windows.conversation import ConversationWindows

PAIR_KIND = "tiny_pair"
#: Every input format and a skipped line; relative-ts and epoch captures mixed.
CAPTURES = [
    "zeek/stratosphere-008-mixed/conn.log.labeled",  # 1600 hosts, labeled, 2022-06
    "zeek/stratosphere-001-njrat/labeled-conn.log",  # labeled, relative ts (after epoch)
    "nfdump/slips-test1-malicious/test1-malicious.csv",  # nfdump CSV, 2018-01-12
    "zeek/rita-truncated/conn.log",  # a line cut short: skipped by both engines
    "zeek/stratosphere-002-portscan/conn.log",  # Zeek JSON, 2022-09
    "zeek/slips-test18-ctu-sme-11/conn.log.labeled",  # labeled RemcosRAT, 2023-02
    "zeek/rita-proxy-rolling/conn.16:00:00-17:00:00.log.gz",  # gzip archive, 2024-04
]
MIRAI = "zeek/iot23-34-1-mirai/conn.log.labeled"  # 23144 of 23145 flows from one host
SCAN = "zeek/slips-portscan-horizontal/conn.log"  # 41 flows, one host


class PairTinyScorer:
    """The tiny ONNX model keyed by host pair (ConversationWindows, like the flow LM).

    Its score adds 0.05 per earlier flow of the pair inside the window, so a flow
    scored without its real predecessors gets another score.
    """

    def __init__(self, card: ModelCard, options: registry.ScorerOptions | None = None) -> None:
        options = options or registry.ScorerOptions()
        self.card = card
        self.name = card.name
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(card.onnx_path), so,
                                            providers=["CPUExecutionProvider"])
        self.windows = ConversationWindows(2, max_keys=options.max_hosts,
                                           idle_timeout=options.idle_timeout)

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        x = flow_features(flows)
        w = self.windows.push(flows, np.zeros(len(flows), dtype=np.int64))
        p = self.session.run(["probs"], {"x": x})[0].astype(np.float64)
        prev = w.valid[:, :-1].sum(axis=1)
        b = len(flows)
        names = np.char.decode(w.uids[:, :-1], "utf-8")
        ctx = np.empty(b, dtype=object)
        ctx[:] = [[u for u, ok in zip(row, m, strict=True) if ok and u]
                  for row, m in zip(names.tolist(), w.valid[:, :-1].tolist(), strict=True)]
        return ScoreBatch(self.name, 0.8 * (1.0 - p[:, 0]) + 0.05 * prev,
                          np.full(b, "c2", dtype=object), np.full(b, 0.5),
                          {"context": ctx})

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.windows.load_state_dict(state)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def spark():
    need_module("pyspark")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from zeekml.runtime.spark import get_session

    session = get_session("local[2]", "zeekml-tests", {
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "1g",
    })
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The bundled models (when they exist) and two tiny ones, as paths."""
    registry.BUILTIN_KINDS.setdefault(KIND, "tests.test_pipeline:TinyScorer")
    registry.BUILTIN_KINDS.setdefault(PAIR_KIND, "tests.test_spark:PairTinyScorer")
    d = tmp_path_factory.mktemp("spark-models")
    host = build_tiny_model(d / "tiny.onnx", "tiny", 4.0)
    pair = build_tiny_model(d / "tinypair.onnx", "tinypair", 3.0)
    card = {k: v for k, v in load_card(pair).data.items() if k not in ("format", "onnx_sha256")}
    write_card(pair, {**card, "kind": PAIR_KIND})
    return [str(p) for p in registry.bundled_models()] + [str(host), str(pair)]


def _paths(names: list[str]) -> list[str]:
    paths = [DATA / n for n in names]
    need(all(p.is_file() for p in paths), f"the captures {names} in {DATA}")
    return [str(p) for p in paths]


class _Collect:
    """An in-memory sink: the verdict frames the local engine writes."""

    kind = "memory"
    name = "memory:test"

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def write(self, verdicts: pd.DataFrame) -> None:
        self.frames.append(verdicts.copy())

    def flush(self) -> None: ...

    def checkpoint(self) -> dict:
        return {}

    def restore(self, position: dict) -> None: ...

    def close(self) -> None: ...


def local_engine(paths: list[str], models: list[str], config: PolicyConfig,
                 options: RunOptions | None = None, *, pair: bool = True
                 ) -> tuple[pd.DataFrame, SkipLog]:
    """What ``zeekml score`` (the local engine) writes for these inputs (NetFlow records
    paired, as ``zeekml score`` does by default)."""
    scorers = [registry.load_scorer(m, registry.ScorerOptions(threads=1)) for m in models]
    sink = _Collect()
    skips = SkipLog()
    pipeline = Pipeline(scorers, NoticePolicy(config), [sink],
                        pairer=Pairer() if pair else None)
    score_inputs(expand_inputs(paths), pipeline, skips=skips, options=options)
    return pd.concat(sink.frames, ignore_index=True), skips


KEY = ["uid", "model", "verdict", "notice", "n"]


def assert_same(got: pd.DataFrame, exp: pd.DataFrame) -> None:
    """Same multiset of (uid, model, verdict, notice, n, context); scores within 1e-5."""
    assert len(got) == len(exp) > 0

    def norm(df: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({
            "uid": df["uid"].astype(str), "model": df["model"].astype(str),
            "verdict": df["verdict"].astype(str),
            "notice": df["notice"].astype("boolean").fillna(False).astype(bool),
            "n": df["n"].astype("Int64").fillna(1).astype(np.int64),
            "ctx": ["|".join(c) if isinstance(c, (list, np.ndarray)) else ""
                    for c in df["context"]],
            "score": df["score"].astype(np.float64),
        })
        return out.sort_values(["uid", "model", "score", "ctx", "notice"]).reset_index(drop=True)

    a, b = norm(got), norm(exp)
    assert Counter(map(tuple, a[KEY].to_numpy().tolist())) == \
        Counter(map(tuple, b[KEY].to_numpy().tolist()))
    assert (a["ctx"].to_numpy() == b["ctx"].to_numpy()).all()
    assert np.allclose(a["score"], b["score"], rtol=0, atol=1e-5, equal_nan=True)


def read_json_lines(files: list[Path]) -> pd.DataFrame:
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]
    df = pd.DataFrame(rows)
    df["context"] = [c if isinstance(c, list) else [] for c in df.get("context", [None] * len(df))]
    return df


# --------------------------------------------------------------------------- tests


def test_cli_spark_equals_local_engine(spark, models, tmp_path) -> None:
    """``zeekml score --engine spark --all``: every verdict equals ``zeekml score --all``."""
    from zeekml.cli.main import main

    paths = _paths(CAPTURES)
    model_args = [a for m in models for a in ("--model", m)]
    common = ["score", "--all", "--suppress", "300", "--out-format", "json", "--threads", "1",
              *model_args]
    assert main([*common, "--out", str(tmp_path / "local.json"), *paths]) == 0
    assert main([*common, "--engine", "spark", "--spark-master", "local[2]",
                 "--out", str(tmp_path / "spark"), *paths]) == 0
    local = read_json_lines([tmp_path / "local.json"])
    parts = sorted((tmp_path / "spark").glob("part-*.json"))
    assert parts, "the Spark engine wrote no part files"
    got = read_json_lines(parts)
    assert_same(got, local)
    assert set(got["model"]) == {load_card(m).name for m in models}
    # every flow of every capture, except the line the truncated capture cuts short
    flows = sum(len(read_table(p)) for p in paths)
    assert len(got) == flows * len(models)


def test_notices_and_uri_inputs_equal_local(spark, models, tmp_path) -> None:
    """Suppressed notices (``n`` = flows they stand for) from file:// URIs, as Parquet."""
    from zeekml.runtime.spark import SparkOptions, score_files

    paths = _paths([*CAPTURES[:5], CAPTURES[6]])
    config = PolicyConfig(suppress=600.0)
    # Hadoop reads the first two; the last (a zeekctl name with ':') is read locally
    uris = [Path(p).as_uri() for p in paths[:2]] + paths[2:-1] + [Path(paths[-1]).as_uri()]
    counts = score_files(spark, uris, str(tmp_path / "out"), models=models, config=config,
                         options=SparkOptions(), out_format="parquet")
    got = pd.read_parquet(tmp_path / "out")
    exp, skips = local_engine(paths, models, config)
    assert_same(got, exp)
    assert int(got["n"].sum()) > len(got)  # suppression happened
    assert counts.flows_read == sum(len(read_table(p)) for p in paths)
    assert counts.rows_written == len(exp)
    assert counts.skipped == skips.total > 0  # the truncated capture's cut line
    assert counts.notices == Counter(exp["verdict"].astype(str))
    assert set(got["source_file"]) >= {Path(p).as_uri().replace("file:///", "file:/")
                                       for p in paths[:2]}


def test_dataframe_with_more_partitions_than_hosts(spark, models) -> None:
    """score_dataframe on a table of one host: 64 groups per model, most of them empty."""
    from zeekml.records.verdicts import VERDICT_DTYPES
    from zeekml.runtime.spark import SparkOptions, score_dataframe

    paths = _paths([SCAN, "zeek/slips-test10-mixed/conn.log"])
    table = pd.concat([read_table(p) for p in paths], ignore_index=True)
    df = spark.createDataFrame(table)  # labels and all, as a team's flow table would have
    config = PolicyConfig(all_flows=True, suppress=60.0)
    out = score_dataframe(df, models, config, SparkOptions(buckets=64))
    assert set(VERDICT_DTYPES) <= set(out.columns)
    got = out.toPandas()
    exp, _ = local_engine(paths, models, config)
    assert_same(got, exp)
    assert table["orig_h"].nunique() < 64


def test_single_huge_host_is_cut_into_chunks(spark, models, tmp_path) -> None:
    """One host with 23144 flows, scored in chunks of 1000: windows still exact."""
    from zeekml.runtime.spark import SparkOptions, score_files

    paths = _paths([MIRAI])
    config = PolicyConfig(all_flows=True, suppress=600.0)
    counts = score_files(spark, paths, str(tmp_path / "out"), models=models, config=config,
                         options=SparkOptions(chunk_rows=1000, buckets=8, rows_per_file=20000),
                         out_format="zeek")
    assert counts.heavy_keys >= 1
    parts = sorted((tmp_path / "out").glob("part-*.log"))
    assert len(parts) == len(counts.outputs) > 1
    rows = []
    for f in parts:  # each part is a whole Zeek log: header, rows, #close
        lines = f.read_text().splitlines()
        assert lines[0].startswith("#separator") and lines[-1].startswith("#close")
        fields = next(x for x in lines if x.startswith("#fields")).split("\t")[1:]
        rows += [dict(zip(fields, x.split("\t"), strict=True)) for x in lines
                 if not x.startswith("#")]
    got = pd.DataFrame(rows)
    got = pd.DataFrame({
        "uid": got["uid"], "model": got["model"], "verdict": got["verdict"],
        "notice": got["notice"] == "T", "n": got["n"].astype(int),
        "score": got["score"].astype(float),
        "context": [[] if c in ("-", "(empty)") else c.split(",") for c in got["context"]],
    })
    exp, _ = local_engine(paths, models, config)
    assert_same(got, exp)


def test_binetflow_with_tz_equals_local(spark, models, tmp_path) -> None:
    """Argus binetflow (comma and tab, non-IP records) read in the executors with --tz."""
    from zeekml.runtime.spark import SparkOptions, score_files
    from zeekml.sources.options import ReadOptions

    paths = _paths(["binetflow/slips-test2-malicious.binetflow",
                    "binetflow/slips-test5-mixed.binetflow"])
    config = PolicyConfig(all_flows=True, suppress=600.0)
    counts = score_files(spark, paths, str(tmp_path / "out"), models=models, config=config,
                         options=SparkOptions(tz="Europe/Prague"), out_format="parquet")
    got = pd.read_parquet(tmp_path / "out")
    exp, skips = local_engine(paths, models, config,
                              RunOptions(read=ReadOptions(tz="Europe/Prague")))
    assert_same(got, exp)
    assert counts.flows_read == 6751 + 296 and counts.skipped == skips.total == 4
    utc = read_table(paths[0])["ts"].min()
    assert float(got["ts"].min()) == pytest.approx(8.140073, abs=1e-6)  # test5, relative
    assert float(got.loc[got["ts"] > 1e9, "ts"].min()) == float(utc) - 7200


def test_netflow_pairing_equals_local_engine(spark, models, tmp_path) -> None:
    """nfcapd directories (replies in the next 5-minute file), the FTP brute force split
    into a client file and a server file, and the SSH guessing trace: pairs across
    files and captures are made as the local engine makes them, verdict for verdict."""
    import shutil
    import subprocess

    from tests.conftest import need_binary
    from zeekml.runtime.spark import SparkOptions, score_files

    exe = need_binary("nfdump")
    nf = DATA / "nfdump"
    need((nf / "pcap-iot23-34-1-irc" / "nfcapd").is_dir(), "the shared nfcapd captures")
    iot = tmp_path / "iot"
    iot.mkdir()
    for f in sorted((nf / "pcap-iot23-34-1-irc" / "nfcapd").glob("nfcapd.*"))[:30]:
        shutil.copy(f, iot)
    split = tmp_path / "ftp"
    split.mkdir()
    src = nf / "pcap-zeek-ftp-bruteforce" / "nfcapd" / "nfcapd.201401141735"
    env = {**os.environ, "TZ": "UTC"}
    for name, flt in (("nfcapd.201401141735", "src ip 192.168.56.1"),
                      ("nfcapd.201401141740", "dst ip 192.168.56.1")):
        subprocess.run([exe, "-r", str(src), "-w", str(split / name), flt], env=env, check=True)
    paths = [str(iot), str(split), str(nf / "pcap-zeek-ssh-guess" / "nfcapd"),
             str(DATA / "zeek/slips-portscan-horizontal/conn.log")]
    config = PolicyConfig(all_flows=True, suppress=600.0)
    counts = score_files(spark, paths, str(tmp_path / "out"), models=models, config=config,
                         options=SparkOptions(buckets=4), out_format="parquet")
    got = pd.read_parquet(tmp_path / "out")
    exp, _ = local_engine(paths, models, config)
    assert_same(got, exp)
    records = sum(len(read_table(p, options=ReadOptions(pair=False))) for p in paths)
    assert counts.records == records and counts.pairs > 30 + 11
    assert counts.flows_read == records - counts.pairs == len(exp) // len(models)
    # --no-pair: both engines score every record
    counts = score_files(spark, paths, str(tmp_path / "raw"), models=models, config=config,
                         options=SparkOptions(buckets=4, pair=False), out_format="parquet")
    raw, _ = local_engine(paths, models, config, pair=False)
    assert_same(pd.read_parquet(tmp_path / "raw"), raw)
    assert counts.flows_read == records and counts.records == 0


def test_relative_paths_after_chdir_equal_local(spark, models, tmp_path, monkeypatch) -> None:
    """Relative input and output paths mean the driver's working directory, even when the
    session's Python workers (and its JVM) run in another one (CI failure of the
    ``docs/api.md`` doctest: FileNotFoundError for 'zeekml/data/sample_conn.log')."""
    import shutil

    from zeekml.runtime.spark import SparkOptions, score_files

    (tmp_path / "in").mkdir()
    shutil.copy(zat_sample(), tmp_path / "in" / "conn.log")
    monkeypatch.chdir(tmp_path)  # the session started elsewhere: "in/conn.log" is not there
    assert not (Path(spark.sparkContext._jvm.java.lang.System.getProperty("user.dir"))
                / "in" / "conn.log").exists()
    config = PolicyConfig(all_flows=True)
    counts = score_files(spark, ["in/conn.log"], "out", models=models, config=config,
                         options=SparkOptions(), out_format="parquet")
    exp, _ = local_engine(["in/conn.log"], models, config)
    got = pd.read_parquet(tmp_path / "out")
    assert counts.flows_read == len(read_table("in/conn.log")) == 360
    assert counts.outputs and all(str(tmp_path / "out") in o for o in counts.outputs)
    assert_same(got, exp)
    # the verdicts name the input as the user (and the local engine) named it
    assert set(got["source_file"]) == {"in/conn.log"}


def test_strict_bad_line_is_a_parse_error(spark, models, tmp_path) -> None:
    from zeekml.runtime.spark import SparkOptions, score_files

    paths = _paths(["zeek/rita-truncated/conn.log"])
    with pytest.raises(ParseError, match="rita-truncated/conn.log"):
        score_files(spark, paths, str(tmp_path / "out"), models=models[-1:],
                    options=SparkOptions(strict=True))


def test_incidents_equal_local_engine(spark, models, tmp_path) -> None:
    """Issue 15: the incident records of ``score_files(..., incidents_dir=...)`` equal the
    local engine's (``--incidents``), record for record and in the same order."""
    from zeekml.policy.incidents import IncidentConfig, IncidentTracker
    from zeekml.runtime.spark import SparkOptions, score_files

    paths = _paths([*CAPTURES[:3], CAPTURES[5], SCAN])
    config = PolicyConfig(suppress=300.0)
    icfg = IncidentConfig(gap=600.0, update=1800.0)
    counts = score_files(spark, paths, str(tmp_path / "out"), models=models, config=config,
                         options=SparkOptions(buckets=6), out_format="json",
                         incidents_dir=str(tmp_path / "inc"), incident_config=icfg)
    files = sorted((tmp_path / "inc").glob("part-*.json"))
    assert len(files) == len(counts.incident_outputs) == 1
    got = [json.loads(line) for line in files[0].read_text().splitlines()]
    scorers = [registry.load_scorer(m, registry.ScorerOptions(threads=1)) for m in models]
    sink = _Collect()
    sink.unit = "incident"
    # NetFlow records paired, as zeekml score (and the Spark engine) does by default
    score_inputs(expand_inputs(paths), Pipeline(scorers, NoticePolicy(config), [sink],
                                                pairer=Pairer(),
                                                incidents=IncidentTracker(icfg)),
                 skips=SkipLog())
    exp = pd.concat(sink.frames, ignore_index=True)
    assert len(got) == len(exp) > 10
    assert set(exp["state"]) == {"open", "update", "closed"}
    assert counts.incidents == Counter(exp["state"])
    for g, (_, e) in zip(got, exp.iterrows(), strict=True):
        for c in ("incident", "state", "host", "role", "verdict", "flows", "notices", "peers",
                  "ports"):
            assert g[c] == e[c], (c, g, e.to_dict())
        for c in ("ts", "first_seen", "last_seen", "max_score", "mean_score"):
            assert g[c] == pytest.approx(e[c], abs=1e-5), c
        for c in ("models", "agreed", "uids", "context"):
            assert g.get(c, []) == list(e[c]), c


def test_api_page_spark_examples_run(spark) -> None:
    """docs/api.md's score_files and score_dataframe examples, as doctests."""
    from tests.test_docs import api_sections, run_doctests

    _, section = api_sections()
    result = run_doctests(section, "docs/api.md (Spark)", {"spark": spark})
    assert result.attempted >= 10
    assert result.failed == 0, "docs/api.md Spark examples failed (see the report above)"


def test_fanout_model_on_a_huge_host_cut_into_chunks_equals_local(spark, tmp_path) -> None:
    """An AMF-LSTM whose windows carry fan-out (it depends on a key's last 40 flows, not 9):
    one host's 23144 flows in chunks of 1000, each chunk preceded by that many flows."""
    from tests.test_fanout import train_tiny_fanout_model
    from zeekml.runtime.spark import SparkOptions, score_files

    model = train_tiny_fanout_model(tmp_path / "fan_amf.onnx", epochs=1)
    paths = _paths([MIRAI])
    config = PolicyConfig(all_flows=True, suppress=600.0)
    counts = score_files(spark, paths, str(tmp_path / "out"), models=[str(model)], config=config,
                         options=SparkOptions(chunk_rows=1000, buckets=8), out_format="json")
    assert counts.heavy_keys >= 1
    got = read_json_lines(sorted((tmp_path / "out").glob("part-*")))
    exp, _ = local_engine(paths, [str(model)], config)
    assert_same(got, exp)


@pytest.mark.parametrize(("name", "capture", "chunk_rows", "threshold", "flagged"), [
    # the scan detector keyed by originator: Stratosphere-002's scanner (4,504 flows, most
    # of them flagged) in chunks of 500, each preceded by its 31 previous failed flows
    ("scan", "zeek/stratosphere-002-portscan/conn.log", 500, 20, 3000),
    # its repeated attempts: RemcosRAT's 718 rejected connections to one C&C, chunks of 200
    ("scan", "zeek/slips-test18-ctu-sme-11/conn.log.labeled", 200, 20, 650),
    # the optional DNS burst detector keyed by the originator of a lookup: the Simda DGA
    # host's 577 lookups in chunks of 300, each preceded by its 255 previous lookups
    ("dns_burst", "zeek/stratosphere-005-simda/conn.log", 300, 200, 300),
    # the brute-force detector keyed by the originator of a login attempt: an hour of
    # internet SSH guessing at a server (one address: 313 sessions) in chunks of 100
    ("bruteforce", "zeek/rita-rotated-archive/2024-04-19/conn.08:00:00-09:00:00.log.gz",
     100, 8, 250),
])
def test_count_detector_cut_into_chunks_equals_local(spark, tmp_path, name, capture,
                                                     chunk_rows, threshold, flagged) -> None:
    """A count detector's heavy key cut into chunks: the same counts, notices and context
    uids as the local engine."""
    from zeekml.models.registry import resolve_model
    from zeekml.runtime.spark import SparkOptions, score_files

    model = str(resolve_model(name))
    paths = _paths([capture])
    config = PolicyConfig(all_flows=True, suppress=600.0)
    counts = score_files(spark, paths, str(tmp_path / "out"), models=[model], config=config,
                         options=SparkOptions(chunk_rows=chunk_rows, buckets=8),
                         out_format="json")
    assert counts.heavy_keys >= 1
    got = read_json_lines(sorted((tmp_path / "out").glob("part-*")))
    exp, _ = local_engine(paths, [model], config)
    assert (exp["score"] >= threshold).sum() > flagged
    assert_same(got, exp)


def test_worker_builds_scorers_from_the_broadcast_and_leaves_no_files(monkeypatch,
                                                                      tmp_path) -> None:
    """A Python worker writes the broadcast models to a temporary directory only while it
    builds the scorers: Spark ends its workers with os._exit (no exit hook runs), and each
    worker of each run had left ~650 KB in /tmp. The scorers still score afterwards."""
    import tempfile as tf
    from types import SimpleNamespace

    from zeekml.runtime.spark import models as spark_models

    made: list[str] = []
    real = tf.mkdtemp

    def recorded(suffix=None, prefix=None, dir=None):
        d = real(suffix, prefix, str(tmp_path))
        made.append(d)
        return d

    monkeypatch.setattr(spark_models.tempfile, "mkdtemp", recorded)
    specs = spark_models.prepare_models(None)  # every bundled model
    payload = SimpleNamespace(value={"models": specs, "scorer_options": {"threads": 1}})
    built = spark_models.worker_scorers(payload, "digest-of-this-test")
    try:
        assert made and not any(Path(d).exists() for d in made)
        assert list(tmp_path.iterdir()) == []
        flows = read_table(str(DATA / "zeek" / "stratosphere-002-portscan" / "conn.log"))
        for scorer, _empty in built:
            assert len(scorer.score(flows).score) == len(flows)
    finally:
        spark_models._WORKER_SCORERS.pop("digest-of-this-test", None)


def test_suppression_by_local_host_equals_local_engine(spark, models, tmp_path) -> None:
    """Inbound traffic: a reflected DDoS on one victim (StopDDoS ISAKMP as nfcapd, through
    the real nfdump) and hours of an internet-facing server that Zeek marked local. The
    notices keyed by the local host (the default) and by originator each equal the local
    engine's, and the first fold the victim's thousands of sources into a few."""
    from tests.conftest import need_binary
    from zeekml.runtime.spark import SparkOptions, score_files

    need_binary("nfdump")
    ddos = DATA / "nfdump" / "pcap-stopddos-amp-udp-isakmp" / "nfcapd"
    day = DATA / "zeek" / "rita-rotated-archive" / "2024-04-19"
    need(ddos.is_dir() and day.is_dir(), "the StopDDoS nfcapd and the RITA archive")
    paths = [str(ddos), *map(str, sorted(day.glob("conn.0*.log.gz"))[:4])]
    notices = {}
    for by in ("host", "orig"):
        config = PolicyConfig(suppress=600.0, suppress_by=by)
        score_files(spark, paths, str(tmp_path / by), models=models, config=config,
                    options=SparkOptions(buckets=4), out_format="parquet")
        got = pd.read_parquet(tmp_path / by)
        exp, _ = local_engine(paths, models, config)
        assert_same(got, exp)
        notices[by] = len(got)
    assert notices["orig"] > 1000 and notices["host"] < notices["orig"] / 20


def test_sweep_subject_equals_local_engine(spark, tmp_path) -> None:
    """An inbound ping sweep (the lab's nmap-ping.pcap as nfcapd, real nfpcapd and
    nfdump), every flow flagged by the AMF-LSTM: the Spark engine decides sweepers by
    originator before suppression and writes the local engine's notices and incidents,
    a handful (224 without it)."""
    import subprocess

    from tests.conftest import need_binary
    from tests.test_lab_pcaps import AMF_ALL, LAB
    from zeekml.models.registry import resolve_model
    from zeekml.policy.incidents import IncidentConfig, IncidentTracker
    from zeekml.policy.notice import parse_threshold
    from zeekml.runtime.spark import SparkOptions, score_files

    nfpcapd = need_binary("nfpcapd")
    need_binary("nfdump")
    d = tmp_path / "nfcapd"
    d.mkdir()
    subprocess.run([nfpcapd, "-r", str(LAB / "nmap-ping.pcap"), "-w", str(d)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    models = [str(resolve_model("amf_lstm")), str(resolve_model("scan"))]
    config = PolicyConfig(suppress=600.0, thresholds=dict(map(parse_threshold, AMF_ALL)))
    icfg = IncidentConfig()
    score_files(spark, [str(d)], str(tmp_path / "out"), models=models, config=config,
                options=SparkOptions(buckets=4), out_format="parquet",
                incidents_dir=str(tmp_path / "inc"), incident_config=icfg)
    got = pd.read_parquet(tmp_path / "out")
    exp, _ = local_engine([str(d)], models, config)
    assert_same(got, exp)
    assert (got["model"] == "amf_lstm").sum() == 5
    scorers = [registry.load_scorer(m, registry.ScorerOptions(threads=1)) for m in models]
    sink = _Collect()
    sink.unit = "incident"
    score_inputs(expand_inputs([str(d)]), Pipeline(scorers, NoticePolicy(config), [sink],
                                                   pairer=Pairer(),
                                                   incidents=IncidentTracker(icfg)),
                 skips=SkipLog())
    want = pd.concat(sink.frames, ignore_index=True)
    inc = pd.read_parquet(tmp_path / "inc")
    assert Counter(zip(inc["host"], inc["verdict"], inc["flows"], strict=True)) == Counter(
        zip(want["host"], want["verdict"], want["flows"], strict=True))
    sweeper = want[want["host"] == "198.51.100.23"]
    assert (sweeper["flows"] > 300).any() and len(want) < 12


def test_unkept_flows_scored_where_read_equal_local(spark, tmp_path) -> None:
    """The flows a count detector's store never takes skip the cut (``ModelSpec.unkept``)
    and are scored in their segment's task: with thresholds of 0 every one of them is
    flagged, goes through suppression and is counted into notices as the local engine
    does."""
    from zeekml.models.registry import resolve_model
    from zeekml.runtime.spark import SparkOptions, score_files
    from zeekml.runtime.spark.models import prepare_models
    from zeekml.sources.stream import read_all
    from zeekml.windows.logins import NOT_ATTEMPT_KEY, login_keys

    model = str(resolve_model("bruteforce"))
    assert prepare_models([model])[0].unkept == NOT_ATTEMPT_KEY
    paths = _paths(["zeek/rita-rotated-archive/2024-04-19/conn.08:00:00-09:00:00.log.gz"])
    config = PolicyConfig(all_flows=True, suppress=600.0,
                          thresholds={"bruteforce:login_guessing": 0.0,
                                      "bruteforce:http_guessing": 0.0})
    score_files(spark, paths, str(tmp_path / "out"), models=[model], config=config,
                options=SparkOptions(buckets=4), out_format="json")
    got = read_json_lines(sorted((tmp_path / "out").glob("part-*")))
    exp, _ = local_engine(paths, [model], config)
    read = pd.concat(list(read_all(paths[0])), ignore_index=True)
    assert (login_keys(read) == NOT_ATTEMPT_KEY).mean() > 0.5  # most rows took the new path
    assert (exp["score"] >= 0).all()  # every row crossed its threshold
    notices = exp["notice"].astype("boolean").fillna(False).astype(bool)
    assert 1 <= notices.sum() < len(exp) // 10  # ... and most were suppressed into notices
    assert_same(got, exp)
