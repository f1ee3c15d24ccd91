"""``--state PATH``: everything a later run needs to continue exactly once, in one file.

One state file holds, written atomically *together*:

``inputs``   per input generation (:mod:`zeekml.sources.generation`), its JSON-able
             cursor (identity, byte offset, format and parser state, done), or for
             ``tail`` one entry per followed path holding its generations' cursors;
``scorers``  per model, its state arrays (per-host windows, conversations);
``policy``   the notice policy's arrays (open suppression windows);
``incidents`` the incident tracker's arrays (open incidents), when incidents are on;
``sinks``    per sink, its checkpoint (output file identity and size after fsync);
``stages``   per stage between the readers and the scorers, its state arrays (the
             NetFlow pairer's open records: :mod:`zeekml.sources.biflow`);
``meta``     JSON-able extras (models and their ONNX digests, run counter, times).

Format: an ``.npz`` (zip of ``.npy``) read with ``allow_pickle=False``; the JSON
document is stored as a uint8 array ``__meta__`` and names every other array, so
no key from a hostile model or host name ever becomes a file name in the zip. The
document carries ``format`` and ``version`` and is validated on load; anything
unexpected is a :class:`~zeekml.errors.StateError`, never a crash or a silent reset.

Atomicity: the new state is written to a temporary file in the same directory,
fsynced, renamed over ``PATH`` and the directory fsynced, so a crash leaves either
the old or the new state, never a mix. Since sinks are flushed (fsynced) *before*
their checkpoint goes into the state, the output never lags behind the state; a run
resuming from it truncates outputs back to their checkpoint (see
:mod:`zeekml.sinks.zeek_log`) and re-reads the inputs from their offsets.

Locking: :meth:`StateStore.lock` takes an exclusive ``fcntl.flock`` on ``PATH.lock``;
a second run on the same state exits with a clear message instead of interleaving.
The lock is released by the kernel if the process dies, so a crash never leaves a
stale lock behind.

Generic on purpose: ``zeekml tail`` uses the same store for its crash-safe
checkpoints, with its own cursor dicts under ``inputs``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeekml.errors import StateError

log = logging.getLogger(__name__)

STATE_FORMAT = "zeekml-state"
STATE_VERSION = 1
META_KEY = "__meta__"
#: a state's JSON document may not exceed this (arrays are bounded by their owners)
MAX_META_BYTES = 256 << 20


@dataclass
class RunState:
    """The parts of a run's state (all JSON-able or numpy arrays)."""

    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    scorers: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    policy: dict[str, np.ndarray] = field(default_factory=dict)
    incidents: dict[str, np.ndarray] = field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _check_array(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "OV":
        raise StateError(f"state array {name!r} has a non-plain dtype {a.dtype}")
    return a


class StateStore:
    """Load, save and lock one state file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[StateStore]:
        """Hold the exclusive lock for the duration of the block (or raise StateError)."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def acquire(self) -> None:
        if self._lock_fd is not None:
            return
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"{self.lock_path}: cannot create lock file: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise StateError(
                    f"{self.path}: another zeekml run is using this state file{who}; "
                    "it exits when done (overlapping cron runs are refused)"
                ) from None
            raise StateError(f"{self.lock_path}: cannot lock: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock

    # ------------------------------------------------------------------ load
    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> RunState | None:
        """The saved state, or None when there is none yet."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                if META_KEY not in npz.files:
                    raise StateError(f"{self.path}: not a zeekml state file (no {META_KEY})")
                raw = npz[META_KEY]
                if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_META_BYTES:
                    raise StateError(f"{self.path}: state document is malformed")
                doc = json.loads(raw.tobytes().decode("utf-8"))
                return self._from_doc(doc, npz)
        except StateError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise StateError(f"{self.path}: state file is corrupt: {exc}") from exc
        except (OSError, ValueError, KeyError, UnicodeDecodeError, EOFError) as exc:
            raise StateError(f"{self.path}: cannot read state file: {exc}") from exc

    def _from_doc(self, doc: Any, npz: Any) -> RunState:
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise StateError(f"{self.path}: not a zeekml state file")
        if doc.get("version") != STATE_VERSION:
            raise StateError(
                f"{self.path}: state version {doc.get('version')!r} is not supported "
                f"(this zeekml writes version {STATE_VERSION}); remove it to start afresh"
            )

        def arrays(ref: Any, where: str) -> dict[str, np.ndarray]:
            if not isinstance(ref, dict):
                raise StateError(f"{self.path}: {where} is malformed")
            out: dict[str, np.ndarray] = {}
            for key, member in ref.items():
                if not isinstance(member, str) or member not in npz.files or member == META_KEY:
                    raise StateError(f"{self.path}: {where}.{key} names a missing array")
                out[str(key)] = _check_array(f"{where}.{key}", npz[member])
            return out

        for part in ("inputs", "sinks", "meta"):
            if not isinstance(doc.get(part, {}), dict):
                raise StateError(f"{self.path}: {part} is not an object")
        inputs = doc.get("inputs", {})
        if not all(isinstance(v, dict) for v in inputs.values()):
            raise StateError(f"{self.path}: an input cursor is not an object")
        sinks = doc.get("sinks", {})
        if not all(isinstance(v, dict) for v in sinks.values()):
            raise StateError(f"{self.path}: a sink checkpoint is not an object")
        scorer_refs = doc.get("scorers", {})
        if not isinstance(scorer_refs, dict):
            raise StateError(f"{self.path}: scorers is not an object")
        stage_refs = doc.get("stages", {})
        if not isinstance(stage_refs, dict):
            raise StateError(f"{self.path}: stages is not an object")
        return RunState(
            inputs=inputs,
            scorers={str(k): arrays(v, f"scorers.{k}") for k, v in scorer_refs.items()},
            policy=arrays(doc.get("policy", {}), "policy"),
            incidents=arrays(doc.get("incidents", {}), "incidents"),
            sinks=sinks,
            meta=doc.get("meta", {}),
            stages={str(k): arrays(v, f"stages.{k}") for k, v in stage_refs.items()},
        )

    # ------------------------------------------------------------------ save
    def save(self, state: RunState) -> None:
        """Write ``state`` atomically (tmp + fsync + rename + directory fsync)."""
        members: dict[str, np.ndarray] = {}

        def ref(arrs: Mapping[str, np.ndarray], where: str) -> dict[str, str]:
            out = {}
            for key, a in arrs.items():
                a = np.asarray(a)
                _check_array(f"{where}.{key}", a)
                name = f"a{len(members)}"
                members[name] = a
                out[str(key)] = name
            return out

        doc = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "saved": time.time(),
            "inputs": state.inputs,
            "sinks": state.sinks,
            "meta": state.meta,
            "scorers": {k: ref(v, f"scorers.{k}") for k, v in state.scorers.items()},
            "policy": ref(state.policy, "policy"),
            "stages": {k: ref(v, f"stages.{k}") for k, v in state.stages.items()},
            "incidents": ref(state.incidents, "incidents"),
        }
        try:
            text = json.dumps(doc, allow_nan=True, sort_keys=True).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise StateError(f"{self.path}: state is not JSON-able: {exc}") from exc
        members[META_KEY] = np.frombuffer(text, dtype=np.uint8)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp.{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                arrays: dict[str, Any] = members  # (numpy's stub matches **kwds to allow_pickle)
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"{self.path}: cannot write state: {exc.strerror or exc}") from exc
        log.debug("state saved to %s (%d arrays, %d bytes of JSON)", self.path,
                  len(members) - 1, len(text))


# --------------------------------------------------------------------------- deliveries


class DeliveryJournal:
    """How many records a network sink has had acknowledged, written as it happens.

    A syslog collector cannot take back what it received, so after ``kill -9`` the next
    run must not send again the records that were acknowledged after the last commit.
    The sink writes its absolute count here every time acknowledgements arrive; on
    restore it skips the re-produced records the journal says were delivered.

    The write is one ``pwrite`` of a fixed-size line at offset 0, without ``fsync``: a
    killed process's writes are in the kernel's page cache, so this survives ``kill -9``
    while taking microseconds (the smaller the gap between an acknowledgement and its
    journal entry, the rarer a duplicate). After a power loss the journal may lag: then
    some notices since the last commit are sent again (the state itself is fsynced).
    ``stream`` ties a journal to one state (a journal of another state, or of a
    removed one, is ignored); a damaged journal reads as 0 (at least once, never lost).
    """

    WIDTH = 96

    def __init__(self, state_path: Path, stream: str, sink: str) -> None:
        self.stream = stream
        self.sink_key = hashlib.sha256(sink.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.path = state_path.with_name(f"{state_path.name}.delivered-{self.sink_key}")
        self._last: int | None = None
        self._fd: int | None = None

    def read(self) -> int:
        """Records delivered according to the journal (0 if none, foreign or damaged)."""
        try:
            raw = self.path.read_bytes()[: self.WIDTH].decode("ascii")
        except (OSError, UnicodeDecodeError):
            return 0
        parts = raw.split()
        if (len(parts) != 4 or parts[0] != "zeekml-delivered" or parts[1] != self.stream
                or parts[2] != self.sink_key or not parts[3].isdigit()):
            return 0
        return int(parts[3])

    def write(self, records: int) -> None:
        if records == self._last:
            return
        line = f"zeekml-delivered {self.stream} {self.sink_key} {int(records):020d}"
        data = line.ljust(self.WIDTH - 1).encode("ascii") + b"\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot record deliveries: {exc.strerror or exc}") from exc
        self._last = records

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def journal_factory(store: StateStore, stream: str) -> Callable[[str], DeliveryJournal]:
    """Journals beside the state file, one per sink name (``STATE.delivered-<hash>``)."""

    def make(sink: str) -> DeliveryJournal:
        return DeliveryJournal(store.path, stream, sink)

    return make
