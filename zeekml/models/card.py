"""Model cards: the JSON beside every ``NAME.onnx`` that says how to feed and read it.

A card is untrusted input like any other file: it is parsed as JSON (never pickle or
eval), every field the runtime relies on is type-checked, and the ONNX file's SHA-256
must match the card, so a card never describes a different model than the one loaded.

Common fields (every kind)::

    format        "zeekml-model-card/1"
    name          str
    kind          "amf_lstm" | "flow_lm" | a plugin's kind
    onnx_sha256   hex digest of NAME.onnx (absent from the card of a kind without a
                  graph, e.g. ``scan``: that card is the whole model, ``NAME.card.json``)
    thresholds    {class: float}; "default" applies to classes not listed
    training      {files: [{path, sha256, rows}], command: str, seconds: float, ...}
    metrics       dict (held-out results; free-form per kind)
    limitations   [str]

Kind-specific fields are validated by the scorer of that kind (see
:mod:`zeekml.models.registry`), because only it knows its graph.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeekml.errors import ModelError

CARD_FORMAT = "zeekml-model-card/1"
MAX_CARD_BYTES = 16 * 1024 * 1024


#: seconds: the longest window horizon a count detector's card may ask for (a day)
MAX_COUNT_HORIZON = 86400.0


def card_path(onnx_path: Path) -> Path:
    """``x/NAME.onnx`` -> ``x/NAME.card.json``."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".card.json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def class_thresholds(thresholds: Mapping[str, float], classes: Sequence[str],
                     missing: float = math.inf) -> np.ndarray:
    """float64 ``[len(classes)]``: each class's threshold from a card's (or a fold's)
    threshold set: its own, else the set's ``"default"``, else ``missing``. The one
    lookup the runtime, ``zeekml eval`` and the trainer share."""
    default = float(thresholds.get("default", missing))
    return np.array([float(thresholds.get(c, default)) for c in classes], dtype=np.float64)


@dataclass(frozen=True)
class ModelCard:
    """A validated card; ``data`` holds the whole JSON object."""

    path: Path
    onnx_path: Path | None  # None: a card-only model (no graph)
    data: dict[str, Any]

    def graph(self) -> Path:
        """The ONNX file, or ModelError for a card-only model."""
        if self.onnx_path is None:
            raise ModelError(f"{self.path}: this card describes no ONNX graph")
        return self.onnx_path

    @property
    def digest(self) -> str:
        """What identifies the model: its graph's SHA-256 (checked against the file when
        the card was loaded), or the card's own for a card-only model."""
        if self.onnx_path is None:
            return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()
        return str(self.data["onnx_sha256"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def kind(self) -> str:
        return str(self.data["kind"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.data["thresholds"].items()}

    def threshold_for(self, cls: str) -> float:
        return float(class_thresholds(self.thresholds, [cls])[0])

    def count_window(self, key: str, max_depth: int,
                     max_horizon: float = MAX_COUNT_HORIZON) -> tuple[int, float]:
        """``(depth, horizon)`` of a count detector's ``window`` (the scan and DNS burst
        cards), after checking that its key is ``key``, its depth an integer in
        ``1..max_depth`` and its horizon a number of seconds in ``(0, max_horizon]``."""
        window = self.require("window", dict)
        if window.get("key") != key:
            raise ModelError(f"{self.path}: {self.kind} window key {window.get('key')!r} is "
                             f"not {key!r}")
        depth = window.get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= max_depth:
            raise ModelError(f"{self.path}: {self.kind} window depth must be an integer in "
                             f"1..{max_depth}")
        horizon = window.get("horizon")
        if (not isinstance(horizon, (int, float)) or isinstance(horizon, bool)
                or not 0 < horizon <= max_horizon):
            raise ModelError(f"{self.path}: {self.kind} window horizon must be a number of "
                             f"seconds in (0, {max_horizon:g}]")
        return depth, float(horizon)

    def require(self, key: str, typ: type | tuple[type, ...]) -> Any:
        """Return ``data[key]`` after checking its type, else raise ModelError."""
        if key not in self.data:
            raise ModelError(f"{self.path}: model card lacks {key!r}")
        value = self.data[key]
        if not isinstance(value, typ) or isinstance(value, bool) and typ in (int, float):
            raise ModelError(f"{self.path}: model card field {key!r} has the wrong type")
        return value


def is_card_path(path: str | Path) -> bool:
    """``path`` names a card itself (``NAME.card.json``): a card-only model."""
    return str(path).endswith(".card.json")


def _check_common(path: Path, data: Any, *, graph: bool = True) -> None:
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model card is not a JSON object")
    if data.get("format") != CARD_FORMAT:
        raise ModelError(f"{path}: model card format is {data.get('format')!r}, expected {CARD_FORMAT!r}")
    if not graph and "onnx_sha256" in data:
        raise ModelError(f"{path}: this card describes an ONNX graph: give the .onnx file "
                         "beside it as the model")
    required = (("name", str), ("kind", str), ("thresholds", dict))
    for key, typ in (*required, ("onnx_sha256", str)) if graph else required:
        if not isinstance(data.get(key), typ):
            raise ModelError(f"{path}: model card field {key!r} is missing or not a {typ.__name__}")
    for k, v in data["thresholds"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ModelError(f"{path}: threshold for {k!r} is not a number")


def load_card(onnx_path: str | Path, *, verify_digest: bool = True) -> ModelCard:
    """Read and validate the card beside ``onnx_path``, or the card ``NAME.card.json`` of
    a card-only model (its kind's scorer needs no graph; checked when it is built)."""
    if is_card_path(onnx_path):
        path = Path(onnx_path)
        if not path.is_file():
            raise ModelError(f"{path}: model card not found")
        data = _read_card(path)
        _check_common(path, data, graph=False)
        return ModelCard(path=path, onnx_path=None, data=data)
    onnx_path = Path(onnx_path)
    path = card_path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: model card not found (every model needs NAME.card.json)")
    data = _read_card(path)
    _check_common(path, data)
    if verify_digest:
        digest = sha256_file(onnx_path)
        if digest != data["onnx_sha256"]:
            raise ModelError(
                f"{onnx_path}: SHA-256 {digest[:12]}... does not match its card "
                f"({str(data['onnx_sha256'])[:12]}...): the model and card were not exported together"
            )
    return ModelCard(path=path, onnx_path=onnx_path, data=data)


def _read_card(path: Path) -> Any:
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(f"{path}: model card is larger than {MAX_CARD_BYTES} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: model card is not valid JSON: {exc}") from exc


def write_card(onnx_path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as the card of ``onnx_path`` (fills format and digest)."""
    onnx_path = Path(onnx_path)
    data = {"format": CARD_FORMAT, **data, "onnx_sha256": sha256_file(onnx_path)}
    path = card_path(onnx_path)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
