"""Argus ``State`` and ``Label`` text -> Zeek ``conn_state``/``history`` and labels.

The tables these functions implement are in :mod:`zeekml.sources.binetflow`'s
docstring (the binetflow mapping). They work on the few *distinct* values of a batch
(Argus writes a handful of state texts per capture), never per row.
"""

from __future__ import annotations

import re

#: flow kinds, as the binetflow reader classifies ``Proto``
TCP, UDP, ICMP, OTHER = 0, 1, 2, 3
#: activity of a side: 0 no, 1 yes, UNKNOWN (no byte counts)
UNKNOWN = 2

#: TCP state words -> (conn_state, history); ``RST`` is decided by the reply (binetflow doc)
TCP_WORDS: dict[str, tuple[str, str | None]] = {
    "REQ": ("S0", "S"), "ACC": ("S1", "Sh"), "EST": ("S1", "ShA"), "CON": ("S1", "ShA"),
    "FIN": ("S2", "ShAF"), "CLO": ("SF", "ShAFf"),
}  # fmt: skip
#: UDP state words -> (originator sent, responder sent), used when bytes are unknown
UDP_WORDS: dict[str, tuple[int, int]] = {"CON": (1, 1), "INT": (1, 0), "REQ": (1, 0)}

_FLAGS_RE = re.compile(r"^([FSRPAUEC]*)_([FSRPAUEC]*)$")
_FLAG_BITS = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
_F, _S, _R, _P, _A = 1, 2, 4, 8, 16


def normalize_label(text: str | None) -> str | None:
    """The normalized label of a Stratosphere/CTU-13 ``Label`` text (binetflow docstring).

    ``Background`` first (a background flow may name a botnet host), then ``Botnet`` or
    ``Malware`` anywhere -> ``Malicious``, then ``Normal`` -> ``Benign``; anything else
    (empty, ``flow=TCP-Established-To-Microsoft-7``) is not a usable label: None.
    """
    if text is None:
        return None
    low = text.strip().lower()
    low = low.removeprefix("flow=")
    words = [w for w in re.split(r"[^a-z0-9]+", low) if w]
    if not words:
        return None
    first = words[1] if words[0] in ("from", "to") and len(words) > 1 else words[0]
    if first == "background":
        return "Background"
    if any(w in ("botnet", "malware", "malicious") for w in words):
        return "Malicious"
    if any(w in ("normal", "benign", "legitimate") for w in words):
        return "Benign"
    return None


def tcp_flag_state(o: int, r: int) -> str:
    """Zeek conn_state from the TCP flag unions of originator ``o`` and responder ``r``."""
    if not o & _S:
        if r & _S and r & _A and r & _R:
            return "RSTRH"
        if r & _S and r & _A and r & _F:
            return "SHR"
        return "OTH"
    if not r:
        return "RSTOS0" if o & _R else "SH" if o & _F else "S0"
    if not r & _S:
        return "REJ" if r & _R else "OTH"
    if o & _R:
        return "RSTO"
    if r & _R:
        return "RSTR"
    if o & _F and r & _F:
        return "SF"
    if o & _F:
        return "S2"
    if r & _F:
        return "S3"
    return "S1"


def tcp_flag_history(o: int, r: int) -> str | None:
    """Zeek-style history letters from the TCP flag unions (fixed order, see the doc)."""
    parts = [
        (o & _S, "S"), (r & _S and r & _A, "h"), (r & _S and not r & _A, "s"),
        (o & _A, "A"), (o & _P, "D"), (r & _A, "a"), (r & _P, "d"),
        (o & _F, "F"), (r & _F, "f"), (o & _R, "R"), (r & _R, "r"),
    ]  # fmt: skip
    out = "".join(letter for cond, letter in parts if cond)
    return out or None


def zeek_state(kind: int, flags: tuple[int, int] | None, word: str, orig: int, resp: int,
               short: bool) -> tuple[str | None, str | None]:
    """(conn_state, history) of one distinct combination (the tables of binetflow's doc).

    ``flags`` are (originator, responder) TCP flag bits when ``State`` holds flags,
    ``word`` the state word otherwise; ``orig``/``resp`` whether each side sent bytes
    (0, 1, or 2 = unknown); ``short`` whether the flow has at most 2 packets.
    """
    if kind == TCP:
        if flags is not None:
            return tcp_flag_state(*flags), tcp_flag_history(*flags)
        if word == "RST":
            if resp == 0:
                return "RSTOS0", "SR"
            if resp == 1:
                return ("REJ", "Sr") if short else ("RSTR", "ShAr")
            return "RSTO", "R"
        return TCP_WORDS.get(word, ("OTH", None))
    if kind == UDP:
        if orig == UNKNOWN or resp == UNKNOWN:
            orig, resp = UDP_WORDS.get(word, (UNKNOWN, UNKNOWN))
            if orig == UNKNOWN:
                return None, None
        history = ("D" if orig else "") + ("d" if resp else "")
        state = "SF" if orig and resp else "S0" if orig else "OTH"
        return state, history or None
    return "OTH", None


def state_parts(state: str) -> tuple[tuple[int, int] | None, str]:
    """A distinct ``State`` text -> (flag bits (src, dst) or None, upper-case word)."""
    s = state.strip().upper()
    m = _FLAGS_RE.match(s)
    if m is None:
        return None, s
    bits = [sum(_FLAG_BITS.get(c, 0) for c in set(part)) for part in m.groups()]
    return (bits[0], bits[1]), s
