"""Exactly once under failure, for cron runs: a collector that is down, ``kill -9`` in the
middle of a run, a full disk, two runs aimed at one output (issue 11, items 3, 6, 7).

Real components throughout: ``zeekml score`` as a subprocess (or the CLI entry point),
a real rsyslogd on loopback receiving octet-counted TCP, a real tmpfs that fills up (or
the kernel's file-size limit where mounting is not allowed), ``/dev/full``.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA, REPO, need, need_binary
from test_syslog import Rsyslog, _received

from zeekml.cli.main import main
from zeekml.sinks.files import OutputLock

CAPTURE = DATA / "zeek" / "stratosphere-008-mixed" / "conn.log.labeled"
ARCHIVE = DATA / "zeek" / "rita-rotated-archive"


def notice_rows(path: Path) -> list[tuple[str, str]]:
    """(uid, model) of every notice row of a Zeek log, duplicates kept, in file order."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    fields = next(x for x in lines if x.startswith("#fields\t")).split("\t")[1:]
    out = []
    for x in lines:
        if x.startswith("#"):
            continue
        row = dict(zip(fields, x.split("\t"), strict=True))
        if row["notice"] == "T":
            out.append((row["uid"], row["model"]))
    return out


def data_rows(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def zeekml_proc(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "zeekml.cli.main", *args], cwd=str(cwd),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def collector(tmp_path: Path):
    c = Rsyslog(need_binary("rsyslogd"), tmp_path)
    yield c
    c.stop()


def test_first_run_with_collector_down_then_up_every_notice_once(collector: Rsyslog,
                                                                tmp_path: Path) -> None:
    """Issue 11, item 3 (first run included): the failed run leaves no notice behind."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    args = ["-q", "score", "--state", str(state), "--out", str(out), "--threads", "1",
            "--sink", f"syslog:tcp://127.0.0.1:{collector.tcp}?format=cef&timeout=2&retry=0.05",
            str(CAPTURE)]
    assert main(args) == 1  # collector down: exit 1, nothing committed
    assert notice_rows(out) == []  # cut back: no notice the next run would repeat
    collector.start()
    assert main(args) == 0
    logged = notice_rows(out)
    assert logged and len(logged) == len(set(logged))
    got = _received(collector.wait_for(len(logged)))
    assert sorted(got) == sorted(logged)  # delivered once each
    assert main(args) == 0  # nothing new: nothing more
    assert notice_rows(out) == logged
    time.sleep(0.5)
    assert len(collector.records()) == len(logged)


def _kill_runs(args: list[str], tmp: Path, rng: random.Random, runs: int,
               when: tuple[float, float] = (0.8, 4.0),
               delivering: Rsyslog | None = None) -> int:
    """Start ``zeekml score`` ``runs`` times, each killed with SIGKILL at a random moment.

    With ``delivering``, the moment is counted from when that collector has received
    new records in this run (mid-delivery whatever the machine's speed), not from start."""
    kills = 0
    for _ in range(runs):
        before = len(delivering.records()) if delivering else 0
        proc = zeekml_proc(args, tmp)
        if delivering is not None:
            deadline = time.monotonic() + 300
            while (proc.poll() is None and time.monotonic() < deadline
                   and len(delivering.records()) <= before):
                time.sleep(0.02)
        time.sleep(rng.uniform(*when))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
    return kills


def _reference_notices(tmp: Path, inputs: list[str], extra: list[str] | None = None
                       ) -> list[tuple[str, str]]:
    ref_out, ref_state = tmp / "ref.log", tmp / "ref.npz"
    assert main(["-q", "score", "--state", str(ref_state), "--out", str(ref_out),
                 "--threads", "1", *(extra or []), *inputs]) == 0
    return notice_rows(ref_out)


def test_kill9_mid_run_with_collector_down_then_up_every_notice_once(collector: Rsyslog,
                                                                    tmp_path: Path) -> None:
    """The cron scenario again, but the runs while the collector is down are killed with
    SIGKILL mid-run: the log and the collector each get every notice once."""
    need(ARCHIVE.is_dir(), f"the archive {ARCHIVE}")
    inputs = [str(p) for p in sorted(ARCHIVE.glob("2024-04-19/*.gz"))[:10]]
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    sink = f"syslog:tcp://127.0.0.1:{collector.tcp}?timeout=20&retry=0.05"
    args = ["-q", "score", "--state", str(state), "--out", str(out), "--threads", "1",
            "--batch-size", "2000", "--sink", sink, *inputs]
    assert _kill_runs(args, tmp_path, random.Random(5), 3) >= 2
    collector.start()
    final = zeekml_proc(args, tmp_path)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()
    expected = _reference_notices(tmp_path, inputs)
    assert expected and notice_rows(out) == expected  # same notices, same order, once each
    collector.wait_for(len(expected), timeout=30)
    time.sleep(0.5)
    got = _received(collector.records())
    assert sorted(got) == sorted(expected)  # delivered once each


def test_kill9_while_all_verdicts_are_written_behind_repeats_nothing(tmp_path: Path) -> None:
    """``--all`` writes a batch while the next is scored (``Pipeline(write_behind=True)``)
    and joins the archive's small files into batches: runs killed with SIGKILL at random
    moments, then one to the end, give exactly the rows of one uninterrupted run."""
    need(ARCHIVE.is_dir(), f"the archive {ARCHIVE}")
    inputs = [str(p) for p in sorted(ARCHIVE.glob("*/*.gz"))]
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    args = ["-q", "score", "--all", "--state", str(state), "--out", str(out), "--threads", "1",
            "--batch-size", "8000", *inputs]
    assert _kill_runs(args, tmp_path, random.Random(11), 3, when=(1.0, 2.5)) >= 2
    final = zeekml_proc(args, tmp_path)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()
    ref = tmp_path / "ref.log"
    assert main(["-q", "score", "--all", "--state", str(tmp_path / "ref.npz"), "--out", str(ref),
                 "--threads", "1", "--batch-size", "8000", *inputs]) == 0
    got, want = data_rows(out), data_rows(ref)
    assert len(want) > 10_000 and got == want  # every verdict once, in order


def test_kill9_mid_run_with_collector_up_loses_nothing(collector: Rsyslog,
                                                      tmp_path: Path) -> None:
    """SIGKILL while notices are being delivered: the log holds every notice once; the
    collector gets every notice, and a notice twice only when the kill fell between the
    collector's acknowledgement of a batch and the delivery journal's entry for it, so
    at most one batch's notices per kill (see docs/exactly-once.md). One input, so no
    commit happens mid-run: without the journal a kill would repeat everything sent."""
    from zeekml.sources import read_table

    need(ARCHIVE.is_dir(), f"the archive {ARCHIVE}")
    collector.start()
    one = tmp_path / "conn.10-hours.log.gz"  # one input: gzip members concatenated
    one.write_bytes(b"".join(p.read_bytes() for p in sorted(ARCHIVE.glob("2024-04-19/*.gz"))[:10]))
    out, state = tmp_path / "zeekml.log", tmp_path / "state.npz"
    sink = f"syslog:tcp://127.0.0.1:{collector.tcp}?timeout=20&retry=0.05"
    batch = 300
    # --suppress 0: every notice is sent with the batch of its flow, so the repeats of one
    # kill all come from one batch
    args = ["-q", "score", "--state", str(state), "--out", str(out), "--threads", "1",
            "--suppress", "0", "--batch-size", str(batch), "--sink", sink, str(one)]
    kills = _kill_runs(args, tmp_path, random.Random(7), 4, when=(0.0, 0.5),
                       delivering=collector)  # mid-delivery
    assert kills >= 2
    final = zeekml_proc(args, tmp_path)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()
    expected = _reference_notices(tmp_path, [str(one)], ["--suppress", "0"])
    assert expected and notice_rows(out) == expected
    collector.wait_for(len(expected), timeout=30)
    time.sleep(0.5)
    got = _received(collector.records())
    assert set(got) == set(expected)  # nothing lost
    position = {u: i for i, u in enumerate(read_table(one)["uid"].tolist())}
    repeated = [key for key, n in Counter(got).items() if n > 1]
    batches = {position[uid] // batch for uid, _ in repeated}
    assert len(batches) <= kills, f"{len(repeated)} repeats from {len(batches)} batches"


def _full_disk_run(out: Path, state: Path, limit: int | None) -> subprocess.CompletedProcess[str]:
    def cap() -> None:  # the kernel's per-file size limit stands in for a full disk
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "zeekml.cli.main", "-q", "score", "--all",
                           "--state", str(state), "--out", str(out), "--threads", "1",
                           str(CAPTURE)], env=env, capture_output=True, text=True,
                          preexec_fn=cap, timeout=300)


def _check_full_then_room(out: Path, state: Path, proc: subprocess.CompletedProcess[str],
                          rerun: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0], proc.stderr  # one clear line
    assert rerun.returncode == 0, rerun.stderr
    ref = tmp / "ref.log"
    assert main(["-q", "score", "--all", "--state", str(tmp / "ref.npz"), "--out", str(ref),
                 "--threads", "1", str(CAPTURE)]) == 0
    assert data_rows(out) == data_rows(ref)  # nothing lost, nothing twice
    text = out.read_text()
    assert text.count("#fields\t") == 1 and "#separator" not in text.split("\n", 1)[1]


def test_disk_full_on_a_small_filesystem(tmp_path: Path) -> None:
    """Issue 11, item 6, on a real tmpfs that fills up; the state lives there too."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a small tmpfs is not allowed here ({r.stderr.strip()}); "
                    "the file-size-limit variant covers the same path")
    try:
        out, state = mnt / "out.log", mnt / "state.npz"
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (200 << 10))
        proc = _full_disk_run(out, state, None)
        filler.unlink()  # the operator makes room
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        rerun = _full_disk_run(out, state, None)
        _check_full_then_room(out, state, proc, rerun, tmp_path)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_output_size_limit_fails_cleanly_and_the_next_run_repeats_nothing(tmp_path: Path) -> None:
    """The same, with the kernel refusing writes past a file size (EFBIG), no privileges."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out, state = tmp_path / "out.log", tmp_path / "state.npz"
    proc = _full_disk_run(out, state, 150_000)
    rerun = _full_disk_run(out, state, None)
    _check_full_then_room(out, state, proc, rerun, tmp_path)


def test_dev_full_is_one_clear_line(tmp_path: Path) -> None:
    need(CAPTURE.is_file() and Path("/dev/full").exists(), "/dev/full and the capture")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "score", "--all", "--out",
                        "/dev/full", "--threads", "1", str(CAPTURE)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev/full" in lines[0] and "No space left" in lines[0], r.stderr


def test_two_runs_never_share_an_output(tmp_path: Path) -> None:
    """Issue 11, item 7: another run (other --state, same --out) is refused, not mixed."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    out = tmp_path / "zeekml.log"
    code = ("import sys, time\nfrom pathlib import Path\n"
            "from zeekml.sinks.files import OutputLock\n"
            "lk = OutputLock(Path(sys.argv[1]).resolve()); lk.acquire(); print('held', flush=True)\n"
            "time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for extra in (["--state", str(tmp_path / "a.npz")], []):
            r = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "score", "--out",
                                str(out), "--threads", "1", *extra, str(CAPTURE)],
                               env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 1
            assert f"pid {holder.pid}" in r.stderr and "another zeekml run" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    assert main(["-q", "score", "--out", str(out), "--threads", "1", str(CAPTURE)]) == 0
    lock = OutputLock(out.resolve())
    lock.acquire()  # released and removed by the run that finished
    lock.release()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zeekml.log")]


def test_unreadable_input_is_named_and_the_rest_scored(tmp_path: Path) -> None:
    """Issue 11, item 9: a file that is no flow log is one line naming it (exit 1); every
    other input is scored and the output is complete, never a partial file. With
    --strict the run stops at it and the output is left as it was."""
    need(CAPTURE.is_file(), f"the capture {CAPTURE}")
    bad = tmp_path / "random.bin"
    bad.write_bytes(random.Random(3).randbytes(5000))
    out, ref = tmp_path / "o.log", tmp_path / "ref.log"
    assert main(["-q", "score", "--all", "--out", str(ref), "--threads", "1", str(CAPTURE)]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "-q", "score", "--all", "--out",
                        str(out), "--threads", "1", str(CAPTURE), str(bad)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "unrecognised input format" in lines[0]
    assert data_rows(out) == data_rows(ref)
    assert out.read_text().rstrip("\n").splitlines()[-1].startswith("#close")
    out.unlink()
    r = subprocess.run([sys.executable, "-m", "zeekml.cli.main", "-q", "score", "--all", "--strict",
                        "--out", str(out), "--threads", "1", str(CAPTURE), str(bad)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and str(bad) in r.stderr
    assert not out.exists()  # nothing half-written is left behind
