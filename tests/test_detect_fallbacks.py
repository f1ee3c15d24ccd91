"""Detection of nfdump layouts the quick checks miss, and 14-digit nfcapd names in directories."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import DATA
from zeekml.sources.detect import sniff_format
from zeekml.sources.open import expand_inputs

QUIET_LINE = (
    b"2018-03-09 20:49:16,2018-03-09 20:49:16,0.000,1.2.3.4,5.6.7.8,1,2,UDP,........,0,0,1,72,0,0,"
    b"0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
    b"00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,    0.000,"
    b"    0.000,    0.000,0.0.0.0,17/1,0,2026-11-23 22:33:52.332\n"
)


def test_headerless_nfdump_q_output_is_nfdump_csv() -> None:
    assert sniff_format(QUIET_LINE) == "nfdump_csv"


def test_custom_nfdump_csv_header_is_nfdump_csv() -> None:
    assert sniff_format(b"sa,da,ts,pr,sp,dp,ipkt,ibyt\n1.2.3.4,5.6.7.8,2024-01-01 00:00:00,TCP,1,2,3,4\n") == "nfdump_csv"


def test_directory_picks_up_nfcapd_files_with_seconds(tmp_path: Path) -> None:
    src = next((DATA / "nfdump" / "pcap-slips-test8-malicious" / "nfcapd").glob("nfcapd.*"))
    shutil.copy(src, tmp_path / "nfcapd.20210921085500")
    shutil.copy(src, tmp_path / "nfcapd.current.1234")
    found = [Path(p).name for p in expand_inputs([str(tmp_path)])]
    assert found == ["nfcapd.20210921085500"]
