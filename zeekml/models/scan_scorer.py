"""Runtime scorer of the scan detector: failed attempts to many distinct targets.

Not a neural model: the count Zeek's ``scan.zeek`` keeps, on the same flow table and in
the same notice pipeline as the two neural models, because those measured weak exactly
there (leave-one-capture-out port-scan F1 0.03 for the AMF-LSTM; the bundled sample's
udp/16464 fan-out found by neither, docs/models.md). Its card (``scan.card.json``, no
graph) holds the window and the thresholds; :mod:`zeekml.windows.scan` does the counting.

Per flow (see :class:`~zeekml.models.base.ScoreBatch`):

``score``      distinct targets (responder address and service) among the originator's
               last 32 failed TCP/UDP flows and unanswered pings within 300 s (the card's
               window; a ping within 10 s only: a ping sweep, not a proxy's RTT pinger),
               the flow included; 0 for a flow that was answered (or another ICMP flow)
``cls``        ``port_scan`` when more than half of those targets (and at least two)
               are services of the flow's own responder (one host probed on many
               ports), else
               ``address_scan`` (many hosts on one or a few services: a horizontal
               scan, a worm, a bot looking for peers)
``threshold``  the card's threshold of that class
``context``    uids of up to 5 earlier failed flows counted, newest first

With a ``repeated_attempts`` threshold in the card (the bundled card has one), a failed
TCP flow that is not inbound is also scored by how many of the same window's failed flows
went to its own target (address and service), itself included: a host trying one
unreachable server again and again, as bots do whose C&C is gone (the shared RemcosRAT and
njRAT captures: 718 rejected and 237 unanswered connections to one address and port). Such
a row takes the class ``repeated_attempts`` and that count as its score when the count is
at least 2 and nearer its threshold (in proportion) than the distinct targets are to theirs. UDP is left
out (syslog, NetFlow export, SNMP traps and multicast announcements are one-way by
design), and so are inbound flows (outside hosts retrying a local server are the scan
classes' and the neural models' business). Its notices list the earlier failed flows to
the same target.

The card is untrusted: kind, window key, depth, horizon and both thresholds are checked
before anything is scored.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from zeekml.models.base import Deferred, ScoreBatch
from zeekml.models.card import ModelCard
from zeekml.models.context import uid_lists
from zeekml.models.count_scorer import CountScorer, validate_count_card
from zeekml.models.registry import ScorerOptions
from zeekml.records.addresses import inbound_of
from zeekml.windows.scan import ScanCounts, ScanHistory, scan_flows, tcp_flows

KIND = "scan"
CLASSES = ("address_scan", "port_scan")
#: the optional class of one target tried again and again (scored when the card has it)
REPEATED = "repeated_attempts"
_CLASS_NAMES = np.array((*CLASSES, REPEATED), dtype=object)
MAX_DEPTH = 255
#: originators with failed flows kept: an eighth of ``--max-hosts``, least recently seen
#: evicted first. They are the hosts with an unanswered attempt in the last 5 minutes; a
#: scanner is seen every few seconds and stays, and 1M one-SYN hosts stay in 1.5 GB
KEY_SHARE = 8


def validate_card(card: ModelCard) -> tuple[int, float, dict[str, float]]:
    """Check the scan card's fields; return (depth, horizon, class -> threshold), the
    optional :data:`REPEATED` class only when the card names it (thresholds >= 1, not capped:
    a threshold above the window never fires, and says so in a card)."""
    return validate_count_card(card, KIND, ScanHistory.key, MAX_DEPTH, CLASSES,
                               optional=(REPEATED,), capped=False)


def _context(counts: ScanCounts, repeated: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Context uids of ``rows``: the earlier failed flows counted, those at the same
    target for a :data:`REPEATED` row."""
    out = uid_lists(*counts.context(rows))
    again = np.flatnonzero(repeated[rows])
    if len(again):
        out[again] = uid_lists(*counts.context(rows[again], repeated=True))
    return out


class ScanScorer(CountScorer[ScanHistory]):
    """Scorer for a scan card (see the module docstring for the outputs)."""

    #: its notices are about the scanner (:attr:`ScoreBatch.about_originator`): a sweep of
    #: a /24 from outside is one notice, not one per local host probed (nmap -sn from the
    #: lab: 252 notices before)
    about_originator = True

    def __init__(self, card: ModelCard, options: ScorerOptions | None = None) -> None:
        depth, horizon, self.thresholds = validate_card(card)
        super().__init__(card, options, ScanHistory, depth, horizon, KEY_SHARE)
        #: what --threshold may name, and the range of its scores (distinct targets, or
        #: attempts at one target)
        self.notice_classes = tuple(self.thresholds)

    def score(self, flows: pd.DataFrame) -> ScoreBatch:
        c = self.store.push(flows)
        # most of the targets are services of one host (a single target is no port scan)
        port = (c.on_peer >= 2) & (2 * c.on_peer > c.targets)
        which = port.astype(np.int8)
        score = c.targets.astype(np.float64)
        threshold = np.where(port, self.thresholds[CLASSES[1]], self.thresholds[CLASSES[0]])
        repeated = np.zeros(len(flows), dtype=bool)
        t_rep = self.thresholds.get(REPEATED)
        if t_rep is not None:
            # the count nearer its threshold, in proportion, names the class; an answered
            # flow (both counts 0) and a first failure at a target stay scan rows
            rows = np.flatnonzero((c.repeats >= 2) & (c.repeats * threshold > c.targets * t_rep))
            if len(rows):
                rows = rows[tcp_flows(flows)[rows]]
                rows = rows[~inbound_of(flows, rows)]
                repeated[rows] = True
                which[rows] = 2
                score[rows] = c.repeats[rows]
                threshold[rows] = t_rep
        return ScoreBatch(
            model=self.name,
            score=score,
            cls=_CLASS_NAMES[which],  # a take: no [B] string array first
            threshold=threshold,
            extra={"context": Deferred(len(flows), partial(_context, c, repeated))},
            about_originator=self.about_originator,
        )

    def score_alone(self, flows: pd.DataFrame) -> ScoreBatch:
        """Each row scored as if its originator had no other flow (rows of a random
        sample: their neighbours in the file are not their host's flows): a failed flow (or
        unanswered ping) is one target, never a scan. The store is not touched."""
        b = len(flows)
        return ScoreBatch(
            model=self.name,
            score=scan_flows(flows)[0].astype(np.float64),
            cls=np.full(b, CLASSES[0], dtype=object),
            threshold=np.full(b, self.thresholds[CLASSES[0]]),
            about_originator=self.about_originator,
        )
