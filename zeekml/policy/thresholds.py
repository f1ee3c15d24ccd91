"""Check ``--threshold`` and ``--config`` threshold keys against the models actually loaded.

Why: a threshold is matched against the class a model reports by plain string
equality, so ``PortScan=0.5``, ``port_scan=0.5``, ``amf:portscan=0.5`` or
``nosuchmodel:c2=0.5`` matched nothing and changed nothing, silently; ``c2=1.5`` (an
AMF score is a probability) and ``anomaly=-5`` (an LM score is an NLL >= 0) were
accepted although they can never mean what was intended.

Rules (applied once, before the run, by ``score`` and ``tail``):

* ``CLASS=V`` must name a class that at least one loaded model reports; it applies to
  each of them. ``MODEL:CLASS=V`` must name a loaded model and one of its classes.
* Names are matched **case-insensitively** when that is unambiguous (``PortScan`` ->
  ``portscan``, ``AMF_LSTM:C2`` -> ``amf_lstm:c2``); the key is rewritten to the exact
  name. Anything else (``port_scan``) is refused with the list of valid names.
* ``V`` must lie in the score range of every model the key applies to (AMF-LSTM
  ``[0, 1]``, flow LM ``[0, inf)``); ``inf`` is always accepted (never a notice).
* Models that do not declare their classes or range (plugins without
  ``notice_classes`` / ``score_range``, see :mod:`zeekml.models.base`) are not checked.

Every refusal is a :class:`~zeekml.errors.ConfigError` (exit 2) naming the key, where it
came from, and what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from zeekml.errors import ConfigError
from zeekml.models.base import declared_classes, declared_range


def _match(name: str, valid: Iterable[str]) -> str | None:
    """``name`` itself if valid, else the one valid name equal to it ignoring case."""
    valid = list(valid)
    if name in valid:
        return name
    folded = [v for v in valid if v.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def _fmt_range(lo: float, hi: float) -> str:
    def num(x: float) -> str:
        return "inf" if math.isinf(x) else f"{x:g}"

    return f"[{num(lo)}, {num(hi)}{']' if math.isfinite(hi) else ')'}"


def _valid_keys(classes: Mapping[str, tuple[str, ...] | None]) -> str:
    parts = [f"{m}: {', '.join(c)}" for m, c in classes.items() if c]
    return "; ".join(parts) or "none declared"


def check_thresholds(
    thresholds: Mapping[str, float],
    scorers: Sequence[object],
    origins: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Validate threshold overrides against ``scorers``; return them with exact names.

    ``origins`` maps a key to where it came from (``--threshold``, ``policy.json``) for
    the error message; keys without an origin are shown as ``threshold``.
    """
    names = [str(getattr(s, "name", "")) for s in scorers]
    classes = {n: declared_classes(s) for n, s in zip(names, scorers, strict=True)}
    ranges = {n: declared_range(s) for n, s in zip(names, scorers, strict=True)}
    undeclared = any(c is None for c in classes.values())
    out: dict[str, float] = {}
    for key, value in thresholds.items():
        where = (origins or {}).get(key, "threshold")
        model_part, sep, cls_part = key.rpartition(":")
        if sep:
            model = _match(model_part, names)
            if model is None:
                raise ConfigError(
                    f"{where} {key}={value:g}: no model named {model_part!r} is loaded "
                    f"(models: {', '.join(names)})"
                )
            own = classes[model]
            cls = cls_part if own is None else _match(cls_part, own)
            if cls is None:
                raise ConfigError(
                    f"{where} {key}={value:g}: model {model} has no class {cls_part!r} "
                    f"(its classes: {', '.join(own or ())})"
                )
            targets = [model]
            canonical = f"{model}:{cls}"
        else:
            every = [c for cs in classes.values() if cs for c in cs]
            found = _match(key, dict.fromkeys(every))
            if found is None and not undeclared:
                raise ConfigError(
                    f"{where} {key}={value:g}: no loaded model reports a class {key!r} "
                    f"(valid: {_valid_keys(classes)}; or MODEL:CLASS)"
                )
            canonical = found or key
            targets = [n for n in names if canonical in (classes[n] or ())]
        if value != math.inf:
            for model in targets:
                rng = ranges[model]
                if rng is not None and not rng[0] <= value <= rng[1]:
                    raise ConfigError(
                        f"{where} {key}={value:g}: outside the score range of {model} "
                        f"{_fmt_range(*rng)}"
                    )
        out[canonical] = value
    return out
