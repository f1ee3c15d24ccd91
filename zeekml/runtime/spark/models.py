"""Models on the driver (resolved, validated) and in the workers (built once per process).

This module holds everything the Spark engine assumes about scorers, in one place:

* a scorer's state is one :class:`~zeekml.windows.host_window.HostWindows` (keyed by a
  host: ``orig``, ``resp`` or ``local``), one :class:`~zeekml.windows.scan.ScanHistory`
  (keyed by the originator of a failed flow, ``orig_failed``), one
  :class:`~zeekml.windows.lookups.LookupHistory` (the originator of a DNS lookup,
  ``orig_dns``), one :class:`~zeekml.windows.logins.LoginHistory` (the originator of a
  login attempt, ``orig_login``), one :class:`~zeekml.windows.floods.FloodHistory` (the
  responder of an unanswered flow that is not outbound, ``resp_flood``) or one
  :class:`~zeekml.windows.conversation.ConversationWindows` (keyed by the host pair),
  held as an attribute, or no state at all (:func:`state_layout`); a window depends on
  the key's previous ``depth`` flows (``HostWindows.depth``, ``history.depth``);
* a flow's key is what :func:`state_keys` computes, with the functions those window
  stores use themselves;
* a count detector's store gives the flows it never takes one key of its own
  (``CountedHistory.unkept``, :func:`unkept_key`), and scores them without state;
* ``scorer.state_dict()`` of a fresh scorer is its empty state, and
  ``load_state_dict`` of it starts the scorer afresh;
* the scorer class is found as ``zeekml.models.registry`` finds it (built-in kinds,
  then the ``zeekml.scorers`` entry points) and built as ``cls(card, options)``.

So the engine can cut the stream by key: every flow of a key meets in one scoring
group, in stream order, and the windows are the local engine's.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from zeekml.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from zeekml.models.base import Scorer


@dataclass(frozen=True)
class ModelSpec:
    """What an executor needs to rebuild one scorer, as plain data."""

    name: str
    target: str  # "module:attr" of the scorer class
    key: str  # orig | resp | local | local_dir | pair | orig_failed | orig_dns
    depth: int  # previous flows of the same key a window holds
    card: str
    onnx: bytes  # empty for a card-only model
    unkept: str = ""  # the state key of flows scored without state ("": none is)


def target_of(kind: str) -> str:
    """``module:attr`` of the scorer class of a card kind (built-in, then plugins)."""
    from importlib import metadata

    from zeekml.models.registry import BUILTIN_KINDS

    if kind in BUILTIN_KINDS:
        return BUILTIN_KINDS[kind]
    for ep in metadata.entry_points(group="zeekml.scorers"):
        if ep.name == kind:
            return ep.value
    raise ModelError(f"no scorer for model kind {kind!r}")


def state_layout(scorer: Scorer) -> tuple[str, int]:
    """(state key, window depth) of a scorer, read from the window store it holds.

    A scorer with state other than exactly one window store cannot be partitioned
    safely and is refused; a stateless one is keyed by originator (any cut is exact).
    """
    from zeekml.windows.conversation import ConversationWindows
    from zeekml.windows.counted import CountedHistory
    from zeekml.windows.host_window import HostWindows

    found = set()
    for value in vars(scorer).values():
        if isinstance(value, (HostWindows, CountedHistory)):
            found.add((value.key, value.depth))
        elif isinstance(value, ConversationWindows):
            found.add(("pair", value.history.depth))
    if len(found) == 1:
        return found.pop()
    if not found and not scorer.state_dict():
        return "orig", 0
    raise ModelError(f"model {scorer.name!r} keeps state the Spark engine cannot partition "
                     "(it needs exactly one HostWindows, count detector store (CountedHistory) "
                     "or ConversationWindows)")


def unkept_key(scorer: Scorer) -> str:
    """The state key a count detector's store gives every flow it never takes
    (``CountedHistory.unkept``), or ``""``: such flows need no state, so they are scored
    where they are read, not sent to a key's group (the key of most flows: 96% of the
    benchmark's for the brute-force detector)."""
    from zeekml.windows.counted import CountedHistory

    for value in vars(scorer).values():
        if isinstance(value, CountedHistory):
            return value.unkept
    return ""


def state_keys(flows: pd.DataFrame, kind: str) -> pd.Series:
    """The state key of each flow (``str``; missing hosts are ``""``), computed by the
    functions the window stores use."""
    if kind == "pair":
        from zeekml.windows.conversation import conversation_keys

        return pd.Series(conversation_keys(flows), dtype="str")
    if kind == "orig_failed":
        from zeekml.windows.scan import scan_keys

        return scan_keys(flows)
    if kind == "orig_dns":
        from zeekml.windows.lookups import lookup_keys

        return lookup_keys(flows)
    if kind == "orig_login":
        from zeekml.windows.logins import login_keys

        return login_keys(flows)
    if kind == "resp_flood":
        from zeekml.windows.floods import flood_keys

        return flood_keys(flows)
    from zeekml.windows.host_window import key_sides

    return key_sides(flows, kind)[0].astype("str").fillna("").reset_index(drop=True)


def prepare_models(specs: Sequence[str] | None) -> list[ModelSpec]:
    """Resolve and validate models on the driver (a bad card fails here, not in a task)."""
    from zeekml.models.card import load_card
    from zeekml.models.registry import ScorerOptions, bundled_models, load_scorer, resolve_model

    paths = [resolve_model(s) for s in specs] if specs else bundled_models()
    if not paths:
        raise ModelError("no models given and none bundled")
    out: list[ModelSpec] = []
    for p in paths:
        card = load_card(p)
        scorer = load_scorer(str(p), ScorerOptions(threads=1))
        key, depth = state_layout(scorer)
        graph = b"" if card.onnx_path is None else card.onnx_path.read_bytes()
        out.append(ModelSpec(scorer.name, target_of(card.kind), key, depth,
                             card.path.read_text(encoding="utf-8"), graph, unkept_key(scorer)))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"two models share a name: {names}")
    return out


#: per Python worker: payload digest -> [(scorer, its empty state)]
_WORKER_SCORERS: dict[str, list[tuple[Any, dict[str, np.ndarray]]]] = {}


def worker_scorers(payload: Any, digest: str) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """The scorers of this run in this Python worker: built once, then reused.

    Model bytes arrive once per executor through a broadcast; the card is checked again
    here (its SHA-256 must match the ONNX bytes), then the onnxruntime session is
    created once per worker process (Spark reuses its Python workers), never per task.
    """
    cached = _WORKER_SCORERS.get(digest)
    if cached is not None:
        return cached
    from zeekml.models.card import card_path, load_card
    from zeekml.models.registry import ScorerOptions

    value = payload.value
    opts = ScorerOptions(**value["scorer_options"])
    # the files exist only while the scorers are built (each loads its graph into its
    # session): Spark ends its Python workers with os._exit, so no exit hook would ever
    # remove them, and every worker of every run left ~650 KB in /tmp
    built = []
    with tempfile.TemporaryDirectory(prefix="zeekml-models-") as tmp:
        for i, m in enumerate(value["models"]):
            onnx = Path(tmp) / f"m{i}.onnx"
            if m.onnx:
                onnx.write_bytes(m.onnx)
            card_path(onnx).write_text(m.card, encoding="utf-8")
            module, _, attr = m.target.partition(":")
            cls = getattr(importlib.import_module(module), attr)
            scorer = cls(load_card(onnx if m.onnx else card_path(onnx)), opts)
            built.append((scorer, scorer.state_dict()))
    _WORKER_SCORERS[digest] = built
    return built


def broadcast_models(spark: SparkSession, models: list[ModelSpec], scorer_options: dict
                     ) -> tuple[Any, str]:
    """The models and scorer options as one broadcast, and a digest naming them."""
    h = hashlib.sha256()
    for m in models:
        h.update(m.name.encode() + m.target.encode() + m.onnx + m.card.encode())
    h.update(json.dumps(scorer_options, sort_keys=True).encode())
    payload = {"models": models, "scorer_options": scorer_options}
    return spark.sparkContext.broadcast(payload), h.hexdigest()
