"""Find models by bundled name or path, and build the scorer for a card's kind.

``--model`` takes either a path to an ``.onnx`` file (or to the ``NAME.card.json`` of a
card-only model, whose kind needs no graph) or the name of a bundled model
(``amf_lstm``, ``bruteforce``, ``flood``, ``flow_lm``, ``scan``; ``dns_burst`` runs only when
named). Bundled models live
in the top-level ``onnx_models/`` directory of a source checkout, which installs as the
package ``zeekml.onnx_models``; those in its ``optional/`` folder are not in the default set.

Scorer classes are found by the card's ``kind``: the built-ins below, then the
``zeekml.scorers`` entry point group (plugins), so a site can ship its own model kind:
``ScorerClass(card: ModelCard, options: ScorerOptions) -> Scorer``, registered under the
card ``kind`` it scores (:class:`zeekml.models.base.Scorer`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from zeekml import __version__, defaults, entrypoints
from zeekml.errors import ConfigError, ModelError
from zeekml.models.base import Scorer
from zeekml.models.card import ModelCard, card_path, is_card_path, load_card

GROUP = "zeekml.scorers"

BUILTIN_KINDS: dict[str, str] = {
    "amf_lstm": "zeekml.models.amf_scorer:AmfScorer",
    "flow_lm": "zeekml.models.lm_scorer:LmScorer",
    "scan": "zeekml.models.scan_scorer:ScanScorer",
    "dns_burst": "zeekml.models.dns_burst_scorer:DnsBurstScorer",
    "bruteforce": "zeekml.models.bruteforce_scorer:BruteforceScorer",
    "flood": "zeekml.models.flood_scorer:FloodScorer",
}

#: bundled models that run only when named (``--model NAME``): not in the default set
OPTIONAL_DIR = "optional"


@dataclass(frozen=True)
class ScorerOptions:
    """Runtime knobs shared by every scorer (validated here, not per scorer)."""

    threads: int = defaults.THREADS
    max_hosts: int = defaults.MAX_HOSTS
    idle_timeout: float = defaults.IDLE_TIMEOUT
    batch_size: int = defaults.MODEL_BATCH

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.max_hosts < 1:
            raise ConfigError(f"max_hosts must be >= 1, got {self.max_hosts}")
        if not self.idle_timeout > 0:
            raise ConfigError(f"idle_timeout must be > 0 s, got {self.idle_timeout}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def bundled_dir() -> Path:
    """Directory of the bundled models: the source tree's ``onnx_models/`` when zeekml runs
    from a checkout (so a work tree uses its own models), else the installed package."""
    source = Path(__file__).resolve().parents[2] / "onnx_models"
    if (source / "__init__.py").is_file() or any(source.glob("*.card.json")):
        return source
    try:
        pkg = resources.files("zeekml.onnx_models")
        path = Path(str(pkg))
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "onnx_models"


def model_name(path: Path) -> str:
    """``x/NAME.onnx`` or ``x/NAME.card.json`` -> ``NAME``."""
    return path.name.removesuffix(".card.json").removesuffix(".onnx")


def _models_in(d: Path) -> list[Path]:
    """The models of a directory, sorted by name: each ``.onnx`` file that has a card, and
    each card without a graph beside it (a card-only model)."""
    graphs = [p for p in d.glob("*.onnx") if card_path(p).is_file()]
    cards = [p for p in d.glob("*.card.json") if not p.with_name(model_name(p) + ".onnx").exists()]
    return sorted(graphs + cards, key=model_name)


def bundled_models() -> list[Path]:
    """Every bundled model of the default set (:func:`_models_in` the bundled directory)."""
    return _models_in(bundled_dir())


def resolve_model(spec: str) -> Path:
    """A path to an ``.onnx`` file or a card-only model's card, or a bundled model's
    name -> its path. A bare name is a path only when it is a file: a directory of that
    name in the working directory (``./flood/`` of a day's captures) does not hide the
    bundled model."""
    p = Path(spec)
    if p.suffix == ".onnx" or is_card_path(spec) or "/" in spec or p.is_file():
        if not p.is_file():
            raise ModelError(f"{spec}: model file not found")
        return p
    for d in (bundled_dir(), bundled_dir() / OPTIONAL_DIR):
        for candidate in (d / f"{spec}.onnx", d / f"{spec}.card.json"):
            if candidate.is_file():
                return candidate
    names = ", ".join(model_name(m) for m in bundled_models() + optional_models()) or "none"
    raise ModelError(f"{spec}: no such bundled model (bundled: {names})")


def optional_models() -> list[Path]:
    """Bundled models that are not on by default (``onnx_models/optional/``), sorted by
    name: they run when named with ``--model``."""
    return _models_in(bundled_dir() / OPTIONAL_DIR)


class ScorerClass(Protocol):
    """``zeekml.scorers`` entry points (the entry point name is the card ``kind``)."""

    def __call__(self, card: ModelCard, options: ScorerOptions) -> Scorer: ...


def discover() -> list[entrypoints.PluginInfo]:
    """Every scorer plugin and built-in model kind (nothing is imported)."""
    return entrypoints.discover("scorers", GROUP, BUILTIN_KINDS, __version__)


def _scorer_class(kind: str) -> Any:
    target = BUILTIN_KINDS.get(kind)
    if target is None:
        info = entrypoints.find(discover(), kind)
        if info is not None:
            return entrypoints.load(info)
        raise ModelError(f"no scorer for model kind {kind!r} (built-in: {', '.join(BUILTIN_KINDS)})")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_scorer(spec: str, options: ScorerOptions | None = None) -> Scorer:
    """Resolve ``spec``, validate its card, and build the scorer for its kind."""
    card: ModelCard = load_card(resolve_model(spec))
    cls = _scorer_class(card.kind)
    if card.onnx_path is None and not getattr(cls, "graphless", False):
        raise ModelError(f"{card.path}: a {card.kind!r} model needs its ONNX graph: give the "
                         ".onnx file beside its card")
    return cls(card, options or ScorerOptions())


def default_scorers(options: ScorerOptions | None = None) -> list[Scorer]:
    """One scorer per bundled model (the default of ``zeekml score`` and ``tail``)."""
    return load_scorers([], options)


def side_threads(threads: int, n_scorers: int) -> int:
    """Threads (graph calls at once) of a scorer that runs beside the first one.

    The pipeline runs the first scorer in the calling thread and the others each in a
    thread of their own (``zeekml.runtime.pipeline``); the first is the longer path, and a
    side scorer with as many threads as it takes a core from it: on the 1M-flow benchmark
    (2 cores, both bundled models) the side model with 1 thread instead of 2 gave 92.5-95.1k
    vs 86.8-93.7k flows/s in five alternating pairs, the same verdicts.
    """
    return max(1, threads // max(1, n_scorers))


def load_scorers(specs: Sequence[str], options: ScorerOptions | None = None) -> list[Scorer]:
    """The scorers of a run, in order: ``specs`` (names or paths), or every bundled model
    when it is empty. The first gets ``options.threads``; the others, which run beside
    it, :func:`side_threads`."""
    options = options or ScorerOptions()
    if not specs:
        models = bundled_models()
        if not models:
            raise ModelError(f"no bundled models found in {bundled_dir()}")
        specs = [str(m) for m in models]
    paths = [str(resolve_model(spec)) for spec in specs]
    # a card-only model (the scan detector) runs no graph: it takes no share of the threads
    graphs = sum(not is_card_path(p) for p in paths)
    side = replace(options, threads=side_threads(options.threads, max(graphs, 1)))
    return [load_scorer(p, options if i == 0 else side) for i, p in enumerate(paths)]
