"""Attacks the shared data has none of, made here by real tools (tests/data/lab/README.md),
read as a router would export them: ``nfpcapd`` turns each pcap into nfcapd files, the real
nfdump binary reads them, the bundled defaults score them. Before stop 37 every one of
these flows scored below every threshold (nmap's Xmas and NULL scans: no SYN, so no
failed attempt; a ping flood: ICMP was never a flood's); before stop 38 the ping sweep's
echo requests were not (ICMP was never a scan's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_binary, score_json

LAB = Path(__file__).parent / "data" / "lab"


def _nfcapd(tmp_path: Path, name: str) -> Path:
    nfpcapd = need_binary("nfpcapd")
    need_binary("nfdump")
    out = tmp_path / "nfcapd"
    out.mkdir()
    subprocess.run([nfpcapd, "-r", str(LAB / f"{name}.pcap"), "-w", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    assert any(out.iterdir())
    return out


@pytest.mark.parametrize(("name", "model", "verdict", "least"), [
    ("nmap-xmas", "scan", "port_scan", 0.75),  # 100 ports probed, each answered by a reset
    ("nmap-null", "scan", "port_scan", 0.75),
    ("icmp-flood", "flood", "ddos", 0.9),  # 300 spoofed sources in 0.1 s
    # 291 echo requests to 252 addresses in 3 s, most unanswered: one notice, the scanner
    ("nmap-ping", "scan", "address_scan", 0.9),
])
def test_stealth_scans_and_a_ping_flood_as_nfcapd(tmp_path, name, model, verdict, least) -> None:
    d = _nfcapd(tmp_path, name)
    v = score_json(tmp_path, model, d)
    flagged = v["score"] >= v["threshold"]
    assert len(v) >= 95 and flagged.mean() >= least
    noticed = v[v["notice"].astype(bool)]
    assert len(noticed) == 1 and set(noticed["verdict"]) == {verdict}


def test_an_xmas_probe_reads_as_zeek_writes_it(tmp_path) -> None:
    """FIN+PSH+URG on a bare 40-byte packet carries no data: the history is ``Fr`` (Zeek's
    ``D`` needs payload), not ``DFr``, so the probe reads as a FIN probe answered by a reset."""
    from zeekml.sources import read_table

    t = read_table([str(_nfcapd(tmp_path, "nmap-xmas"))])
    answered = t[t["resp_pkts"].fillna(0) > 0]
    assert len(answered) >= 90 and set(answered["history"]) == {"Fr"}


AMF_ALL = [f"amf_lstm:{c}=0" for c in ("ddos", "dos", "portscan", "c2", "bruteforce",
                                        "webattack", "infiltration")]


def test_an_inbound_sweep_flagged_by_a_flow_model_is_about_the_sweeper(tmp_path) -> None:
    """The ping sweep from outside, every flow flagged by the AMF-LSTM (thresholds 0): one
    notice per local host it reached before the sweep rule (224), and with it
    (``--sweep-hosts``, default 5) the first four hosts' and one about the sweeper, whose
    incident holds the rest of the sweep."""
    import pandas as pd

    from zeekml.cli.main import main

    d = _nfcapd(tmp_path, "nmap-ping")
    got = {}
    for sweep in ("5", "0"):
        out, inc = tmp_path / f"n{sweep}.json", tmp_path / f"i{sweep}.json"
        args = ["score", "--model", "amf_lstm", "--sweep-hosts", sweep, "--out-format", "json",
                "--out", str(out), "--incidents", str(inc), str(d)]
        for t in AMF_ALL:
            args += ["--threshold", t]
        assert main(args) == 0
        got[sweep] = (pd.read_json(out, lines=True), pd.read_json(inc, lines=True))
    swept = got["0"][0]["id.resp_h"].nunique()
    assert len(got["0"][0]) == swept >= 200 and len(got["0"][1]) == swept
    notices, incidents = got["5"]
    assert len(notices) == 5 and notices["n"].sum() == got["0"][0]["n"].sum()
    assert notices["n"].max() > 0.9 * notices["n"].sum()
    big = incidents.loc[incidents["flows"].idxmax()]
    assert len(incidents) == 5 and big["host"] == "198.51.100.23" and big["role"] == "orig"
