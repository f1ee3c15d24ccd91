"""Where a live log's earlier generations went: rotated names beside it, zeekctl's archive.

A live Zeek log (``current/conn.log``) is rotated by rename (bare Zeek:
``conn.2024-01-01-10-00-00.log``; logrotate: ``conn.log.1``, ``conn.log-20240101.gz``),
and zeekctl then gzips the renamed file into its archive,
``logs/YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz``. A follower that was down (crash,
reboot, upgrade) or a cron run that came late must find every generation it has not
finished, in order, before it reads the live file again.

:func:`earlier_generations` lists them: files beside the live log whose names look
like its rotations, plus (with ``archive``) zeekctl's dated folders, modified within
``lookback`` seconds; identifies each by content (:mod:`zeekml.sources.generation`);
and keeps those that are either unfinished generations known to the state (a cursor
that is not ``done``) or new since the state began (``since``: modified at or after
the time the state first saw the live log; older files were there before zeekml
started, and a new follower does not read history it was never asked to). Finished
generations are never returned, so none is read twice; oldest first (unfinished ones,
then by modification time, then by name).

Bounded work: at most :data:`MAX_CANDIDATES` files are looked at, and only files
modified within ``lookback`` (default :data:`DEFAULT_LOOKBACK`, 7 days) and dated
archive folders from that period.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zeekml import defaults
from zeekml.errors import ConfigError
from zeekml.sources.generation import Generation, identify, match_cursor

log = logging.getLogger(__name__)

#: default of ``--lookback``: how far back rotated generations are looked for
DEFAULT_LOOKBACK = defaults.LOOKBACK_SECONDS
#: most files examined per look (beside the log and in the archive together)
MAX_CANDIDATES = 5000

_LIVE = re.compile(r"^[^./][^./]*\.log$")
_DATE_DIR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``3600``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds (ConfigError if bad)."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"not a duration: {text!r} (use seconds or 30m, 12h, 7d, 2w)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"duration must be > 0, got {text!r}")
    return seconds


def is_live_name(path: str | os.PathLike[str]) -> bool:
    """True for a live log's name (``conn.log``), not a rotated one."""
    return bool(_LIVE.match(os.path.basename(os.fspath(path))))


def rotated_name_pattern(stem: str) -> re.Pattern[str]:
    """Names a rotation of ``<stem>.log`` takes (bare Zeek, zeekctl, logrotate)."""
    s = re.escape(stem)
    return re.compile(rf"^{s}\.(?:.+\.log|log[.-][0-9][0-9A-Za-z_.:-]*)(?:\.gz)?$")


def _listing(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def candidates(path: str | os.PathLike[str], *, archive: str | os.PathLike[str] | None,
               lookback: float, now: float | None = None) -> list[tuple[Path, os.stat_result]]:
    """Files that may be earlier generations of the live log ``path`` (see module doc)."""
    live = Path(path)
    now = now if now is not None else dt.datetime.now().timestamp()
    horizon = now - lookback
    pattern = rotated_name_pattern(live.name.split(".")[0])
    dirs = [live.parent]
    if archive is not None:
        first_day = (dt.datetime.fromtimestamp(horizon) - dt.timedelta(days=1)).date()
        for sub in _listing(Path(archive)):
            m = _DATE_DIR.match(sub)
            if m:
                try:
                    day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                except ValueError:
                    continue
                if day >= first_day:
                    dirs.append(Path(archive) / sub)
    out: list[tuple[Path, os.stat_result]] = []
    for d in dirs:
        for name in _listing(d):
            if len(out) >= MAX_CANDIDATES:
                log.warning("%s: more than %d rotated files within the look-back; the rest "
                            "are not looked at (lower --lookback)", live, MAX_CANDIDATES)
                return out
            if not pattern.match(name) or (d == live.parent and name == live.name):
                continue
            p = d / name
            try:
                st = os.stat(p)
            except OSError:
                continue
            if st.st_mtime >= horizon and os.path.isfile(p):
                out.append((p, st))
    return out


def earlier_generations(
    path: str | os.PathLike[str],
    cursors: Mapping[str, dict[str, Any]],
    *,
    since: float,
    archive: str | os.PathLike[str] | None = None,
    lookback: float = DEFAULT_LOOKBACK,
    now: float | None = None,
) -> list[tuple[Path, Generation]]:
    """Unfinished or new earlier generations of the live log ``path``, oldest first."""
    try:
        live = os.stat(path)
        live_id: tuple[int, int] | None = (live.st_dev, live.st_ino)
    except OSError:
        live_id = None
    found: dict[str, tuple[int, float, str, Path, Generation]] = {}
    for p, st in candidates(path, archive=archive, lookback=lookback, now=now):
        if (st.st_dev, st.st_ino) == live_id:
            continue  # the live log itself under another name (a hard link)
        try:
            gen = identify(p)
        except OSError:
            continue
        if gen.head_len == 0:
            continue
        _, cursor = match_cursor(cursors, gen)
        if cursor is not None and cursor.get("done"):
            continue
        if cursor is None and st.st_mtime < since:
            continue  # there before the state began: history nobody asked for
        rank = 0 if cursor is not None else 1
        prev = found.get(gen.key)
        # the same generation twice (renamed and its gzip copy): read the plain one
        if prev is None or (prev[4].kind == "gzip" and gen.kind != "gzip"):
            found[gen.key] = (rank, st.st_mtime, p.name, p, gen)
    ordered = sorted(found.values(), key=lambda t: (t[0], t[1], t[2]))
    return [(p, gen) for _, _, _, p, gen in ordered]
