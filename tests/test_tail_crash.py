"""``kill -9`` at random moments, restart with the same ``--state``: every verdict once.

A real ``zeekml tail`` subprocess follows a real labeled conn.log that the test writes
in random chunks (splitting lines), rotated by rename half way (bare Zeek style), while
the process is killed with SIGKILL at random points (during start-up, parsing, scoring,
writing, checkpointing, or while the log rotates) and restarted later. After the last
restart and a SIGTERM, the output must equal ``zeekml score --all`` over the two
generations, row for row: nothing lost, nothing repeated, same order. The incident log
(``--incidents``) must equal the one of ``zeekml score --state`` over them (incidents
still open stay open with a state, in both).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, need
from tests.test_pipeline import tiny_models  # noqa: F401 - fixture
from tests.test_tail import (
    FAST,
    TailProc,
    append,
    batch_reference,
    data_lines,
    model_args,
    n_models,
    output_files,
    wait_rows,
)
from zeekml.cli.main import main
from zeekml.errors import StateError
from zeekml.runtime.state import StateStore

CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"


def two_generations(data: bytes) -> tuple[bytes, bytes]:
    """The capture as two valid logs (same header, rows split), like a rotation makes."""
    lines = data.splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    rows = [ln for ln in lines if not ln.startswith(b"#")]
    half = len(rows) // 2
    second = [ln.replace(b"#open\t2022-06-17-00-00-07", b"#open\t2022-06-17-01-00-00")
              for ln in header]
    return b"".join(header + rows[:half]), b"".join(second + rows[half:])


def chunks(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), n - 1))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def wait_committed(state: Path, live: Path, proc: TailProc, timeout: float = 120) -> None:
    """Wait until the state's cursor says the whole current file was written out.

    (The output may already hold every row from an earlier, killed run: those rows are
    only final once a checkpoint covers them.)
    """
    key = "tail:" + os.path.abspath(live)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.alive(), proc.stderr()
        try:
            saved = StateStore(state).load()
        except StateError:
            saved = None  # mid-replace on some filesystems: look again
        gens = (saved.inputs.get(key) or {}).get("generations", {}) if saved else {}
        st = live.stat()
        if any(c.get("ino") == st.st_ino and c.get("offset") == st.st_size
               for c in gens.values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at the end of {live}:\n{proc.stderr()}")


@pytest.mark.parametrize(("seed", "rotate"), [(1, False), (2, False), (3, True)])
def test_kill9_at_random_points_exactly_once(tmp_path: Path, tiny_models, seed: int,  # noqa: F811
                                             rotate: bool) -> None:
    """With ``rotate``, the output is also rotated every second (--rotate 1): the rotated
    files and the current one together hold every verdict once, in order."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    rng = random.Random(seed)
    models = model_args(tiny_models)
    gen1, gen2 = two_generations(CAPTURE.read_bytes())
    live = tmp_path / "conn.log"
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "zeekml.log"
    state = tmp_path / "state.npz"
    inc = tmp_path / "zeekml_incident.log"
    args = ["--all", "--out", str(out), "--state", str(state), *models, *FAST,
            "--incidents", str(inc), "--incident-gap", "900", "--incident-update", "3600",
            *(["--rotate", "1"] if rotate else []),
            "--batch-size", str(rng.choice([200, 1000, 5000])),
            "--checkpoint-interval", str(rng.choice([0.05, 0.3, 2.0])), str(live)]
    steps: list[tuple[str, bytes]] = [("append", c) for c in chunks(gen1, rng, 8)]
    steps.append(("rotate", b""))
    steps += [("append", c) for c in chunks(gen2, rng, 8)]

    append(live, steps.pop(0)[1])
    proc: TailProc | None = TailProc(args, tmp_path)
    # the first run must have seen the file once: a process that never ran cannot know
    # about a generation rotated away before it started
    deadline = time.monotonic() + 60
    while not state.exists():
        assert proc.alive() and time.monotonic() < deadline, proc.stderr()
        time.sleep(0.02)
    kills = 0
    try:
        for what, data in steps:
            if what == "rotate":
                live.rename(tmp_path / "conn.2022-06-17-00-00-07.log")
                live.write_bytes(b"")
            else:
                append(live, data)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc is not None and rng.random() < 0.45:
                time.sleep(rng.uniform(0.0, 1.2))  # anywhere: start-up, scoring, writing
                proc.kill9()
                proc = None
                kills += 1
            elif proc is None and rng.random() < 0.6:
                proc = TailProc(args, tmp_path)
        if proc is None:
            proc = TailProc(args, tmp_path)
        if kills == 0:  # every seed kills at least once
            time.sleep(rng.uniform(0.2, 1.0))
            proc.kill9()
            kills += 1
            proc = TailProc(args, tmp_path)
        proc.wait_log("following")  # up (signal handlers installed), not starting
        wait_committed(state, live, proc)
        total = sum(1 for g in (gen1, gen2) for ln in g.splitlines()
                    if ln and not ln.startswith(b"#"))
        # listed anew at every look: with --rotate 1 the rows land in files rotated after
        # this call (a list taken once missed them on a loaded machine)
        wait_rows(lambda: outputs(outdir), total * n_models(tiny_models), proc, timeout=120)
    finally:
        rc = proc.stop() if proc is not None else 0
    assert rc == 0, proc.stderr() if proc else ""
    g1, g2 = tmp_path / "gen1.log", tmp_path / "gen2.log"
    g1.write_bytes(gen1)
    g2.write_bytes(gen2)
    ref = batch_reference(tmp_path, [g1, g2], models)
    files = outputs(outdir)
    got = [ln for f in files for ln in data_lines(f)]
    assert len(got) == len(ref), f"{len(got)} rows, expected {len(ref)} (after {kills} kills)"
    assert got == ref
    ref_inc = tmp_path / "ref_incident.log"
    assert main(["-q", "score", "--all", "--state", str(tmp_path / "ref.npz"), "--out",
                 str(tmp_path / "ref-inc-verdicts.log"), "--threads", "1", *models,
                 "--incidents", str(ref_inc), "--incident-gap", "900",
                 "--incident-update", "3600", str(g1), str(g2)]) == 0
    want = data_lines(ref_inc)
    assert len(want) > 3 and data_lines(inc) == want
    if rotate:
        assert len(files) > 1
        for f in files[:-1]:  # every rotated file is a complete Zeek log
            lines = f.read_text().splitlines()
            assert lines[0] == "#separator \\x09" and lines[-1].startswith("#close"), f.name


def outputs(outdir: Path) -> list[Path]:
    """Output files, oldest first (rotated ones, then the current zeekml.log)."""
    return sorted(output_files(outdir), key=lambda p: (p.name == "zeekml.log", p.stat().st_mtime_ns))
