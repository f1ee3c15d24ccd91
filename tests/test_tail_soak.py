"""Soak: a live log rotated every way a sensor rotates, ``kill -9`` at random moments,
0-3 rotations while ``zeekml tail`` is down, >= 20 restarts: every verdict once.

The test plays Zeek and zeekctl on real rows (a labeled capture cut into generations,
each with its own ``#open``): it writes the live ``conn.log`` in chunks that split lines,
and rotates each generation by one of

* bare Zeek: rename to ``conn.YYYY-MM-DD-HH-MM-SS.log``;
* rename + gzip beside the log (``.log.gz``, the plain file removed);
* zeekctl: move into ``logs/YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log``, gzip it there and
  remove the plain file,

while a real ``zeekml tail --state ... --archive logs`` process is killed with SIGKILL at
random points (seeded) and restarted after 0-3 rotations. At the end the verdict rows
must equal one batch ``zeekml score --all`` over the same generations, row for row.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
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
)
from tests.test_tail_crash import chunks, wait_committed

CAPTURE = DATA / "zeek" / "stratosphere-010-mixed" / "conn.log.labeled"
GENERATIONS = 10
MIN_RESTARTS = 20


def generations(data: bytes, n: int) -> list[bytes]:
    lines = data.splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    rows = [ln for ln in lines if not ln.startswith(b"#")]
    out = []
    for i in range(n):
        part = rows[i * len(rows) // n:(i + 1) * len(rows) // n]
        head = [b"#open\t2022-06-14-%02d-00-00\n" % i if ln.startswith(b"#open") else ln
                for ln in header]
        out.append(b"".join(head + part))
    return out


def rotate(live: Path, logs: Path, i: int, how: str) -> None:
    """Rotate the live log away, the way ``how`` says (see the module docstring)."""
    if how == "rename":
        live.rename(live.with_name(f"conn.2022-06-14-{i:02d}-00-00.log"))
    elif how == "gzip":
        renamed = live.with_name(f"conn.2022-06-14-{i:02d}-00-00.log")
        live.rename(renamed)
        with open(renamed, "rb") as src, gzip.open(str(renamed) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        renamed.unlink()
    else:  # zeekctl
        day = logs / time.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        moved = day / f"conn.{i:02d}:00:00-{i:02d}:59:59.log"
        shutil.move(str(live), moved)
        with open(moved, "rb") as src, gzip.open(str(moved) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        moved.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_soak_rotations_and_kills_exactly_once(tmp_path: Path, tiny_models, seed: int) -> None:  # noqa: F811
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    rng = random.Random(seed)
    models = model_args(tiny_models)
    gens = generations(CAPTURE.read_bytes(), GENERATIONS)
    current, logs, outdir = tmp_path / "current", tmp_path / "logs", tmp_path / "out"
    for d in (current, logs, outdir):
        d.mkdir()
    live = current / "conn.log"
    out = outdir / "zeekml.log"
    state = tmp_path / "state.npz"
    args = ["--all", "--out", str(out), "--state", str(state), "--archive", str(logs),
            *models, *FAST, "--batch-size", str(rng.choice([300, 2000])),
            "--checkpoint-interval", str(rng.choice([0.1, 1.0])), str(live)]

    live.write_bytes(b"")
    proc: TailProc | None = TailProc(args, tmp_path)
    deadline = time.monotonic() + 60
    while not state.exists():  # the first run has seen the live log once
        assert proc.alive() and time.monotonic() < deadline, proc.stderr()
        time.sleep(0.02)
    restarts = 0
    down_rotations = 0
    try:
        for i, gen in enumerate(gens):
            if i:
                live.write_bytes(b"")
            for piece in chunks(gen, rng, rng.randint(3, 6)):
                append(live, piece)
                time.sleep(rng.uniform(0.0, 0.15))
                if proc is not None and rng.random() < 0.35:
                    time.sleep(rng.uniform(0.0, 0.8))  # anywhere: start-up, catch-up, scoring
                    proc.kill9()
                    proc = None
                    restarts += 1
                    down_rotations = rng.randint(0, 3)
                elif proc is None and down_rotations == 0:
                    proc = TailProc(args, tmp_path)
            if i < len(gens) - 1:
                rotate(live, logs, i, rng.choice(["rename", "gzip", "zeekctl"]))
                if proc is None:
                    down_rotations -= 1
                    if down_rotations <= 0:
                        down_rotations = 0
                        proc = TailProc(args, tmp_path)
        while restarts < MIN_RESTARTS:  # every seed restarts at least 20 times
            if proc is None:
                proc = TailProc(args, tmp_path)
            time.sleep(rng.uniform(0.3, 1.5))
            proc.kill9()
            proc = None
            restarts += 1
        proc = TailProc(args, tmp_path)
        proc.wait_log("following")
        wait_committed(state, live, proc, timeout=180)
        total = sum(1 for g in gens for ln in g.splitlines() if ln and not ln.startswith(b"#"))
        deadline = time.monotonic() + 180
        while len(data_lines(out)) < total * n_models(tiny_models):
            assert proc.alive() and time.monotonic() < deadline, proc.stderr()
            time.sleep(0.1)
    finally:
        rc = proc.stop() if proc is not None else 0
    assert rc == 0, proc.stderr() if proc else ""
    refs = []
    for i, g in enumerate(gens):
        p = tmp_path / f"gen{i}.log"
        p.write_bytes(g)
        refs.append(p)
    ref = batch_reference(tmp_path, refs, models)
    got = data_lines(out)
    assert restarts >= MIN_RESTARTS
    assert len(got) == len(ref), f"{len(got)} rows, expected {len(ref)} after {restarts} kills"
    assert got == ref
    assert not [p for p in outdir.iterdir() if p.name.startswith(".") and "tmp" in p.name]
    assert os.path.getsize(out) > 0
    # the restarts really had rotated generations to finish (not just the live log)
    logs_text = "".join(p.read_text(errors="replace") for p in tmp_path.glob("tail-stderr-*"))
    caught = [int(n) for n in re.findall(r"(\d+) earlier generation\(s\) to finish first",
                                         logs_text)]
    assert caught and max(caught) >= 2, "no restart had two rotated generations to catch up"
