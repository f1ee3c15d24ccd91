"""Class vocabulary and the documented mapping from dataset labels to classes.

Labeled captures come with different vocabularies (see ``../shared/data/MANIFEST.md``):

* **Stratosphere netflowlabeler** (``label`` ∈ Benign/Malicious/Background/Unknown,
  free-text ``detailedlabel`` such as ``External-Attack-to-Device``, ``CC``,
  ``From_malicious-To_malicious-Malware_data_exfiltration-RemcosRAT``);
* **IoT-23** (``label`` ∈ Benign/benign/Malicious, ``detailed-label`` such as ``C&C``,
  ``C&C-Torii``, ``DDoS``, ``PartOfAHorizontalPortScan``, ``-`` for benign);
* **CICIDS2017** (``Label`` is the class itself: ``BENIGN``, ``DoS Hulk``, ``Botnet``...);
* **CTU-13 / Stratosphere binetflow** (``flow=Background-...``, ``flow=From-Botnet-...``,
  ``flow=To-Botnet-...``, ``flow=From-Normal-...``, ``flow=To-Normal-...``,
  ``flow=Malware-...``); the binetflow reader puts the whole text in ``detailed_label``
  and a normalized ``label`` (Malicious / Benign / Background, or missing), and the raw
  text in ``label`` maps the same way.

Everything is reduced to two targets:

``binary_target``  1 malicious, 0 benign, -1 excluded (Background, Unknown, missing or
                   an unrecognised label: never guessed to be benign or malicious);
``class_target``   index into :data:`CLASSES`, or -1 (excluded, or malicious without a
                   class such as CICIDS2017 ``Heartbleed``: kept in the binary view only).

The vocabulary is the AMF-LSTM paper's eight classes. ``c2`` is the paper's "Bot"
(bot / command-and-control traffic). Stratosphere's ``External-Attack-to-Device`` is
mapped to ``portscan``: in the CTU-Normal-40/42 captures it labels every unsolicited
inbound connection to the monitored host, 97% of them unanswered SYNs (S0) from
Internet scanners, most of which touch one port (1,290 of 1,650 sources in -008).

The mapping works on the *distinct* (label, detail) pairs of a table (one regex pass
per distinct pair, then a vectorized gather), so it costs nothing per flow.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: The class vocabulary, in the order of every model's output columns. ``normal`` first.
CLASSES: tuple[str, ...] = (
    "normal",
    "ddos",
    "dos",
    "portscan",
    "c2",
    "bruteforce",
    "webattack",
    "infiltration",
)
NORMAL = "normal"

#: Generic labels meaning "not a usable label" (compared lowercased, after a ``flow=`` prefix).
_EXCLUDED_PREFIXES = ("background", "unknown")
_BENIGN_PREFIXES = ("benign", "normal", "from-normal", "to-normal", "legitimate")
_MALICIOUS_PREFIXES = ("malicious", "malware", "from-botnet", "botnet", "attack")
_EMPTY = {"", "-", "(empty)", "-1", "nan", "none"}

#: Malicious label text -> class, first match wins. The text searched is
#: ``"<label> <detailed label>"`` lowercased, so CICIDS2017 (class in ``label``) and
#: Stratosphere/IoT-23 (class in the detail) go through the same rules.
#: ``None`` = malicious but no class (binary view only).
RULES: tuple[tuple[str, str | None, str], ...] = (
    (r"heartbleed", None, "CICIDS2017 Heartbleed: 11 rows, no class of the paper fits"),
    (r"infiltration\s*-\s*portscan", "portscan", "CICIDS2017 'Infiltration - Portscan' (scan from the infiltrated host)"),
    (r"ddos", "ddos", "IoT-23 DDoS, CICIDS2017 DDoS"),
    (r"\bdos\b", "dos", "CICIDS2017 DoS Hulk/GoldenEye/Slowloris/Slowhttptest"),
    (r"port\s*scan|portscan|\bscan", "portscan", "IoT-23 PartOfAHorizontalPortScan (also C&C-PartOfAHorizontalPortScan), CICIDS2017 Portscan"),
    (r"external-attack-to-device", "portscan", "Stratosphere CTU-Normal External-Attack-to-Device: unsolicited inbound probes"),
    (r"web\s*attack|sql\s*inj|xss", "webattack", "CICIDS2017 Web Attack - Brute Force/SQL Injection/XSS"),
    (r"patator|brute", "bruteforce", "CICIDS2017 FTP-Patator, SSH-Patator"),
    (r"infiltration", "infiltration", "CICIDS2017 Infiltration"),
    (
        r"c&c|\bcc\b|\bc2\b|botnet|\bbot\b|heartbeat|filedownload|torii|okiru|mirai|remcos|njrat|rat\b|malware",
        "c2",
        "IoT-23 C&C, C&C-*, FileDownload, Okiru; Stratosphere CC (njRAT), RemcosRAT; CICIDS2017 Botnet; CTU-13 From-Botnet",
    ),
)
_COMPILED = tuple((re.compile(p), c) for p, c, _ in RULES)


def _norm(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    s = str(value).strip().lower()
    return s.removeprefix("flow=")


_NO_MATCH = "\0no-match"
_GENERIC_MALICIOUS = {"malicious", "malware", "attack", "botnet"}


def _match(text: str) -> str | None:
    """The class of the first matching rule (None for 'malicious, no class'), else _NO_MATCH."""
    for rx, cls in _COMPILED:
        if rx.search(text):
            return cls
    return _NO_MATCH


def map_pair(label: object, detail: object) -> tuple[int, str | None]:
    """(binary, class) for one label pair: binary 1/0/-1, class name or None."""
    lab = _norm(label)
    det = _norm(detail)
    if lab in _EMPTY or lab.startswith(_EXCLUDED_PREFIXES):
        return -1, None
    if lab.startswith(_BENIGN_PREFIXES):
        return 0, NORMAL
    if lab in _GENERIC_MALICIOUS:
        # the class is in the detail only; a bare "Malicious" has none
        cls = _match(det) if det not in _EMPTY else _NO_MATCH
        if cls is _NO_MATCH and lab == "botnet":
            cls = "c2"
        return 1, None if cls is _NO_MATCH else cls
    cls = _match(lab if det in _EMPTY else f"{lab} {det}")
    if cls is not _NO_MATCH:
        return 1, cls  # CICIDS2017 / CTU-13 style: the class is named in the label
    if lab.startswith(_MALICIOUS_PREFIXES):
        return 1, None
    return -1, None


def _pairs(df: pd.DataFrame) -> tuple[np.ndarray, list[tuple[str | None, str | None]]]:
    if "label" not in df.columns:
        return np.zeros(len(df), dtype=np.int64), [(None, None)]
    lab = df["label"].astype(object).to_numpy()
    det = (
        df["detailed_label"].astype(object).to_numpy()
        if "detailed_label" in df.columns
        else np.full(len(df), None, dtype=object)
    )
    lab_s = pd.Series(lab).fillna("\0").astype(str)
    det_s = pd.Series(det).fillna("\0").astype(str)
    codes, uniques = pd.factorize(lab_s + "\t" + det_s, use_na_sentinel=False)
    pairs: list[tuple[str | None, str | None]] = []
    for u in uniques:
        lab_u, _, det_u = str(u).partition("\t")
        pairs.append((None if lab_u == "\0" else lab_u, None if det_u == "\0" else det_u))
    return np.asarray(codes, dtype=np.int64), pairs


def _mapped(df: pd.DataFrame, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    codes, pairs = _pairs(df)
    index = {c: i for i, c in enumerate(classes)}
    binary = np.empty(len(pairs), dtype=np.int8)
    cls = np.empty(len(pairs), dtype=np.int64)
    for i, (lab, det) in enumerate(pairs):
        b, c = map_pair(lab, det)
        binary[i] = b
        cls[i] = index.get(c, -1) if c is not None else -1
    return binary[codes], cls[codes]


def binary_target(df: pd.DataFrame) -> np.ndarray:
    """int8 [N]: 1 malicious, 0 benign, -1 excluded (Background/Unknown/missing/unrecognised)."""
    return _mapped(df, CLASSES)[0]


def class_target(df: pd.DataFrame, classes: tuple[str, ...] = CLASSES) -> np.ndarray:
    """int64 [N]: index into ``classes``, or -1 (excluded, or malicious without a class)."""
    return _mapped(df, classes)[1]


def targets(df: pd.DataFrame, classes: tuple[str, ...] = CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """(binary_target, class_target) in one pass."""
    return _mapped(df, classes)


def label_mapping() -> dict[str, object]:
    """The mapping as JSON-able documentation (recorded in every AMF model card)."""
    return {
        "classes": list(CLASSES),
        "excluded": "label missing, empty, '-', Background*, Unknown*, or not recognised",
        "benign": "label starting with Benign/benign/BENIGN/Normal, or CTU-13 "
                  "flow=From-Normal/To-Normal (class normal)",
        "malicious": (
            "label Malicious/Malware/Botnet/Attack, or a CICIDS2017 attack name; class from "
            "the first rule matching '<label> <detailed label>' (lowercased)"
        ),
        "rules": [{"pattern": p, "class": c, "covers": why} for p, c, why in RULES],
    }


def label_counts(df: pd.DataFrame) -> dict[str, int]:
    """Rows per mapped class plus ``excluded`` and ``malicious_unclassed`` (for reports)."""
    binary, cls = targets(df)
    out = {c: int((cls == i).sum()) for i, c in enumerate(CLASSES)}
    out["excluded"] = int((binary < 0).sum())
    out["malicious_unclassed"] = int(((binary == 1) & (cls < 0)).sum())
    return out
