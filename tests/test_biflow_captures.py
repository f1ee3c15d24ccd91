"""NetFlow pairing on the shared nfcapd captures, read by the real nfdump: the Zeek
brute-force traces, the StopDDoS floods, every directory's counters, and pairs
across nfcapd files in ``score DIR``, cron runs with ``--state`` and ``tail``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, need, need_binary
from tests.test_pipeline import tiny_models  # noqa: F401 - fixture
from tests.test_tail import FAST, TailProc, data_lines, model_args, n_models
from zeekml.cli.main import main
from zeekml.records import schema
from zeekml.sources import SkipLog, read_flows
from zeekml.sources.open import read_table
from zeekml.sources.options import ReadOptions

NF = DATA / "nfdump"
FTP = NF / "pcap-zeek-ftp-bruteforce" / "nfcapd"
SSH = NF / "pcap-zeek-ssh-guess" / "nfcapd"


def nfcapd_dir(path: Path) -> Path:
    need_binary("nfdump")
    need(path.is_dir(), f"the capture {path}")
    return path


def records(path: Path) -> pd.DataFrame:
    files = sorted(path.glob("nfcapd.*")) if path.is_dir() else [path]
    return schema.concat(b for f in files for b in read_flows(f, skips=SkipLog(strict=True)))


def split_by_direction(tmp: Path, src: Path, client: str, names: tuple[str, str]) -> Path:
    """Two nfcapd files written by the real nfdump: the client's records in the first,
    the server's replies in the next 5-minute file (a reply across a file boundary)."""
    exe = need_binary("nfdump")
    out = tmp / "spool"
    out.mkdir()
    env = {**os.environ, "TZ": "UTC"}
    for name, flt in zip(names, (f"src ip {client}", f"dst ip {client}"), strict=True):
        subprocess.run([exe, "-r", str(src), "-w", str(out / name), flt], env=env, check=True,
                       capture_output=True)
    return out


def test_ftp_bruteforce_60_records_become_30_connections() -> None:
    recs = records(nfcapd_dir(FTP))
    assert len(recs) == 60 and not recs["paired"].any()
    flows = read_table([FTP])
    assert len(flows) == 30 and flows["paired"].all()
    assert set(flows["orig_h"]) == {"192.168.56.1"} and set(flows["resp_h"]) == {"192.168.56.101"}
    assert set(flows["resp_p"]) == {21} and flows["orig_p"].nunique() == 30
    assert (flows["conn_state"] == "SF").all() and (flows["history"] == "ShADadFf").all()
    # both directions' counters: each record's packets and bytes are in exactly one flow
    client = recs[recs["orig_h"] == "192.168.56.1"]
    server = recs[recs["orig_h"] == "192.168.56.101"]
    assert flows["orig_pkts"].sum() == client["orig_pkts"].sum()
    assert flows["resp_pkts"].sum() == server["orig_pkts"].sum()
    assert flows["resp_ip_bytes"].sum() == server["orig_ip_bytes"].sum()
    by_port = server.set_index("resp_p")["orig_pkts"]
    assert (flows.set_index("orig_p")["resp_pkts"].sort_index() == by_port.sort_index()).all()
    assert (flows["ts"].diff().dropna() > 0).all()  # in stream (time) order


def test_ssh_guessing_22_records_become_11_connections() -> None:
    recs = records(nfcapd_dir(SSH))
    assert len(recs) == 22
    flows = read_table([SSH])
    assert len(flows) == 11 and flows["paired"].all()
    assert set(flows["orig_h"]) == {"192.168.56.1"} and set(flows["resp_p"]) == {22}
    assert (flows["resp_pkts"] > 0).all() and (flows["resp_ip_bytes"] > 0).all()
    assert len(read_table([SSH], options=ReadOptions(pair=False))) == 22


@pytest.mark.parametrize("name", sorted(p.parent.name for p in NF.glob("*/nfcapd")))
def test_every_shared_capture_conserves_records_and_counters(name: str) -> None:
    folder = nfcapd_dir(NF / name / "nfcapd")
    recs = records(folder)
    flows = read_table([folder])
    joined = flows["paired"].fillna(False).to_numpy(dtype=bool)
    assert len(flows) + int(joined.sum()) == len(recs)  # two records per pair, one otherwise
    pkts = flows["orig_pkts"].sum() + flows["resp_pkts"].fillna(0).sum()
    assert pkts == recs["orig_pkts"].sum()
    assert set(flows["uid"]) <= set(recs["uid"])
    assert flows["resp_pkts"].notna().to_numpy().tolist() == joined.tolist()
    assert np.array_equal(flows["source_line"].notna(), np.ones(len(flows), bool))


def test_stopddos_floods_stay_one_way() -> None:
    """Spoofed or reflected floods: the victim answers almost nothing, so almost every
    record stays one-way (what the issue expects to see)."""
    for name in ("pcap-stopddos-pkt-tcp-dominate-syn-ecn-cwr", "pcap-stopddos-amp-udp-isakmp",
                 "pcap-stopddos-amp-udp-bacnet-37810"):
        folder = nfcapd_dir(NF / name / "nfcapd")
        flows = read_table([folder])
        assert len(flows) == len(records(folder))
        assert not flows["paired"].fillna(False).any()


def test_reply_in_the_next_nfcapd_file_is_paired(tmp_path: Path) -> None:
    src = nfcapd_dir(FTP) / "nfcapd.201401141735"
    spool = split_by_direction(tmp_path, src, "192.168.56.1",
                               ("nfcapd.201401141735", "nfcapd.201401141740"))
    first = records(spool / "nfcapd.201401141735")
    assert len(first) == 30 and set(first["orig_h"]) == {"192.168.56.1"}
    flows = read_table([spool])
    assert len(flows) == 30 and flows["paired"].all()
    # the same flows (uids and record numbers follow each file's records in end order)
    skip = ["source_file", "source_line", "uid"]
    pd.testing.assert_frame_equal(flows.drop(columns=skip), read_table([FTP]).drop(columns=skip))
    assert len(read_table([spool], options=ReadOptions(pair=False))) == 60
    # zeekml summary and convert read the directory as one stream too
    assert main(["convert", str(spool), "--out", str(tmp_path / "conn.log")]) == 0
    assert len(data_lines(tmp_path / "conn.log")) == 30


def score_rows(tmp: Path, args: list[str]) -> list[str]:
    out = tmp / f"out-{time.monotonic_ns()}.log"
    assert main(["score", "--all", "--threads", "1", "--out", str(out), *args]) == 0
    return data_lines(out)


def test_cron_runs_hold_a_record_until_its_reply_arrives(tmp_path: Path, tiny_models,  # noqa: F811
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    models = model_args(tiny_models)
    src = nfcapd_dir(FTP) / "nfcapd.201401141735"
    spool = split_by_direction(tmp_path, src, "192.168.56.1",
                               ("nfcapd.201401141735", "nfcapd.201401141740"))
    later = tmp_path / "later"
    later.mkdir()
    shutil.move(str(spool / "nfcapd.201401141740"), later / "nfcapd.201401141740")
    one_run = tmp_path / "whole"
    one_run.mkdir()
    shutil.copy(spool / "nfcapd.201401141735", one_run)
    shutil.copy(later / "nfcapd.201401141740", one_run)
    # without --state the end of the input is the end of the stream: 30 one-way flows
    k = n_models(tiny_models)
    assert len(score_rows(tmp_path, [*models, str(spool)])) == 30 * k
    # cron: the first run scores nothing (every record waits for its reply) ...
    state = tmp_path / "state.npz"
    out = tmp_path / "cron.log"
    base = ["score", "--all", "--threads", "1", "--state", str(state), "--out", str(out), *models]
    capsys.readouterr()
    assert main([*base, str(spool)]) == 0
    assert data_lines(out) == []
    assert "30 records waiting for their reverse" in capsys.readouterr().err
    # ... the next run brings the replies: 30 paired flows, as one run over both files
    shutil.move(str(later / "nfcapd.201401141740"), spool / "nfcapd.201401141740")
    assert main([*base, str(spool)]) == 0
    ref = score_rows(tmp_path, [*models, str(one_run)])
    assert data_lines(out) == ref and len(ref) == 30 * k
    fields = [ln.split("\t") for ln in ref]
    assert {f[2] for f in fields} == {"192.168.56.1"} and {f[5] for f in fields} == {"21"}
    # --no-pair: 60 flows
    assert len(score_rows(tmp_path, [*models, "--no-pair", str(one_run)])) == 60 * k


def test_tail_pairs_across_files_and_a_restart(tmp_path: Path, tiny_models) -> None:  # noqa: F811
    models = model_args(tiny_models)
    src = nfcapd_dir(FTP) / "nfcapd.201401141735"
    staged = split_by_direction(tmp_path, src, "192.168.56.1",
                                ("nfcapd.201401141735", "nfcapd.201401141740"))
    spool = tmp_path / "live"
    spool.mkdir()
    out = tmp_path / "zeekml.log"
    state = tmp_path / "state.npz"
    args = ["--all", "--out", str(out), "--state", str(state), *models, *FAST, str(spool)]
    tail = TailProc(args, tmp_path)
    try:
        tail.wait_log("watching for closed nfcapd files")
        shutil.copy(staged / "nfcapd.201401141735", spool)
        tail.wait_log("scoring nfcapd.201401141735")
        deadline = time.monotonic() + 60
        from zeekml.runtime.state import StateStore

        while True:  # the first file is done: its 30 records wait in the state
            saved = StateStore(state).load() if state.exists() else None
            key = "tail:" + os.path.abspath(spool)
            if saved and (saved.inputs.get(key) or {}).get("done") == "nfcapd.201401141735":
                break
            assert time.monotonic() < deadline, tail.stderr()
            time.sleep(0.05)
        assert tail.stop() == 0, tail.stderr()
        assert data_lines(out) == []
        tail = TailProc(args, tmp_path)  # a restart: the held records come back from the state
        tail.wait_log("watching for closed nfcapd files")
        shutil.copy(staged / "nfcapd.201401141740", spool)
        k = n_models(tiny_models)
        deadline = time.monotonic() + 60
        while len(data_lines(out)) < 30 * k:
            assert time.monotonic() < deadline and tail.alive(), tail.stderr()
            time.sleep(0.05)
    finally:
        rc = tail.stop()
    assert rc == 0
    rows = data_lines(out)
    assert len(rows) == 30 * k
    assert rows == score_rows(tmp_path, [*models, str(staged)])


@pytest.mark.parametrize("name", ["pcap-iot23-34-1-irc", "pcap-slips-test7-malicious"])
def test_converted_flows_read_back_unpaired_again(tmp_path: Path, name: str) -> None:
    """A conn.log written by ``zeekml convert`` keeps its one-way rows (``paired`` F): read
    (and so paired) again, nothing changes."""
    folder = nfcapd_dir(NF / name / "nfcapd")
    out = tmp_path / "conn.log"
    assert main(["convert", str(folder), "--out", str(out)]) == 0
    once = read_table([out], options=ReadOptions(pair=False))
    assert (~once["paired"]).any() and once["paired"].any()
    again = read_table([out])
    if name == "pcap-slips-test7-malicious":
        pd.testing.assert_frame_equal(again, once)
    else:
        # pairing follows the stream's order: read in end order (nfdump -O tend) the IRC
        # capture pairs 2,177 of at most 2,186 pairs, its converted log (written in first-
        # record order) pairs 6 more of the one-way rows left; no paired row changes
        assert 0 < len(once) - len(again) <= 10
        kept = once[once["paired"].fillna(False)]
        assert kept["uid"].isin(again["uid"]).all()


def test_summary_counts_records_and_paired_flows(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    folder = nfcapd_dir(NF / "pcap-slips-test12-icmp-portscan" / "nfcapd")
    assert main(["summary", "--json", str(folder)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["records"], d["rows"]) == (37, 26)
    assert d["netflow"] == {"paired_flows": 11, "one_way_flows": 15}
    assert main(["summary", "--no-pair", str(folder)]) == 0
    assert "37 records -> 37 flows: 0 paired" in capsys.readouterr().out


def test_records_held_by_a_run_leave_one_way_when_pairing_is_turned_off(
        tmp_path: Path, tiny_models) -> None:  # noqa: F811
    models = model_args(tiny_models)
    src = nfcapd_dir(FTP) / "nfcapd.201401141735"
    spool = split_by_direction(tmp_path, src, "192.168.56.1",
                               ("nfcapd.201401141735", "nfcapd.201401141740"))
    (spool / "nfcapd.201401141740").unlink()
    state, out = tmp_path / "state.npz", tmp_path / "cron.log"
    base = ["score", "--all", "--threads", "1", "--state", str(state), "--out", str(out), *models]
    assert main([*base, str(spool)]) == 0
    assert data_lines(out) == []  # all 30 wait for their replies
    assert main([*base, "--no-pair", str(spool)]) == 0  # nothing new: the held records leave
    assert len(data_lines(out)) == 30 * n_models(tiny_models)
    assert main([*base, "--no-pair", str(spool)]) == 0  # and only once
    assert len(data_lines(out)) == 30 * n_models(tiny_models)
