"""Fan-out of a host on one service: how many of its recent flows went to that service,
to how many distinct peers, and how many went unanswered.

The AMF-LSTM's window holds a host's last ``n = 10`` flows, which says "ten different
peers on one port" but cannot tell ten from two hundred. A scan, a worm or a
peer-to-peer botnet (the bundled sample's udp/16464 host: 207 flows to 202 addresses,
140 unanswered) differs from a busy client in exactly that scale. These three features
look further back, over the same window key's last :data:`FANOUT_DEPTH` flows within
:data:`FANOUT_HORIZON` seconds, and are computed for each flow when it is current, then
stored with its other features, so every window position carries the fan-out its flow
had.

``log_fanout_flows``   ``log1p`` of the flows among them (the current one included) to
                       the current flow's service (protocol and responder port);
``log_fanout_peers``   ``log1p`` of the distinct peers among those flows;
``fanout_unanswered``  the share of those flows that got no reply.

Only flows the key's host *started* count, and only they get these values; a flow it
received gets the values of a flow seen alone (one flow, one peer). Fan-in is not
fan-out: a busy internet-facing server's clients, like a DDoS victim's sources, are many
peers on one service, and measured with both directions counted (leave-one-capture-out,
two seeds) the RITA server archive's notices per 10,000 flows rose from 51 to 166 and
from 1 to 1,082, called "ddos".

Only the last flows of the *same key* are looked at, so the features are exact under
any cut of the stream that keeps a key's flows together with their
:data:`FANOUT_DEPTH` predecessors (the Spark engine's chunks do: see
:meth:`~zeekml.windows.host_window.HostWindows.depth`). No address identity enters:
peers are compared by a 32-bit hash.
"""

from __future__ import annotations

import numpy as np

from zeekml.windows.history import FieldSpec, KeyedHistory

FANOUT_FEATURES: tuple[str, ...] = ("log_fanout_flows", "log_fanout_peers", "fanout_unanswered")
#: previous flows of the key looked at (the window is these and the current flow)
FANOUT_DEPTH = 31
#: seconds: flows further from the current one (by ``ts``) do not count
FANOUT_HORIZON = 600.0
#: the service stored for a flow the key's host did not start (no real service is this)
_RECEIVED = np.iinfo(np.int32).min

class FanoutHistory:
    """Per-key store of the last :data:`FANOUT_DEPTH` flows' (ts, peer, service, reply)."""

    def __init__(self, *, max_keys: int, depth: int = FANOUT_DEPTH,
                 horizon: float = FANOUT_HORIZON) -> None:
        self.history = KeyedHistory(
            depth,
            {
                # peer hash, service (protocol and responder port), no reply
                "meta": FieldSpec(np.dtype(np.int32), (3,)),
            },
            max_keys=max_keys,
            idle_timeout=horizon,  # a position further away in time is not valid
        )

    @property
    def depth(self) -> int:
        return self.history.depth

    def push(self, keys: np.ndarray, ts: np.ndarray, peer_hash: np.ndarray,
             service: np.ndarray, no_reply: np.ndarray, originated: np.ndarray,
             factorized: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Append a batch (rows in arrival order); return its ``[B, 3]`` float32 features
        in :data:`FANOUT_FEATURES` order. ``originated``: the key's host started the flow
        (only those flows count; the others get :func:`alone`'s values)."""
        b = len(keys)
        meta = np.empty((b, 3), dtype=np.int32)
        meta[:, 0] = peer_hash.view(np.int32)
        meta[:, 1] = np.where(originated, service, _RECEIVED)
        meta[:, 2] = no_reply
        seq = self.history.extend_seq(keys, {"ts": ts, "meta": meta}, factorized=factorized)
        out = np.zeros((b, len(FANOUT_FEATURES)), dtype=np.float32)
        if b == 0:
            return out
        m = seq.gather(seq.items["meta"])  # [B, n, 3]
        same = seq.valid & (m[:, :, 1] == m[:, -1:, 1])  # the current position always is
        flows = same.sum(axis=1)
        # positions of other services take the current flow's own peer, which is counted
        # anyway: the distinct values of the row are then exactly the distinct peers
        peers = np.where(same, m[:, :, 0], m[:, -1:, 0])
        peers.sort(axis=1)
        distinct = 1 + (peers[:, 1:] != peers[:, :-1]).sum(axis=1)
        unanswered = (same & (m[:, :, 2] != 0)).sum(axis=1)
        out[:, 0] = np.log1p(flows)
        out[:, 1] = np.log1p(distinct)
        out[:, 2] = unanswered / flows
        received = ~np.asarray(originated, dtype=bool)
        out[received] = alone(np.asarray(no_reply, dtype=bool)[received])
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.history.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.history.load_state_dict(state)


def alone(no_reply: np.ndarray) -> np.ndarray:
    """The features of flows seen without any history (one flow, one peer): for rows that
    are random samples, whose neighbours in the file are not their host's flows."""
    out = np.empty((len(no_reply), len(FANOUT_FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(1.0)
    out[:, 1] = np.log1p(1.0)
    out[:, 2] = np.asarray(no_reply, dtype=np.float32)
    return out
