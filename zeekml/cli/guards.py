"""Refuse command lines that would destroy their own input, before anything is opened.

Why: ``zeekml score --all --out same.log same.log`` used to replace the input log with
its verdicts (and with ``--state`` append verdict rows to it, which the next run read as
"flows"); ``convert x --out x`` replaced its input too. Names cannot tell whether two
paths are one file (symlinks, hard links, ``./x`` vs ``x``), so files are compared by
identity, ``(st_dev, st_ino)``, and only an output that does not exist yet is compared
by its resolved path. Standard input and output count as the files they are redirected
to (``zeekml score --out - x.log >> x.log``).

Used by ``score``, ``tail`` and ``convert`` (every command that both reads flows and
writes files). Each check runs before any output is opened, because some outputs are
created or truncated when they are opened (ECS appends from its constructor, convert's
temporary file, Spark's overwrite of ``--out``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence

from zeekml.errors import UsageError

#: an output's role and its path (``-`` is standard output)
Output = tuple[str, str]


def _key(path: str, std_fd: int) -> object | None:
    """What makes two paths one file: ``(st_dev, st_ino)`` of an existing regular file,
    the resolved path of a file that does not exist yet, None for anything else.

    Only regular files count: ``/dev/null`` as input and output, or two ends of a pipe,
    destroy nothing. ``-`` is the file on ``std_fd`` (0 for inputs, 1 for outputs).
    """
    try:
        st = os.fstat(std_fd) if path == "-" else os.stat(path)
    except FileNotFoundError:
        return None if path == "-" else ("path", os.path.realpath(path))
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return ("inode", st.st_dev, st.st_ino)


def _shown(path: str, std: str) -> str:
    return std if path == "-" else path


def file_sink_targets(sink_specs: Sequence[str]) -> list[Output]:
    """The targets of ``--sink`` values that may be files (``ecs:PATH``, plugins' paths).

    A target is taken as is (up to ``?``); one that is not a file (``tcp://...``) simply
    has no identity and never matches an input.
    """
    out: list[Output] = []
    for spec in sink_specs:
        head = spec.partition("?")[0]
        name, sep, target = head.partition(":")
        if sep and target and target != "-" and "://" not in target:
            out.append((f"--sink {name}", target))
    return out


def refuse_output_on_input(outputs: Iterable[Output], inputs: Iterable[str]) -> None:
    """Raise :class:`UsageError` when an output is one of the inputs, or two outputs are one.

    ``outputs`` are (role, path) pairs such as ``("--out", "z.log")``; ``inputs`` the input
    files as read (after directory and glob expansion; ``-`` is standard input).
    """
    outputs = [(role, str(path)) for role, path in outputs if path]
    known: dict[object, str] = {}
    for p in inputs:
        key = _key(str(p), 0)
        if key is not None:
            known.setdefault(key, _shown(str(p), "standard input"))
    seen: dict[object, str] = {}
    for role, path in outputs:
        key = _key(path, 1)
        if key is None:
            continue
        where = _shown(path, "standard output")
        if key in known:
            same = "" if known[key] == where else f" (the same file as input {known[key]})"
            raise UsageError(
                f"{role} {where} is an input of this command{same}: refusing to write "
                "over it; choose another output"
            )
        if key in seen:
            raise UsageError(f"{role} {where} and {seen[key]} are the same file: "
                             "give each output its own")
        seen[key] = f"{role} {where}"


def refuse_inputs_inside(out_dir: str, inputs: Iterable[str], role: str = "--out") -> None:
    """Raise :class:`UsageError` when an input file lies inside ``out_dir``.

    For outputs that are directories replaced as a whole (the Spark engine's ``--out``).
    """
    base = os.path.realpath(out_dir)
    for p in inputs:
        if p == "-" or "://" in p:
            continue
        real = os.path.realpath(p)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            raise UsageError(
                f"{role} {out_dir} holds the input {p}: the output directory is replaced "
                "as a whole; choose a directory outside the inputs"
            )
