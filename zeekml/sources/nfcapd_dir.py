"""NfcapdDir: score each closed nfcapd file of a directory once, in name order.

nfcapd writes the current interval to ``nfcapd.current.<pid>`` and renames it to
``nfcapd.YYYYMMDDhhmm`` (``...hhmmss`` with intervals under a minute) when the
interval closes, so a file with its final name is complete and never changes again.
This source lists those names (:func:`zeekml.sources.nfcapd.closed_names`, ignoring
``nfcapd.current.*`` and anything else),
orders them by their timestamp, and hands out the ones after the last file done.
Flat directories only (nfcapd ``-S 0``, its default).

Crash safety: the cursor is ``{"done": last finished name, "file": name in progress,
"rows": rows of it already committed}``. A restart skips finished files and the first
``rows`` rows of the file in progress; nfdump reads a closed file identically every
time, so those rows are the same rows.

A file copied in by hand (``cp`` is not atomic) is only taken once its size and mtime
are unchanged between two looks, so a half-copied file is never read.

Promptness: a watchdog observer on the directory wakes :meth:`wait` on create and
move events; polling every ``poll_interval`` seconds is the fallback.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from zeekml.errors import StateError
from zeekml.sources.follow import QUIET_EVENTS
from zeekml.sources.nfcapd import NAME_RE, closed_names, iter_nfcapd, order_key
from zeekml.sources.skips import SkipLog

log = logging.getLogger(__name__)

class DirCursor:
    """How far a directory has been scored (JSON-able, validated on load)."""

    def __init__(self, done: str = "", file: str | None = None, rows: int = 0) -> None:
        self.done = done
        self.file = file
        self.rows = rows

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "file": self.file, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: Any) -> DirCursor:
        if not isinstance(d, dict):
            raise StateError("nfcapd cursor must be an object")
        done, file, rows = d.get("done", ""), d.get("file"), d.get("rows", 0)
        if not isinstance(done, str) or (done and not NAME_RE.match(done)):
            raise StateError("nfcapd cursor 'done' is not an nfcapd file name")
        if file is not None and (not isinstance(file, str) or not NAME_RE.match(file)):
            raise StateError("nfcapd cursor 'file' is not an nfcapd file name")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise StateError("nfcapd cursor 'rows' must be a non-negative integer")
        return cls(done, file, rows)


class NfcapdDir:
    """The closed nfcapd files of ``directory`` not yet done, as they appear."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        poll_interval: float = 1.0,
        cursor: DirCursor | None = None,
        watch: bool = True,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 s, got {poll_interval}")
        self.directory = Path(directory)
        self.poll_interval = float(poll_interval)
        self.cursor = cursor or DirCursor()
        self._seen: dict[str, tuple[int, int]] = {}
        self._wake = threading.Event()
        self._observer: Any = None
        self._watch = watch

    def ready(self) -> list[Path]:
        """Closed files after the cursor whose size and mtime have settled, in order."""
        done_key = order_key(self.cursor.done) if self.cursor.done else None
        out: list[Path] = []
        seen: dict[str, tuple[int, int]] = {}
        blocked = False
        for name in closed_names(self.directory):
            if done_key is not None and order_key(name) <= done_key:
                continue
            try:
                st = os.stat(self.directory / name)
            except FileNotFoundError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            seen[name] = sig
            if self._seen.get(name) != sig:
                blocked = True  # not settled yet; later files wait for it (name order)
            if not blocked:
                out.append(self.directory / name)
        self._seen = seen
        return out

    def mark_done(self, name: str) -> None:
        self.cursor = DirCursor(name, None, 0)

    # ----------------------------------------------------------------- waiting
    def _start_watch(self) -> None:
        if not self._watch or self._observer is not None or not self.directory.is_dir():
            return
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return
        wake = self._wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type in QUIET_EVENTS:  # opening a file changes nothing
                    return
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    if p and NAME_RE.match(os.path.basename(os.fsdecode(p))):
                        wake.set()
                        return

        try:
            obs = Observer()
            obs.daemon = True
            obs.schedule(Handler(), str(self.directory), recursive=False)
            obs.start()
        except (OSError, RuntimeError) as exc:
            log.warning("%s: filesystem events unavailable (%s); polling only", self.directory, exc)
            self._watch = False
            return
        self._observer = obs

    def wake(self) -> None:
        self._wake.set()

    def wait(self, timeout: float | None = None) -> None:
        self._start_watch()
        t = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
        if self._seen:
            t = min(t, 0.1)  # a file waits for its second look: look again soon
        self._wake.wait(t)
        self._wake.clear()

    def close(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=2)
            except RuntimeError:
                pass
            self._observer = None


def iter_file(
    path: Path, skips: SkipLog, batch_rows: int, skip_rows: int = 0
) -> Iterator[pd.DataFrame]:
    """Batches of one nfcapd file through the real ``nfdump``, minus its first rows."""
    left = skip_rows
    for df in iter_nfcapd(str(path), skips, batch_rows):
        if left >= len(df):
            left -= len(df)
            continue
        if left:
            df = df.iloc[left:].reset_index(drop=True)
            left = 0
        yield df
