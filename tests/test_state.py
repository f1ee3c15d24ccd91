"""The state file: atomic save, validated load, exclusive lock, input identity by content."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tests.conftest import DATA, need
from zeekml.errors import StateError
from zeekml.runtime.state import META_KEY, RunState, StateStore
from zeekml.sources.generation import HEAD_BYTES, identify
from zeekml.sources.generation import match_cursor as find_cursor
from zeekml.windows.host_window import HostWindows

SMALL = DATA / "zeek" / "zat-sample" / "conn.log"


def _state() -> RunState:
    from zeekml.features.flow_stats import flow_features
    from zeekml.sources import read_table

    flows = read_table(SMALL)
    hw = HostWindows(10, "orig")
    hw.push(flows, flow_features(flows))
    return RunState(
        inputs={"4096:abc": {"offset": 123, "parser": {"format": "zeek_tsv"}, "path": "x\ty"}},
        scorers={"amf lstm/../evil": hw.state_dict()},
        policy={"version": np.array(1), "open_json": np.array("[]")},
        sinks={"zeek:/tmp/z.log": {"size": 10, "dev": 1, "ino": 2}},
        meta={"runs": 3},
    )


def test_round_trip(tmp_path) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    store = StateStore(tmp_path / "state.npz")
    assert store.load() is None
    st = _state()
    store.save(st)
    back = store.load()
    assert back.inputs == st.inputs and back.sinks == st.sinks and back.meta == st.meta
    arrays = back.scorers["amf lstm/../evil"]
    for k, v in st.scorers["amf lstm/../evil"].items():
        np.testing.assert_array_equal(arrays[k], v)
        assert arrays[k].dtype == v.dtype
    hw = HostWindows(10, "orig")
    hw.load_state_dict(arrays)  # a real consumer accepts it
    # array names inside the zip never come from keys
    names = zipfile.ZipFile(store.path).namelist()
    assert all(n == f"{META_KEY}.npy" or n[0] == "a" and n[1:-4].isdigit() for n in names)
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]  # no temp file left


def test_save_replaces_atomically(tmp_path, monkeypatch) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    store = StateStore(tmp_path / "state.npz")
    store.save(_state())
    before = store.path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(StateError, match="No space left"):
        store.save(RunState(meta={"runs": 4}))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def _rewrite(path, doc=None, extra=None):
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    if doc is not None:
        members[META_KEY] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    members.update(extra or {})
    with open(path, "wb") as fh:
        np.savez(fh, **members)


def test_bad_files_are_refused(tmp_path) -> None:
    p = tmp_path / "state.npz"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(StateError, match="corrupt|cannot read"):
        StateStore(p).load()
    StateStore(p).save(RunState())
    doc = json.loads(np.load(p)[META_KEY].tobytes())
    _rewrite(p, {**doc, "version": 99})
    with pytest.raises(StateError, match="version 99"):
        StateStore(p).load()
    _rewrite(p, {**doc, "policy": {"x": "a99"}})
    with pytest.raises(StateError, match="missing array"):
        StateStore(p).load()
    _rewrite(p, {**doc, "inputs": {"k": 5}})
    with pytest.raises(StateError, match="cursor"):
        StateStore(p).load()
    with open(p, "wb") as fh:  # an object array needs pickle: refused
        np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StateError):
        StateStore(p).load()


def test_lock_is_exclusive_across_processes_and_released_on_death(tmp_path) -> None:
    state = tmp_path / "state.npz"
    code = ("import sys, time; from zeekml.runtime.state import StateStore; "
            "StateStore(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateError, match=f"another zeekml run.*pid {holder.pid}"):
            StateStore(state).acquire()
    finally:
        holder.kill()
        holder.wait()
    with StateStore(state).lock():  # the kernel dropped the dead holder's lock
        with pytest.raises(StateError):
            StateStore(state).acquire()  # and one process cannot take it twice either


def test_identity_follows_content_through_growth_and_gzip(tmp_path) -> None:
    need(SMALL.is_file(), f"the capture {SMALL}")
    data = SMALL.read_bytes()
    assert len(data) > HEAD_BYTES
    live = tmp_path / "conn.log"
    live.write_bytes(data[:1000])
    small = identify(live)
    assert small.kind == "plain" and small.head_len == 1000
    cursors = {small.key: {**small.to_dict(), "offset": 900}}
    live.write_bytes(data)  # grew past the fingerprint length
    key, cur = find_cursor(cursors, identify(live))
    assert key == small.key and cur["offset"] == 900
    full = identify(live)
    gz = tmp_path / "conn.2024-01-01-10-00-00.log.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(data)
    g = identify(gz)
    assert g.kind == "gzip" and g.key == full.key and (g.dev, g.ino) != (full.dev, full.ino)
    other = tmp_path / "other.log"
    shutil.copy(DATA / "zeek" / "stratosphere-003-androidtester-rat" / "conn.log", other)
    assert find_cursor({full.key: {}}, identify(other)) == (None, None)
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert find_cursor({full.key: {}, "0:" + "e3b0c442" * 8: {}}, identify(empty)) == (None, None)


def test_a_run_commits_what_changed_and_never_the_same_state_twice(tmp_path, monkeypatch) -> None:
    """One input: the write-ahead commit and the one at the input's end; the end of the
    run has nothing new and saves nothing. A second run over the unchanged input commits
    its write-ahead state and the unchanged cursor, once each."""
    need(SMALL.is_file(), f"the capture {SMALL}")
    from zeekml.cli.main import main

    saves: list[int] = []
    real_save = StateStore.save

    def counting_save(self: StateStore, state: RunState) -> None:
        saves.append(1)
        real_save(self, state)

    monkeypatch.setattr(StateStore, "save", counting_save)
    args = ["-q", "score", "--model", "flow_lm", "--state", str(tmp_path / "st.npz"),
            "--out", str(tmp_path / "out.log"), str(SMALL)]
    assert main(args) == 0
    assert len(saves) == 2
    saves.clear()
    assert main(args) == 0
    assert len(saves) == 2
