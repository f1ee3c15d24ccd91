"""Plugins: a tiny sink package is built, pip-installed, used, and uninstalled.

The package is real (its own pyproject.toml with a ``zeekml.sinks`` entry point,
installed with pip into this environment), so discovery goes through the same
``importlib.metadata`` path a site's Kafka or Splunk sink would. Names carry the
process id, so parallel test runs on one machine do not trip over each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _verdicts import real_verdicts
from conftest import DATA, REPO, need

from zeekml import plugins
from zeekml.errors import ConfigError
from zeekml.sinks.registry import SinkOptions, make_sink, parse_spec

TAG = f"p{os.getpid()}"
DIST = f"zeekml-probe-sink-{TAG}"
MODULE = f"zeekml_probe_sink_{TAG}"
SINK = f"probe{TAG}"

PLUGIN = '''
"""A test sink: one line per verdict row (uid TAB verdict) to the target path."""
from __future__ import annotations

from zeekml.sinks.registry import SinkOptions


class ProbeSink:
    name = "probe"

    def __init__(self, path, only_notices):
        self.path = path
        self.only_notices = only_notices
        self.rows = 0
        self.f = open(path, "a", encoding="utf-8")

    def write(self, verdicts):
        if self.only_notices:
            verdicts = verdicts[verdicts["notice"].fillna(False).astype(bool)]
        self.f.write("".join(f"{u}\\t{v}\\n" for u, v in zip(verdicts["uid"], verdicts["verdict"])))
        self.rows += len(verdicts)

    def flush(self):
        self.f.flush()

    def checkpoint(self):
        return {"rows": self.rows}

    def restore(self, position):
        pass

    def close(self):
        self.f.close()


def factory(target, options):
    opts = SinkOptions(options, "probe")
    only = opts.choice("only", ("notices", "all"), "notices")
    opts.done()
    if not target:
        raise ValueError("probe needs a path")
    return ProbeSink(target, only == "notices")


def not_a_sink(target, options):
    return object()


class ProbeScorer:
    """A model kind from outside zeekml: P(not normal) of a 2-class ONNX classifier."""

    def __init__(self, card, options):
        import onnxruntime as ort
        from zeekml.features.flow_stats import FEATURES

        if card.require("features", list) != list(FEATURES):
            raise ValueError("feature mismatch")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.card = card
        self.name = card.name
        self.session = ort.InferenceSession(str(card.onnx_path), so,
                                            providers=["CPUExecutionProvider"])

    def score(self, flows):
        import numpy as np
        from zeekml.features.flow_stats import flow_features
        from zeekml.models.base import ScoreBatch

        probs = self.session.run(["probs"], {"x": flow_features(flows)})[0].astype(np.float64)
        b = len(flows)
        return ScoreBatch(model=self.name, score=1.0 - probs[:, 0],
                          cls=np.full(b, "c2", dtype=object),
                          threshold=np.full(b, self.card.threshold_for("c2")))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class ProbeFlows:
    """A flow format from outside zeekml: '#probe-flows' then ts,uid,orig_h,orig_p,resp_h,resp_p,proto."""

    def __init__(self, path, skips, *, batch_rows=65536):
        self.path = path
        self.consumed = 0
        self.line_no = 0
        self._tail = b""

    @staticmethod
    def sniff(head):
        return head.startswith(b"#probe-flows")

    def feed(self, data):
        buf = self._tail + data
        cut = buf.rfind(b"\\n") + 1
        self._tail = buf[cut:]
        return self._parse(buf[:cut])

    def close(self):
        tail, self._tail = self._tail, b""
        return self._parse(tail)

    def _parse(self, block):
        import pandas as pd
        from zeekml.records.schema import conform

        lines = block.decode("utf-8").splitlines()
        self.line_no += len(lines)
        self.consumed += len(block)
        rows = [x.split(",") for x in lines if x and not x.startswith("#")]
        if not rows:
            return []
        df = pd.DataFrame(rows, columns=["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p",
                                         "proto"])
        df["ts"] = df["ts"].astype("float64")
        for c in ("orig_p", "resp_p"):
            df[c] = df[c].astype("Int32")
        return [conform(df, source_file=self.path)]

    def get_state(self):
        return {"line_no": self.line_no, "consumed": self.consumed}

    def set_state(self, state):
        self.line_no = int(state["line_no"])
        self.consumed = int(state["consumed"])
'''


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory):
    src = tmp_path_factory.mktemp("plugin")
    (src / f"{MODULE}.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{DIST}"
        version = "0.0.1"
        description = "zeekml test plugin"

        [project.entry-points."zeekml.sinks"]
        {SINK} = "{MODULE}:factory"
        {SINK}broken = "{MODULE}:not_a_sink"
        {SINK}missing = "{MODULE}:no_such_factory"
        syslog = "{MODULE}:factory"

        [project.entry-points."zeekml.scorers"]
        {SINK}scorer = "{MODULE}:ProbeScorer"

        [project.entry-points."zeekml.sources"]
        {SINK}flows = "{MODULE}:ProbeFlows"
        {SINK}broken = "{MODULE}_not_installed:Parser"

        [tool.setuptools]
        py-modules = ["{MODULE}"]
        """))
    # installed into a directory of its own, seen only by this module's subprocesses (through
    # PYTHONPATH): other tests, and other test runs on the machine, never see the plugin
    target = tmp_path_factory.mktemp("site")
    res = _pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), str(src))
    need(res.returncode == 0, f"pip install of a local plugin package ({res.stderr[-500:]})")
    PLUGIN_PATH[:] = [str(target)]
    try:
        yield src
    finally:
        PLUGIN_PATH.clear()


#: where the plugin package is installed while the module's tests run
PLUGIN_PATH: list[str] = []


def _env() -> dict[str, str]:
    """The environment of a subprocess that sees the plugin package (and this checkout)."""
    parts = [*PLUGIN_PATH, str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in parts if p)}


def _zeekml(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console command, in a fresh process (fresh entry point metadata)."""
    return subprocess.run([sys.executable, "-m", "zeekml.cli.main", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=_env())


def test_plugins_command_lists_builtins_and_the_plugin(installed_plugin: Path) -> None:
    res = _zeekml("plugins")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "zeekml.sinks.syslog:factory" in out and "zeekml.sinks.ecs:factory" in out
    line = next(x for x in out.splitlines() if x.split()[:2] == ["sinks", SINK])
    assert f"{MODULE}:factory" in line and DIST in line and "built-in" not in line
    shadow = [x for x in out.splitlines() if x.split()[:2] == ["sinks", "syslog"] and DIST in x]
    assert shadow and "ignored" in shadow[0]

    rows = [json.loads(x) for x in _zeekml("plugins", "--json", "--kind", "sinks").stdout.splitlines()]
    mine = {r["name"]: r for r in rows if r["distribution"] == DIST}
    assert mine[SINK]["module"] == MODULE and mine[SINK]["active"] == "yes"
    assert mine["syslog"]["active"].startswith("no")
    assert {r["kind"] for r in rows} == {"sinks"}


def test_plugin_sink_is_built_from_a_spec(installed_plugin: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe.tsv"
    code = textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _verdicts import real_verdicts
        from zeekml.sinks.registry import make_sink
        from zeekml.sinks.syslog import SyslogSink
        df = real_verdicts()
        sink = make_sink({f"{SINK}:{out}?only=all"!r})
        sink.write(df); sink.flush(); print(sink.checkpoint()["rows"]); sink.close()
        # a plugin cannot take over a built-in's name
        assert isinstance(make_sink("syslog:udp://127.0.0.1:9"), SyslogSink)
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env())
    assert res.returncode == 0, res.stderr
    n = len(real_verdicts())
    assert res.stdout.split() == [str(n)]
    assert len(out.read_text().splitlines()) == n


@pytest.mark.parametrize("suffix, code, message", [
    ("broken", 1, "lacks the Sink methods"),
    ("missing", 1, "cannot be loaded"),
    ("", 2, "unknown option"),
])
def test_broken_plugins_fail_with_one_line(installed_plugin: Path, tmp_path: Path, suffix: str,
                                           code: int, message: str) -> None:
    spec = f"{SINK}{suffix}:{tmp_path / 'x'}" + ("?nope=1" if not suffix else "")
    snippet = ("import sys\nfrom zeekml.errors import ZeekmlError\n"
               "from zeekml.sinks.registry import make_sink\n"
               f"try:\n    make_sink({spec!r})\nexcept ZeekmlError as e:\n"
               "    print(e); sys.exit(e.exit_code)\n")
    res = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=120, env=_env())
    assert res.returncode == code, res.stderr
    assert message in res.stdout and len(res.stdout.strip().splitlines()) == 1


def test_zeekml_score_runs_through_plugin_scorer_and_sink(installed_plugin: Path,
                                                         tmp_path: Path) -> None:
    """``zeekml score`` in a fresh process: a plugin model kind scores, a plugin sink writes."""
    from tests.test_pipeline import build_tiny_model
    from zeekml.models.card import load_card, write_card

    model = build_tiny_model(tmp_path / "probe.onnx", "probe")
    card = dict(load_card(model).data)
    card["kind"] = f"{SINK}scorer"
    card.pop("onnx_sha256", None)
    write_card(model, card)
    capture = DATA / "zeek" / "slips-test18-ctu-sme-11" / "conn.log.labeled"
    need(capture.is_file(), f"the capture {capture}")
    probe = tmp_path / "probe.tsv"
    out = tmp_path / "zeekml.log"
    res = _zeekml("score", "--model", str(model), "--all", "--out", str(out),
                  "--sink", f"{SINK}:{probe}?only=all", str(capture), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # a broken source plugin is reported and skipped; zeekml's own readers still work
    assert f"source plugin '{SINK}broken'" in res.stderr and "cannot be loaded" in res.stderr
    rows = [line.split("\t") for line in probe.read_text().splitlines()]
    logged = [x.split("\t") for x in out.read_text().splitlines() if not x.startswith("#")]
    from zeekml.sources.open import read_table

    flows = read_table(str(capture))
    assert len(rows) == len(logged) == len(flows)
    assert [r[0] for r in rows] == [x[1] for x in logged] == flows["uid"].tolist()
    assert {r[1] for r in rows} <= {"c2", "normal"} and any(r[1] == "c2" for r in rows)
    listed = _zeekml("plugins", "--kind", "scorers").stdout
    assert f"{SINK}scorer" in listed and f"{MODULE}:ProbeScorer" in listed


def test_builtins_match_pyproject() -> None:
    """The built-in table and pyproject's entry points name the same factories."""
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]
    assert eps["zeekml.sinks"] == plugins.BUILTIN_SINKS
    # (other tests add test-only kinds to the in-process table; those are not built-ins)
    table = {k: v for k, v in plugins.builtins("scorers").items() if not v.startswith("tests.")}
    assert eps["zeekml.scorers"] == table
    assert eps["zeekml.sources"] == plugins.BUILTIN_SOURCES


def test_every_builtin_sink_is_discoverable() -> None:
    found = {p.name: p for p in plugins.discover("sinks") if p.active}
    for name, value in plugins.BUILTIN_SINKS.items():
        assert found[name].value == value and found[name].builtin


def test_spec_parsing() -> None:
    s = parse_spec("syslog:udp://127.0.0.1:5514?format=cef&facility=local0&app=a%20b")
    assert (s.name, s.target) == ("syslog", "udp://127.0.0.1:5514")
    assert s.options == {"format": "cef", "facility": "local0", "app": "a b"}
    assert parse_spec("ecs:-") == parse_spec("ecs:-?")
    assert parse_spec("zeek").target == ""
    assert parse_spec("ecs:/var/log/a:b.json").target == "/var/log/a:b.json"
    for bad in ("", "1x:y", "syslog:udp://h?=v", "syslog:udp://h?a=1&a=2"):
        with pytest.raises(ConfigError):
            parse_spec(bad)


def test_sink_options_reject_unknown_and_bad_values() -> None:
    opts = SinkOptions({"n": "3", "f": "yes", "x": "1"}, "demo")
    assert opts.integer("n", 1, lo=1) == 3 and opts.flag("f", False)
    with pytest.raises(ValueError, match="unknown option"):
        opts.done()
    with pytest.raises(ValueError, match="not an integer"):
        SinkOptions({"n": "three"}, "demo").integer("n", 1)
    with pytest.raises(ValueError, match="number"):
        SinkOptions({"t": "nan"}, "demo").number("t", 1.0)


def test_make_sink_builds_builtins(tmp_path: Path) -> None:
    sink = make_sink(f"ecs:{tmp_path / 'a.json'}")
    sink.write(real_verdicts().iloc[:5])
    sink.close()
    assert sink.name == f"ecs:{tmp_path / 'a.json'}"


def test_zeekml_score_reads_a_plugin_source_format(installed_plugin: Path, tmp_path: Path) -> None:
    """Source, scorer and sink all from the plugin package: zeekml only runs the pipeline."""
    from tests.test_pipeline import build_tiny_model
    from zeekml.models.card import load_card, write_card
    from zeekml.sources.open import read_table

    capture = DATA / "zeek" / "slips-test10-mixed" / "conn.log"
    need(capture.is_file(), f"the capture {capture}")
    flows = read_table(str(capture))
    cols = ["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto"]
    text = flows[cols].astype(str).agg(",".join, axis=1)
    src = tmp_path / "flows.probe"
    src.write_text("#probe-flows\n" + "\n".join(text) + "\n")
    model = build_tiny_model(tmp_path / "probe.onnx", "probe")
    card = dict(load_card(model).data)
    card["kind"] = f"{SINK}scorer"
    card.pop("onnx_sha256", None)
    write_card(model, card)
    probe = tmp_path / "probe.tsv"
    res = _zeekml("score", "--model", str(model), "--all", "--out", str(tmp_path / "z.log"),
                  "--sink", f"{SINK}:{probe}?only=all", str(src), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t") for line in probe.read_text().splitlines()]
    assert [r[0] for r in rows] == flows["uid"].tolist()
    assert f"flows read: {len(flows)}" in res.stderr
    listed = _zeekml("plugins", "--kind", "sources").stdout
    assert f"{SINK}flows" in listed and "zeekml.sources.zeek_tsv:ZeekTsvParser" in listed


def test_builtin_sources_are_the_dispatch_table() -> None:
    """plugins.BUILTIN_SOURCES names the classes zeekml.sources.detect.PARSERS builds."""
    from zeekml.sources.detect import PARSERS

    assert set(PARSERS) == set(plugins.BUILTIN_SOURCES)
    for fmt, value in plugins.BUILTIN_SOURCES.items():
        module, _, attr = value.partition(":")
        assert PARSERS[fmt].__name__ == f"lazy_{attr}"
        assert module in (PARSERS[fmt].__doc__ or "")
