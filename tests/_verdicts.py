"""Verdict tables made from real flows, for the alert sink tests (syslog, CEF, ECS).

The flows (ts, uid, endpoints, proto) come from real captures in ../shared/data read
with zeekml's own reader; the model columns are filled deterministically, because
the sinks' job is to carry whatever the pipeline decided, intact. ``hostile=True``
puts strings that break naive CEF/syslog/JSON writers into uid, verdict and model.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from conftest import DATA, need

from zeekml.records.verdicts import conform_verdicts

#: Two real captures: one labeled (IPv4, RemcosRAT exfiltration), one mixed IPv4/IPv6.
CAPTURES = (
    "zeek/slips-test18-ctu-sme-11/conn.log.labeled",
    "zeek/slips-test10-mixed/conn.log",
)

HOSTILE = (
    'quote"inside',
    "back\\slash",
    "close]bracket",
    "pipe|and=equals",
    "new\nline",
    "cr\rreturn",
    "tab\there",
    "\\\"]\\|=",
    "ünïcødé €",
    " lead and trail ",
    "k=v x=y",
    "L" * 3000,
)


def real_flows() -> pd.DataFrame:
    from zeekml.sources.open import read_table

    paths = [DATA / p for p in CAPTURES]
    need(all(p.is_file() for p in paths), f"the captures {CAPTURES} in {DATA}")
    return read_table([str(p) for p in paths])


def real_verdicts(hostile: bool = False) -> pd.DataFrame:
    """One verdict row per real flow; about half are notices, from two 'models'."""
    flows = real_flows()
    n = len(flows)
    rng = np.random.default_rng(20261124)
    lm = np.arange(n) % 3 == 2  # every third row comes from the flow language model
    score = np.where(lm, rng.gamma(4.0, 2.0, n), rng.random(n))
    threshold = np.where(lm, 9.0, 0.5)
    labeled = flows["label"].fillna("").to_numpy() if "label" in flows else np.full(n, "")
    cls = np.where(lm, "anomaly", np.where(labeled == "Malicious", "bot", "portscan"))
    notice = score >= threshold
    uids = flows["uid"].astype(str).to_numpy()
    context = [list(uids[max(0, i - 3):i][::-1]) for i in range(n)]
    df = pd.DataFrame({
        "ts": flows["ts"], "uid": flows["uid"], "orig_h": flows["orig_h"],
        "orig_p": flows["orig_p"], "resp_h": flows["resp_h"], "resp_p": flows["resp_p"],
        "proto": flows["proto"],
        "model": np.where(lm, "flow_lm", "amf_lstm"),
        "verdict": np.where(notice, cls, "normal"),
        "score": score, "threshold": threshold, "notice": notice,
        "alt": np.where(lm, None, "normal"),
        "alt_score": np.where(lm, np.nan, 1.0 - score),
        "n": (np.arange(n) % 4) + 1,
        "context": context,
    })
    if hostile:
        for i, text in enumerate(HOSTILE):
            rows = df.index[df["notice"]][i::len(HOSTILE)][:3]
            df.loc[rows, "uid"] = [f"{r}#{text}" for r in rows]
            df.loc[rows, "verdict"] = text
            df.loc[rows, "model"] = f"m{text}"
    return conform_verdicts(df)


def expected_text(value: object, limit: int = 1024) -> str | None:
    """What a sink should carry for one value (missing -> None; long values cut)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """A CEF record -> (7 unescaped header fields, {extension key: unescaped value})."""
    assert text.startswith("CEF:"), text
    header: list[str] = []
    cur, i = "", 4
    while len(header) < 7:
        c = text[i]
        if c == "\\":
            cur += text[i + 1]
            i += 2
            continue
        if c == "|":
            header.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    ext = text[i:]
    # keys are the words before an unescaped '='
    eq = []
    j = 0
    while j < len(ext):
        if ext[j] == "\\":
            j += 2
            continue
        if ext[j] == "=":
            eq.append(j)
        j += 1
    fields: dict[str, str] = {}
    starts = []
    for pos in eq:
        k0 = ext.rfind(" ", 0, pos) + 1
        starts.append((k0, pos))
    for n, (k0, pos) in enumerate(starts):
        end = starts[n + 1][0] - 1 if n + 1 < len(starts) else len(ext)
        raw = ext[pos + 1:end]
        fields[ext[k0:pos]] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(
            m.group(1), m.group(1)), raw, flags=re.S)
    return header, fields
