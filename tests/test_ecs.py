"""ECS JSON lines: field names and types as Elastic Common Schema defines them."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _verdicts import expected_text, real_verdicts

from zeekml.errors import ConfigError
from zeekml.sinks.ecs import ecs_records
from zeekml.sinks.registry import make_sink

#: dotted ECS field -> the JSON type it must have (when present).
TYPES: dict[str, type | tuple[type, ...]] = {
    "@timestamp": str,
    "message": str,
    "event.kind": str,
    "event.module": str,
    "event.dataset": str,
    "event.category": list,
    "event.type": list,
    "event.id": str,
    "event.risk_score": (int, float),
    "rule.name": str,
    "rule.category": str,
    "rule.ruleset": str,
    "source.ip": str,
    "source.port": int,
    "destination.ip": str,
    "destination.port": int,
    "network.transport": str,
    "related.ip": list,
    "zeek.session_id": str,
    "zeek.zeekml.model": str,
    "zeek.zeekml.verdict": str,
    "zeek.zeekml.score": (int, float),
    "zeek.zeekml.threshold": (int, float),
    "zeek.zeekml.notice": bool,
    "zeek.zeekml.alt": str,
    "zeek.zeekml.alt_score": (int, float),
    "zeek.zeekml.n": int,
    "zeek.zeekml.context": list,
    "observer.vendor": str,
    "observer.product": str,
    "observer.type": str,
    "ecs.version": str,
}


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_event(doc: dict[str, Any], row: pd.Series) -> None:
    flat = flatten(doc)
    assert set(flat) <= set(TYPES), set(flat) - set(TYPES)
    for key, value in flat.items():
        assert isinstance(value, TYPES[key]), (key, value)
        assert not (isinstance(value, bool) and TYPES[key] is int), key
    assert flat["event.kind"] == "alert" and flat["event.module"] == "zeekml"
    assert flat["event.category"] == ["intrusion_detection"]
    ts = datetime.fromisoformat(flat["@timestamp"].replace("Z", "+00:00"))
    assert ts.timestamp() == pytest.approx(row["ts"], abs=1e-6)
    assert flat["event.id"] == flat["zeek.session_id"] == expected_text(row["uid"])
    assert flat["rule.name"] == expected_text(row["verdict"])
    assert flat["rule.category"] == expected_text(row["model"])
    assert flat["event.risk_score"] == pytest.approx(row["score"])
    assert flat["source.ip"] == row["orig_h"] and flat["destination.ip"] == row["resp_h"]
    ipaddress.ip_address(flat["source.ip"])
    ipaddress.ip_address(flat["destination.ip"])
    assert flat["source.port"] == row["orig_p"]
    if pd.isna(row["resp_p"]):
        assert "destination.port" not in flat
    else:
        assert flat["destination.port"] == row["resp_p"]
    assert flat["network.transport"] == row["proto"]
    assert flat["related.ip"] == [row["orig_h"], row["resp_h"]]
    assert flat["zeek.zeekml.n"] == row["n"]
    if row["context"]:
        assert flat["zeek.zeekml.context"] == row["context"]
    else:
        assert "zeek.zeekml.context" not in flat
    if pd.isna(row["alt"]):
        assert "zeek.zeekml.alt" not in flat and "zeek.zeekml.alt_score" not in flat


def _notices(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["notice"].astype(bool)].reset_index(drop=True)


def test_file_sink_writes_every_notice_with_ecs_types(tmp_path: Path) -> None:
    df = real_verdicts(hostile=True)
    out = tmp_path / "alerts.json"
    sink = make_sink(f"ecs:{out}")
    sink.write(df.iloc[:400])
    sink.write(df.iloc[400:])
    sink.flush()
    sink.close()
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    docs = [json.loads(line) for line in lines[:-1]]
    want = _notices(df)
    assert len(docs) == len(want)
    for doc, (_, row) in zip(docs, want.iterrows(), strict=True):
        check_event(doc, row)


def test_nan_and_missing_values_are_left_out() -> None:
    df = real_verdicts().iloc[:3].copy()
    df["score"] = [np.nan, np.inf, 0.5]
    df["uid"] = pd.Series([None, "C1", "C2"], dtype="str")
    docs = [json.loads(r) for r in ecs_records(df)]
    assert "risk_score" not in docs[0]["event"] and "risk_score" not in docs[1]["event"]
    assert "id" not in docs[0]["event"] and "session_id" not in docs[0].get("zeek", {})
    assert docs[2]["event"]["risk_score"] == 0.5


def test_stdout_and_only_all(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    df = real_verdicts().iloc[:40]
    sink = make_sink("ecs:-?only=all")
    sink.write(df)
    sink.flush()
    sink.close()
    lines = capsysbinary.readouterr().out.decode("utf-8").splitlines()
    assert len(lines) == len(df)
    assert [json.loads(line)["event"]["id"] for line in lines] == df["uid"].tolist()


def test_checkpoint_and_restore_truncate_back(tmp_path: Path) -> None:
    df = _notices(real_verdicts())
    out = tmp_path / "alerts.json"
    sink = make_sink(f"ecs:{out}")
    sink.write(df.iloc[:10])
    sink.flush()
    pos = sink.checkpoint()
    assert pos["size"] == out.stat().st_size
    sink.write(df.iloc[10:20])  # written after the checkpoint, then the process "crashes"
    sink.close()
    again = make_sink(f"ecs:{out}")
    again.restore(pos)
    again.write(df.iloc[10:20])
    again.close()
    ids = [json.loads(line)["event"]["id"] for line in out.read_text().splitlines()]
    assert ids == df["uid"].iloc[:20].tolist()


@pytest.mark.parametrize("spec", ["ecs:", "ecs:-?only=some", "ecs:-?pretty=1"])
def test_bad_ecs_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        make_sink(spec)
