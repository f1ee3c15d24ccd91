"""Models on the driver (resolved, validated) and in the workers (built once per process)."""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeekml.errors import ModelError, UsageError
from zeekml.runtime.spark.options import SparkOptions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from zeekml.models.base import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Model:
    """What an executor needs to rebuild one scorer, as plain data."""

    name: str
    target: str  # "module:attr" of the scorer class
    key: str  # orig | resp | local | pair
    depth: int  # previous flows of the same key a window holds
    card: str
    onnx: bytes


def _target_of(kind: str) -> str:
    from importlib import metadata

    from zeekml.models.registry import BUILTIN_KINDS

    if kind in BUILTIN_KINDS:
        return BUILTIN_KINDS[kind]
    for ep in metadata.entry_points(group="zeekml.scorers"):
        if ep.name == kind:
            return ep.value
    raise ModelError(f"no scorer for model kind {kind!r}")


def _state_layout(scorer: Scorer) -> tuple[str, int]:
    """(state key, window depth) of a scorer, read from the window store it holds.

    The built-in scorers (and plugins built the same way) keep their state in one
    :class:`~zeekml.windows.host_window.HostWindows` (keyed by host) or
    :class:`~zeekml.windows.conversation.ConversationWindows` (keyed by host pair);
    a window holds the key's previous ``depth`` flows. A scorer with other state
    cannot be partitioned safely and is refused.
    """
    from zeekml.windows.conversation import ConversationWindows
    from zeekml.windows.host_window import HostWindows

    found = set()
    for value in vars(scorer).values():
        if isinstance(value, HostWindows):
            found.add((value.key, value.history.depth))
        elif isinstance(value, ConversationWindows):
            found.add(("pair", value.history.depth))
    if len(found) == 1:
        return found.pop()
    if not found and not scorer.state_dict():
        return "orig", 0  # stateless: any partitioning is exact
    raise ModelError(f"model {scorer.name!r} keeps state the Spark engine cannot partition "
                     "(it needs exactly one HostWindows or ConversationWindows)")


def prepare_models(specs: Sequence[str] | None) -> list[_Model]:
    """Resolve and validate models on the driver (a bad card fails here, not in a task)."""
    from zeekml.models.card import load_card
    from zeekml.models.registry import ScorerOptions, bundled_models, load_scorer, resolve_model

    paths = [resolve_model(s) for s in specs] if specs else bundled_models()
    if not paths:
        raise ModelError("no models given and none bundled")
    out: list[_Model] = []
    for p in paths:
        card = load_card(p)
        scorer = load_scorer(str(p), ScorerOptions(threads=1))
        key, depth = _state_layout(scorer)
        out.append(_Model(scorer.name, _target_of(card.kind), key, depth,
                          card.path.read_text(encoding="utf-8"), Path(p).read_bytes()))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise UsageError(f"two models share a name: {names}")
    return out


#: per Python worker: payload digest -> [(scorer, its empty state)]
_WORKER_SCORERS: dict[str, list[tuple[Any, dict[str, np.ndarray]]]] = {}


def _worker_scorers(payload: Any, digest: str) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """The scorers of this run in this Python worker: built once, then reused.

    Model bytes arrive once per executor through a broadcast; the card is checked
    again here (its SHA-256 must match the ONNX bytes), then the onnxruntime session
    is created once per worker process, never per group or row.
    """
    cached = _WORKER_SCORERS.get(digest)
    if cached is not None:
        return cached
    import importlib

    from zeekml.models.card import card_path, load_card
    from zeekml.models.registry import ScorerOptions

    value = payload.value
    opts = ScorerOptions(**value["scorer_options"])
    tmp = tempfile.mkdtemp(prefix="zeekml-models-")
    atexit.register(shutil.rmtree, tmp, True)
    built = []
    for i, m in enumerate(value["models"]):
        onnx = Path(tmp) / f"m{i}.onnx"
        onnx.write_bytes(m.onnx)
        card_path(onnx).write_text(m.card, encoding="utf-8")
        module, _, attr = m.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        scorer = cls(load_card(onnx), opts)
        built.append((scorer, scorer.state_dict()))
    _WORKER_SCORERS[digest] = built
    return built


def _broadcast_models(spark: SparkSession, models: list[_Model], opts: SparkOptions
                      ) -> tuple[Any, str]:
    import hashlib

    h = hashlib.sha256()
    for m in models:
        h.update(m.name.encode() + m.target.encode() + m.onnx + m.card.encode())
    so = {"threads": opts.threads, "max_hosts": opts.max_hosts,
          "idle_timeout": opts.idle_timeout, "batch_size": opts.batch_size}
    h.update(json.dumps(so, sort_keys=True).encode())
    digest = h.hexdigest()
    return spark.sparkContext.broadcast({"models": models, "scorer_options": so}), digest
