"""A labeled corpus: input files grouped into *captures*, each with its label rule.

Leave-one-capture-out (LOCO) evaluation is only as honest as its captures: two files of
one network and month, or two CSV samples of one CICIDS2017 day, must never sit on
both sides of a fold. A corpus file (JSON, validated on load: it is input like any
other) says which files form which capture and where their labels come from::

    {"format": "zeekml-corpus/1",
     "root": "../shared/data",                       # relative to the corpus file
     "captures": [
       {"name": "ctu-sme-11", "paths": ["zeek/slips-test18-ctu-sme-11/conn.log.labeled"],
        "labels": "file"},
       {"name": "stopddos-isakmp", "paths": ["nfdump/pcap-stopddos-amp-udp-isakmp/nfcapd"],
        "labels": {"class": "ddos", "hosts": ["10.10.10.10"]}},
       {"name": "iot23", "paths": ["iot23-subsample", "iot23-csv"], "labels": "file",
        "group_by": "network-month"},
       {"name": "cicids2017", "paths": ["cicids2017-improved-sample"], "labels": "file",
        "group_by": "day", "sampled": true},
       {"name": "zat-sample", "paths": ["zeek/zat-sample/conn.log"], "labels": "none"}]}

``labels``:

``"file"``     the files' own label columns (:mod:`zeekml.records.labels` maps them);
``{"class": C, "hosts": [...]}``  a capture-level label: flows with one of ``hosts`` as
               an endpoint are malicious of class ``C``, every other flow is excluded
               (never counted as benign); without ``hosts`` every flow is class ``C``;
``"benign"``   every flow is benign;
``"none"``     unlabeled: only for false-alarm counts of traffic presumed benign, never
               for training a supervised model or for recall.

``exclude`` (optional) lists row rules whose matching rows are excluded from the labels
(never benign, never malicious; they still belong to the hosts' history). A rule
matches a row when every field it names matches: ``label`` (``"benign"`` or
``"malicious"``: the row's own label), ``proto`` (a string), ``resp_p`` and
``conn_state`` (lists of values). ``why`` (required) says why, for the card. Used
where a file's labels are demonstrably wrong, e.g. IoT-23 rows labeled benign that are
one host's unanswered SYNs to thousands of distinct addresses on telnet ports.

``group_by`` says how an entry becomes captures:

``"entry"``          the whole entry is one capture (default; an nfcapd directory, two
                     days of one monitored network);
``"file"``           each file is its own capture (``<name>:<file name>``);
``"network-month"``  rows are grouped by the local network (/24, /64 for IPv6) of the
                     flow's private endpoint and the UTC month of ``ts``; with
                     ``sampled`` false each file is one full capture and takes the key
                     of its majority local network and first month as a whole;
``"day"``            rows grouped by UTC day (CICIDS2017 is one capture per day).

Grouped captures are named ``<family>:<key>`` (``family`` defaults to the entry's
name), so entries sharing a family merge their groups: a random subsample of many
IoT-23 captures and the full IoT-23 captures of the same network and month become one
capture, never both sides of a fold.

``sampled`` marks random per-class samples (consecutive rows are not a host's
consecutive flows): models must score those rows without history
(:attr:`Capture.sampled` is per row, since a capture can mix both kinds).

Files listed twice, or a CSV conversion of a Zeek log also listed (>= 90% shared uids),
are read once: the later copy is dropped with a log line.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zeekml.errors import ConfigError
from zeekml.records import schema

log = logging.getLogger(__name__)

CORPUS_FORMAT = "zeekml-corpus/1"
GROUPINGS = ("entry", "file", "network-month", "day")
DUPLICATE_OVERLAP = 0.9
MAX_CORPUS_BYTES = 1 << 20


@dataclass(frozen=True)
class CaptureSpec:
    """One corpus entry (before reading)."""

    name: str
    paths: tuple[str, ...]
    labels: str | dict[str, Any] = "file"
    group_by: str = "entry"
    sampled: bool = False
    family: str = ""
    note: str = ""
    exclude: tuple[dict[str, Any], ...] = ()


@dataclass
class Capture:
    """One LOCO unit: its flows (canonical table with ``label``/``detailed_label``).

    ``sampled[i]`` says row ``i`` comes from a random sample (score it without history).
    """

    name: str
    flows: pd.DataFrame
    sampled: np.ndarray
    files: list[str] = field(default_factory=list)
    labeled: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.flows)


def _fail(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def parse_corpus(path: str | Path) -> tuple[Path, list[CaptureSpec]]:
    """Read and validate a corpus file: (data root, capture specs)."""
    p = Path(path)
    if p.stat().st_size > MAX_CORPUS_BYTES:
        raise _fail(p, f"corpus file is larger than {MAX_CORPUS_BYTES} bytes")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(p, f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != CORPUS_FORMAT:
        raise _fail(p, f"not a corpus file (format must be {CORPUS_FORMAT!r})")
    root = doc.get("root", ".")
    caps = doc.get("captures")
    if not isinstance(root, str) or not isinstance(caps, list) or not caps:
        raise _fail(p, "needs 'root' (a string) and a non-empty 'captures' list")
    specs: list[CaptureSpec] = []
    names: set[str] = set()
    for i, c in enumerate(caps):
        where = f"captures[{i}]"
        if not isinstance(c, dict):
            raise _fail(p, f"{where} is not an object")
        unknown = set(c) - {"name", "paths", "labels", "group_by", "sampled", "family", "note", "exclude"}
        if unknown:
            raise _fail(p, f"{where} has unknown keys {sorted(unknown)}")
        name, paths = c.get("name"), c.get("paths")
        if not isinstance(name, str) or not name or name in names:
            raise _fail(p, f"{where}: 'name' must be a unique non-empty string")
        names.add(name)
        if not isinstance(paths, list) or not paths or not all(isinstance(x, str) for x in paths):
            raise _fail(p, f"{where} ({name}): 'paths' must be a list of strings")
        labels = c.get("labels", "file")
        if isinstance(labels, dict):
            cls = labels.get("class")
            hosts = labels.get("hosts", [])
            if (not isinstance(cls, str) or set(labels) - {"class", "hosts"}
                    or not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts)):
                raise _fail(p, f"{where} ({name}): labels must be {{'class': C, 'hosts': [...]}}")
        elif labels not in ("file", "benign", "none"):
            raise _fail(p, f"{where} ({name}): labels must be 'file', 'benign', 'none' or an object")
        group_by = c.get("group_by", "entry")
        if group_by not in GROUPINGS:
            raise _fail(p, f"{where} ({name}): group_by must be one of {', '.join(GROUPINGS)}")
        sampled = c.get("sampled", False)
        if not isinstance(sampled, bool):
            raise _fail(p, f"{where} ({name}): 'sampled' must be true or false")
        family = c.get("family", name)
        if not isinstance(family, str) or not family:
            raise _fail(p, f"{where} ({name}): 'family' must be a non-empty string")
        note = c.get("note", "")
        exclude = _parse_exclude(p, f"{where} ({name})", c.get("exclude", []))
        specs.append(CaptureSpec(name, tuple(paths), labels, group_by, sampled, family, str(note), exclude))
    return (p.parent / root).resolve(), specs


def _parse_exclude(p: Path, where: str, rules: object) -> tuple[dict[str, Any], ...]:
    if not isinstance(rules, list):
        raise _fail(p, f"{where}: 'exclude' must be a list of rules")
    out = []
    for r in rules:
        ok = isinstance(r, dict) and not set(r) - {"label", "proto", "resp_p", "conn_state", "why"}
        ok = ok and isinstance(r.get("why"), str) and bool(r["why"]) and len(r) >= 2
        ok = ok and r.get("label", "benign") in ("benign", "malicious")
        ok = ok and isinstance(r.get("proto", ""), str)
        ok = ok and isinstance(r.get("resp_p", []), list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in r.get("resp_p", []))
        ok = ok and isinstance(r.get("conn_state", []), list) and all(
            isinstance(v, str) for v in r.get("conn_state", []))
        if not ok:
            raise _fail(p, f"{where}: an exclude rule is {{'why': text, and any of 'label' "
                           "(benign|malicious), 'proto', 'resp_p' [ints], 'conn_state' [strings]}")
        out.append(dict(r))
    return tuple(out)


def _excluded(flows: pd.DataFrame, rules: Sequence[dict[str, Any]]) -> np.ndarray:
    """Rows matching any exclude rule (see the module docstring)."""
    from zeekml.records.labels import binary_target

    hit = np.zeros(len(flows), dtype=bool)
    if not rules or not len(flows):
        return hit
    binary = binary_target(flows)
    for r in rules:
        m = np.ones(len(flows), dtype=bool)
        if "label" in r:
            m &= binary == (0 if r["label"] == "benign" else 1)
        if "proto" in r:
            m &= (flows["proto"] == r["proto"]).fillna(False).to_numpy(dtype=bool)
        if "resp_p" in r:
            m &= flows["resp_p"].isin(r["resp_p"]).fillna(False).to_numpy(dtype=bool)
        if "conn_state" in r:
            m &= flows["conn_state"].isin(r["conn_state"]).fillna(False).to_numpy(dtype=bool)
        hit |= m
    return hit


# --------------------------------------------------------------------------- grouping


_LOCAL_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10"))


def _network(addr: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) of an RFC 1918, link-local or ULA address, else None."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    if not any(ip.version == n.version and ip in n for n in _LOCAL_NETS):
        return None
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _networks(addrs: pd.Series) -> pd.Series:
    codes, uniques = pd.factorize(addrs.fillna("").astype(str))
    nets = np.array([_network(u) for u in uniques] + [None], dtype=object)
    return pd.Series(nets[codes], index=addrs.index)


def _months(ts: pd.Series) -> pd.Series:
    t = pd.to_datetime(ts.astype("float64"), unit="s", utc=True, errors="coerce")
    return t.dt.strftime("%Y-%m").fillna("no-time")


def _days(ts: pd.Series) -> pd.Series:
    t = pd.to_datetime(ts.astype("float64"), unit="s", utc=True, errors="coerce")
    return t.dt.strftime("%Y-%m-%d").fillna("no-time")


def network_month_keys(flows: pd.DataFrame, *, whole_capture: bool) -> pd.Series:
    """``"<network> <month>"`` per row (see the module docstring)."""
    net = _networks(flows["orig_h"]).fillna(_networks(flows["resp_h"]))
    if whole_capture:
        local = net.dropna()
        key_net = local.value_counts().index[0] if len(local) else "public"
        ts = flows["ts"].astype("float64").dropna()
        month = _months(pd.Series([ts.min()])).iloc[0] if len(ts) else "no-time"
        return pd.Series(f"{key_net} {month}", index=flows.index)
    return net.fillna("public") + " " + _months(flows["ts"])


# --------------------------------------------------------------------------- reading


def _apply_labels(flows: pd.DataFrame, labels: str | dict[str, Any]) -> pd.DataFrame:
    if labels == "file":
        if "label" not in flows.columns:
            flows = flows.assign(label=pd.Series(pd.NA, index=flows.index, dtype="str"))
        return flows
    n = len(flows)
    if labels == "none":
        return flows.assign(label=pd.Series([None] * n, dtype="str"),
                            detailed_label=pd.Series([None] * n, dtype="str"))
    if labels == "benign":
        return flows.assign(label=pd.Series(["Benign"] * n, dtype="str"),
                            detailed_label=pd.Series(["-"] * n, dtype="str"))
    assert isinstance(labels, dict)
    hosts = set(labels.get("hosts", []))
    hit = np.ones(n, dtype=bool)
    if hosts:
        hit = (flows["orig_h"].isin(hosts) | flows["resp_h"].isin(hosts)).to_numpy(dtype=bool)
    lab = np.where(hit, "Malicious", "Background")
    det = np.where(hit, str(labels["class"]), "(outside the capture-level label)")
    return flows.assign(label=pd.Series(lab, dtype="str"), detailed_label=pd.Series(det, dtype="str"))


def _expand(root: Path, paths: Iterable[str]) -> list[str]:
    """Files of an entry: files as named, directories as ``zeekml score`` expands them
    (conn logs and nfcapd files), except that a directory of CSV exports lists its CSVs."""
    from zeekml.sources.open import expand_inputs, walk_inputs

    out: list[str] = []
    for rel in paths:
        target = root / rel
        if not target.exists():
            raise ConfigError(f"corpus: {target} does not exist")
        if target.is_dir():
            listed = walk_inputs(str(target)) + sorted(
                str(f) for f in target.iterdir() if f.is_file() and f.suffix.lower() == ".csv")
        else:
            listed = expand_inputs([str(target)])
        out.extend(f for f in listed if f not in out)
    return out


def _read(path: str) -> pd.DataFrame:
    from zeekml.sources.open import read_table

    return read_table([path])


def _read_stream(paths: list[str]) -> pd.DataFrame:
    """Files read as one stream (NetFlow records pair across them)."""
    if len(paths) == 1:
        return _read(paths[0])
    from zeekml.sources.open import read_table

    return read_table(paths)


_NFCAPD_NAME = re.compile(r"^nfcapd\.\d{12}(\d{2})?$")


def _stream_units(files: list[str], *, per_file: bool) -> list[list[str]]:
    """Consecutive nfcapd files of one directory form one unit (one NetFlow stream, so a
    reply in the next 5-minute file is paired); every other file is a unit of its own."""
    units: list[list[str]] = []
    for f in files:
        p = Path(f)
        if (not per_file and units and _NFCAPD_NAME.match(p.name)
                and _NFCAPD_NAME.match(Path(units[-1][-1]).name)
                and Path(units[-1][-1]).parent == p.parent):
            units[-1].append(f)
        else:
            units.append([f])
    return units


def load_corpus(path: str | Path, *, root: str | Path | None = None,
                names: Sequence[str] | None = None, labeled_only: bool = False) -> list[Capture]:
    """Read a corpus file's captures (entries named ``names``, default all), grouped and
    labeled, in corpus order (groups of one family in key order)."""
    data_root, specs = parse_corpus(path)
    if root is not None:
        data_root = Path(root).resolve()
    if names is not None:
        unknown = set(names) - {s.name for s in specs}
        if unknown:
            raise ConfigError(f"{path}: no capture entry named {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in set(names)]
    if labeled_only:
        specs = [s for s in specs if s.labels != "none"]
    seen: list[tuple[str, set[str]]] = []
    parts: dict[str, list[tuple[pd.DataFrame, bool, CaptureSpec]]] = {}
    for spec in specs:
        for name, df, sampled in _load_spec(spec, data_root, seen):
            parts.setdefault(name, []).append((df, sampled, spec))
    out = []
    for name, items in parts.items():
        flows = schema.concat([d for d, _, _ in items]) if len(items) > 1 else items[0][0]
        flows = flows.reset_index(drop=True)
        sampled = np.concatenate([np.full(len(d), s) for d, s, _ in items])
        files = sorted({str(f) for d, _, _ in items for f in d["source_file"].dropna().unique()}
                       ) if "source_file" in flows.columns else []
        labeled = all(sp.labels != "none" for _, _, sp in items)
        notes = sorted({sp.note for _, _, sp in items if sp.note})
        out.append(Capture(name, flows, sampled, files, labeled, notes))
    return out


def _load_spec(spec: CaptureSpec, root: Path, seen: list[tuple[str, set[str]]]
               ) -> list[tuple[str, pd.DataFrame, bool]]:
    files = _expand(root, spec.paths)
    if not files:
        raise ConfigError(f"corpus entry {spec.name!r}: no files under {root} for {list(spec.paths)}")
    out: list[tuple[str, pd.DataFrame, bool]] = []
    # originals before CSV conversions: a .csv is the copy when both exist
    ordered = sorted(files, key=lambda x: (x.endswith(".csv"), files.index(x)))
    for unit in _stream_units(ordered, per_file=spec.group_by == "file"):
        f = unit[0]
        df = _read_stream(unit)
        if not len(df):
            continue
        uids = set(df["uid"].dropna().astype(str).tolist())
        dup = next((name for name, u in seen if uids and u and
                    len(uids & u) >= DUPLICATE_OVERLAP * min(len(uids), len(u))), None)
        if dup is not None:
            log.info("%s: same flows as %s, read once", f, dup)
            continue
        seen.append((f, uids))
        df = _apply_labels(df, spec.labels).reset_index(drop=True)
        out_rows = _excluded(df, spec.exclude)
        if out_rows.any():
            log.info("%s: %d rows excluded by the corpus's exclude rules", f, int(out_rows.sum()))
            detail = df["detailed_label"] if "detailed_label" in df.columns else pd.Series(
                pd.NA, index=df.index, dtype="str")
            df["label"] = df["label"].where(~out_rows, "Background")
            df["detailed_label"] = detail.where(~out_rows, "(excluded by a corpus rule)")
        if spec.group_by == "network-month":
            keys = network_month_keys(df, whole_capture=not spec.sampled)
        elif spec.group_by == "day":
            keys = _days(df["ts"])
        elif spec.group_by == "file":
            out.append((f"{spec.name}:{Path(f).name}", df, spec.sampled))
            continue
        else:
            out.append((spec.name, df, spec.sampled))
            continue
        for key, part in df.groupby(keys.to_numpy(), sort=True):
            out.append((f"{spec.family}:{key}", part.reset_index(drop=True), spec.sampled))
    return out
