"""One configuration model: defaults stated once, one library error for bad values.

Every options object validates what it is given (whoever built it: the CLI, a tool, a
notebook) and raises :class:`zeekml.errors.ConfigError`, which the CLI turns into exit
code 2 with one line; the CLI's help texts show the defaults of :mod:`zeekml.defaults`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO, zat_sample

from zeekml import defaults
from zeekml.cli.main import main
from zeekml.errors import ConfigError, UsageError
from zeekml.models.registry import ScorerOptions
from zeekml.policy.notice import PolicyConfig
from zeekml.runtime.batch_run import RunOptions
from zeekml.runtime.tail import TailOptions
from zeekml.sources.options import ReadOptions


@pytest.mark.parametrize("build", [
    lambda: PolicyConfig(suppress=-1),
    lambda: PolicyConfig(thresholds={"c2": float("nan")}),
    lambda: RunOptions(checkpoint_seconds=0),
    lambda: RunOptions(input_commit_seconds=-1),
    lambda: RunOptions(max_cursors=0),
    lambda: RunOptions(lookback=float("nan")),
    lambda: TailOptions(batch_rows=0),
    lambda: TailOptions(poll_interval=float("inf")),
    lambda: ScorerOptions(threads=0),
    lambda: ScorerOptions(idle_timeout=-1),
    lambda: ReadOptions(batch_rows=0),
    lambda: ReadOptions(tz="Mars/Olympus_Mons"),
], ids=["policy-suppress", "policy-nan", "run-checkpoint", "run-input-commit", "run-cursors",
        "run-lookback",
        "tail-batch", "tail-poll", "scorer-threads", "scorer-idle", "read-batch", "read-tz"])
def test_every_options_object_raises_config_error(build) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.exit_code == 2
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still do


def test_usage_error_is_a_config_error() -> None:
    assert issubclass(UsageError, ConfigError) and UsageError("x").exit_code == 2


def test_defaults_are_the_objects_defaults() -> None:
    assert ScorerOptions().threads == defaults.THREADS
    assert ScorerOptions().max_hosts == defaults.MAX_HOSTS
    assert ReadOptions().batch_rows == defaults.BATCH_ROWS
    assert TailOptions().batch_rows == defaults.TAIL_BATCH_ROWS
    assert PolicyConfig().suppress == defaults.SUPPRESS_SECONDS
    assert RunOptions().checkpoint_seconds == defaults.CHECKPOINT_SECONDS
    assert RunOptions().input_commit_seconds == defaults.INPUT_COMMIT_SECONDS


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, wanted in (
            ("score", (f"default {defaults.SCORE_BATCH_ROWS};",
                       f"{defaults.BATCH_ROWS} with --engine spark)",
                       f"default {defaults.THREADS})")),
            ("tail", (f"default {defaults.TAIL_BATCH_ROWS})", f"default {defaults.MAX_HOSTS})"))):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for value in wanted:
            assert value in text, (cmd, value)


def test_config_file_is_a_config(tmp_path: Path) -> None:
    p = tmp_path / "policy.json"
    p.write_text(json.dumps({"thresholds": {"c2": 0.9}, "suppress": 60, "all": True}))
    cfg = PolicyConfig.from_json(p)
    assert isinstance(cfg, PolicyConfig) and cfg.suppress == 60 and cfg.all_flows
    p.write_text(json.dumps({"suppress": -5}))
    with pytest.raises(ConfigError):
        PolicyConfig.from_json(p)


def test_bad_value_from_the_cli_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = zat_sample()
    assert main(["score", "--suppress", "-1", "--out", str(tmp_path / "z.log"), str(sample)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "suppress" in err[0]


#: the defaults that used to be repeated: each literal lives in zeekml/defaults.py only
REPEATED = ("65536", "16384", "131072")


def test_repeated_defaults_live_in_one_place() -> None:
    offenders = []
    for path in sorted((REPO / "zeekml").rglob("*.py")):
        if path.name == "defaults.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(rf"\b{v}\b", line) for v in REPEATED):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
