"""Flow -> word for the flow language model: discretized characteristics, learned from data.

The language model reads a conversation as a sentence; each flow is one *word* made of
these components (``-`` is "missing", always its own code, never zero):

=========  ==================================================================  =========
component  values                                                              learned
=========  ==================================================================  =========
``dir``    locality: ``out`` local->remote, ``in`` remote->local, ``int``      no
           local<->local, ``ext`` remote<->remote, ``mcast`` to a multicast
           or broadcast address, ``?`` an address is missing. Local means
           Zeek's ``local_orig``/``local_resp`` or a private/loopback/
           link-local address, so it works without Zeek's ``Site::local_nets``
``proto``  transport protocol: frequent values, else ``other``                 values
``app``    application family of the responder (``web``, ``dns``, ``infra``,   no
           ``ssh`` ... or the port's IANA range): a fixed table, see
           :mod:`zeekml.features.app_family`
``state``  Zeek ``conn_state``: frequent values, else ``other``                values
``ob``     originator payload bytes: ``0``, then quantile buckets of           edges
           positive values
``rb``     responder payload bytes: same                                       edges
``dur``    ``duration``: quantile buckets                                      edges
``gap``    seconds since the previous flow of the same conversation: ``first``  edges
           (none within the idle timeout), then quantile buckets
=========  ==================================================================  =========

Words must mean the same thing whatever wrote the log, or a model trained on Zeek
flags every NetFlow record for being NetFlow: payload bytes missing from a record
that has IP bytes and packets (nfdump, a one-packet Zeek flow) are estimated as IP
bytes minus a typical header per packet (:func:`payload_bytes`), and a missing
duration of a flow with known packets is 0 (Zeek and nfdump leave it unset for a
single packet). A one-way NetFlow record the pairing stage found no reverse record for
has responder bytes 0, as Zeek writes an unanswered connection (:func:`responder_bytes`);
responder counters stay missing only where the source says nothing at all.

Every learned value (category lists, bucket edges, the vocabulary) is fitted on the
training data and travels in the model card (:meth:`TokenizerSpec.to_json`); nothing
here is a constant of the model. The vocabulary keeps the words seen at least
``min_count`` times in training; every other word maps to ``<unk>`` (id 1), and id 0 is
``<pad>`` (no flow at that window position). Tokenization is total (any row, with any
field missing, gets a word) and deterministic (a pure function of the row, the
previous row's ``ts`` and the spec), and vectorized: a word is a mixed-radix integer
of its component codes, looked up in the vocabulary with one hash-index call.

Why these components: they are what an analyst reads off a conn.log line (who
started it, what kind of service, how it ended, how big, how long, how soon after
the last one) and they carry no address identity, so a model can move between
networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from zeekml.errors import ModelError
from zeekml.features.app_family import FAMILIES, family_codes
from zeekml.records.addresses import MULTICAST_PREFIXES
from zeekml.records.distinct import per_distinct
from zeekml.records.schema import one_way_records

SPEC_VERSION = 2
PAD = 0
UNK = 1
N_SPECIAL = 2

DIR_LABELS: tuple[str, ...] = ("?", "out", "in", "int", "ext", "mcast")

#: component name -> (kind, canonical column); kinds: dir, category, app, bucket, gap
COMPONENTS: dict[str, tuple[str, str]] = {
    "dir": ("dir", ""),
    "proto": ("category", "proto"),
    "app": ("app", ""),
    "state": ("category", "conn_state"),
    "ob": ("bucket", "orig_bytes"),
    "rb": ("bucket", "resp_bytes"),
    "dur": ("bucket", "duration"),
    "gap": ("gap", ""),
}
FLOW_COMPONENTS: tuple[str, ...] = tuple(c for c in COMPONENTS if c != "gap")

MAX_VALUES = 256  # cap on a learned category list (hostile cards stay small)
MAX_EDGES = 64
MAX_VOCAB = 1_000_000


@dataclass(frozen=True)
class Component:
    """One learned component: category ``values`` or bucket ``edges``."""

    name: str
    values: tuple[Any, ...] = ()
    edges: tuple[float, ...] = ()

    @property
    def kind(self) -> str:
        return COMPONENTS[self.name][0]

    @property
    def labels(self) -> tuple[str, ...]:
        """Text of each code, in code order (code = index)."""
        kind = self.kind
        if kind == "dir":
            return DIR_LABELS
        if kind == "category":
            return ("-", "other", *(str(v) for v in self.values))
        if kind == "app":
            return FAMILIES
        if kind == "bucket":
            zero = ("0",) if self.name in ("ob", "rb") else ()
            return ("-", *zero, *_bucket_labels(self.edges))
        return ("first", *_bucket_labels(self.edges, unit="s"))  # gap

    @property
    def size(self) -> int:
        return len(self.labels)


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _bucket_labels(edges: tuple[float, ...], unit: str = "") -> tuple[str, ...]:
    if not edges:
        return ("*",)
    out = [f"<={_fmt(edges[0])}{unit}"]
    out += [f"<={_fmt(e)}{unit}" for e in edges[1:]]
    out.append(f">{_fmt(edges[-1])}{unit}")
    return tuple(out)


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to turn flows into word ids: components and vocabulary.

    ``vocab`` holds the mixed-radix key of every known word (id = index + 2).
    """

    components: tuple[Component, ...]
    vocab: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.components)
        if names != tuple(COMPONENTS):
            raise ModelError(f"tokenizer components must be {list(COMPONENTS)}, got {list(names)}")

    @property
    def radices(self) -> np.ndarray:
        return np.array([c.size for c in self.components], dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + len(self.vocab)

    def to_json(self) -> dict[str, Any]:
        """The card's ``tokenizer`` object: components, and each word as its codes."""
        comps = []
        for c in self.components:
            d: dict[str, Any] = {"name": c.name, "kind": c.kind}
            if c.kind == "category":
                d["values"] = list(c.values)
            if c.kind in ("bucket", "gap"):
                d["edges"] = [float(e) for e in c.edges]
            d["labels"] = list(c.labels)
            comps.append(d)
        return {
            "version": SPEC_VERSION,
            "components": comps,
            "special": ["<pad>", "<unk>"],
            "words": decode_keys(self.vocab, self.radices).tolist(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> TokenizerSpec:
        """Validate a card's ``tokenizer`` object (untrusted) and build the spec."""
        if not isinstance(obj, dict) or obj.get("version") != SPEC_VERSION:
            raise ModelError("tokenizer spec is missing or of an unsupported version")
        raw = obj.get("components")
        if not isinstance(raw, list) or len(raw) != len(COMPONENTS):
            raise ModelError(f"tokenizer spec must list the components {list(COMPONENTS)}")
        comps = []
        for d, name in zip(raw, COMPONENTS, strict=True):
            if not isinstance(d, dict) or d.get("name") != name:
                raise ModelError(f"tokenizer component {name!r} is missing or out of order")
            kind = COMPONENTS[name][0]
            values: tuple[Any, ...] = ()
            edges: tuple[float, ...] = ()
            if kind == "app" and d.get("labels") != list(FAMILIES):
                raise ModelError(
                    f"tokenizer component {name!r} was made with another family table"
                )
            if kind == "category":
                v = d.get("values")
                if (
                    not isinstance(v, list)
                    or len(v) > MAX_VALUES
                    or not all(isinstance(x, str) for x in v)
                    or len(set(v)) != len(v)
                ):
                    raise ModelError(f"tokenizer component {name!r} has invalid values")
                values = tuple(v)
            if kind in ("bucket", "gap"):
                e = d.get("edges")
                if (
                    not isinstance(e, list)
                    or len(e) > MAX_EDGES
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in e)
                ):
                    raise ModelError(f"tokenizer component {name!r} has invalid edges")
                arr = np.asarray(e, dtype=np.float64)
                if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
                    raise ModelError(f"tokenizer component {name!r} edges must increase")
                edges = tuple(float(x) for x in arr)
            comps.append(Component(name, values, edges))
        spec = cls(tuple(comps))
        words = obj.get("words")
        if not isinstance(words, list) or len(words) > MAX_VOCAB:
            raise ModelError("tokenizer spec has no valid 'words' list")
        codes = np.asarray(words, dtype=object)
        try:
            codes = np.asarray(words, dtype=np.int64).reshape(len(words), len(COMPONENTS))
        except (TypeError, ValueError) as exc:
            raise ModelError("tokenizer words must be lists of one code per component") from exc
        radices = spec.radices
        if len(codes) and ((codes < 0).any() or (codes >= radices[None, :]).any()):
            raise ModelError("tokenizer word codes are out of range")
        keys = encode_codes(codes, radices)
        if len(np.unique(keys)) != len(keys):
            raise ModelError("tokenizer vocabulary has duplicate words")
        return cls(tuple(comps), keys)


# ------------------------------------------------------------------ mixed radix
def encode_codes(codes: np.ndarray, radices: np.ndarray) -> np.ndarray:
    """``[N, C]`` component codes -> int64 keys (first component most significant)."""
    key = np.zeros(codes.shape[0], dtype=np.int64)
    for j in range(codes.shape[1]):
        key = key * radices[j] + codes[:, j]
    return key


def decode_keys(keys: np.ndarray, radices: np.ndarray) -> np.ndarray:
    out = np.zeros((len(keys), len(radices)), dtype=np.int64)
    k = np.asarray(keys, dtype=np.int64).copy()
    for j in range(len(radices) - 1, -1, -1):
        out[:, j] = k % radices[j]
        k //= radices[j]
    return out


# ------------------------------------------------------------------ per-flow codes
_MCAST = MULTICAST_PREFIXES  # the words' mcast: a /24's .255 is not one (a trained vocabulary)


def _ipv6(addr: pd.Series) -> np.ndarray:
    return per_distinct(addr, lambda s: s.str.contains(":", regex=False).to_numpy(dtype=bool),
                        False).astype(bool)


def direction_codes(flows: pd.DataFrame) -> np.ndarray:
    """Locality of originator and responder -> a :data:`DIR_LABELS` code.

    An IPv6 flow between two global addresses that nobody marked local reads as outbound,
    not external: Zeek's ``Site::local_nets`` is commonly set for the private IPv4 ranges
    only (and empty by default), so a dual-stack network's own global IPv6 addresses are
    unmarked, and a sensor mostly sees its own hosts start flows. Read as ``ext`` (a word
    the corpus holds 176 times in 263,000 flows), a web proxy's IPv6 pings gave the flow
    LM 245 of its 254 flags and all 9 notices in two hours of the RITA proxy capture.
    A flow from a group (multicast or broadcast) address is ``mcast`` too.
    """
    from zeekml.records.addresses import is_private

    lo = flows["local_orig"].fillna(False).to_numpy(dtype=bool) | is_private(flows["orig_h"])
    lr = flows["local_resp"].fillna(False).to_numpy(dtype=bool) | is_private(flows["resp_h"])
    missing = (flows["orig_h"].isna() | flows["resp_h"].isna()).to_numpy(dtype=bool)
    def group(addr: pd.Series) -> np.ndarray:
        return per_distinct(addr, lambda s: s.str.lower().str.startswith(_MCAST)
                            .to_numpy(dtype=bool), False).astype(bool)

    # a group address never starts a flow: Zeek turns one around when it saw the answer
    # first (a DHCP server's broadcast reply logged from 255.255.255.255:68 to the server)
    mcast = group(flows["resp_h"]) | group(flows["orig_h"])
    code = np.select(
        [missing, mcast, lo & lr, lo & ~lr, ~lo & lr],
        [0, 5, 3, 1, 2],
        default=4,
    )
    ext = code == 4
    if ext.any():
        code[ext & _ipv6(flows["orig_h"]) & _ipv6(flows["resp_h"])] = 1
    return code.astype(np.int64)


def _category_codes(col: pd.Series, values: tuple[Any, ...]) -> np.ndarray:
    """0 missing, 1 a value not in ``values``, else 2 + its index (case-insensitive)."""
    known = pd.Index(list(values), dtype="str")

    def codes(s: pd.Series) -> np.ndarray:
        idx = known.get_indexer(s.str.lower())
        return np.where(idx >= 0, idx + 2, 1).astype(np.int64)

    return per_distinct(col, codes, 0).astype(np.int64)


def _numeric(col: pd.Series) -> np.ndarray:
    return col.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


#: bytes of IP + transport header per packet assumed when estimating payload from IP
#: bytes: TCP with typical options (a SYN with MSS/SACK/timestamps is 60 bytes, so it
#: estimates to 0), UDP and ICMP 8-byte headers; IPv6 adds 20.
HEADER_BYTES = {"tcp": 60, "udp": 28, "icmp": 28}
OTHER_HEADER_BYTES = 20


def payload_bytes(flows: pd.DataFrame, side: str) -> np.ndarray:
    """``orig_bytes``/``resp_bytes``, or where missing an estimate from IP bytes and packets.

    ``side`` is ``"orig"`` or ``"resp"``. The estimate ``max(0, ip_bytes - packets *
    header)`` makes NetFlow records (no payload counter) and one-packet Zeek flows
    (payload unset) read like the flows the model learned from; it is missing only
    when the IP counters are missing too (a one-way NetFlow record's responder).
    """
    payload = _numeric(flows[f"{side}_bytes"])
    missing = ~np.isfinite(payload)
    if not missing.any():
        return payload
    ip = _numeric(flows[f"{side}_ip_bytes"])
    pkts = _numeric(flows[f"{side}_pkts"])
    hdr = per_distinct(flows["proto"], lambda s: s.str.lower().map(HEADER_BYTES).astype("float64")
                       .fillna(OTHER_HEADER_BYTES).to_numpy(), float(OTHER_HEADER_BYTES))
    v6 = per_distinct(flows["orig_h"], lambda s: s.str.contains(":", regex=False)
                      .to_numpy(dtype=bool), False).astype(bool)
    hdr = hdr.astype(np.float64) + 20.0 * v6
    est = np.maximum(ip - pkts * hdr, 0.0)
    return np.where(missing, est, payload)


def duration_values(flows: pd.DataFrame) -> np.ndarray:
    """``duration``; 0 where it is missing but the flow's packets are known (one packet)."""
    dur = _numeric(flows["duration"])
    pkts = _numeric(flows["orig_pkts"])
    return np.where(~np.isfinite(dur) & np.isfinite(pkts), 0.0, dur)


def bucket_codes(values: np.ndarray, edges: tuple[float, ...], *, zero_code: bool) -> np.ndarray:
    """Missing -> 0; exactly 0 -> 1 when ``zero_code``; else 1 + bucket (+1)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    b = np.searchsorted(np.asarray(edges, dtype=np.float64), np.where(ok, v, 0.0), side="left")
    if zero_code:
        code = np.where(v <= 0, 1, 2 + b)
    else:
        code = 1 + b
    return np.where(ok, code, 0).astype(np.int64)


def gap_codes(gap: np.ndarray, has_prev: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """``first`` (0) without a previous flow, else 1 + bucket of ``max(gap, 0)``."""
    g = np.asarray(gap, dtype=np.float64)
    g = np.where(np.isfinite(g), np.maximum(g, 0.0), 0.0)
    b = np.searchsorted(np.asarray(edges, dtype=np.float64), g, side="left")
    return np.where(has_prev, 1 + b, 0).astype(np.int64)


def component_codes(components: tuple[Component, ...], flows: pd.DataFrame) -> np.ndarray:
    """``[N, len(FLOW_COMPONENTS)]`` codes of every per-flow component (no ``gap``)."""
    out = np.zeros((len(flows), len(FLOW_COMPONENTS)), dtype=np.int64)
    by_name = {c.name: c for c in components}
    for j, name in enumerate(FLOW_COMPONENTS):
        comp = by_name[name]
        kind, col = COMPONENTS[name]
        if kind == "dir":
            out[:, j] = direction_codes(flows)
        elif kind == "category":
            out[:, j] = _category_codes(flows[col], comp.values)
        elif kind == "app":
            out[:, j] = family_codes(flows)
        else:
            out[:, j] = bucket_codes(bucket_values(flows, name), comp.edges, zero_code=name in ("ob", "rb"))
    return out


def responder_bytes(flows: pd.DataFrame) -> np.ndarray:
    """Responder payload bytes (:func:`payload_bytes`), and 0 for a one-way NetFlow record
    no reverse record was found for (``paired`` False): nothing was seen from the
    responder, which is what Zeek writes (``resp_bytes`` 0) for the same connection.
    Left missing, such a record's word was one no Zeek-trained model had seen, so every
    unanswered NetFlow flow was surprising for its format (CTU-Normal's benign flows read
    as NetFlow: 5.0% flagged before, 1.0% after, tools/netflow_view_report.py)."""
    v = payload_bytes(flows, "resp")
    return np.where(one_way_records(flows) & ~np.isfinite(v), 0.0, v)


def bucket_values(flows: pd.DataFrame, name: str) -> np.ndarray:
    """The numbers a bucket component discretizes (see :func:`payload_bytes`)."""
    if name == "ob":
        return payload_bytes(flows, "orig")
    if name == "rb":
        return responder_bytes(flows)
    return duration_values(flows)


# ------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class FitOptions:
    """How finely to discretize; the defaults were chosen by held-out evaluation."""

    max_categories: int = 12
    min_share: float = 0.002  # a category value needs this share of training flows
    byte_bins: int = 6
    duration_bins: int = 4
    gap_bins: int = 4
    min_count: int = 2  # words seen fewer times are <unk>


def _learn_values(s: pd.Series, opts: FitOptions) -> tuple[Any, ...]:
    vals = s.dropna().astype("str").str.lower()
    counts = vals.value_counts()
    limit = opts.max_categories
    need = max(1.0, opts.min_share * len(s))
    counts = counts[counts >= need]
    # sort by count desc, then value, so ties are deterministic
    frame = pd.DataFrame({"v": counts.index, "n": counts.to_numpy()})
    frame = frame.sort_values(["n", "v"], ascending=[False, True]).head(limit)
    return tuple(str(v) for v in frame["v"])


def quantile_edges(values: np.ndarray, bins: int) -> tuple[float, ...]:
    """Interior edges of ``bins`` equal-count buckets of the finite values, deduplicated."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if bins <= 1 or len(v) == 0:
        return ()
    q = np.quantile(v, np.arange(1, bins) / bins, method="lower")
    edges = np.unique(np.round(q.astype(np.float64), 6))
    return tuple(float(e) for e in edges)


def fit_components(flows: pd.DataFrame, gaps: np.ndarray, opts: FitOptions) -> tuple[Component, ...]:
    """Learn category lists and bucket edges from training flows (and their gaps)."""
    comps: list[Component] = []
    for name, (kind, col) in COMPONENTS.items():
        if kind in ("dir", "app"):
            comps.append(Component(name))
        elif kind == "category":
            comps.append(Component(name, values=_learn_values(flows[col], opts)))
        elif kind == "bucket":
            v = bucket_values(flows, name)
            if name in ("ob", "rb"):
                v = v[v > 0]
                bins = opts.byte_bins
            else:
                bins = opts.duration_bins
            comps.append(Component(name, edges=quantile_edges(v, bins)))
        else:
            g = np.asarray(gaps, dtype=np.float64)
            comps.append(Component(name, edges=quantile_edges(np.maximum(g, 0.0), opts.gap_bins)))
    return tuple(comps)


def build_vocab(keys: np.ndarray, min_count: int) -> np.ndarray:
    """Keys seen at least ``min_count`` times, most frequent first (ties by key)."""
    uniq, counts = np.unique(np.asarray(keys, dtype=np.int64), return_counts=True)
    keep = counts >= max(1, min_count)
    uniq, counts = uniq[keep], counts[keep]
    order = np.lexsort((uniq, -counts))
    return uniq[order]


# ------------------------------------------------------------------ the tokenizer
class Tokenizer:
    """Vectorized flow -> word id mapping for one :class:`TokenizerSpec`."""

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec
        self.radices = spec.radices
        self.gap_radix = int(self.radices[-1])
        self._index = pd.Index(spec.vocab)
        self._labels = [c.labels for c in spec.components]

    def flow_codes(self, flows: pd.DataFrame) -> np.ndarray:
        """int64 key of each flow's per-flow components (everything but ``gap``)."""
        return encode_codes(component_codes(self.spec.components, flows), self.radices[:-1])

    def keys(self, flow_code: np.ndarray, gap_code: np.ndarray) -> np.ndarray:
        return np.asarray(flow_code, dtype=np.int64) * self.gap_radix + gap_code

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """Word keys (any shape) -> vocabulary ids, ``<unk>`` for unknown words."""
        k = np.asarray(keys, dtype=np.int64)
        idx = self._index.get_indexer(k.ravel()).reshape(k.shape)
        return np.where(idx >= 0, idx + N_SPECIAL, UNK).astype(np.int64)

    def window_ids(self, codes: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Conversation windows ``[B, W]`` (oldest first) -> word ids ``[B, W - 1]``.

        Position ``i >= 1`` gets its gap from position ``i - 1``; the oldest position
        only serves as that predecessor. Invalid positions are ``<pad>``.
        """
        return self.window_words(codes, ts, valid)[0]

    def window_words(
        self, codes: np.ndarray, ts: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`window_ids`, plus every word's component codes ``[B, W - 1, C]``.

        The components let the model read an ``<unk>`` word's parts, and score it as
        ``P(<unk>) x P(word | <unk>)``; invalid positions have all-zero components.
        """
        return self.key_words(self.window_keys(codes, ts, valid))

    def window_keys(self, codes: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Conversation windows ``[B, W]`` -> word keys ``[B, W - 1]``, -1 at invalid
        positions: a window's words and components are a function of these keys alone,
        so identical key rows can be found (and scored) once."""
        gap = ts[:, 1:] - ts[:, :-1]
        gcode = gap_codes(gap, valid[:, :-1], self.spec.components[-1].edges)
        return np.where(valid[:, 1:], self.keys(codes[:, 1:], gcode), -1)

    def key_words(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Word keys ``[B, T]`` (-1 = no word) -> (ids, component codes ``[B, T, C]``)."""
        ok = keys >= 0
        ids = np.where(ok, self.ids(keys), PAD)
        parts = decode_keys(np.where(ok, keys, 0).ravel(), self.radices).reshape(
            *keys.shape, len(self.radices))
        parts *= ok[..., None]
        return ids, parts

    def codes_text(self, codes: np.ndarray) -> np.ndarray:
        """``[N, C]`` component codes -> readable words (object array ``[N]``).

        Codes out of range (a hostile or mismatched graph) read as ``?``.
        """
        codes = np.asarray(codes, dtype=np.int64)
        n = len(codes)
        out = np.empty(n, dtype=object)
        if n == 0:
            return out
        codes = np.where((codes >= 0) & (codes < self.radices), codes, self.radices)
        keys = encode_codes(codes, self.radices + 1)  # one extra code per component: "?"
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        labels = [(*lab, "?") for lab in self._labels]
        texts = np.array(
            [" ".join(labels[j][c] for j, c in enumerate(row)) for row in codes[first].tolist()],
            dtype=object,
        )
        out[:] = texts[inv.ravel()]
        return out

    def text(self, ids: np.ndarray) -> np.ndarray:
        """Human-readable word of each id (object array), e.g. ``out tcp ssl 443 SF ...``."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.ravel()
        words = np.empty(len(flat), dtype=object)
        words[flat == PAD] = "<pad>"
        words[(flat == UNK) | (flat < 0) | (flat >= self.spec.vocab_size)] = "<unk>"
        real = (flat >= N_SPECIAL) & (flat < self.spec.vocab_size)
        if real.any():
            uniq, inv = np.unique(flat[real], return_inverse=True)
            codes = decode_keys(self.spec.vocab[uniq - N_SPECIAL], self.radices)
            texts = np.array(
                [" ".join(self._labels[j][c] for j, c in enumerate(row)) for row in codes.tolist()],
                dtype=object,
            )
            words[real] = texts[inv]
        return words.reshape(ids.shape)
